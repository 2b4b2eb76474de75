//! Tensor-level loading, measured side by side in one run on a multi-GiB encrypted safetensors
//! object: loading 10% of the tensors by name vs downloading the file whole (time and bytes the
//! server sent), and loading every tensor through the reader (decrypted, verified) vs plain
//! aws-sdk-s3 ranged GETs of the same bytes of a plain copy (same piece size, same parallelism).
//!
//! ```text
//! cargo run --release --example tensor_load -- --size 2GiB [--tensors 200] [--concurrency 8]
//!     [--rounds 3]
//! ```
//!
//! Each round starts a fresh in-process s3s-fs server in a new temp dir; the order of the
//! compared measurements alternates between rounds. The best round of each counts.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use cryptobucket::safetensors::SafetensorsIndex;
use cryptobucket::{CryptoBucket, Keyring, MatDesc, RsaKeyPair, TransferConfig};
use cryptobucket_testkit::{parse_size, pattern, server};
use futures::{StreamExt as _, TryStreamExt as _};

type BoxError = Box<dyn std::error::Error>;

const PIECE: u64 = 8 << 20;

struct Opts {
    size: u64,
    tensors: u64,
    concurrency: usize,
    rounds: u32,
}

fn opts() -> Result<Opts, BoxError> {
    let mut o = Opts {
        size: 2 << 30,
        tensors: 200,
        concurrency: 8,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--size" => o.size = parse_size(&v()?)?,
            "--tensors" => o.tensors = v()?.parse()?,
            "--concurrency" => o.concurrency = v()?.parse()?,
            "--rounds" => o.rounds = v()?.parse()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

/// A safetensors file of `n` F32 tensors of about `size / n` bytes each.
fn make_model(path: &std::path::Path, size: u64, n: u64) -> Result<u64, BoxError> {
    let each = (size / n / 4).max(1);
    let mut header = serde_json::Map::new();
    for i in 0..n {
        header.insert(
            format!("model.layers.{i}.weight"),
            serde_json::json!({"dtype": "F32", "shape": [each], "data_offsets": [i * each * 4, (i + 1) * each * 4]}),
        );
    }
    let mut h = serde_json::to_vec(&header)?;
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    let chunk = pattern(4 << 20, 9);
    let mut left = n * each * 4;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..k])?;
        left -= k as u64;
    }
    f.flush()?;
    Ok(8 + h.len() as u64 + n * each * 4)
}

/// Plain aws-sdk-s3: ranged GETs of `ranges` (split into PIECE pieces), `concurrency` at once.
async fn plain_ranges(
    client: &aws_sdk_s3::Client,
    key: &str,
    ranges: &[(u64, u64)],
    concurrency: usize,
) -> Result<u64, BoxError> {
    let mut pieces = Vec::new();
    for &(start, len) in ranges {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(PIECE);
            pieces.push((at, n));
            at += n;
        }
    }
    let got: Vec<Bytes> = futures::stream::iter(pieces)
        .map(|(at, n)| async move {
            let r = client
                .get_object()
                .bucket("bench")
                .key(key)
                .range(format!("bytes={at}-{}", at + n - 1))
                .send()
                .await?;
            Ok::<_, BoxError>(r.body.collect().await?.into_bytes())
        })
        .buffered(concurrency)
        .try_collect()
        .await?;
    Ok(got.iter().map(|b| b.len() as u64).sum())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let o = opts()?;
    let work = tempfile::tempdir()?;
    let src = work.path().join("model.safetensors");
    let size = make_model(&src, o.size, o.tensors)?;
    let (private, _) = cryptobucket::generate_rsa_pem(2048)?;
    let keyring = Keyring::single(RsaKeyPair::from_private_pem(&private)?, MatDesc::new());
    println!(
        "safetensors object of {size} bytes, {} tensors, concurrency {}, {} rounds",
        o.tensors, o.concurrency, o.rounds
    );
    // [subset, whole download, all tensors via reader, all via plain ranged GETs] (seconds)
    let mut best = [f64::MAX; 4];
    let mut sent = [0u64; 2];
    let mut subset_bytes = 0;
    for round in 0..o.rounds {
        let srv = server::TestServer::start();
        srv.create_bucket("bench").await;
        let client = srv.client().await;
        let cb = CryptoBucket::builder()
            .client(client.clone())
            .bucket("bench")
            .keyring(keyring.clone())
            .transfer_config(TransferConfig::new().concurrency(o.concurrency))
            .build()?;
        cb.upload_file()
            .key("model.safetensors")
            .path(&src)
            .checkpoint_dir(work.path().join("cp"))
            .send()
            .await?;
        client
            .put_object()
            .bucket("bench")
            .key("plain.safetensors")
            .body(aws_sdk_s3::primitives::ByteStream::from_path(&src).await?)
            .send()
            .await?;
        let mut times = [0f64; 4];
        let flip = round % 2 == 1;
        for step in 0..2 {
            let bytes_before = srv.stats.bytes_out.load(Ordering::Relaxed);
            let t = Instant::now();
            if (step == 0) != flip {
                // 10% of the tensors, by name, into memory.
                let reader = cb.reader().key("model.safetensors").open().await?;
                let index = SafetensorsIndex::read(&reader).await?;
                let patterns: Vec<String> = (0..o.tensors)
                    .step_by(10)
                    .map(|i| format!("model.layers.{i}.weight"))
                    .collect();
                let p: Vec<&str> = patterns.iter().map(String::as_str).collect();
                let chosen = index.select(&p)?;
                let got = index.fetch(&reader, &chosen).await?;
                subset_bytes = got.iter().map(|b| b.len() as u64).sum();
                times[0] = t.elapsed().as_secs_f64();
                sent[0] = srv.stats.bytes_out.load(Ordering::Relaxed) - bytes_before;
            } else {
                let dst = work.path().join("whole.out");
                cb.download_file()
                    .key("model.safetensors")
                    .path(&dst)
                    .checkpoint_dir(work.path().join("cp"))
                    .send()
                    .await?;
                times[1] = t.elapsed().as_secs_f64();
                sent[1] = srv.stats.bytes_out.load(Ordering::Relaxed) - bytes_before;
                std::fs::remove_file(dst)?;
            }
        }
        // Every tensor into memory: our reader vs plain ranged GETs of a plain copy.
        let reader = cb.reader().key("model.safetensors").open().await?;
        let index = SafetensorsIndex::read(&reader).await?;
        let all = index.tensors().to_vec();
        let ranges: Vec<(u64, u64)> = all.iter().map(|t| (t.range.start, t.len())).collect();
        for step in 0..2 {
            let t = Instant::now();
            if (step == 0) != flip {
                let got = index.fetch(&reader, &all).await?;
                assert_eq!(got.len(), all.len());
                times[2] = t.elapsed().as_secs_f64();
            } else {
                plain_ranges(&client, "plain.safetensors", &ranges, o.concurrency).await?;
                times[3] = t.elapsed().as_secs_f64();
            }
        }
        for (b, t) in best.iter_mut().zip(times) {
            *b = b.min(t);
        }
        println!(
            "round {round}: 10% by name {:.2} s ({} MB sent), whole download {:.2} s ({} MB \
             sent); all tensors: reader {:.0} MB/s, plain ranged GETs {:.0} MB/s",
            times[0],
            sent[0] / 1_000_000,
            times[1],
            sent[1] / 1_000_000,
            size as f64 / times[2] / 1e6,
            size as f64 / times[3] / 1e6
        );
    }
    println!(
        "best: 10% of tensors ({} MB of tensor data) {:.2} s vs whole download {:.2} s \
         ({:.1}x faster, {:.1}% of the bytes); all tensors: reader {:.0} MB/s vs plain \
         {:.0} MB/s (ratio {:.2})",
        subset_bytes / 1_000_000,
        best[0],
        best[1],
        best[1] / best[0],
        100.0 * sent[0] as f64 / sent[1] as f64,
        size as f64 / best[2] / 1e6,
        size as f64 / best[3] / 1e6,
        best[3] / best[2]
    );
    Ok(())
}
