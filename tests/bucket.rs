//! CryptoBucket against a real S3 server over HTTP (in-process s3s-fs).

use cryptobucket_testkit as support;

use std::collections::HashMap;

use cryptobucket::{
    ByteRange, CryptoBucket, ErrorKind, KeyEntry, Keyring, MatDesc, PutBody, UnencryptedPolicy,
};
use support::{Fault, bucket_with, keyring_a, pattern, put_raw, raw_object, rsa};

#[tokio::test]
async fn round_trip_sizes_and_stored_bytes_differ() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    for len in [0usize, 1, 15, 16, 17, 4096, 3 * 1024 * 1024 + 5] {
        let data = pattern(len, len as u64);
        let key = format!("obj-{len}");
        let put = cb
            .put_object()
            .key(&key)
            .body(data.clone())
            .content_type("application/x-test")
            .metadata("owner", "me")
            .send()
            .await
            .unwrap();
        assert_eq!(put.envelope.unencrypted_content_length, Some(len as u64));
        let (stored, meta) = raw_object(&cb, &key).await;
        assert_eq!(stored.len(), len);
        if len >= 16 {
            assert_ne!(stored, data, "stored bytes must be ciphertext");
        }
        assert_eq!(meta["client-side-encryption-cek-alg"], "AES/CTR/NoPadding");
        assert_eq!(
            meta["client-side-encryption-wrap-alg"],
            "RSA/NONE/PKCS1Padding"
        );
        assert_eq!(meta["client-side-encryption-matdesc"], r#"{"k":"a"}"#);
        assert_eq!(
            meta["client-side-encryption-unencrypted-content-length"],
            len.to_string()
        );
        assert!(!meta.contains_key("client-side-encryption-unencrypted-content-md5"));
        let got = cb.get_object().key(&key).send().await.unwrap();
        assert_eq!(got.object_size, len as u64);
        assert_eq!(got.metadata.get("owner").map(String::as_str), Some("me"));
        assert_eq!(got.content_type.as_deref(), Some("application/x-test"));
        assert_eq!(
            got.body.collect().await.unwrap().to_vec(),
            data,
            "len {len}"
        );
    }
}

#[tokio::test]
async fn every_object_gets_fresh_key_and_iv() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = vec![0u8; 64];
    cb.put_object()
        .key("x")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    cb.put_object().key("y").body(data).send().await.unwrap();
    let (cx, mx) = raw_object(&cb, "x").await;
    let (cy, my) = raw_object(&cb, "y").await;
    assert_ne!(cx, cy);
    assert_ne!(
        mx["client-side-encryption-key"],
        my["client-side-encryption-key"]
    );
}

#[tokio::test]
async fn file_and_reader_bodies_stream() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern(2 * 1024 * 1024 + 3, 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, &data).unwrap();
    cb.put_object()
        .key("file")
        .body(PutBody::from_path(&path).await.unwrap())
        .send()
        .await
        .unwrap();
    let reader = std::io::Cursor::new(data.clone());
    cb.put_object()
        .key("reader")
        .body(PutBody::from_reader(reader, data.len() as u64))
        .send()
        .await
        .unwrap();
    for k in ["file", "reader"] {
        let out = cb.get_object().key(k).send().await.unwrap();
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut out.body.into_async_read(), &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, data, "{k}");
    }
    // A reader that ends early is an upload error, not a short object.
    let short = std::io::Cursor::new(vec![1u8; 10]);
    let err = cb
        .put_object()
        .key("short")
        .body(PutBody::from_reader(short, 20))
        .send()
        .await
        .unwrap_err();
    // (A body this small is read into memory first, for its inline integrity tags.)
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert!(
        err.to_string().contains("ended after 10 of 20 bytes"),
        "{err}"
    );
    assert!(cb.head_object().key("short").send().await.is_err());
}

async fn check_range(cb: &CryptoBucket, key: &str, data: &[u8], range: ByteRange) {
    let (start, len) = range.resolve(data.len() as u64).unwrap();
    let out = cb
        .get_object()
        .key(key)
        .range(range)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{range}: {e:?}"));
    assert_eq!(out.content_length, len);
    assert_eq!(out.range, Some((start, start + len - 1)));
    let got = out.body.collect().await.unwrap();
    assert_eq!(
        &got[..],
        &data[start as usize..(start + len) as usize],
        "range {range}"
    );
}

fn all_ranges(len: u64) -> Vec<ByteRange> {
    let mut v = Vec::new();
    for first in [0, 1, 15, 16, 17, 31, 33, len / 2, len - 1] {
        for last in [first, first + 1, first + 15, first + 16, len - 1, len + 100] {
            v.push(ByteRange::Inclusive { first, last });
        }
        v.push(ByteRange::From(first));
    }
    for n in [1, 15, 16, 17, len - 1, len, len + 10] {
        v.push(ByteRange::Suffix(n));
    }
    v
}

/// Every range form over `len` bytes equals the slice; ranges past the end are refused.
async fn all_ranges_match(fault: Fault, len: u64) {
    let (_s, cb) = bucket_with(fault, keyring_a()).await;
    let data = pattern(len as usize, len);
    cb.put_object()
        .key("r")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    for r in all_ranges(len) {
        check_range(&cb, "r", &data, r).await;
    }
    for r in [
        ByteRange::From(len),
        ByteRange::Inclusive {
            first: len + 4000,
            last: len + 5000,
        },
    ] {
        let e = cb.get_object().key("r").range(r).send().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RangeNotSatisfiable, "{r}: {e:?}");
    }
}

#[tokio::test]
async fn ranges_of_every_form() {
    all_ranges_match(Fault::None, 1000).await;
}

#[tokio::test]
async fn server_that_ignores_range_still_gives_the_slice() {
    all_ranges_match(Fault::IgnoreRange, 777).await;
}

#[tokio::test]
async fn content_range_that_differs_from_the_request_is_refused() {
    let (_s, cb) = bucket_with(Fault::ShiftRange, keyring_a()).await;
    cb.put_object()
        .key("r")
        .body(pattern(100, 5))
        .send()
        .await
        .unwrap();
    let e = cb
        .get_object()
        .key("r")
        .range("10-20".parse().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse, "{e:?}");
    // The request was widened to whole integrity chunks (0-1048575); the shifted answer
    // starts at 1.
    assert!(e.to_string().contains("server returned bytes 1-99"), "{e}");
}

#[tokio::test]
async fn truncated_body_is_an_error_not_short_data() {
    let (_s, cb) = bucket_with(Fault::TruncateBody, keyring_a()).await;
    cb.put_object()
        .key("t")
        .body(pattern(300_000, 6))
        .send()
        .await
        .unwrap();
    let out = cb.get_object().key("t").send().await.unwrap();
    let e = out.body.collect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated, "{e:?}");
}

#[tokio::test]
async fn object_size_must_match_recorded_plaintext_length() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern(100, 8);
    cb.put_object().key("good").body(data).send().await.unwrap();
    let (ct, meta) = raw_object(&cb, "good").await;
    // Truncated copy with the original metadata: refused before any byte is returned.
    put_raw(&cb, "cut", ct[..60].to_vec(), meta.clone()).await;
    let e = cb.get_object().key("cut").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch, "{e:?}");
    let e = cb
        .get_object()
        .key("cut")
        .range("0-9".parse().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SizeMismatch);
    let mut longer = ct.clone();
    longer.extend_from_slice(b"appended");
    put_raw(&cb, "long", longer, meta).await;
    assert_eq!(
        cb.get_object().key("long").send().await.unwrap_err().kind(),
        ErrorKind::SizeMismatch
    );
}

#[tokio::test]
async fn wrong_key_and_missing_key_errors() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    cb.put_object()
        .key("o")
        .body(pattern(50, 9))
        .send()
        .await
        .unwrap();
    let client = cb.client().clone();

    // Same matdesc, different private key: the key commitment decides, whatever the unwrap
    // did (implicit rejection; see SECURITY.md).
    let wrong = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::single(rsa("b"), MatDesc::new().with("k", "a")),
    );
    let e = wrong.get_object().key("o").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommitmentMismatch);
    // An object without integrity data (as other SDKs write it): the uniform unwrap error.
    let legacy = CryptoBucket::builder()
        .client(client.clone())
        .bucket("bkt")
        .keyring(Keyring::single(rsa("a"), MatDesc::new().with("k", "a")))
        .write_integrity(false)
        .build()
        .unwrap();
    legacy
        .put_object()
        .key("legacy")
        .body(pattern(50, 9))
        .send()
        .await
        .unwrap();
    let e = wrong.get_object().key("legacy").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnwrap);

    // No key with the object's matdesc: error names it; no fallback to the default key.
    let other = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::single(rsa("a"), MatDesc::new().with("k", "other")),
    );
    let e = other.get_object().key("o").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoMatchingKey);
    assert!(e.to_string().contains(r#"{"k":"a"}"#), "{e}");

    // Write-only key cannot read.
    let (_, public) = support::key_pem("a");
    let wo = cryptobucket::RsaKeyPair::from_public_pem(&public).unwrap();
    let wo = CryptoBucket::new(
        client,
        "bkt",
        Keyring::single(wo, MatDesc::new().with("k", "a")),
    );
    assert_eq!(
        wo.get_object().key("o").send().await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
}

#[tokio::test]
async fn several_keys_chosen_by_matdesc() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let client = cb.client().clone();
    let v1 = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::single(rsa("b"), MatDesc::new().with("v", "1").with("team", "x")),
    );
    v1.put_object()
        .key("old")
        .body(b"old data".to_vec())
        .send()
        .await
        .unwrap();
    cb.put_object()
        .key("new")
        .body(b"new data".to_vec())
        .send()
        .await
        .unwrap();
    let keyring = Keyring::builder()
        .default_key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "a")))
        .key(
            KeyEntry::new(rsa("b"))
                .matdesc(MatDesc::from_json(r#"{"team": "x", "v": "1"}"#).unwrap()),
        )
        .build()
        .unwrap();
    let both = CryptoBucket::new(client, "bkt", keyring);
    assert_eq!(
        &both
            .get_object()
            .key("old")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()[..],
        b"old data"
    );
    assert_eq!(
        &both
            .get_object()
            .key("new")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()[..],
        b"new data"
    );
}

#[tokio::test]
async fn tampered_metadata_gives_specific_errors() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern(40, 10);
    cb.put_object().key("o").body(data).send().await.unwrap();
    let (ct, meta) = raw_object(&cb, "o").await;
    type Mutate = Box<dyn Fn(&mut HashMap<String, String>)>;
    let cases: Vec<(&str, Mutate, ErrorKind)> = vec![
        (
            "swapped",
            Box::new(|m: &mut HashMap<String, String>| {
                let k = m["client-side-encryption-key"].clone();
                let s = m["client-side-encryption-start"].clone();
                m.insert("client-side-encryption-key".into(), s);
                m.insert("client-side-encryption-start".into(), k);
            }),
            // The object has integrity data: the key commitment decides (implicit rejection).
            ErrorKind::CommitmentMismatch,
        ),
        (
            "flipped",
            Box::new(|m: &mut HashMap<String, String>| {
                let k = m["client-side-encryption-key"].clone();
                let mut c: Vec<char> = k.chars().collect();
                c[10] = if c[10] == 'A' { 'B' } else { 'A' };
                m.insert("client-side-encryption-key".into(), c.into_iter().collect());
            }),
            ErrorKind::CommitmentMismatch,
        ),
        (
            "bad base64",
            Box::new(|m: &mut HashMap<String, String>| {
                m.insert("client-side-encryption-start".into(), "%%%".into());
            }),
            ErrorKind::InvalidMetadata,
        ),
        (
            "bad json",
            Box::new(|m: &mut HashMap<String, String>| {
                m.insert("client-side-encryption-matdesc".into(), "{\"k\":".into());
            }),
            ErrorKind::InvalidMetadata,
        ),
        (
            "unknown cek",
            Box::new(|m: &mut HashMap<String, String>| {
                m.insert(
                    "client-side-encryption-cek-alg".into(),
                    "AES/GCM/NoPadding".into(),
                );
            }),
            ErrorKind::UnsupportedAlgorithm,
        ),
        (
            "unknown wrap",
            Box::new(|m: &mut HashMap<String, String>| {
                m.insert(
                    "client-side-encryption-wrap-alg".into(),
                    "RSA/ECB/Magic".into(),
                );
            }),
            ErrorKind::UnsupportedAlgorithm,
        ),
        (
            "missing start",
            Box::new(|m: &mut HashMap<String, String>| {
                m.remove("client-side-encryption-start");
            }),
            ErrorKind::InvalidMetadata,
        ),
        (
            "kms without provider",
            Box::new(|m: &mut HashMap<String, String>| {
                m.insert(
                    "client-side-encryption-wrap-alg".into(),
                    "KMS/ALICLOUD".into(),
                );
            }),
            ErrorKind::NoMatchingKey,
        ),
    ];
    for (name, mutate, kind) in cases {
        let mut m = meta.clone();
        mutate(&mut m);
        put_raw(&cb, name, ct.clone(), m).await;
        let e = cb.get_object().key(name).send().await.unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains(&meta["client-side-encryption-key"]),
            "{name}: error leaks wrapped key"
        );
    }
}

#[tokio::test]
async fn plain_objects_refused_unless_passthrough() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    put_raw(&cb, "plain", b"not encrypted".to_vec(), HashMap::new()).await;
    let e = cb.get_object().key("plain").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotEncrypted);
    let pass = CryptoBucket::builder()
        .client(cb.client().clone())
        .bucket("bkt")
        .keyring(keyring_a())
        .unencrypted_policy(UnencryptedPolicy::PassThrough)
        .build()
        .unwrap();
    let got = pass
        .get_object()
        .key("plain")
        .range("4-".parse().unwrap())
        .send()
        .await
        .unwrap();
    assert!(got.envelope.is_none());
    assert_eq!(&got.body.collect().await.unwrap()[..], b"encrypted");
    assert!(
        pass.head_object()
            .key("plain")
            .send()
            .await
            .unwrap()
            .envelope
            .is_none()
    );
}

#[tokio::test]
async fn head_copy_delete() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern(1234, 11);
    cb.put_object()
        .key("dir/a b+c")
        .body(data.clone())
        .metadata("note", "x")
        .send()
        .await
        .unwrap();
    let head = cb.head_object().key("dir/a b+c").send().await.unwrap();
    assert_eq!(head.object_size, 1234);
    assert_eq!(head.metadata.get("note").map(String::as_str), Some("x"));
    let env = head.envelope.unwrap();
    assert_eq!(env.matdesc, MatDesc::new().with("k", "a"));
    cb.copy_object()
        .source_key("dir/a b+c")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        cb.get_object()
            .key("copy")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec(),
        data
    );
    cb.delete_object().key("copy").send().await.unwrap();
    assert_eq!(
        cb.get_object().key("copy").send().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        cb.head_object()
            .key("copy")
            .send()
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // A plain source is refused by copy too.
    put_raw(&cb, "plain", b"p".to_vec(), HashMap::new()).await;
    assert_eq!(
        cb.copy_object()
            .source_key("plain")
            .key("c2")
            .send()
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotEncrypted
    );
}

#[tokio::test]
async fn builder_errors_are_typed() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    assert_eq!(
        cb.put_object().send().await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let e = cb
        .put_object()
        .key("k")
        .metadata("client-side-encryption-key", "x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        CryptoBucket::builder()
            .bucket("bkt")
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    assert!(Keyring::builder().build().is_err());
    let two = Keyring::builder()
        .key(KeyEntry::new(rsa("a")))
        .key(KeyEntry::new(rsa("b")))
        .build();
    assert_eq!(two.unwrap_err().kind(), ErrorKind::InvalidKey);
}

/// Errors say the operation, the object, what the store answered and whether a retry helps.
#[tokio::test]
async fn errors_name_operation_object_status_and_retryability() {
    let (server, cb) = bucket_with(Fault::None, keyring_a()).await;
    let err = cb.get_object().key("no/such").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.operation(), Some("GetObject"));
    assert_eq!((err.bucket(), err.key()), (Some("bkt"), Some("no/such")));
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.service_code(), Some("NoSuchKey"));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.starts_with("GetObject s3://bkt/no/such: "), "{text}");
    assert!(text.contains("HTTP 404 NoSuchKey"), "{text}");
    assert!(!text.contains('\n'));
    assert!(
        std::error::Error::source(&err).is_some(),
        "the SDK error is kept"
    );

    // Wrong credentials: access denied, its own kind, not retryable.
    let bad = cryptobucket::ClientOptions::new()
        .endpoint_url(&server.endpoint)
        .region("us-east-1")
        .force_path_style(true)
        .static_credentials(support::server::ACCESS_KEY, "not-the-secret")
        .build()
        .await;
    let denied = CryptoBucket::new(bad, "bkt", keyring_a());
    let err = denied.head_object().key("x").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert_eq!(err.status(), Some(403));
    assert!(!err.is_retryable());
    let err = denied
        .put_object()
        .key("x")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(err.to_string().contains("PutObject"), "{err}");

    // A multipart failure names the upload.
    let upload = cb
        .create_multipart_upload()
        .key("mp")
        .data_size(10)
        .send()
        .await
        .unwrap();
    upload.abort().await.unwrap();
    let err = upload
        .upload_part(1, b"0123456789".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.upload_id(), Some(upload.upload_id()));
    assert!(err.to_string().contains(upload.upload_id()), "{err}");
    assert_eq!(err.key(), Some("mp"));

    // Every kind has a short human name.
    assert_eq!(ErrorKind::AccessDenied.to_string(), "access denied");
    assert_eq!(ErrorKind::Changed.to_string(), "changed during transfer");
}
