//! Test support shared by the tests, examples and benchmarks of cryptobucket: the in-process
//! S3 server (s3s-fs with fault and throttling switches and traffic counters), the TCP fault
//! proxy, moto (a local AWS KMS) and the local Alibaba Cloud KMS, plus small helpers. A
//! workspace member, so nothing is included by `#[path]`.

pub mod aliyun_kms;
pub mod moto;
pub mod proxy;
pub mod server;

use std::collections::HashMap;
use std::path::PathBuf;

use cryptobucket::{CryptoBucket, Keyring, MatDesc, RsaKeyPair};

pub use server::{Fault, TestServer};

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
