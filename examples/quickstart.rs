//! Quickstart: encrypt, upload, inspect, download (whole and a range), verify.
//!
//! With no configuration it starts an S3 server in this process (s3s-fs in a temp dir) and makes
//! a throwaway RSA key pair. To run against a real store instead:
//!
//! ```text
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//!   cargo run --release --example quickstart -- --endpoint-url http://127.0.0.1:9000 --bucket my-bucket
//! ```
//! (`--endpoint-url` may also come from `AWS_ENDPOINT_URL`; the bucket must exist.)

use cryptobucket_testkit::server;

use cryptobucket::{ByteRange, ClientOptions, CryptoBucket, Keyring, MatDesc, RsaKeyPair};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let mut bucket = "quickstart".to_owned();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--endpoint-url" => endpoint = args.next(),
            "--bucket" => bucket = args.next().ok_or("--bucket needs a value")?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    // 1. A store: the one given, or an embedded one.
    let (_embedded, client) = match endpoint {
        Some(url) => {
            println!("using the S3 store at {url}, bucket {bucket}");
            (
                None,
                ClientOptions::new()
                    .endpoint_url(url)
                    .force_path_style(true)
                    .build()
                    .await,
            )
        }
        None => {
            let s = server::TestServer::start();
            println!(
                "started an embedded S3 server at {} (data in {})",
                s.endpoint,
                s.root.display()
            );
            s.create_bucket(&bucket).await;
            let c = s.client().await;
            (Some(s), c)
        }
    };

    // 2. A master key and a bucket that encrypts with it.
    let (private_pem, _public_pem) = cryptobucket::generate_rsa_pem(2048)?;
    let key = RsaKeyPair::from_private_pem(&private_pem)?;
    let matdesc = MatDesc::new().with("purpose", "quickstart");
    let cb = CryptoBucket::new(client.clone(), &bucket, Keyring::single(key, matdesc));

    // 3. Upload a file.
    let plaintext: Vec<u8> = (0..1_000_000u32)
        .flat_map(|i| i.to_le_bytes())
        .take(1_000_003)
        .collect();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.bin");
    std::fs::write(&path, &plaintext)?;
    cb.put_object()
        .key("demo/model.bin")
        .body(cryptobucket::PutBody::from_path(&path).await?)
        .send()
        .await?;
    println!(
        "uploaded {} bytes, encrypted, to s3://{bucket}/demo/model.bin",
        plaintext.len()
    );

    // 4. What the store holds: ciphertext plus wrapped keys in metadata.
    let raw = client
        .get_object()
        .bucket(&bucket)
        .key("demo/model.bin")
        .send()
        .await?;
    let mut meta: Vec<_> = raw
        .metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    meta.sort();
    let stored = raw.body.collect().await?.into_bytes();
    println!(
        "stored bytes equal the plaintext: {}",
        stored[..] == plaintext[..]
    );
    println!(
        "first 16 plaintext bytes: {}",
        hex::encode(&plaintext[..16])
    );
    println!("first 16 stored bytes:    {}", hex::encode(&stored[..16]));
    println!("object metadata:");
    for (k, v) in meta {
        let shown = if v.len() > 48 {
            format!("{}... ({} chars, wrapped, not secret)", &v[..48], v.len())
        } else {
            v
        };
        println!("  {k}: {shown}");
    }

    // 5. Download it back, and a range that is not block aligned.
    let whole = cb
        .get_object()
        .key("demo/model.bin")
        .send()
        .await?
        .body
        .collect()
        .await?;
    let range: ByteRange = "123457-223456".parse()?;
    let part = cb
        .get_object()
        .key("demo/model.bin")
        .range(range)
        .send()
        .await?
        .body
        .collect()
        .await?;
    let whole_ok = whole[..] == plaintext[..];
    let range_ok = part[..] == plaintext[123_457..=223_456];
    println!(
        "downloaded whole object: {} bytes, matches: {whole_ok}",
        whole.len()
    );
    println!(
        "downloaded range {range}: {} bytes, matches: {range_ok}",
        part.len()
    );
    if !(whole_ok && range_ok && stored[..] != plaintext[..]) {
        return Err("verification failed".into());
    }
    println!("OK: client-side encryption round trip verified");
    Ok(())
}
