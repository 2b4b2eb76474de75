//! Throughput: the same file uploaded and downloaded through `CryptoBucket` (encrypted,
//! checkpointed, durable) and through plain aws-sdk-s3 (no encryption, no checkpoints), with
//! identical part size and concurrency, against the same server, in one run. The plain download
//! runs twice: as fast as it goes (nothing synced, the file may still be in the page cache when
//! it returns) and durable like ours (each range synced to disk as it completes), so the ratio
//! against the second isolates what encryption, verification and checkpoints cost. Ours also
//! runs twice: as shipped (durable) and with `durable(false)` (no syncs, no checkpoint), the
//! same durability as the fast plain download.
//!
//! ```text
//! cargo run --release --example throughput -- --size 2GiB [--part-size 8MiB] [--concurrency 8]
//!     [--rounds 3] [--endpoint-url URL --bucket B]
//! ```
//!
//! Without `--endpoint-url` each round starts a fresh in-process s3s-fs server in a new temp
//! directory (s3s-fs slows down on a reused data dir), so server work shares the machine's
//! cores with the client. Rounds alternate which side goes first; the best round of each side
//! counts. The last line is `encrypted/plain throughput ratio: put X get Y (durable plain get Z,
//! without syncs W)`: Y durable ours against the fast plain get, Z durable against durable, W
//! ours without syncs against the fast plain get.

use cryptobucket_testkit::baseline::{Multipart, multipart_upload};
use cryptobucket_testkit::{make_file, parse_size, server};

use std::path::Path;
use std::time::Instant;

use cryptobucket::{ClientOptions, CryptoBucket, Keyring, MatDesc, PartSize, RsaKeyPair};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Opts {
    size: u64,
    part: u64,
    concurrency: usize,
    rounds: usize,
    endpoint: Option<String>,
    bucket: String,
}

fn opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        size: 2 << 30,
        part: 8 << 20,
        concurrency: 8,
        rounds: 3,
        endpoint: None,
        bucket: "bench".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => o.size = parse_size(&v()?)?,
            "--part-size" => o.part = parse_size(&v()?)?,
            "--concurrency" => o.concurrency = v()?.parse()?,
            "--rounds" => o.rounds = v()?.parse()?,
            "--endpoint-url" => o.endpoint = Some(v()?),
            "--bucket" => o.bucket = v()?,
            "--bench" => {} // passed by `cargo bench`-style runners; ignored
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

/// Plain parallel ranged download into a preallocated file; `durable`: each range is synced
/// to disk (`fdatasync`) once written, so the file is on disk when this returns.
async fn plain_get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    o: &Opts,
    durable: bool,
) -> Result<(), BoxError> {
    std::fs::File::create(path)?.set_len(o.size)?;
    let count = o.size.div_ceil(o.part);
    let mut set = JoinSet::new();
    let mut next = 0u64;
    loop {
        while set.len() < o.concurrency && next < count {
            let (client, bucket, key, path) = (
                client.clone(),
                bucket.to_owned(),
                key.to_owned(),
                path.to_owned(),
            );
            let off = next * o.part;
            let last = (off + o.part).min(o.size) - 1;
            set.spawn(async move {
                let mut body = client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .range(format!("bytes={off}-{last}"))
                    .send()
                    .await?
                    .body;
                let mut f = tokio::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .await?;
                f.seek(std::io::SeekFrom::Start(off)).await?;
                while let Some(chunk) = body.next().await {
                    f.write_all(&chunk?).await?;
                }
                f.flush().await?;
                if durable {
                    f.sync_data().await?;
                }
                Ok::<_, BoxError>(())
            });
            next += 1;
        }
        match set.join_next().await {
            Some(r) => r??,
            None => break,
        }
    }
    Ok(())
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = opts()?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("source.bin");
    make_file(&src, o.size)?;
    let (private, _) = cryptobucket::generate_rsa_pem(2048)?;
    let keyring = Keyring::single(RsaKeyPair::from_private_pem(&private)?, MatDesc::new());
    println!(
        "size {} bytes, part size {}, concurrency {}, {} rounds, {}",
        o.size,
        o.part,
        o.concurrency,
        o.rounds,
        o.endpoint
            .as_deref()
            .unwrap_or("in-process s3s-fs (fresh data dir per round)")
    );
    // Slots: plain put, encrypted put, plain get, durable plain get, encrypted get, encrypted
    // get without syncs (seconds).
    const NAMES: [&str; 6] = [
        "put plain",
        "put encrypted",
        "get plain",
        "get plain durable",
        "get encrypted",
        "get encrypted no-fsync",
    ];
    let line = |t: &[f64; 6]| {
        NAMES
            .iter()
            .zip(t)
            .map(|(n, s)| format!("{n} {:.0} MB/s", mbps(o.size, *s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut best = [f64::MAX; 6];
    for round in 0..o.rounds {
        let server = match &o.endpoint {
            None => Some(server::TestServer::start()),
            Some(_) => None,
        };
        let client = match (&server, &o.endpoint) {
            (Some(s), _) => {
                s.create_bucket(&o.bucket).await;
                s.client().await
            }
            (None, Some(url)) => {
                ClientOptions::new()
                    .endpoint_url(url)
                    .force_path_style(true)
                    .build()
                    .await
            }
            (None, None) => unreachable!(),
        };
        let cb = CryptoBucket::new(client.clone(), &o.bucket, keyring.clone());
        let cps = work.path().join("checkpoints");
        // Puts alternate which goes first; the four gets rotate.
        let mut order = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        let mut gets = [2, 3, 4, 5];
        gets.rotate_left(round % 4);
        order.extend(gets);
        let mut times = [0f64; 6];
        for slot in order {
            let dst = work.path().join("get.out");
            // Nothing dirty in the page cache when a run starts: whoever syncs would otherwise
            // pay for the writeback of the runs before it.
            std::process::Command::new("sync").status()?;
            let t = Instant::now();
            match slot {
                0 => {
                    let m = Multipart {
                        part: o.part,
                        concurrency: o.concurrency,
                        unsigned: false,
                    };
                    multipart_upload(&client, &o.bucket, "plain", &src, m).await?
                }
                1 => {
                    cb.upload_file()
                        .key("enc")
                        .path(&src)
                        .part_size(PartSize::Target(o.part))
                        .concurrency(o.concurrency)
                        .checkpoint_dir(&cps)
                        .send()
                        .await?;
                }
                2 | 3 => plain_get(&client, &o.bucket, "plain", &dst, &o, slot == 3).await?,
                _ => {
                    cb.download_file()
                        .key("enc")
                        .path(&dst)
                        .part_size(PartSize::Target(o.part))
                        .concurrency(o.concurrency)
                        .checkpoint_dir(&cps)
                        .durable(slot == 4)
                        .send()
                        .await?;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            times[slot] = secs;
            best[slot] = best[slot].min(secs);
            if slot >= 2 {
                std::fs::remove_file(&dst)?;
            }
        }
        println!("round {round}: {}", line(&times));
        drop(server);
    }
    println!("best: {}", line(&best));
    match peak_rss_mib() {
        Some(m) => {
            println!("peak RSS of this process (client and, if in-process, server): {m:.0} MiB")
        }
        None => println!("peak RSS: unavailable"),
    }
    println!(
        "encrypted/plain throughput ratio: put {:.2} get {:.2} (durable plain get {:.2}, \
         without syncs {:.2})",
        best[0] / best[1],
        best[2] / best[4],
        best[3] / best[4],
        best[2] / best[5]
    );
    Ok(())
}
