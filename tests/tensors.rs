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

/// A reader opens with one GET (its first MiB, kept), plus one of all integrity tags for an
/// object that keeps them in a sidecar: no HEAD. Reads inside that first MiB send nothing;
/// reads and the whole stream past it return the same bytes as the object.
#[tokio::test]
async fn a_reader_opens_with_one_get_and_keeps_its_first_mib() {
    let (server, cb) = server_bucket().await;
    let count = || {
        (
            server.stats.heads_in.load(Ordering::SeqCst),
            server.stats.gets_in.load(Ordering::SeqCst),
        )
    };
    // Tags of up to 4 MiB sit in the metadata; larger objects keep them in a sidecar.
    for (len, gets) in [(1000usize, 1), (3 << 20, 1), ((9 << 20) + 5, 2)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        cb.put_object()
            .key("r")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let before = count();
        let reader = cb.reader().key("r").open().await.unwrap();
        let opened = count();
        assert_eq!(opened.0 - before.0, 0, "{len}: no HEAD");
        assert_eq!(opened.1 - before.1, gets, "{len}: GETs to open");
        assert_eq!(reader.size(), len as u64);
        let inside = reader.read(3, 500).await.unwrap();
        assert!(inside[..] == data[3..503]);
        assert_eq!(
            count(),
            opened,
            "{len}: a read inside the first MiB sends nothing"
        );
        let tail = reader.read(len as u64 - 10, 100).await.unwrap();
        assert!(tail[..] == data[len - 10..]);
        let mut all = Vec::new();
        let mut pieces = std::pin::pin!(reader.stream());
        while let Some(p) = futures::TryStreamExt::try_next(&mut pieces).await.unwrap() {
            all.extend_from_slice(&p);
        }
        assert!(all == data, "{len}: the stream");
    }
    // An empty object (nothing to GET a range of) opens too.
    cb.put_object()
        .key("e")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    let reader = cb.reader().key("e").open().await.unwrap();
    assert_eq!(reader.size(), 0);
    let mut pieces = std::pin::pin!(reader.stream());
    assert!(
        futures::TryStreamExt::try_next(&mut pieces)
            .await
            .unwrap()
            .is_none()
    );
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

    // Listing takes one ranged GET of the header, none for our object: the GET that opened
    // its reader brought the first MiB along (and all its integrity tags, in one GET of the
    // sidecar).
    for (reader, gets) in readers.iter().zip([0, 1, 1]) {
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
    // in-process store ignores If-Match; the pin catches it). The first MiB, which came with
    // the GET that opened the reader, stays the pinned version's.
    let reader = cb.reader().key("ours.safetensors").open().await.unwrap();
    let start = reader.read(0, 100).await.unwrap();
    cb.put_object()
        .key("ours.safetensors")
        .body(PutBody::from_bytes(vec![0u8; reader.size() as usize]))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.read(0, 100).await.unwrap(), start);
    assert!(start.iter().any(|&b| b != 0));
    let e = reader.read(2 << 20, 100).await.unwrap_err();
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

/// Drives `fut` until `parts` parts are reported done, then drops it (as Ctrl-C or a lost
/// connection would); panics if it finishes first.
async fn stop_after_parts<T: std::fmt::Debug>(
    fut: impl std::future::Future<Output = T>,
    done: &std::sync::atomic::AtomicU64,
    parts: u64,
) {
    tokio::select! {
        r = fut => panic!("finished before it was stopped: {r:?}"),
        _ = async {
            while done.load(Ordering::SeqCst) < parts {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        } => {}
    }
}

fn part_counter() -> (
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    cryptobucket::progress::ProgressListener,
) {
    use cryptobucket::progress::{ProgressEvent, ProgressListener};
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = done.clone();
    let listener = ProgressListener::new(move |p| {
        if let ProgressEvent::PartDone { .. } = p.event {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (done, listener)
}

/// veTurboIO files written into and read from a bucket by the transfer engine: uploads of a
/// local file (parallel parts, resumed after an interruption, the interrupted run's header
/// kept), a conversion of one of our objects streamed into a veTurboIO object, and resumable
/// downloads. Every stored object equals, byte for byte, the file the reference layout
/// (`cryptography`) made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veturbo_files_move_through_the_engine_like_the_reference() {
    use cryptobucket::PartSize;
    use cryptobucket::veturbo::{export_to_object, upload_file};
    let f = fixture(5_000_000); // about 20 MB
    let plain_path = f.dir.join("model.safetensors");
    let plain = std::fs::read(&plain_path).unwrap();
    let headered = std::fs::read(f.dir.join("model.vt-header")).unwrap();
    let headerless = std::fs::read(f.dir.join("model.vt-env")).unwrap();
    let (server, cb) = server_bucket().await;
    let parts_in = || server.stats.parts_in.load(Ordering::Relaxed);
    let cps = tempfile::tempdir().unwrap();
    let part = 5u64 << 20;
    let parts = (HEADER_LEN + plain.len() as u64).div_ceil(part);
    assert!(parts >= 4, "{parts}");

    // Headered, interrupted after two parts, continued by a run that would write another
    // header (a later timestamp): the interrupted run's header and key are kept.
    let h = VeturboHeader::parse(&headered).unwrap();
    let (done, listener) = part_counter();
    let first = upload_file(&cb, &plain_path)
        .key("vt/headered")
        .encryption(f.header_key.clone(), Some(h.clone()))
        .part_size(PartSize::Target(part))
        .concurrency(2)
        .checkpoint_dir(cps.path())
        .progress(listener)
        .send();
    stop_after_parts(first, &done, 2).await;
    let mut later = h.clone();
    later.file_timestamp += 3600;
    let before = parts_in();
    // The rerun announces what it takes over in its `Started` event (the CLI prints it).
    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = started.clone();
    let announce = cryptobucket::progress::ProgressListener::new(move |p| {
        if let cryptobucket::progress::ProgressEvent::Started { resumed_bytes, .. } = p.event {
            seen.lock().unwrap().push(resumed_bytes);
        }
    });
    let out = upload_file(&cb, &plain_path)
        .key("vt/headered")
        .encryption(f.header_key.clone(), Some(later))
        .key_source(f.header_key.clone())
        .part_size(PartSize::Target(part))
        .checkpoint_dir(cps.path())
        .progress(announce)
        .send()
        .await
        .unwrap();
    assert_eq!(*started.lock().unwrap(), vec![out.resumed_bytes], "{out:?}");
    // Parts count once the checkpoint holds them (written behind the transfer, so the last
    // one reported may be missing).
    assert!(out.resumed_bytes >= part - HEADER_LEN, "{out:?}");
    let resumed_parts = (out.resumed_bytes + HEADER_LEN) / part;
    assert_eq!(
        parts_in() - before,
        parts - resumed_parts,
        "the rerun resent parts"
    );
    assert_eq!(out.header.as_ref(), Some(&h));
    let (raw, _) = support::raw_object(&cb, "vt/headered").await;
    assert!(
        raw == headered,
        "the stored object differs from the reference file"
    );

    // Without a key source the other header cannot be continued: it starts over, and says so.
    let (done, listener) = part_counter();
    let first = upload_file(&cb, &plain_path)
        .key("vt/restarted")
        .encryption(f.header_key.clone(), Some(h.clone()))
        .part_size(PartSize::Target(part))
        .concurrency(1)
        .checkpoint_dir(cps.path())
        .progress(listener)
        .send();
    stop_after_parts(first, &done, 1).await;
    let mut later = h.clone();
    later.file_timestamp += 1;
    let out = upload_file(&cb, &plain_path)
        .key("vt/restarted")
        .encryption(f.header_key.clone(), Some(later.clone()))
        .part_size(PartSize::Target(part))
        .checkpoint_dir(cps.path())
        .send()
        .await
        .unwrap();
    assert!(out.restarted.is_some() && out.resumed_bytes == 0, "{out:?}");
    let (raw, _) = support::raw_object(&cb, "vt/restarted").await;
    assert_eq!(VeturboHeader::parse(&raw).unwrap(), later);
    assert!(raw[HEADER_LEN as usize..] == headered[HEADER_LEN as usize..]);

    // Headerless with the environment key.
    let out = upload_file(&cb, &plain_path)
        .key("vt/env")
        .encryption(f.env_key.clone(), None)
        .part_size(PartSize::Target(part))
        .checkpoint_dir(cps.path())
        .send()
        .await
        .unwrap();
    assert_eq!(out.parts as u64, (plain.len() as u64).div_ceil(part));
    let (raw, _) = support::raw_object(&cb, "vt/env").await;
    assert!(raw == headerless);
    assert_eq!(
        std::fs::read_dir(cps.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("json".as_ref()))
            .count(),
        0,
        "no checkpoint left behind"
    );

    // One of our objects, streamed into a veTurboIO object (16 MiB parts: a multipart upload).
    cb.put_object()
        .key("ours.safetensors")
        .body(PutBody::from_path(&plain_path).await.unwrap())
        .send()
        .await
        .unwrap();
    let before = parts_in();
    let n = export_to_object(&cb, "ours.safetensors", &f.env_key, None, "vt/exported")
        .await
        .unwrap();
    assert_eq!(n, plain.len() as u64);
    assert_eq!(parts_in() - before, 2);
    let (raw, _) = support::raw_object(&cb, "vt/exported").await;
    assert!(raw == headerless);

    // Resumable downloads of the reference files: interrupted, then continued.
    let out_dir = tempfile::tempdir().unwrap();
    for (name, key) in [
        ("model.vt-header", &f.header_key),
        ("model.vt-env", &f.env_key),
    ] {
        put_raw(
            &cb,
            name,
            std::fs::read(f.dir.join(name)).unwrap(),
            HashMap::new(),
        )
        .await;
        let dest = out_dir.path().join(name);
        let (done, listener) = part_counter();
        let first = cb
            .download_file()
            .key(name)
            .path(&dest)
            .part_size(PartSize::Target(part))
            .concurrency(2)
            .checkpoint_dir(cps.path())
            .veturbo(key.clone())
            .progress(listener)
            .send();
        stop_after_parts(first, &done, 2).await;
        assert!(!dest.exists());
        let got = cb
            .download_file()
            .key(name)
            .path(&dest)
            .part_size(PartSize::Target(part))
            .checkpoint_dir(cps.path())
            .veturbo(key.clone())
            .send()
            .await
            .unwrap();
        assert!(got.resumed_bytes >= part, "{name}: {got:?}");
        assert_eq!(got.size, plain.len() as u64);
        assert!(
            std::fs::read(&dest).unwrap() == plain,
            "{name} decrypts wrongly"
        );
    }
    // A wrong key is refused at the checkpoint... and an envelope download of the same
    // destination never mixes with a veTurboIO one (separate checkpoints).
    let wrong = VeturboKey::new(&[7; 16], [1; 16]).unwrap();
    let dest = out_dir.path().join("wrong");
    let got = cb
        .download_file()
        .key("model.vt-env")
        .path(&dest)
        .checkpoint_dir(cps.path())
        .veturbo(wrong)
        .send()
        .await
        .unwrap();
    assert!(
        std::fs::read(&dest).unwrap() != plain,
        "no MAC: garbage, as the format allows"
    );
    assert_eq!(got.size, plain.len() as u64);
}
