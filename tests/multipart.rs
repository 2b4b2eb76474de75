//! The low-level encrypted multipart API against a real S3 server (in-process s3s-fs).

use cryptobucket_testkit as support;

use cryptobucket::multipart::{CompletedPart, MultipartUpload, PartSize};
use cryptobucket::{ErrorKind, Keyring, MatDesc};
use support::{Fault, bucket_with, keyring_a, pattern, raw_object, reference_ctr, rsa};

const MIB: u64 = 1024 * 1024;
const PART: u64 = 5 * MIB;

#[tokio::test]
async fn parts_in_any_order_and_concurrently_equal_single_stream_ctr() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern((3 * PART + 1234) as usize, 1);
    let upload = cb
        .create_multipart_upload()
        .key("mp")
        .data_size(data.len() as u64)
        .part_size(PartSize::Target(PART))
        .content_type("application/x-checkpoint")
        .metadata("step", "42")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.part_count(), Some(4));
    assert_eq!(upload.part_range(4).unwrap(), (3 * PART, 1234));

    // All four parts at once, started last-to-first; part 2 twice (a retry must be identical).
    let mut tasks = Vec::new();
    for n in [4u32, 3, 2, 1, 2] {
        let upload = upload.clone();
        let (off, len) = upload.part_range(n).unwrap();
        let body = data[off as usize..(off + len) as usize].to_vec();
        tasks.push(tokio::spawn(
            async move { upload.upload_part(n, body).await },
        ));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap().unwrap());
    }
    let retried: Vec<&CompletedPart> = parts.iter().filter(|p| p.part_number == 2).collect();
    assert_eq!(
        retried[0].e_tag, retried[1].e_tag,
        "a re-sent part must be byte-identical (same key, same counter)"
    );
    parts.pop();
    let listed = upload.list_parts().await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.part_number).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(listed[3].size, 1234);
    let done = upload.complete(parts).await.unwrap();
    assert_eq!(done.size, data.len() as u64);

    let got = cb.get_object().key("mp").send().await.unwrap();
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/x-checkpoint")
    );
    assert_eq!(got.metadata.get("step").map(String::as_str), Some("42"));
    let env = got.envelope.clone().unwrap();
    assert_eq!(env.data_size, Some(data.len() as u64));
    assert_eq!(env.part_size, Some(PART));
    assert_eq!(&got.body.collect().await.unwrap()[..], &data[..]);

    // The stored bytes are one AES-256-CTR stream over the whole plaintext (RustCrypto here).
    let (stored, meta) = raw_object(&cb, "mp").await;
    assert_eq!(
        meta["client-side-encryption-data-size"],
        data.len().to_string()
    );
    assert_eq!(meta["client-side-encryption-part-size"], PART.to_string());
    let material = cb.keyring().unwrap(&env).await.unwrap();
    let mut expect = data.clone();
    reference_ctr(material.cek(), material.iv(), 0, &mut expect);
    assert!(
        stored == expect,
        "multipart ciphertext differs from single-stream CTR"
    );
}

#[tokio::test]
async fn file_range_parts() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern((2 * PART + 77) as usize, 2);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let upload = cb
        .create_multipart_upload()
        .key("f")
        .data_size(data.len() as u64)
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    let mut parts = Vec::new();
    for n in 1..=upload.part_count().unwrap() {
        let (off, len) = upload.part_range(n).unwrap();
        let body = cryptobucket::PutBody::from_file_range(file.path(), off, len)
            .await
            .unwrap();
        parts.push(upload.upload_part(n, body).await.unwrap());
    }
    upload.complete(parts).await.unwrap();
    let got = cb.get_object().key("f").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap()[..], &data[..]);
}

#[test]
fn part_size_rules() {
    let e = |p: PartSize, size: Option<u64>| p.resolve(size).unwrap_err();
    // Auto: 8 MiB, growing in whole MiB to stay within 10,000 parts; always a multiple of 16.
    assert_eq!(PartSize::Auto.resolve(Some(0)).unwrap(), 8 * MIB);
    assert_eq!(PartSize::Auto.resolve(Some(1 << 30)).unwrap(), 8 * MIB);
    for size in [
        80 * 1024 * MIB,
        100_000_000_000,
        1 << 40,
        5 << 40,
        10_000 * 5 * 1024 * MIB,
    ] {
        let p = PartSize::Auto.resolve(Some(size)).unwrap();
        assert_eq!(p % 16, 0, "{size}");
        assert!(size.div_ceil(p) <= 10_000, "{size}: {p}");
        assert!((PART..=5 * 1024 * MIB).contains(&p), "{size}: {p}");
    }
    assert_eq!(
        PartSize::Auto.resolve(Some(100_000_000_000)).unwrap(),
        10 * MIB
    );
    assert_eq!(PartSize::Auto.resolve(None).unwrap(), 16 * MIB);
    // Explicit sizes are validated, each rule with its own message.
    assert_eq!(PartSize::Target(PART).resolve(Some(1)).unwrap(), PART);
    let m = e(PartSize::Target(PART + 8), Some(1)).to_string();
    assert!(
        m.contains("multiple of 16") && m.contains(&(PART + 16).to_string()),
        "{m}"
    );
    assert!(
        e(PartSize::Target(PART - 16), None)
            .to_string()
            .contains("5 MiB")
    );
    assert!(
        e(PartSize::Target(5 * 1024 * MIB + 16), None)
            .to_string()
            .contains("5 GiB")
    );
    let m = e(PartSize::Target(PART), Some(10_001 * PART)).to_string();
    assert!(m.contains("10001 parts") && m.contains("at least"), "{m}");
    assert_eq!(
        e(PartSize::Auto, Some(10_000 * 5 * 1024 * MIB + 1)).kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn bad_parts_are_refused_before_sending() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let upload = cb
        .create_multipart_upload()
        .key("bad")
        .data_size(PART + 10)
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    let kind = |r: cryptobucket::Result<CompletedPart>| r.unwrap_err().kind();
    assert_eq!(
        kind(upload.upload_part(0, vec![0; 10]).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(upload.upload_part(10_001, vec![0; 10]).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(upload.upload_part(3, vec![0; 10]).await),
        ErrorKind::InvalidInput
    );
    // Part 1 must be a whole part, part 2 exactly the remainder.
    assert_eq!(
        kind(upload.upload_part(1, vec![0; 10]).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(upload.upload_part(2, vec![0; 11]).await),
        ErrorKind::InvalidInput
    );
    let p2 = upload.upload_part(2, vec![0; 10]).await.unwrap();
    // Completing without part 1 is refused locally.
    let err = upload.complete(vec![p2.clone()]).await.unwrap_err();
    assert!(err.to_string().contains("part 1 is missing"), "{err}");
    // Metadata that would shadow the envelope is refused.
    let err = cb
        .create_multipart_upload()
        .key("x")
        .metadata("client-side-encryption-key", "evil")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = cb
        .create_multipart_upload()
        .key("x")
        .part_size(PartSize::Target(PART + 1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn abort_and_vanished_upload() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let upload = cb
        .create_multipart_upload()
        .key("gone")
        .data_size(PART + 10)
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    upload.upload_part(2, vec![1; 10]).await.unwrap();
    upload.abort().await.unwrap();
    let err = upload.list_parts().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("no longer exists"), "{err}");
    // (A small part: a server may answer before reading a large body, resetting the upload.)
    let err = upload.upload_part(2, vec![1; 10]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = cb.head_object().key("gone").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn resume_from_envelope_in_another_process() {
    let (server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern((PART + 99) as usize, 3);
    let upload = cb
        .create_multipart_upload()
        .key("r")
        .data_size(data.len() as u64)
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    let p1 = upload
        .upload_part(1, data[..PART as usize].to_vec())
        .await
        .unwrap();
    let (id, env) = (upload.upload_id().to_owned(), upload.envelope().clone());
    let record = upload.integrity_record().cloned();
    assert!(record.is_some(), "integrity data is on by default");
    drop(upload);

    // Someone without the key cannot pick the upload up.
    let other = cryptobucket::CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(rsa("b"), MatDesc::new().with("k", "a")),
    );
    let err = MultipartUpload::resume(&other, "r", &id, env.clone(), record.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CommitmentMismatch);

    let again = MultipartUpload::resume(&cb, "r", &id, env, record)
        .await
        .unwrap();
    assert_eq!(again.part_count(), Some(2));
    let p2 = again
        .upload_part(2, data[PART as usize..].to_vec())
        .await
        .unwrap();
    again.complete(vec![p1, p2]).await.unwrap();
    let got = cb.get_object().key("r").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap()[..], &data[..]);
}

#[tokio::test]
async fn unknown_data_size() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern((PART + 5) as usize, 4);
    let upload = cb
        .create_multipart_upload()
        .key("u")
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.part_count(), None);
    let p1 = upload
        .upload_part(1, data[..PART as usize].to_vec())
        .await
        .unwrap();
    let p2 = upload
        .upload_part(2, data[PART as usize..].to_vec())
        .await
        .unwrap();
    // Too long for a part: refused.
    let err = upload
        .upload_part(3, vec![0; PART as usize + 1])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    upload.complete(vec![p2, p1]).await.unwrap();
    let got = cb.get_object().key("u").send().await.unwrap();
    let env = got.envelope.clone().unwrap();
    assert_eq!((env.data_size, env.part_size), (None, Some(PART)));
    assert_eq!(&got.body.collect().await.unwrap()[..], &data[..]);
}

/// Part 5,000 of 20 MiB parts starts at 104,836,464,640 bytes (~97.6 GiB), far past the 64 GiB
/// where a 32-bit block counter would wrap. Upload only that part through the real part path,
/// take the bytes the server stored for it, and compare the stored bytes with RustCrypto's
/// AES-CTR seeked to the same offset.
#[tokio::test]
async fn counter_of_part_past_64_gib_matches_independent_ctr() {
    let (server, cb) = bucket_with(Fault::None, keyring_a()).await;
    const PART20: u64 = 20 * MIB;
    let upload = cb
        .create_multipart_upload()
        .key("far")
        .data_size(5000 * PART20)
        .part_size(PartSize::Target(PART20))
        .send()
        .await
        .unwrap();
    let (offset, len) = upload.part_range(5000).unwrap();
    assert_eq!(offset, 4999 * PART20);
    assert!(offset > 64 << 30);
    let data = pattern(len as usize, 5);
    upload.upload_part(5000, data.clone()).await.unwrap();
    // s3s-fs assembles only parts 1..n, so read the stored part itself.
    let stored = server.stored_part(upload.upload_id(), 5000);
    let material = cb.keyring().unwrap(upload.envelope()).await.unwrap();
    let mut expect = data;
    reference_ctr(material.cek(), material.iv(), offset, &mut expect);
    assert!(
        stored == expect,
        "part 5000 ciphertext differs from AES-CTR at its offset"
    );
}

#[tokio::test]
async fn put_object_switches_to_multipart_for_streams_and_large_bodies() {
    use cryptobucket::PutBody;
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    // Streams of unknown length: a short one is one PUT (and records its length) ...
    let small = pattern(1000, 20);
    let out = cb
        .put_object()
        .key("s-small")
        .body(PutBody::from_stream(std::io::Cursor::new(small.clone())))
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    assert_eq!(out.envelope.unencrypted_content_length, Some(1000));
    assert_eq!(out.envelope.part_size, None);
    // ... longer ones go multipart, including one ending exactly on a part boundary.
    for (name, len) in [
        ("s-odd", 2 * PART + 5),
        ("s-even", 2 * PART),
        ("s-one", PART),
    ] {
        let data = pattern(len as usize, len);
        let out = cb
            .put_object()
            .key(name)
            .body(PutBody::from_stream(std::io::Cursor::new(data.clone())))
            .part_size(PartSize::Target(PART))
            .concurrency(2)
            .content_type("application/octet-stream")
            .send()
            .await
            .unwrap();
        let env = &out.envelope;
        assert_eq!((env.data_size, env.part_size), (None, Some(PART)), "{name}");
        let got = cb.get_object().key(name).send().await.unwrap();
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert!(got.body.collect().await.unwrap() == data, "{name}");
    }
    // Known-length bodies over the threshold: multipart with data-size, from bytes and files.
    let data = pattern((2 * PART + 77) as usize, 21);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    for (name, body) in [
        ("k-bytes", PutBody::from(data.clone())),
        ("k-file", PutBody::from_path(file.path()).await.unwrap()),
        (
            "k-reader",
            PutBody::from_reader(std::io::Cursor::new(data.clone()), data.len() as u64),
        ),
    ] {
        let out = cb
            .put_object()
            .key(name)
            .body(body)
            .multipart_threshold(PART)
            .part_size(PartSize::Target(PART))
            .send()
            .await
            .unwrap();
        assert_eq!(out.envelope.data_size, Some(data.len() as u64), "{name}");
        let got = cb.get_object().key(name).send().await.unwrap();
        assert!(got.body.collect().await.unwrap() == data, "{name}");
    }
    // A reader shorter than it promised: an error, and no object.
    let err = cb
        .put_object()
        .key("short")
        .body(PutBody::from_reader(
            std::io::Cursor::new(vec![0u8; PART as usize + 10]),
            2 * PART,
        ))
        .multipart_threshold(PART)
        .part_size(PartSize::Target(PART))
        .send()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ended after"), "{err}");
    assert_eq!(
        cb.head_object()
            .key("short")
            .send()
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Defect: `put_object`'s own multipart path had no retries. A part the store refuses once
/// (503 SlowDown) is sent again with the same bytes and the object completes.
#[tokio::test]
async fn put_object_multipart_retries_refused_parts() {
    let (server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern((2 * PART + 77) as usize, 50);
    server
        .stats
        .failing_parts
        .store(2, std::sync::atomic::Ordering::SeqCst);
    cb.put_object()
        .key("retried")
        .body(data.clone())
        .part_size(PartSize::Target(PART))
        .multipart_threshold(PART)
        .send()
        .await
        .unwrap();
    // Both refusals were spent (so two attempts failed), and three parts were accepted.
    assert!(
        server
            .stats
            .failing_parts
            .load(std::sync::atomic::Ordering::SeqCst)
            <= 0
    );
    assert_eq!(
        server
            .stats
            .parts_in
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    let got = cb.get_object().key("retried").send().await.unwrap();
    assert!(got.body.collect().await.unwrap()[..] == data[..]);
}

/// Defect: dropping `put_object`'s future during a multipart upload leaked the upload (its
/// parts stayed on the server, billed, forever). It is aborted now.
#[tokio::test]
async fn a_dropped_multipart_put_object_aborts_its_upload() {
    use tokio::io::AsyncWriteExt as _;
    let (server, cb) = bucket_with(Fault::None, keyring_a()).await;
    // A stream that delivers one and a half parts, then stalls (a producer that hangs).
    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let feed = tokio::spawn(async move {
        writer
            .write_all(&pattern((PART + PART / 2) as usize, 51))
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    let put = cb
        .put_object()
        .key("dropped")
        .body(cryptobucket::PutBody::from_stream(reader))
        .part_size(PartSize::Target(PART))
        .send();
    let stats = server.stats.clone();
    tokio::select! {
        r = put => panic!("the stalled upload finished: {r:?}"),
        _ = async {
            while stats.parts_in.load(std::sync::atomic::Ordering::SeqCst) < 1 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        } => {}
    }
    // The future is dropped here, mid-upload.
    feed.abort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.open_uploads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped upload was not aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `put_object().if_match(etag)`: a conditional write (single PUT and multipart completion);
/// a stale ETag is `Changed` and the object stays as it was.
#[tokio::test]
async fn conditional_put_object_refuses_a_stale_etag() {
    let (_server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let first = cb
        .put_object()
        .key("c")
        .body(pattern(1000, 70))
        .send()
        .await
        .unwrap();
    let current = first.e_tag.clone().unwrap();
    for (len, threshold) in [(2000usize, u64::MAX), ((PART + 10) as usize, PART)] {
        let err = cb
            .put_object()
            .key("c")
            .body(pattern(len, 71))
            .part_size(PartSize::Target(PART))
            .multipart_threshold(threshold)
            .if_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Changed, "{len}: {err}");
        let got = cb.get_object().key("c").send().await.unwrap();
        assert_eq!(
            got.content_length, 1000,
            "{len}: the object was not replaced"
        );
    }
    let out = cb
        .put_object()
        .key("c")
        .body(pattern(3000, 72))
        .if_match(current)
        .send()
        .await
        .unwrap();
    assert_ne!(out.e_tag, first.e_tag);
}
