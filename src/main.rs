//! The `cryptobucket` binary; see `cryptobucket --help`.

mod cli;

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let outcome = tokio::select! {
        r = cli::run(args) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "cryptobucket: interrupted; unfinished transfers keep their checkpoints, run the \
                 same command again to resume"
            );
            return std::process::ExitCode::from(130);
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, no secrets: our messages never include key material, and the SDK's
            // debug dump is never printed. For connection failures the root cause (e.g.
            // "Connection refused") is what the user needs, so it is appended.
            let mut msg = e.to_string().replace('\n', " ");
            if matches!(
                e.kind(),
                cryptobucket::ErrorKind::Transport | cryptobucket::ErrorKind::Io
            ) {
                let mut root: Option<&dyn std::error::Error> = std::error::Error::source(&e);
                while let Some(next) = root.and_then(|r| r.source()) {
                    root = Some(next);
                }
                if let Some(r) = root {
                    let text = r.to_string();
                    if !text.is_empty() && text.len() < 200 && !msg.contains(&text) {
                        msg = format!("{msg}: {}", text.replace('\n', " "));
                    }
                }
            }
            eprintln!("cryptobucket: error: {msg}");
            cli::exit::exit_code(&e)
        }
    }
}
