//! What integrity data costs, measured side by side in one run: `upload_file` and
//! `download_file` with integrity data on vs off, and a 1 MiB ranged read from a multi-GiB
//! object, verified vs unverified (time and GET requests).
//!
//! ```text
//! cargo run --release --example integrity_cost -- --size 2GiB [--part-size 8MiB]
//!     [--concurrency 8] [--rounds 3] [--reads 50]
//! ```
//!
//! Each round starts a fresh in-process s3s-fs server in a new temp dir; the order of "on" and
//! "off" alternates between rounds. The best round of each measurement counts.

use std::sync::atomic::Ordering;
use std::time::Instant;

use cryptobucket::{ByteRange, CryptoBucket, Keyring, MatDesc, PartSize, RsaKeyPair};
use cryptobucket_testkit::{make_file, parse_size, server};

type BoxError = Box<dyn std::error::Error>;

struct Opts {
    size: u64,
    part: u64,
    concurrency: usize,
    rounds: u32,
    reads: u32,
}

fn opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        size: 2 << 30,
        part: 8 << 20,
        concurrency: 8,
        rounds: 3,
        reads: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => o.size = parse_size(&v()?)?,
            "--part-size" => o.part = parse_size(&v()?)?,
            "--concurrency" => o.concurrency = v()?.parse()?,
            "--rounds" => o.rounds = v()?.parse()?,
            "--reads" => o.reads = v()?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
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
        "size {} bytes, part size {}, concurrency {}, {} rounds, {} ranged reads of 1 MiB",
        o.size, o.part, o.concurrency, o.rounds, o.reads
    );
    // put off, put on, get off, get on (seconds); ranged read off, on (seconds per read).
    let mut best = [f64::MAX; 6];
    let mut gets_per_read = [0f64; 2];
    for round in 0..o.rounds {
        let srv = server::TestServer::start();
        srv.create_bucket("bench").await;
        let client = srv.client().await;
        let bucket = |on: bool| {
            CryptoBucket::builder()
                .client(client.clone())
                .bucket("bench")
                .keyring(keyring.clone())
                .write_integrity(on)
                .build()
        };
        let (off, on) = (bucket(false)?, bucket(true)?);
        let cps = work.path().join("checkpoints");
        let on_first = round % 2 == 0;
        let mut times = [0f64; 6];
        for step in 0..4 {
            let with = (step % 2 == 0) == on_first;
            let get = step >= 2;
            let cb = if with { &on } else { &off };
            let key = if with { "on" } else { "off" };
            let dst = work.path().join(format!("{key}.out"));
            let t = Instant::now();
            if get {
                cb.download_file()
                    .key(key)
                    .path(&dst)
                    .part_size(PartSize::Target(o.part))
                    .concurrency(o.concurrency)
                    .checkpoint_dir(&cps)
                    .send()
                    .await?;
            } else {
                cb.upload_file()
                    .key(key)
                    .path(&src)
                    .part_size(PartSize::Target(o.part))
                    .concurrency(o.concurrency)
                    .checkpoint_dir(&cps)
                    .send()
                    .await?;
            }
            let slot = usize::from(get) * 2 + usize::from(with);
            times[slot] = t.elapsed().as_secs_f64();
            if get {
                std::fs::remove_file(&dst)?;
            }
        }
        // 1 MiB ranged reads at the same pseudo-random offsets of both objects.
        for (i, (cb, key)) in [(&off, "off"), (&on, "on")].into_iter().enumerate() {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let gets_before = srv.stats.gets_in.load(Ordering::Relaxed);
            let t = Instant::now();
            for _ in 0..o.reads {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let first = x % (o.size - (1 << 20));
                let r = ByteRange::Inclusive {
                    first,
                    last: first + (1 << 20) - 1,
                };
                let got = cb.get_object().key(key).range(r).send().await?;
                assert_eq!(got.body.collect().await?.len(), 1 << 20);
            }
            times[4 + i] = t.elapsed().as_secs_f64() / f64::from(o.reads);
            gets_per_read[i] = (srv.stats.gets_in.load(Ordering::Relaxed) - gets_before) as f64
                / f64::from(o.reads);
        }
        for (b, t) in best.iter_mut().zip(times) {
            *b = b.min(t);
        }
        println!(
            "round {round}: put off {:.0} MB/s, on {:.0} MB/s; get off {:.0} MB/s, on {:.0} MB/s; \
             1 MiB range off {:.2} ms, on {:.2} ms",
            mbps(o.size, times[0]),
            mbps(o.size, times[1]),
            mbps(o.size, times[2]),
            mbps(o.size, times[3]),
            times[4] * 1e3,
            times[5] * 1e3
        );
    }
    println!(
        "best: put off {:.0} MB/s, on {:.0} MB/s (ratio {:.2}); get off {:.0} MB/s, on {:.0} MB/s \
         (ratio {:.2})",
        mbps(o.size, best[0]),
        mbps(o.size, best[1]),
        best[0] / best[1],
        mbps(o.size, best[2]),
        mbps(o.size, best[3]),
        best[2] / best[3]
    );
    println!(
        "1 MiB ranged read: unverified {:.2} ms and {:.1} GETs, verified {:.2} ms and {:.1} GETs",
        best[4] * 1e3,
        gets_per_read[0],
        best[5] * 1e3,
        gets_per_read[1]
    );
    Ok(())
}
