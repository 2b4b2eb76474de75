//! Key rotation: rewrap under another key, body untouched, old key no longer needed.

use cryptobucket_testkit as support;

use cryptobucket::{
    AesMasterKey, CryptoBucket, ErrorKind, KeyEntry, Keyring, MatDesc, PartSize, UnencryptedPolicy,
};
use support::{Fault, bucket_with, pattern, raw_object, rsa};

fn old() -> KeyEntry {
    KeyEntry::new(rsa("a"))
        .matdesc(MatDesc::new().with("key", "old"))
        .name("old")
}

fn new_rsa() -> KeyEntry {
    KeyEntry::new(rsa("b"))
        .matdesc(MatDesc::new().with("key", "new"))
        .name("new")
}

fn new_aes() -> KeyEntry {
    KeyEntry::new(AesMasterKey::from_bytes(&[4; 32]).unwrap())
        .matdesc(MatDesc::new().with("key", "aes"))
        .name("aes")
}

#[tokio::test]
async fn rewrap_keeps_body_and_headers_and_drops_the_need_for_the_old_key() {
    let ring = Keyring::builder()
        .default_key(old())
        .key(new_rsa())
        .key(new_aes())
        .build()
        .unwrap();
    let (server, cb) = bucket_with(Fault::None, ring).await;
    let data = pattern(70_000, 1);
    cb.put_object()
        .key("m")
        .body(data.clone())
        .content_type("application/x-weights")
        .metadata("step", "900")
        .send()
        .await
        .unwrap();
    let (before, _) = raw_object(&cb, "m").await;

    for target in [new_rsa(), new_aes()] {
        let out = cb
            .rewrap_object()
            .key("m")
            .to(target.clone())
            .send()
            .await
            .unwrap();
        assert!(!out.skipped);
        assert_eq!(&out.to, target.get_matdesc());
        // Again: already under the target, nothing written.
        let again = cb
            .rewrap_object()
            .key("m")
            .to(target.clone())
            .send()
            .await
            .unwrap();
        assert!(again.skipped);
        assert_eq!(again.e_tag, out.e_tag);

        let (after, meta) = raw_object(&cb, "m").await;
        assert!(after == before, "the ciphertext must not change");
        assert_eq!(meta["step"], "900");
        assert_eq!(
            meta["client-side-encryption-unencrypted-content-length"],
            "70000"
        );
        // Readable with the target key alone.
        let only_new = CryptoBucket::new(
            server.client().await,
            "bkt",
            Keyring::builder().default_key(target).build().unwrap(),
        );
        let got = only_new.get_object().key("m").send().await.unwrap();
        assert_eq!(got.content_type.as_deref(), Some("application/x-weights"));
        assert!(got.body.collect().await.unwrap() == data);
    }
    // The old key alone no longer matches.
    let only_old = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::builder().default_key(old()).build().unwrap(),
    );
    let err = only_old.get_object().key("m").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoMatchingKey);
}

#[tokio::test]
async fn multipart_objects_and_multipart_copies() {
    let ring = Keyring::builder()
        .default_key(old())
        .key(new_rsa())
        .build()
        .unwrap();
    let (server, cb) = bucket_with(Fault::None, ring).await;
    const PART: u64 = 5 * 1024 * 1024;
    let data = pattern((2 * PART + 100) as usize, 2);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    cb.upload_file()
        .key("big")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path())
        .send()
        .await
        .unwrap();
    // Copied in 5 MiB parts (UploadPartCopy) instead of one CopyObject.
    let out = cb
        .rewrap_object()
        .key("big")
        .to(new_rsa())
        .multipart_threshold(PART)
        .send()
        .await
        .unwrap();
    assert!(!out.skipped);
    let only_new = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::builder().default_key(new_rsa()).build().unwrap(),
    );
    let got = only_new.get_object().key("big").send().await.unwrap();
    let env = got.envelope.clone().unwrap();
    assert_eq!(
        (env.data_size, env.part_size),
        (Some(data.len() as u64), Some(PART))
    );
    assert!(got.body.collect().await.unwrap() == data);
}

#[tokio::test]
async fn plain_objects_and_missing_keys_are_refused() {
    let ring = Keyring::builder().default_key(old()).build().unwrap();
    let (server, cb) = bucket_with(Fault::None, ring).await;
    server
        .client()
        .await
        .put_object()
        .bucket("bkt")
        .key("plain")
        .body(b"plain".to_vec().into())
        .send()
        .await
        .unwrap();
    let kind = |key: &'static str| {
        let cb = cb.clone();
        async move {
            let r = cb.rewrap_object().key(key).to(new_rsa()).send().await;
            r.unwrap_err().kind()
        }
    };
    assert_eq!(kind("plain").await, ErrorKind::NotEncrypted);
    assert_eq!(kind("none").await, ErrorKind::NotFound);
    // An object the keyring cannot unwrap is left alone.
    let other = CryptoBucket::builder()
        .client(server.client().await)
        .bucket("bkt")
        .keyring(Keyring::single(rsa("b"), MatDesc::new().with("key", "x")))
        .unencrypted_policy(UnencryptedPolicy::Refuse)
        .build()
        .unwrap();
    let x = other.put_object().key("foreign").body(b"x".to_vec());
    x.send().await.unwrap();
    assert_eq!(kind("foreign").await, ErrorKind::NoMatchingKey);
}

/// Defect: a multipart-sized rewrap completed unconditionally, so an overwrite that landed
/// after the part copies was clobbered by the old body with new key metadata. Now the copy is
/// completed only if the object is still the version it copied.
#[tokio::test]
async fn a_multipart_rewrap_does_not_clobber_an_object_changed_meanwhile() {
    let ring = Keyring::builder()
        .default_key(old())
        .key(new_rsa())
        .build()
        .unwrap();
    let (server, cb) = bucket_with(Fault::None, ring).await;
    let data = pattern((11 << 20) + 5, 40);
    cb.put_object()
        .key("big")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let newer = pattern(4096, 41);
    // After the last of the three part copies, someone writes a new version.
    let (endpoint, n2) = (server.endpoint.clone(), newer.clone());
    *server.stats.after_part_copy.lock().unwrap() = Some(std::sync::Arc::new(move |n| {
        if n == 3 {
            let ring = Keyring::single(rsa("a"), MatDesc::new().with("key", "old"));
            support::put_blocking(&endpoint, ring, "big", n2.clone());
        }
    }));
    let err = cb
        .rewrap_object()
        .key("big")
        .to(new_rsa())
        .multipart_threshold(5 << 20)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Changed, "{err}");
    // The newer object is intact, still under the old key.
    let got = cb.get_object().key("big").send().await.unwrap();
    assert_eq!(
        got.envelope.as_ref().unwrap().matdesc,
        MatDesc::new().with("key", "old")
    );
    assert!(got.body.collect().await.unwrap()[..] == newer[..]);
}

/// `reencrypt(true)`: a real data-key rotation. The object gets a new content key and IV under
/// the target key (the old content key decrypts nothing of it), the plaintext and the user's
/// metadata stay, single PUT and multipart alike; a concurrent change is never clobbered.
#[tokio::test]
async fn reencrypt_rotates_the_content_key() {
    let ring = Keyring::builder()
        .default_key(old())
        .key(new_aes())
        .build()
        .unwrap();
    let (server, cb) = bucket_with(Fault::None, ring).await;
    const PART: u64 = 5 * 1024 * 1024;
    for (key, len) in [("small", 70_001usize), ("large", (2 * PART + 33) as usize)] {
        let data = pattern(len, 60);
        cb.put_object()
            .key(key)
            .body(data.clone())
            .content_type("application/x-weights")
            .metadata("step", "7")
            .send()
            .await
            .unwrap();
        let (before, meta_before) = raw_object(&cb, key).await;
        let out = cb
            .rewrap_object()
            .key(key)
            .to(new_aes())
            .reencrypt(true)
            .transfer_config(
                cryptobucket::TransferConfig::new()
                    .part_size(PartSize::Target(PART))
                    .multipart_threshold(PART),
            )
            .send()
            .await
            .unwrap();
        assert!(!out.skipped);
        assert_eq!(&out.to, new_aes().get_matdesc());
        let (after, meta) = raw_object(&cb, key).await;
        assert_eq!(after.len(), before.len());
        assert!(after != before, "{key}: the body is encrypted anew");
        assert_ne!(
            meta["client-side-encryption-start"], meta_before["client-side-encryption-start"],
            "{key}: a new IV"
        );
        assert_eq!(meta["step"], "7");
        // The target key alone reads it.
        let only_new = CryptoBucket::new(
            server.client().await,
            "bkt",
            Keyring::builder().default_key(new_aes()).build().unwrap(),
        );
        let got = only_new.get_object().key(key).send().await.unwrap();
        assert_eq!(got.content_type.as_deref(), Some("application/x-weights"));
        assert!(got.body.collect().await.unwrap()[..] == data[..], "{key}");
    }
}

/// `dry_run`: every check a rewrap or re-encryption makes, nothing written; a key that cannot
/// unwrap the object fails the dry run as it would fail the real one.
#[tokio::test]
async fn dry_runs_check_everything_and_write_nothing() {
    let ring = Keyring::builder()
        .default_key(old())
        .key(new_rsa())
        .build()
        .unwrap();
    let (_server, cb) = bucket_with(Fault::None, ring).await;
    let data = pattern(70_000, 3);
    cb.put_object()
        .key("m")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let stored = raw_object(&cb, "m").await;
    for reencrypt in [false, true] {
        let out = cb
            .rewrap_object()
            .key("m")
            .to(new_rsa())
            .reencrypt(reencrypt)
            .dry_run(true)
            .send()
            .await
            .unwrap();
        assert!(out.dry_run && !out.skipped, "{out:?}");
        assert_eq!(&out.to, new_rsa().get_matdesc());
        assert!(raw_object(&cb, "m").await == stored, "a dry run wrote");
    }
    // A keyring without the current key: the dry run fails like the rewrap would.
    let only_new = CryptoBucket::new(
        cb.client().clone(),
        "bkt",
        Keyring::builder().default_key(new_rsa()).build().unwrap(),
    );
    for reencrypt in [false, true] {
        let err = only_new
            .rewrap_object()
            .key("m")
            .to(new_rsa())
            .reencrypt(reencrypt)
            .dry_run(true)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoMatchingKey, "{err}");
    }
    // After the real rewrap, a dry run says it would be skipped.
    cb.rewrap_object()
        .key("m")
        .to(new_rsa())
        .send()
        .await
        .unwrap();
    let out = cb
        .rewrap_object()
        .key("m")
        .to(new_rsa())
        .dry_run(true)
        .send()
        .await
        .unwrap();
    assert!(out.dry_run && out.skipped);
}
