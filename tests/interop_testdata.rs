//! Objects written by the Go, C++ and Python OSS SDKs (and legacy V1 objects) decrypt to their
//! expected plaintext; the counter arithmetic beyond 64 GiB matches OpenSSL.

use cryptobucket_testkit as support;

use std::collections::HashMap;
use std::process::Command;

use aws_sdk_s3::primitives::ByteStream;
use cryptobucket::{
    ByteRange, ContentMaterial, CryptoBucket, ErrorKind, Keyring, MatDesc, RsaKeyPair,
};
use support::{Fault, TestServer, testdata};

fn interop(name: &str) -> std::path::PathBuf {
    testdata().join("oss-interop").join(name)
}

fn meta_of(file: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(interop(file)).unwrap();
    let map: HashMap<String, String> = serde_json::from_str(&text).unwrap();
    map.into_iter()
        .filter_map(|(k, v)| k.strip_prefix("x-oss-meta-").map(|k| (k.to_owned(), v)))
        .collect()
}

fn sdk_key() -> RsaKeyPair {
    let private = std::fs::read_to_string(interop("rsa1024_private_pkcs1.pem")).unwrap();
    let public = std::fs::read_to_string(interop("rsa1024_public_pkcs1.pem")).unwrap();
    RsaKeyPair::from_pem(Some(&public), Some(&private)).unwrap()
}

async fn setup() -> (TestServer, CryptoBucket) {
    let server = TestServer::start_with(Fault::None);
    server.create_bucket("interop").await;
    let client = server.client().await;
    let cb = CryptoBucket::new(
        client,
        "interop",
        Keyring::single(sdk_key(), MatDesc::new()),
    );
    (server, cb)
}

async fn upload(cb: &CryptoBucket, key: &str, body_file: &str, meta_file: &str) {
    cb.client()
        .put_object()
        .bucket("interop")
        .key(key)
        .set_metadata(Some(meta_of(meta_file)))
        .body(ByteStream::from(std::fs::read(interop(body_file)).unwrap()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn objects_from_go_cpp_python_sdks_decrypt() {
    let (_s, cb) = setup().await;
    let expected = std::fs::read(interop("example.jpg")).unwrap();
    assert_eq!(expected.len(), 21839);
    for sdk in ["go", "cpp", "python"] {
        upload(
            &cb,
            sdk,
            &format!("encrypted_{sdk}_example.jpg"),
            &format!("encrypted_{sdk}_example_meta.json"),
        )
        .await;
        let got = cb
            .get_object()
            .key(sdk)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap();
        assert_eq!(&got[..], &expected[..], "{sdk}");
        for r in ["37-56", "16000-", "-1000", "0-0"] {
            let r: ByteRange = r.parse().unwrap();
            let (start, len) = r.resolve(expected.len() as u64).unwrap();
            let got = cb
                .get_object()
                .key(sdk)
                .range(r)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap();
            assert_eq!(
                &got[..],
                &expected[start as usize..(start + len) as usize],
                "{sdk} {r}"
            );
        }
    }
}

#[tokio::test]
async fn legacy_v1_rsa_object_decrypts() {
    let (_s, cb) = setup().await;
    upload(
        &cb,
        "v1",
        "deprecated_encrypted_1MB_a_rsa",
        "deprecated_encrypted_1MB_a_meta_rsa.json",
    )
    .await;
    let got = cb.get_object().key("v1").send().await.unwrap();
    assert_eq!(
        got.envelope.as_ref().unwrap().version,
        cryptobucket::FormatVersion::V1
    );
    let got = got.body.collect().await.unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(got.iter().all(|&b| b == b'a'));
}

#[tokio::test]
async fn legacy_v1_kms_object_content_path() {
    // The data key is given in clear by the test data (no vendor KMS here): check the
    // content decryption with V1's counter block (15 zero bytes, then 8).
    let meta: HashMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(interop("deprecated_encrypted_1MB_a_meta_kms.json")).unwrap(),
    )
    .unwrap();
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&meta["base64-plain-key"])
        .unwrap();
    let start: u128 = meta["plain-start"].parse().unwrap();
    let m = ContentMaterial::from_slices(&key, &start.to_be_bytes()).unwrap();
    let mut data = std::fs::read(interop("deprecated_encrypted_1MB_a_kms")).unwrap();
    m.cipher_at(0).unwrap().apply(&mut data);
    assert!(data.iter().all(|&b| b == b'a'));
    // Through the bucket, without a KMS provider: a clear error, not garbage.
    let (_s, cb) = setup().await;
    upload(
        &cb,
        "v1kms",
        "deprecated_encrypted_1MB_a_kms",
        "deprecated_encrypted_1MB_a_meta_kms.json",
    )
    .await;
    let e = cb.get_object().key("v1kms").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoMatchingKey, "{e}");
}

/// Adds `blocks` to a 16-byte big-endian counter one byte at a time (independent of the
/// crate's u128 arithmetic).
fn add_bytewise(iv: [u8; 16], blocks: u64) -> [u8; 16] {
    let mut out = iv;
    let mut carry = 0u16;
    let add = blocks.to_be_bytes();
    for i in (0..16).rev() {
        let a = if i >= 8 { add[i - 8] as u16 } else { 0 };
        let s = out[i] as u16 + a + carry;
        out[i] = s as u8;
        carry = s >> 8;
    }
    out
}

fn openssl_ecb(key: &[u8; 32], block: &[u8; 16]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, block).unwrap();
    let out = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-ecb",
            "-nopad",
            "-K",
            &hex::encode(key),
            "-in",
        ])
        .arg(&input)
        .output()
        .expect("openssl must be installed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn counter_beyond_64_gib_matches_openssl() {
    let key = [0x42u8; 32];
    // Part 5000 of 20 MiB parts: offset ~97.6 GiB, 6.5e9 blocks > 2^32.
    let offset = 4999u64 * 20 * 1024 * 1024;
    for iv_hex in [
        "0001020304050607000000000c0d0e0f",
        "0001020304050607fffffffffffffff0",
        "ffffffffffffffffffffffffffffffff",
    ] {
        let iv: [u8; 16] = hex::decode(iv_hex).unwrap().try_into().unwrap();
        let m = ContentMaterial::from_parts(key, iv);
        for extra in [0u64, 5, 16, 33] {
            let off = offset + extra;
            let mut ours = vec![0u8; 48];
            m.cipher_at(off).unwrap().apply(&mut ours);
            // Expected keystream: AES-ECB of consecutive counters starting at off/16.
            let mut expected = Vec::new();
            for b in 0..4u64 {
                expected.extend(openssl_ecb(&key, &add_bytewise(iv, off / 16 + b)));
            }
            let skip = (off % 16) as usize;
            assert_eq!(ours, expected[skip..skip + 48], "iv {iv_hex} offset {off}");
        }
    }
}
