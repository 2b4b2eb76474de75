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
            // One line, no secrets: our messages never include key material.
            let mut msg = e.to_string().replace('\n', " ");
            if let Some(src) = std::error::Error::source(&e) {
                let src = aws_sdk_s3::error::DisplayErrorContext(src).to_string();
                if !msg.contains(&src) && e.kind() != cryptobucket::ErrorKind::KeyUnwrap {
                    msg = format!("{msg} ({})", src.replace('\n', " "));
                }
            }
            eprintln!("cryptobucket: error: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
