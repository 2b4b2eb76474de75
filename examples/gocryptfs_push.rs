//! Pushing a model directory into a bucket, side by side in one run: as a gocryptfs tree
//! (`gocryptfs::push::push`), as our OSS-format objects (`upload_dir`, as `cp -r`), and the
//! route users take today (`gocryptfs -init`, FUSE mount, copy into it, unmount, then a plain
//! upload of the cipher directory: one PUT per file, or multipart as `aws s3 cp` sends large
//! files; s3s-fs assembles a multipart object by reading, hashing and writing every part
//! again, which single PUTs skip, so both are shown). Also the per-core rate of the gocryptfs block cipher
//! (AES-256-GCM, 4 KiB blocks, 128-bit nonces) next to `openssl speed -evp aes-256-gcm`.
//!
//! ```text
//! cargo run --release --example gocryptfs_push -- --size 2GiB [--files 4] [--rounds 2] [--only N]
//! ```
//!
//! Needs `gocryptfs` and `fusermount3` (as root) for the mount route. Each round and route
//! gets a fresh in-process s3s-fs server; route order rotates per round; best round counts.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cryptobucket::gocryptfs::{GocryptfsConf, GocryptfsKeys, push::push};
use cryptobucket::{CryptoBucket, Keyring, MatDesc, RsaKeyPair};
use cryptobucket_testkit::baseline::{Multipart, multipart_upload};
use cryptobucket_testkit::{make_file, parse_size, server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// Uploads every file under `dir` as stored (plain objects): one PUT each, or (`multipart`)
/// as `aws s3 cp` sends large files: 8 MiB parts, 8 at once.
async fn plain_upload(
    client: &aws_sdk_s3::Client,
    dir: &Path,
    prefix: &str,
    multipart: bool,
) -> Result<(), BoxError> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
            if multipart && std::fs::metadata(&p)?.len() > 8 << 20 {
                let m = Multipart {
                    part: 8 << 20,
                    concurrency: 8,
                    unsigned: true,
                };
                multipart_upload(client, "bench", &format!("{prefix}{rel}"), &p, m).await?;
                continue;
            }
            client
                .put_object()
                .bucket("bench")
                .key(format!("{prefix}{rel}"))
                .body(aws_sdk_s3::primitives::ByteStream::from_path(&p).await?)
                // As our routes send their bodies: no SHA-256 of the payload for SigV4.
                .customize()
                .disable_payload_signing()
                .send()
                .await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (mut size, mut files, mut rounds) = (2u64 << 30, 4u64, 2u32);
    // `--only N`: run route N alone (0 push, 1 OSS format, 2 mount route with single PUTs,
    // 3 mount route with multipart uploads), e.g. under a profiler.
    let mut only: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => size = parse_size(&v()?)?,
            "--files" => files = v()?.parse()?,
            "--rounds" => rounds = v()?.parse()?,
            "--only" => only = Some(v()?.parse()?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let work = tempfile::tempdir()?;
    let src = work.path().join("model");
    std::fs::create_dir_all(&src)?;
    for i in 0..files {
        make_file(&src.join(format!("shard-{i}.bin")), size / files)?;
    }
    let total = size / files * files;
    let (private, _) = cryptobucket::generate_rsa_pem(2048)?;
    let keyring = Keyring::single(RsaKeyPair::from_private_pem(&private)?, MatDesc::new());
    let pass = work.path().join("pass");
    std::fs::write(&pass, "bench password")?;
    println!("{files} files, {total} bytes, {rounds} rounds");
    const ROUTES: usize = 4;
    let mut best = [f64::MAX; ROUTES];
    for round in 0..rounds {
        let mut times = [0f64; ROUTES];
        for k in 0..ROUTES {
            let route = (k + round as usize) % ROUTES;
            if only.is_some_and(|o| o != route) {
                continue;
            }
            let srv = server::TestServer::start();
            srv.create_bucket("bench").await;
            let client = srv.client().await;
            let cb = CryptoBucket::new(client.clone(), "bench", keyring.clone());
            // Nothing dirty in the page cache: no route pays for the writeback of the one
            // before it.
            Command::new("sync").status()?;
            let t = Instant::now();
            match route {
                0 => {
                    // As the CLI does: a new tree (scrypt 2^16), checkpoints kept.
                    push(&cb, &src, "gc/")
                        .password("bench password")
                        .checkpoint_dir(work.path().join("cp"))
                        .send()
                        .await?;
                }
                1 => {
                    // As `cryptobucket cp -r` does.
                    cb.upload_dir()
                        .path(&src)
                        .prefix("oss/")
                        .checkpoint_dir(work.path().join("cp"))
                        .send()
                        .await?
                        .into_result()?;
                }
                _ => {
                    let (cipher, mnt) = (work.path().join("cipher"), work.path().join("mnt"));
                    let _ = std::fs::remove_dir_all(&cipher);
                    std::fs::create_dir_all(&cipher)?;
                    std::fs::create_dir_all(&mnt)?;
                    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
                    assert!(ok(Command::new("gocryptfs")
                        .args(["-init", "-q", "-passfile"])
                        .arg(&pass)
                        .arg(&cipher)));
                    assert!(ok(Command::new("gocryptfs")
                        .args(["-q", "-passfile"])
                        .arg(&pass)
                        .arg(&cipher)
                        .arg(&mnt)));
                    let copied = ok(Command::new("cp")
                        .arg("-a")
                        .arg(format!("{}/.", src.display()))
                        .arg(&mnt));
                    assert!(ok(Command::new("fusermount3").arg("-u").arg(&mnt)));
                    assert!(copied);
                    plain_upload(&client, &cipher, "mount/", route == 3).await?;
                }
            }
            times[route] = t.elapsed().as_secs_f64();
        }
        println!(
            "round {round}: gocryptfs push {:.0} MB/s, our OSS-format upload {:.0} MB/s, mount + copy + plain PUTs {:.0} MB/s, mount + copy + plain multipart {:.0} MB/s",
            mbps(total, times[0]),
            mbps(total, times[1]),
            mbps(total, times[2]),
            mbps(total, times[3])
        );
        for (b, t) in best.iter_mut().zip(times) {
            *b = b.min(t);
        }
    }
    println!(
        "best: gocryptfs push {:.0} MB/s, OSS-format {:.0} MB/s (ratio {:.2}), mount route {:.0} MB/s (single PUTs) / {:.0} MB/s (multipart)",
        mbps(total, best[0]),
        mbps(total, best[1]),
        best[1] / best[0],
        mbps(total, best[2]),
        mbps(total, best[3])
    );
    // One core: gocryptfs block encryption vs OpenSSL's AES-256-GCM.
    let (_, master) = GocryptfsConf::create("x", 10)?;
    let keys = GocryptfsKeys::new(&master);
    // As the push encrypts: a part's worth (2032 blocks) per call.
    let part = vec![7u8; 2032 * 4096];
    let mut out = Vec::with_capacity(part.len() + 2032 * 32);
    let rounds = 32u64; // 266 MB
    let t = Instant::now();
    for r in 0..rounds {
        out.clear();
        keys.encrypt_blocks_into(&[1; 16], r * 2032, &part, &mut out)?;
        std::hint::black_box(&out);
    }
    println!(
        "gocryptfs block encryption, one core: {:.0} MB/s (4 KiB blocks)",
        mbps(rounds * part.len() as u64, t.elapsed().as_secs_f64())
    );
    let out = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-bytes",
            "4096",
            "-seconds",
            "3",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().find(|l| l.starts_with("AES-256-GCM")) {
        println!("openssl speed -evp aes-256-gcm -bytes 4096: {line}");
    }
    Ok(())
}
