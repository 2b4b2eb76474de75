//! A local S3 server for trying the CLI and for measurements: s3s-fs over HTTP on 127.0.0.1,
//! the same one the tests use, with fixed test credentials.
//!
//! ```text
//! cargo run --release --example s3_server -- [--dir DATA_DIR] [--bucket NAME]...
//!     [--slow-gets-at BYTE --slow-rate MIB_PER_SEC]
//! ```
//!
//! `--slow-gets-at` makes every GET whose range starts at that byte send its body at
//! `--slow-rate` MiB/s (default 1): one slow connection among fast ones, to see how a
//! download copes with a straggler.
//!
//! It prints the endpoint and the credentials to export, then serves until Ctrl-C. Without
//! `--dir` the data lives in a temp directory removed at exit.

use cryptobucket_testkit::server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dir = None;
    let mut buckets = Vec::new();
    let mut slow_at = None;
    let mut slow_rate = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => {
                dir = Some(std::path::PathBuf::from(
                    args.next().ok_or("--dir needs a value")?,
                ))
            }
            "--bucket" => buckets.push(args.next().ok_or("--bucket needs a value")?),
            "--slow-gets-at" => {
                slow_at = Some(args.next().ok_or("--slow-gets-at needs a value")?.parse()?)
            }
            "--slow-rate" => slow_rate = args.next().ok_or("--slow-rate needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            server::TestServer::start_in(d, server::Fault::None)
        }
        None => server::TestServer::start(),
    };
    if let Some(at) = slow_at {
        use std::sync::atomic::Ordering;
        let rate = (slow_rate * f64::from(1u32 << 20)) as u64;
        server.stats.slow_get_rate.store(rate, Ordering::SeqCst);
        server.stats.slow_gets_at.store(at, Ordering::SeqCst);
    }
    for b in &buckets {
        server.create_bucket(b).await;
    }
    println!("export AWS_ENDPOINT_URL={}", server.endpoint);
    println!("export AWS_ACCESS_KEY_ID={}", server::ACCESS_KEY);
    println!("export AWS_SECRET_ACCESS_KEY={}", server::SECRET_KEY);
    println!("# buckets: {buckets:?}; use --force-path-style with the CLI. Ctrl-C stops.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
