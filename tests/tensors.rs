//! Tensor-level loading of safetensors files in a bucket, in each format we read: our objects
//! and veTurboIO files (headered and headerless). The files come from the PyPI `safetensors`
//! package, each tensor's bytes from numpy, the veTurboIO files from `cryptography` following
//! the published layout (`tests/interop/tensors_peer.py`; no veTurboIO peer can run here), and
//! the subset files we write are loaded back by `safetensors`.

use cryptobucket_testkit as support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cryptobucket::safetensors::SafetensorsIndex;
use cryptobucket::veturbo::{
    HEADER_LEN, VeturboDecryptor, VeturboEncryptor, VeturboHeader, VeturboKey, VeturboMode,
};
use cryptobucket::{CryptoBucket, ErrorKind, Keyring, MatDesc, PutBody};
use serde_json::{Value, json};
use sha2::Digest as _;
use support::{Fault, TestServer, put_raw, rsa};
use tokio::io::AsyncReadExt as _;

fn peer(req: Value) -> Value {
    support::python_peer("tests/interop/tensors_peer.py", &req)
}

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn key16(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn iv16(v: &Value) -> [u8; 16] {
    key16(v).try_into().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    made: Value,
    header_key: VeturboKey,
    env_key: VeturboKey,
}

/// The peer's files; `big` f32 elements in the one large tensor.
fn fixture(big: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let made = peer(json!({"op": "make", "dir": dir.path(), "big": big}));
    let header_key =
        VeturboKey::new(&key16(&made["header_key"]), iv16(&made["header_iv"])).unwrap();
    let env_key = VeturboKey::new(&key16(&made["env_key"]), iv16(&made["env_iv"])).unwrap();
    Fixture {
        dir: dir.path().to_owned(),
        _dir: dir,
        made,
        header_key,
        env_key,
    }
}

async fn server_bucket() -> (TestServer, CryptoBucket) {
    let server = TestServer::start_with(Fault::None);
    server.create_bucket("bkt").await;
    let cb = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(rsa("a"), MatDesc::new().with("k", "a")),
    );
    (server, cb)
}

/// Uploads the three encodings of the model: ours, veTurboIO with header, veTurboIO with env
/// key (the last two stored as the peer made them).
async fn upload_all(f: &Fixture, cb: &CryptoBucket) {
    cb.put_object()
        .key("ours.safetensors")
        .body(
            PutBody::from_path(f.dir.join("model.safetensors"))
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for name in ["model.vt-header", "model.vt-env"] {
        let body = std::fs::read(f.dir.join(name)).unwrap();
        put_raw(cb, name, body, HashMap::new()).await;
    }
}

#[tokio::test]
async fn tensors_by_name_from_every_format_equal_numpys() {
    // ~10 MiB of float32 in one tensor: fetched in several parallel pieces.
    let f = fixture(2_700_000);
    let (server, cb) = server_bucket().await;
    upload_all(&f, &cb).await;
    let expected = f.made["tensors"].as_object().unwrap();
    let readers = [
        cb.reader().key("ours.safetensors").open().await.unwrap(),
        cb.reader()
            .key("model.vt-header")
            .veturbo(f.header_key.clone())
            .open()
            .await
            .unwrap(),
        cb.reader()
            .key("model.vt-env")
            .veturbo(f.env_key.clone())
            .open()
            .await
            .unwrap(),
    ];
    assert!(readers[0].veturbo_header().is_none());
    let h = readers[1].veturbo_header().unwrap();
    assert_eq!(h.mode, VeturboMode::Ctr128);
    assert_eq!(h.meta_data_key, f.made["header"]["meta_data_key"]);
    assert_eq!(h.file_timestamp, 1_732_406_400);
    assert!(readers[2].veturbo_header().is_none());

    // Listing takes one ranged GET of the header (the reader of our 10 MiB object fetched all
    // its integrity tags when it opened, in one GET of the sidecar).
    for (reader, gets) in readers.iter().zip([1, 1, 1]) {
        assert_eq!(
            reader.size(),
            f.made["size"].as_u64().unwrap(),
            "{}",
            reader.key()
        );
        let before = server.stats.gets_in.load(Ordering::Relaxed);
        let index = SafetensorsIndex::read(reader).await.unwrap();
        assert_eq!(
            server.stats.gets_in.load(Ordering::Relaxed) - before,
            gets,
            "{}: GETs to list the tensors",
            reader.key()
        );
        assert_eq!(index.tensors().len(), expected.len());
        assert_eq!(
            index.metadata().unwrap().get("source").map(String::as_str),
            Some("tensors_peer")
        );
        for t in index.tensors() {
            let want = &expected[&t.name];
            assert_eq!(t.dtype, want["dtype"], "{}", t.name);
            assert_eq!(json!(t.shape), want["shape"], "{}", t.name);
            assert_eq!(t.len(), want["len"].as_u64().unwrap(), "{}", t.name);
        }
        assert!(
            index
                .tensors()
                .iter()
                .filter(|t| t.range.start % 16 != 0)
                .count()
                >= 3,
            "the file must exercise tensors at unaligned offsets"
        );

        // Every tensor, fetched by name, equals numpy's bytes.
        let all = index.tensors().to_vec();
        let got = index.fetch(reader, &all).await.unwrap();
        for (t, bytes) in all.iter().zip(&got) {
            assert_eq!(
                sha(bytes),
                expected[&t.name]["sha256"],
                "{} of {}",
                t.name,
                reader.key()
            );
        }

        // A pattern selects one layer; the GETs fetch about its bytes only.
        let layer0 = index.select(&["layers.0.*"]).unwrap();
        let names: Vec<_> = layer0.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("layers.0.")));
        let got = index.fetch(reader, &layer0).await.unwrap();
        for (t, bytes) in layer0.iter().zip(&got) {
            assert_eq!(sha(bytes), expected[&t.name]["sha256"], "{}", t.name);
        }
        let e = index.select(&["layers.9.*"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);

        // A subset file that the safetensors package loads, holding just those tensors.
        let subset = f.dir.join(format!("{}.subset.safetensors", reader.key()));
        let picked = index
            .select(&["layers.0.*", "layers.1.big", "head.scale"])
            .unwrap();
        index.write_subset(reader, &picked, &subset).await.unwrap();
        let loaded = peer(json!({"op": "load", "path": subset}));
        let loaded_t = loaded["tensors"].as_object().unwrap();
        assert_eq!(loaded_t.len(), 6);
        for (name, t) in loaded_t {
            assert_eq!(
                t,
                &expected[name],
                "{name} in the subset of {}",
                reader.key()
            );
        }
        assert_eq!(loaded["metadata"], f.made["metadata"]);
    }
}

#[tokio::test]
async fn veturbo_files_decrypt_and_encrypt_like_the_reference() {
    let f = fixture(5_000);
    let plain = std::fs::read(f.dir.join("model.safetensors")).unwrap();
    let headered = std::fs::read(f.dir.join("model.vt-header")).unwrap();
    let headerless = std::fs::read(f.dir.join("model.vt-env")).unwrap();

    // Streams decrypt both files to the original.
    for (file, key) in [(&headered, &f.header_key), (&headerless, &f.env_key)] {
        let (mut dec, header) = VeturboDecryptor::open(&file[..], key).await.unwrap();
        assert_eq!(
            header.is_some(),
            file.len() as u64 > HEADER_LEN + plain.len() as u64 - 1
        );
        let mut out = Vec::new();
        dec.read_to_end(&mut out).await.unwrap();
        assert!(out == plain);
    }

    // Our encryptor writes byte for byte what the reference layout gives, with and without
    // the header (same key, IV, meta_data_key and timestamp).
    let h = VeturboHeader::parse(&headered).unwrap();
    let mut enc = VeturboEncryptor::new(&plain[..], &f.header_key, Some(&h)).unwrap();
    let mut ours = Vec::new();
    enc.read_to_end(&mut ours).await.unwrap();
    assert!(ours == headered, "headered file differs from the reference");
    let mut enc = VeturboEncryptor::new(&plain[..], &f.env_key, None).unwrap();
    let mut ours = Vec::new();
    enc.read_to_end(&mut ours).await.unwrap();
    assert!(
        ours == headerless,
        "headerless file differs from the reference"
    );

    // veTurboIO's environment variables.
    // SAFETY: this test binary's tests do not read these variables concurrently.
    unsafe {
        std::env::set_var("VETURBOIO_KEY", f.made["env_key"].as_str().unwrap());
        std::env::set_var("VETURBOIO_IV", f.made["env_iv"].as_str().unwrap());
    }
    let from_env = VeturboKey::from_env().unwrap();
    assert_eq!(from_env.iv(), f.env_key.iv());
    assert_eq!(from_env.mode(), VeturboMode::Ctr128);

    // Typed errors: a CTR-256 key for a CTR-128 header, a header that is not JSON, an
    // unknown mode.
    let k256 = VeturboKey::new(&[1; 32], [0; 16]).unwrap();
    let e = VeturboDecryptor::open(&headered[..], &k256)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey, "{e}");
    let mut broken = headered.clone();
    broken[16] = b'[';
    let e = VeturboDecryptor::open(&broken[..], &f.header_key)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{e}");
    let mut unknown = headered.clone();
    let at = 16 + b"{\"mode\": \"CTR-".len();
    unknown[at..at + 3].copy_from_slice(b"512");
    let e = VeturboDecryptor::open(&unknown[..], &f.header_key)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedAlgorithm, "{e}");
    let e = VeturboDecryptor::open(&headered[..1000], &f.header_key)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{e}");
}

#[tokio::test]
async fn hostile_headers_changed_objects_and_strict_mode() {
    // ~8 MB: our object keeps its integrity tags in a sidecar.
    let f = fixture(2_000_000);
    let (_server, cb) = server_bucket().await;
    upload_all(&f, &cb).await;

    // Headers that lie: a length past the object, past the limit, overlapping tensors.
    let make = |header: &str, data: usize| {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.resize(v.len() + data, 7);
        v
    };
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let mut over_limit = (200_000_000u64).to_le_bytes().to_vec();
    over_limit.extend_from_slice(&[b' '; 64]);
    let cases = [
        ("huge", huge),
        ("over-limit", over_limit),
        (
            "outside",
            make(
                r#"{"a":{"dtype":"U8","shape":[64],"data_offsets":[0,64]}}"#,
                10,
            ),
        ),
        (
            "overlap",
            make(
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}"#,
                12,
            ),
        ),
        ("short", vec![1, 2, 3]),
    ];
    for (name, body) in cases {
        cb.put_object()
            .key(name)
            .body(PutBody::from_bytes(body))
            .send()
            .await
            .unwrap();
        let reader = cb.reader().key(name).open().await.unwrap();
        let e = SafetensorsIndex::read(&reader).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{name}: {e}");
    }

    // Tampering under the reader's verification: a body byte of our (sidecar-tagged) object,
    // and one tag in its sidecar. Ranges that touch them fail; others still read.
    let (body, meta) = support::raw_object(&cb, "ours.safetensors").await;
    let mut bad_body = body.clone();
    bad_body[5 << 20] ^= 1;
    put_raw(&cb, "tampered", bad_body, meta.clone()).await;
    let (side, side_meta) = support::raw_object(&cb, "ours.safetensors.cbtags").await;
    put_raw(&cb, "tampered.cbtags", side.clone(), side_meta.clone()).await;
    let reader = cb.reader().key("tampered").open().await.unwrap();
    let e = reader.read(5 << 20, 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    assert_eq!(reader.read(0, 100).await.unwrap().len(), 100);
    put_raw(&cb, "tags-changed", body, meta).await;
    let mut bad_side = side;
    let tag_of_chunk_3 = 32 + 3 * 16;
    bad_side[tag_of_chunk_3] ^= 1;
    put_raw(&cb, "tags-changed.cbtags", bad_side, side_meta).await;
    let reader = cb.reader().key("tags-changed").open().await.unwrap();
    let e = reader
        .read_ranges(&[(0, 100), (3 << 20, 4 << 20)])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");

    // The object is replaced after the reader opened it: reads refuse the new version (the
    // in-process store ignores If-Match; the pin catches it).
    let reader = cb.reader().key("ours.safetensors").open().await.unwrap();
    cb.put_object()
        .key("ours.safetensors")
        .body(PutBody::from_bytes(vec![0u8; reader.size() as usize]))
        .send()
        .await
        .unwrap();
    let e = reader.read(0, 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");
    let vt = cb
        .reader()
        .key("model.vt-env")
        .veturbo(f.env_key.clone())
        .open()
        .await
        .unwrap();
    put_raw(&cb, "model.vt-env", vec![1u8; 50], HashMap::new()).await;
    let e = vt.read(0, 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Changed, "{e}");

    // Strict mode: veTurboIO files carry nothing to verify.
    let strict = CryptoBucket::builder()
        .client(cb.client().clone())
        .bucket("bkt")
        .keyring(Keyring::single(rsa("a"), MatDesc::new().with("k", "a")))
        .strict(true)
        .build()
        .unwrap();
    let e = strict
        .reader()
        .key("model.vt-header")
        .veturbo(f.header_key.clone())
        .open()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingIntegrity, "{e}");
}
