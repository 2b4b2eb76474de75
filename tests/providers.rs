//! One conformance suite that every key provider runs unchanged (object_store's habit): single
//! PUT/GET, every range form, multipart and resumable transfers, a wrong key, and the keyring
//! file form of the provider. New providers add one test that calls [`conformance`].

mod support;

use cryptobucket::{AesMasterKey, ByteRange, ErrorKind, KeyEntry, Keyring, MatDesc, PartSize};
use support::{Fault, bucket_with, pattern, rsa};

const PART: u64 = 5 * 1024 * 1024;

/// Runs the suite with `good` (its default key writes and reads) and checks that `wrong` (same
/// matdesc, another key) cannot read what `good` wrote.
async fn conformance(name: &str, good: Keyring, wrong: Keyring) {
    let (server, cb) = bucket_with(Fault::None, good).await;
    let data = pattern((2 * PART + 1234) as usize, 7);
    let small = &data[..100_000];

    // Single PUT, whole and ranged GETs.
    cb.put_object()
        .key("small")
        .body(small.to_vec())
        .send()
        .await
        .unwrap();
    let got = cb.get_object().key("small").send().await.unwrap();
    let wrap = got.envelope.as_ref().unwrap().wrap_alg.clone();
    assert!(got.body.collect().await.unwrap() == small, "{name}");
    for r in ["0-0", "15-16", "17-", "-33", "99990-"] {
        let r: ByteRange = r.parse().unwrap();
        let (s, l) = r.resolve(small.len() as u64).unwrap();
        let got = cb.get_object().key("small").range(r).send().await.unwrap();
        assert!(
            got.body.collect().await.unwrap() == small[s as usize..(s + l) as usize],
            "{name} {r}"
        );
    }

    // Multipart + resumable transfers (the key is unwrapped once per transfer).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    cb.upload_file()
        .key("big")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    let dst = dir.path().join("dst");
    cb.download_file()
        .key("big")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    assert!(std::fs::read(&dst).unwrap() == data, "{name}");
    let r = ByteRange::Inclusive {
        first: PART - 3,
        last: PART + 3,
    };
    let got = cb.get_object().key("big").range(r).send().await.unwrap();
    assert!(got.body.collect().await.unwrap() == data[(PART - 3) as usize..=(PART + 3) as usize]);

    // Another key with the same matdesc: one uniform unwrap error, for both objects.
    let other = cryptobucket::CryptoBucket::new(server.client().await, "bkt", wrong);
    for key in ["small", "big"] {
        let err = other.get_object().key(key).send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyUnwrap, "{name} {key}: {err}");
    }
    eprintln!("{name}: conformance passed (wrap algorithm {wrap})");
}

#[tokio::test]
async fn rsa_pkcs1() {
    let d = MatDesc::new().with("k", "a");
    conformance(
        "rsa-pkcs1",
        Keyring::single(rsa("a"), d.clone()),
        Keyring::single(rsa("b"), d),
    )
    .await;
}

#[tokio::test]
async fn rsa_oaep() {
    let d = MatDesc::new();
    conformance(
        "rsa-oaep",
        Keyring::single(
            rsa("a").with_padding(cryptobucket::RsaPadding::OaepSha1),
            d.clone(),
        ),
        Keyring::single(rsa("b").with_padding(cryptobucket::RsaPadding::OaepSha1), d),
    )
    .await;
}

#[tokio::test]
async fn local_aes_master_key() {
    let d = MatDesc::new().with("key", "airgap");
    conformance(
        "aes",
        Keyring::single(AesMasterKey::from_bytes(&[1; 32]).unwrap(), d.clone()),
        Keyring::single(AesMasterKey::from_bytes(&[2; 32]).unwrap(), d),
    )
    .await;
}

#[tokio::test]
async fn mixed_keyring_reads_each_object_with_its_own_key() {
    // RSA writes by default, AES is registered for reading: each object finds its key by matdesc.
    let aes = || KeyEntry::new(AesMasterKey::from_bytes(&[3; 32]).unwrap());
    let writer_aes = Keyring::single(
        AesMasterKey::from_bytes(&[3; 32]).unwrap(),
        MatDesc::new().with("k", "aes"),
    );
    let (server, cb_aes) = bucket_with(Fault::None, writer_aes).await;
    cb_aes
        .put_object()
        .key("a")
        .body(b"by aes".to_vec())
        .send()
        .await
        .unwrap();
    let both = Keyring::builder()
        .default_key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "rsa")))
        .key(aes().matdesc(MatDesc::new().with("k", "aes")))
        .build()
        .unwrap();
    let cb = cryptobucket::CryptoBucket::new(server.client().await, "bkt", both);
    cb.put_object()
        .key("r")
        .body(b"by rsa".to_vec())
        .send()
        .await
        .unwrap();
    for (k, want) in [("a", &b"by aes"[..]), ("r", &b"by rsa"[..])] {
        let got = cb.get_object().key(k).send().await.unwrap();
        assert_eq!(&got.body.collect().await.unwrap()[..], want);
    }
}

#[test]
fn keyring_file_aes_entries() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    std::fs::write(dir.path().join("master.key"), format!("{b64}\n")).unwrap();
    // SAFETY: this test binary sets this variable only here and reads it in this test.
    unsafe { std::env::set_var("CRYPTOBUCKET_TEST_AES_KEY", &b64) };
    let file = dir.path().join("keyring.toml");
    std::fs::write(
        &file,
        r#"
[[keys]]
name = "airgap"
kind = "aes"
key_env = "CRYPTOBUCKET_TEST_AES_KEY"
matdesc = { env = "prod" }
default = true

[[keys]]
name = "old"
kind = "aes"
key_file = "master.key"
"#,
    )
    .unwrap();
    let k = cryptobucket::KeyringFile::load(&file).unwrap();
    assert_eq!(k.default_entry().get_name(), Some("airgap"));
    assert!(
        k.by_name("old")
            .unwrap()
            .provider()
            .describe()
            .contains("AES-256-GCM")
    );
    for (toml, want) in [
        ("kind = \"aes\"\n", "exactly one of key_env"),
        (
            "kind = \"aes\"\nkey_env = \"X\"\nkey_file = \"y\"\n",
            "exactly one of key_env",
        ),
        (
            "kind = \"aes\"\nkey_env = \"CRYPTOBUCKET_TEST_UNSET_VAR\"\n",
            "CRYPTOBUCKET_TEST_UNSET_VAR",
        ),
        ("kind = \"rsa\"\nkey_env = \"X\"\n", "do not apply"),
        ("kind = \"vault\"\n", "supported kinds"),
    ] {
        std::fs::write(&file, format!("[[keys]]\n{toml}")).unwrap();
        let err = cryptobucket::KeyringFile::load(&file).unwrap_err();
        assert!(err.to_string().contains(want), "{toml}: {err}");
        assert!(
            !err.to_string().contains(&b64),
            "the key must not appear in errors"
        );
    }
}
