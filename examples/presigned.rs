//! The object format through any HTTP client: encrypt a file into a bucket and read it back
//! with plain `reqwest` and presigned URLs, using only [`cryptobucket::codec`] for the crypto.
//! No cryptobucket transfer code touches the network; the S3 SDK is used offline, to presign.
//!
//! The object it writes is an ordinary OSS client-side-encryption object: oss2, the other OSS
//! SDKs and `cryptobucket get` read it (the test suite checks oss2 does).
//!
//! ```text
//! # self-contained: an embedded S3 server, a throwaway RSA key, 3 MB of data
//! cargo run --example presigned
//! # against a store (credentials from the standard AWS variables; the bucket must exist)
//! cargo run --example presigned -- --endpoint-url http://127.0.0.1:9000 --bucket B \
//!     --key models/w.bin --private-key key.pem --in w.bin
//! ```

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use cryptobucket::codec::{Decryptor, Encryptor, metadata_from_headers};
use cryptobucket::{ByteRange, ClientOptions, Keyring, MatDesc, RsaKeyPair};
use cryptobucket_testkit::server::TestServer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (mut endpoint, mut bucket, mut key) =
        (None, "presigned".to_owned(), "codec/w.bin".to_owned());
    let (mut key_file, mut input) = (None, None);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--endpoint-url" => endpoint = Some(value()?),
            "--bucket" => bucket = value()?,
            "--key" => key = value()?,
            "--private-key" => key_file = Some(value()?),
            "--in" => input = Some(std::path::PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    // A store (the one given, or an embedded one) and an S3 client used only to presign.
    let (_embedded, s3) = match endpoint {
        Some(url) => {
            let client = ClientOptions::new()
                .endpoint_url(url)
                .force_path_style(true)
                .build()
                .await;
            (None, client)
        }
        None => {
            let server = TestServer::start();
            server.create_bucket(&bucket).await;
            let client = server.client().await;
            (Some(server), client)
        }
    };
    let dir = tempfile::tempdir()?;
    let pem = match key_file {
        Some(path) => zeroize::Zeroizing::new(std::fs::read_to_string(path)?),
        None => cryptobucket::generate_rsa_pem(2048)?.0,
    };
    let keyring = Keyring::single(RsaKeyPair::from_private_pem(&pem)?, MatDesc::new());
    let input = match input {
        Some(path) => path,
        None => {
            let path = dir.path().join("w.bin");
            let data: Vec<u8> = (0..3_000_017u32).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&path, data)?;
            path
        }
    };
    let size = std::fs::metadata(&input)?.len();
    let http = reqwest::Client::new();
    let presign = PresigningConfig::expires_in(Duration::from_secs(600))?;

    // Upload: the codec makes the metadata and encrypts the file as it streams.
    let enc = Encryptor::new(&keyring).await?.content_length(size);
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .content_length(size as i64)
        .set_metadata(Some(enc.metadata()))
        .presigned(presign.clone())
        .await?;
    let file = tokio::fs::File::open(&input).await?;
    let body = enc.encrypt_stream(0, tokio_util::io::ReaderStream::new(file))?;
    let resp = request(&http, reqwest::Method::PUT, &put)
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("PUT answered {}: {}", resp.status(), resp.text().await?).into());
    }
    println!("put s3://{bucket}/{key}: {size} bytes encrypted through a presigned PUT");

    // Download: the metadata comes with the response headers; decrypt the body as it streams.
    let get = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .presigned(presign.clone())
        .await?;
    let resp = checked(request(&http, reqwest::Method::GET, &get).send().await?).await?;
    let meta: HashMap<String, String> = metadata_from_headers(resp.headers());
    let dec = Decryptor::new(&keyring, &meta).await?;
    let object_size = resp
        .content_length()
        .ok_or("the GET response has no length")?;
    let plain = dec
        .decrypt_stream(resp.bytes_stream(), 0, object_size, None)?
        .collect()
        .await?;
    if plain != std::fs::read(&input)? {
        return Err("the object read back differs from the file".into());
    }
    println!("get: {} bytes decrypted, equal to the file", plain.len());

    // A range: ask the store for what the codec says, decrypt only the range.
    if size > 0 {
        let range = ByteRange::Inclusive {
            first: size / 3,
            last: size / 3 + size.min(100_000) / 2,
        };
        let fetch = dec
            .fetch_range(Some(range))
            .expect("a range in, a range out");
        let get = s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .range(fetch.to_header())
            .presigned(presign)
            .await?;
        let resp = checked(request(&http, reqwest::Method::GET, &get).send().await?).await?;
        let (body_start, total) = content_range(&resp)?;
        let part = dec
            .decrypt_stream(resp.bytes_stream(), body_start, total, Some(range))?
            .collect()
            .await?;
        let (start, len) = range.resolve(total)?;
        let whole = std::fs::read(&input)?;
        if part[..] != whole[start as usize..(start + len) as usize] {
            return Err("the range read back differs from the file".into());
        }
        println!(
            "get {range}: {} bytes decrypted, equal to the file",
            part.len()
        );
    }
    println!("{key}");
    Ok(())
}

/// A reqwest request for a presigned request: its URL and the headers it was signed with.
fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    presigned: &PresignedRequest,
) -> reqwest::RequestBuilder {
    let mut req = http.request(method, presigned.uri());
    for (name, value) in presigned.headers() {
        req = req.header(name, value);
    }
    req
}

async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, BoxError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(format!("GET answered {}: {}", resp.status(), resp.text().await?).into())
}

/// `(first byte, object size)` from the `Content-Range` of a 206, or `(0, length)` of a 200.
fn content_range(resp: &reqwest::Response) -> Result<(u64, u64), BoxError> {
    let Some(value) = resp.headers().get(reqwest::header::CONTENT_RANGE) else {
        let len = resp.content_length().ok_or("no Content-Length")?;
        return Ok((0, len));
    };
    // bytes FIRST-LAST/TOTAL
    let text = value.to_str()?;
    let spec = text.strip_prefix("bytes ").ok_or("bad Content-Range")?;
    let (span, total) = spec.split_once('/').ok_or("bad Content-Range")?;
    let (first, _) = span.split_once('-').ok_or("bad Content-Range")?;
    Ok((first.parse()?, total.parse()?))
}
