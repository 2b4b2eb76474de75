//! `cryptobucket cp -r` of a model directory, two CLI builds side by side in one run: e.g. the
//! one-file-at-a-time `cp -r` of an older commit against the current one (small files several
//! at once within the same memory budget). Each run gets a fresh in-process s3s-fs server; the
//! order alternates per round; best round counts. Uploads and downloads are timed separately.
//!
//! ```text
//! git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin cryptobucket)
//! cargo build --release --bin cryptobucket
//! cargo run --release --example cp_tree -- --old /tmp/old/target/release/cryptobucket \
//!     --new target/release/cryptobucket [--small 200] [--small-size 1MiB] [--large 2] \
//!     [--large-size 1GiB] [--rounds 2] [--complete-delay-ms 0]
//! ```
//!
//! `--complete-delay-ms N` makes the server take N ms over each CompleteMultipartUpload, as a
//! store assembling a large object does (s3s-fs itself copies the parts into the object).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cryptobucket_testkit::{make_file, parse_size, server};

type BoxError = Box<dyn std::error::Error>;

/// Runs `bin` with the server's endpoint, credentials and the test keys.
fn run(bin: &Path, srv: &server::TestServer, keys: &Path, cps: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .arg("--rsa-public-key")
        .arg(keys.join("public.pem"))
        .arg("--rsa-private-key")
        .arg(keys.join("private.pem"))
        .args(args)
        .arg("--no-progress")
        .arg("--checkpoint-dir")
        .arg(cps)
        .env("AWS_ACCESS_KEY_ID", server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", server::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", &srv.endpoint)
        .env_remove("CRYPTOBUCKET_KEYRING")
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (mut old, mut new) = (None::<PathBuf>, None::<PathBuf>);
    let (mut small, mut small_size, mut large, mut large_size, mut rounds) =
        (200u64, 1u64 << 20, 2u64, 1u64 << 30, 2u32);
    let mut complete_delay_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--old" => old = Some(v()?.into()),
            "--new" => new = Some(v()?.into()),
            "--small" => small = v()?.parse()?,
            "--small-size" => small_size = parse_size(&v()?)?,
            "--large" => large = v()?.parse()?,
            "--large-size" => large_size = parse_size(&v()?)?,
            "--rounds" => rounds = v()?.parse()?,
            "--complete-delay-ms" => complete_delay_ms = v()?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let bins = [
        ("old", old.ok_or("--old BIN is required")?),
        ("new", new.ok_or("--new BIN is required")?),
    ];
    let work = tempfile::tempdir()?;
    let src = work.path().join("model");
    std::fs::create_dir_all(&src)?;
    for i in 0..small {
        let d = src.join(format!("shard-group-{}", i % 10));
        std::fs::create_dir_all(&d)?;
        make_file(&d.join(format!("small-{i}.bin")), small_size)?;
    }
    for i in 0..large {
        make_file(&src.join(format!("large-{i}.bin")), large_size)?;
    }
    let total = small * small_size + large * large_size;
    let keys = cryptobucket_testkit::testdata().join("keys/a");
    println!(
        "{small} × {small_size} + {large} × {large_size} bytes = {total} bytes, {rounds} rounds, \
         CompleteMultipartUpload delayed {complete_delay_ms} ms"
    );
    let mut best = [[f64::MAX; 2]; 2];
    for round in 0..rounds {
        for k in 0..2 {
            let which = (k + round as usize) % 2;
            let (name, bin) = &bins[which];
            let srv = server::TestServer::start();
            srv.create_bucket("bench").await;
            srv.stats
                .complete_delay_ms
                .store(complete_delay_ms, std::sync::atomic::Ordering::SeqCst);
            let cps = work.path().join(format!("cp-{name}-{round}"));
            let back = work.path().join(format!("back-{name}-{round}"));
            let t = Instant::now();
            run(
                bin,
                &srv,
                &keys,
                &cps,
                &["cp", "-r", src.to_str().unwrap(), "s3://bench/m/"],
            );
            let up = t.elapsed().as_secs_f64();
            let t = Instant::now();
            run(
                bin,
                &srv,
                &keys,
                &cps,
                &["cp", "-r", "s3://bench/m/", back.to_str().unwrap()],
            );
            let down = t.elapsed().as_secs_f64();
            std::fs::remove_dir_all(&back)?;
            println!(
                "round {round}: {name}: upload {up:.2} s ({:.0} MB/s), download {down:.2} s ({:.0} MB/s)",
                total as f64 / up / 1e6,
                total as f64 / down / 1e6
            );
            best[which][0] = best[which][0].min(up);
            best[which][1] = best[which][1].min(down);
        }
    }
    for (i, (name, _)) in bins.iter().enumerate() {
        println!(
            "best {name}: upload {:.2} s, download {:.2} s",
            best[i][0], best[i][1]
        );
    }
    Ok(())
}
