//! Test support shared by the tests, examples and benchmarks of cryptobucket: the in-process
//! S3 server (s3s-fs with fault and throttling switches and traffic counters), the TCP fault
//! proxy, moto (a local AWS KMS) and the local Alibaba Cloud and Volcengine KMS servers, plus
//! small helpers. A workspace member, so nothing is included by `#[path]`.

pub mod aliyun_kms;
pub mod baseline;
pub mod garage;
pub mod local_http;
pub mod moto;
pub mod proxy;
pub mod server;
pub mod volc_kms;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cryptobucket::{CryptoBucket, Keyring, MatDesc, RsaKeyPair};

pub use server::{Fault, TestServer};

/// The checkpoint files in `dir` (none when it does not exist).
pub fn checkpoints_in(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Hidden partial download files (`.NAME.cryptobucket-NONCE.partial`) in `dir`.
pub fn partial_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("cryptobucket") && n.ends_with(".partial"))
        })
        .collect()
}

/// The repository's root directory (this crate lives in `testkit/` below it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The project's test data directory.
pub fn testdata() -> PathBuf {
    repo_root().join("testdata")
}

/// A fixed RSA-2048 key pair from `testdata/keys` (PKCS#8 private, SPKI public).
pub fn key_pem(name: &str) -> (String, String) {
    let dir = testdata().join("keys").join(name);
    (
        std::fs::read_to_string(dir.join("private.pem")).unwrap(),
        std::fs::read_to_string(dir.join("public.pem")).unwrap(),
    )
}

/// An RSA key pair from `testdata/keys/NAME`.
pub fn rsa(name: &str) -> RsaKeyPair {
    let (private, public) = key_pem(name);
    RsaKeyPair::from_pem(Some(&public), Some(&private)).unwrap()
}

/// A server with bucket `bkt`, and a CryptoBucket over it with one key.
pub async fn bucket_with(fault: Fault, keyring: Keyring) -> (TestServer, CryptoBucket) {
    let server = TestServer::start_with(fault);
    server.create_bucket("bkt").await;
    let client = server.client().await;
    (server, CryptoBucket::new(client, "bkt", keyring))
}

/// A keyring of testdata key `a` with matdesc {"k":"a"}.
pub fn keyring_a() -> Keyring {
    Keyring::single(rsa("a"), MatDesc::new().with("k", "a"))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The stored (encrypted) bytes and metadata of an object, fetched with the plain S3 client.
pub async fn raw_object(cb: &CryptoBucket, key: &str) -> (Vec<u8>, HashMap<String, String>) {
    let out = cb
        .client()
        .get_object()
        .bucket(cb.bucket())
        .key(key)
        .send()
        .await
        .unwrap();
    let meta = out.metadata().cloned().unwrap_or_default();
    (out.body.collect().await.unwrap().to_vec(), meta)
}

/// AES-256-CTR from RustCrypto (independent of the crate's AWS-LC cipher): encrypts `data` as
/// the bytes at plaintext `offset` of a stream whose first counter block is `iv`.
pub fn reference_ctr(cek: &[u8; 32], iv: &[u8; 16], offset: u64, data: &mut [u8]) {
    use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(cek.into(), iv.into());
    c.seek(offset);
    c.apply_keystream(data);
}

/// Writes `key` in bucket `bkt` of the server at `endpoint` with `keyring`, from a thread and
/// runtime of its own, and blocks until the store has it: for callbacks (progress listeners,
/// server hooks) that change an object at an exact point of another transfer.
pub fn put_blocking(endpoint: &str, keyring: Keyring, key: &str, data: Vec<u8>) {
    let (endpoint, key) = (endpoint.to_owned(), key.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = cryptobucket::ClientOptions::new()
                .endpoint_url(&endpoint)
                .region("us-east-1")
                .force_path_style(true)
                .static_credentials(server::ACCESS_KEY, server::SECRET_KEY)
                .build()
                .await;
            CryptoBucket::new(client, "bkt", keyring)
                .put_object()
                .key(key)
                .body(data)
                .send()
                .await
                .unwrap();
        });
    })
    .join()
    .unwrap();
}

/// Stores `body` under `key` in bucket `bkt` as it is, with exactly `meta` as user metadata
/// (no encryption): tampered copies, planted objects.
pub async fn put_raw(cb: &CryptoBucket, key: &str, body: Vec<u8>, meta: HashMap<String, String>) {
    cb.client()
        .put_object()
        .bucket("bkt")
        .key(key)
        .set_metadata(Some(meta))
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .unwrap();
}

/// A size on the benchmarks' command lines: plain bytes or with `k`/`KiB`, `m`/`MiB`,
/// `g`/`GiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other}")),
    };
    n.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("{s}: {e}"))
}

/// Fills `path` with `size` bytes of AES-CTR keystream (incompressible, fast to make): the
/// benchmarks' source files.
pub fn make_file(path: &std::path::Path, size: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let m = cryptobucket::ContentMaterial::from_parts([5; 32], [6; 16]);
    let mut c = m.cipher_at(0).map_err(std::io::Error::other)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        c.apply(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

/// The Python the interop tests run their peers with: `CRYPTOBUCKET_PYTHON`, else the
/// repository's `.venv` (made by `scripts/test.sh`). Missing, it fails the test.
pub fn python() -> PathBuf {
    let p = std::env::var_os("CRYPTOBUCKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "the interop tests need the Python of tests/interop/requirements.txt at {}; run \
         ./scripts/test.sh (it creates .venv) or set CRYPTOBUCKET_PYTHON",
        p.display()
    );
    p
}

/// Runs the peer script `script` (relative to the repository) with one JSON request on stdin
/// and returns its JSON answer.
pub fn python_peer(script: &str, request: &serde_json::Value) -> serde_json::Value {
    let mut child = std::process::Command::new(python())
        .arg(repo_root().join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), request).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the Python script `script` (relative to the repository) with `args`; returns its stdout
/// and fails the test if it fails.
pub fn run_python(script: &str, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
