//! One conformance suite that every key provider runs unchanged (object_store's habit): single
//! PUT/GET, every range form, multipart and resumable transfers, a wrong key, and the keyring
//! file form of the provider, on every store the suite knows ([`Store`]): the in-process s3s
//! server, and the same server behind the TCP fault proxy answering 503/500 to new
//! connections, and the 3-node Garage cluster (`every_provider_on_garage`, run by
//! `scripts/test.sh` with the cluster up, like `tests/garage.rs`). New providers add one test
//! that calls [`conformance`] and one line to the Garage test; a new store is one more [`Store`]
//! variant.

use cryptobucket_testkit as support;

use cryptobucket::{AesMasterKey, ByteRange, ErrorKind, KeyEntry, Keyring, MatDesc, PartSize};
use support::proxy::{FaultProxy, WireFault};
use support::{Fault, TestServer, bucket_with, moto::Moto, pattern, rsa};

const PART: u64 = 5 * 1024 * 1024;

/// The stores every provider is checked on.
#[derive(Debug, Clone, Copy)]
enum Store {
    /// s3s-fs over HTTP in this process.
    InProcess,
    /// The same, reached through the fault proxy, whose first three connections are answered
    /// 503, 503 and 500 (the retry layers must carry every operation through).
    FaultyWire,
    /// The Garage cluster of `scripts/garage-cluster.sh` (its bucket, keys under a prefix of
    /// the provider's name).
    Garage,
}

/// Runs the suite on every [`Store`].
async fn conformance(name: &str, good: Keyring, wrong: Keyring) {
    for store in [Store::InProcess, Store::FaultyWire] {
        conformance_on(store, name, good.clone(), wrong.clone()).await;
    }
}

/// Runs the suite with `good` (its default key writes and reads) and checks that `wrong` (same
/// matdesc, another key) cannot read what `good` wrote.
async fn conformance_on(store: Store, name: &str, good: Keyring, wrong: Keyring) {
    let server = TestServer::start();
    server.create_bucket("bkt").await;
    let proxy = match store {
        Store::FaultyWire => {
            let p = FaultProxy::start(&server.endpoint);
            p.push([
                WireFault::Status(503),
                WireFault::Status(503),
                WireFault::Status(500),
            ]);
            Some(p)
        }
        Store::InProcess | Store::Garage => None,
    };
    let (client, bucket, prefix) = match (store, &proxy) {
        (Store::Garage, _) => {
            let endpoint = support::garage::endpoints().swap_remove(0);
            let (client, bucket) = (
                support::garage::client(&endpoint).await,
                support::garage::bucket(),
            );
            (
                client,
                bucket,
                format!("providers/{}/", name.replace(' ', "-")),
            )
        }
        (_, Some(p)) => (
            server.client_via(&p.endpoint).await,
            "bkt".into(),
            String::new(),
        ),
        (_, None) => (server.client().await, "bkt".into(), String::new()),
    };
    let (small_key, big_key) = (format!("{prefix}small"), format!("{prefix}big"));
    let cb = cryptobucket::CryptoBucket::new(client.clone(), &bucket, good);
    let name = &format!("{name} on {store:?}");
    let data = pattern((2 * PART + 1234) as usize, 7);
    let small = &data[..100_000];

    // Single PUT, whole and ranged GETs.
    cb.put_object()
        .key(&small_key)
        .body(small.to_vec())
        .send()
        .await
        .unwrap();
    let got = cb.get_object().key(&small_key).send().await.unwrap();
    let wrap = got.envelope.as_ref().unwrap().wrap_alg.clone();
    assert!(got.body.collect().await.unwrap() == small, "{name}");
    for r in ["0-0", "15-16", "17-", "-33", "99990-"] {
        let r: ByteRange = r.parse().unwrap();
        let (s, l) = r.resolve(small.len() as u64).unwrap();
        let got = cb
            .get_object()
            .key(&small_key)
            .range(r)
            .send()
            .await
            .unwrap();
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
        .key(&big_key)
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    let dst = dir.path().join("dst");
    cb.download_file()
        .key(&big_key)
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
    let got = cb.get_object().key(&big_key).range(r).send().await.unwrap();
    assert_eq!(
        got.integrity,
        cryptobucket::IntegrityState::Verified,
        "{name}"
    );
    assert!(got.body.collect().await.unwrap() == data[(PART - 3) as usize..=(PART + 3) as usize]);

    // Another key with the same matdesc: one uniform error, for both objects (the key
    // commitment decides, whatever the unwrap did).
    let other = cryptobucket::CryptoBucket::new(client, &bucket, wrong);
    for key in [&small_key, &big_key] {
        let err = other.get_object().key(key).send().await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::CommitmentMismatch,
            "{name} {key}: {err}"
        );
    }
    if let Some(p) = &proxy {
        assert_eq!(
            (p.injected(), p.pending()),
            (3, 0),
            "{name}: every wire fault was injected"
        );
    }
    eprintln!("{name}: conformance passed (wrap algorithm {wrap})");
}

/// A 4-part upload_file, then (after `between`) a 4-range download_file, with 5 MiB parts.
async fn four_part_round_trip(cb: &cryptobucket::CryptoBucket, between: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = pattern((4 * PART) as usize, 3);
    std::fs::write(&src, &data).unwrap();
    cb.upload_file()
        .key("k")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    between();
    cb.download_file()
        .key("k")
        .path(dir.path().join("dst"))
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    assert!(std::fs::read(dir.path().join("dst")).unwrap() == data);
}

/// Each provider's keyrings for the suite: the one that writes and reads, and a wrong one
/// (same matdesc, another key).
type Keys = (Keyring, Keyring);

fn rsa_pkcs1_keys() -> Keys {
    let d = MatDesc::new().with("k", "a");
    (
        Keyring::single(rsa("a"), d.clone()),
        Keyring::single(rsa("b"), d),
    )
}

fn rsa_oaep_keys() -> Keys {
    let d = MatDesc::new();
    let oaep = |n: &str| rsa(n).with_padding(cryptobucket::RsaPadding::OaepSha1);
    (
        Keyring::single(oaep("a"), d.clone()),
        Keyring::single(oaep("b"), d),
    )
}

fn aes_keys() -> Keys {
    let d = MatDesc::new().with("key", "airgap");
    (
        Keyring::single(AesMasterKey::from_bytes(&[1; 32]).unwrap(), d.clone()),
        Keyring::single(AesMasterKey::from_bytes(&[2; 32]).unwrap(), d),
    )
}

fn ecies_keys() -> Keys {
    let d = MatDesc::new().with("to", "sandbox");
    (
        Keyring::single(cryptobucket::EciesP256Key::generate().unwrap(), d.clone()),
        Keyring::single(cryptobucket::EciesP256Key::generate().unwrap(), d),
    )
}

/// Light Argon2id parameters (OWASP's 19 MiB, 2 passes) keep the suite quick; the wrong
/// keyring has another passphrase.
fn passphrase_keys() -> Keys {
    let light = cryptobucket::keys::passphrase::KdfParams {
        memory_kib: 19 * 1024,
        passes: 2,
        lanes: 1,
    };
    let d = MatDesc::new().with("pw", "team");
    let key = |p: &str| cryptobucket::PassphraseKey::new(p).with_params(light);
    (
        Keyring::single(key("correct horse"), d.clone()),
        Keyring::single(key("battery staple"), d),
    )
}

async fn aws_kms_keys(moto: &Moto) -> Keys {
    moto.create_key(Some("alias/ckpt")).await;
    let other = moto.create_key(None).await;
    let d = MatDesc::new().with("kms", "ckpt");
    (
        // By alias for one, by id for the other.
        Keyring::single(
            cryptobucket::AwsKmsKey::new(moto.kms_client(), "alias/ckpt"),
            d.clone(),
        ),
        Keyring::single(cryptobucket::AwsKmsKey::new(moto.kms_client(), &other), d),
    )
}

fn aliyun_blob_keys(fake: &support::aliyun_kms::FakeKms) -> Keys {
    let (k1, k2) = (fake.create_key(), fake.create_key());
    let d = MatDesc::new().with("kms", "ali");
    (
        Keyring::single(ali(fake, &k1), d.clone()),
        Keyring::single(ali(fake, &k2), d),
    )
}

/// oss2's encoding and passphrase; the wrong keyring has the same key and another passphrase
/// (the encryption context differs, KMS refuses).
fn aliyun_oss2_keys(fake: &support::aliyun_kms::FakeKms) -> Keys {
    use cryptobucket::AliyunKmsEncoding;
    let k = fake.create_key();
    let d = MatDesc::new();
    (
        Keyring::single(
            ali(fake, &k)
                .write_encoding(AliyunKmsEncoding::Oss2)
                .passphrase("pass-1"),
            d.clone(),
        ),
        Keyring::single(ali(fake, &k).passphrase("pass-2"), d),
    )
}

/// Two keys of the local Volcengine KMS.
fn volcengine_keys(fake: &support::volc_kms::FakeVolcKms) -> Keys {
    fake.create_key("ml-ring", "ckpt-a");
    fake.create_key("ml-ring", "ckpt-b");
    let key = |name: &str| {
        cryptobucket::VolcengineKmsKey::new(
            "ml-ring",
            name,
            "cn-beijing",
            cryptobucket::VolcengineCredentials::new("AKLT-test", "volc-secret"),
        )
        .endpoint_url(&fake.endpoint)
    };
    let d = MatDesc::new().with("kms", "volc");
    (
        Keyring::single(key("ckpt-a"), d.clone()),
        Keyring::single(key("ckpt-b"), d),
    )
}

#[tokio::test]
async fn volcengine_kms() {
    let fake =
        support::volc_kms::FakeVolcKms::start("AKLT-test", "volc-secret", None, "cn-beijing");
    let (good, wrong) = volcengine_keys(&fake);
    conformance("volcengine-kms", good, wrong).await;
}

#[tokio::test]
async fn rsa_pkcs1() {
    let (good, wrong) = rsa_pkcs1_keys();
    conformance("rsa-pkcs1", good, wrong).await;
}

#[tokio::test]
async fn rsa_oaep() {
    let (good, wrong) = rsa_oaep_keys();
    conformance("rsa-oaep", good, wrong).await;
}

#[tokio::test]
async fn ecies_p256_recipient() {
    let (good, wrong) = ecies_keys();
    conformance("ecies-p256", good, wrong).await;
}

#[tokio::test]
async fn passphrase() {
    let (good, wrong) = passphrase_keys();
    conformance("passphrase", good, wrong).await;
}

#[tokio::test]
async fn local_aes_master_key() {
    let (good, wrong) = aes_keys();
    conformance("aes", good, wrong).await;
}

/// Every provider on the Garage cluster (one node's endpoint; `tests/garage.rs` covers node
/// failures). Needs the cluster's environment, like `tests/garage.rs`.
#[tokio::test]
#[ignore = "needs the Garage cluster: scripts/garage-cluster.sh start"]
async fn every_provider_on_garage() {
    let moto = Moto::start();
    let fake = support::aliyun_kms::FakeKms::start("LTAI-test", "ali-secret", None);
    let volc =
        support::volc_kms::FakeVolcKms::start("AKLT-test", "volc-secret", None, "cn-beijing");
    let suites: Vec<(&str, Keys)> = vec![
        ("rsa-pkcs1", rsa_pkcs1_keys()),
        ("rsa-oaep", rsa_oaep_keys()),
        ("aes", aes_keys()),
        ("ecies-p256", ecies_keys()),
        ("passphrase", passphrase_keys()),
        ("aws-kms", aws_kms_keys(&moto).await),
        ("aliyun-kms blob", aliyun_blob_keys(&fake)),
        ("aliyun-kms oss2", aliyun_oss2_keys(&fake)),
        ("volcengine-kms", volcengine_keys(&volc)),
    ];
    for (name, (good, wrong)) in suites {
        conformance_on(Store::Garage, name, good, wrong).await;
    }
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

#[tokio::test]
async fn aws_kms_against_moto() {
    let moto = Moto::start();
    let (good, wrong) = aws_kms_keys(&moto).await;
    conformance("aws-kms", good, wrong).await;
}

#[tokio::test]
async fn aws_kms_context_binds_iv_and_content_algorithm() {
    use base64::Engine as _;
    let moto = Moto::start();
    moto.create_key(Some("alias/ctx")).await;
    let kms = cryptobucket::AwsKmsKey::new(moto.kms_client(), "alias/ctx");
    let (_server, cb) = bucket_with(Fault::None, Keyring::single(kms, MatDesc::new())).await;
    let out = cb
        .put_object()
        .key("o")
        .body(b"secret".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(out.envelope.wrap_alg.as_str(), "CRYPTOBUCKET/AWS-KMS");
    let b64 = base64::engine::general_purpose::STANDARD;
    // The IV header is the IV; flip one bit of it: KMS refuses the key (context mismatch).
    let mut env = out.envelope.clone();
    let mut iv = b64.decode(&env.wrapped_iv.text).unwrap();
    assert_eq!(iv.len(), 16);
    iv[15] ^= 1;
    env.wrapped_iv = cryptobucket::envelope::WrappedValue::new(b64.encode(&iv));
    let err = cb.keyring().unwrap(&env).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnwrap);
    // A blob that is not KMS's.
    let mut env = out.envelope.clone();
    env.wrapped_key = cryptobucket::envelope::WrappedValue::new(b64.encode([7u8; 60]));
    let err = cb.keyring().unwrap(&env).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnwrap);
    // The untouched envelope unwraps.
    cb.keyring().unwrap(&out.envelope).await.unwrap();
    // A key that does not exist: a key error naming it, not an unwrap failure.
    let missing = cryptobucket::AwsKmsKey::new(moto.kms_client(), "alias/none");
    let ring = Keyring::single(missing, MatDesc::new());
    let err = ring.unwrap(&out.envelope).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
    assert!(err.to_string().contains("alias/none"), "{err}");
}

/// Multipart and resumable transfers call KMS once per transfer, not once per part.
#[tokio::test]
async fn aws_kms_is_called_once_per_transfer() {
    use std::sync::atomic::Ordering::SeqCst;
    #[derive(Debug)]
    struct Counting(
        cryptobucket::AwsKmsKey,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    );
    impl cryptobucket::KeyProvider for Counting {
        fn generate<'a>(
            &'a self,
        ) -> futures::future::BoxFuture<
            'a,
            cryptobucket::Result<(cryptobucket::ContentMaterial, cryptobucket::WrappedMaterial)>,
        > {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.generate()
        }
        fn wrap<'a>(
            &'a self,
            m: &'a cryptobucket::ContentMaterial,
        ) -> futures::future::BoxFuture<'a, cryptobucket::Result<cryptobucket::WrappedMaterial>>
        {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.wrap(m)
        }
        fn unwrap<'a>(
            &'a self,
            e: &'a cryptobucket::Envelope,
        ) -> futures::future::BoxFuture<'a, cryptobucket::Result<cryptobucket::ContentMaterial>>
        {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.unwrap(e)
        }
        fn can_unwrap(&self, a: &cryptobucket::WrapAlgorithm) -> bool {
            self.0.can_unwrap(a)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
    let moto = Moto::start();
    moto.create_key(Some("alias/count")).await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let kms = Counting(
        cryptobucket::AwsKmsKey::new(moto.kms_client(), "alias/count"),
        calls.clone(),
    );
    let (_server, cb) = bucket_with(Fault::None, Keyring::single(kms, MatDesc::new())).await;
    four_part_round_trip(&cb, || {
        assert_eq!(calls.swap(0, SeqCst), 1, "upload of 4 parts");
    })
    .await;
    assert_eq!(calls.load(SeqCst), 1, "download of 4 ranges");
}

fn ali(fake: &support::aliyun_kms::FakeKms, key: &str) -> cryptobucket::AliyunKmsKey {
    cryptobucket::AliyunKmsKey::new(
        key,
        "cn-hangzhou",
        cryptobucket::AliyunCredentials::new("LTAI-test", "ali-secret"),
    )
    .endpoint_url(&fake.endpoint)
}

#[tokio::test]
async fn aliyun_kms_blob_encoding() {
    let fake = support::aliyun_kms::FakeKms::start("LTAI-test", "ali-secret", None);
    let (good, wrong) = aliyun_blob_keys(&fake);
    conformance("aliyun-kms blob", good.clone(), wrong).await;
    // A tampered blob (one character of the key header changed): the uniform unwrap error.
    let ring = good;
    let (_server, cb) = bucket_with(Fault::None, ring).await;
    let out = cb
        .put_object()
        .key("t")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    let mut env = out.envelope.clone();
    let mut text = env.wrapped_key.text.into_bytes();
    text[50] = if text[50] == b'A' { b'B' } else { b'A' };
    env.wrapped_key = cryptobucket::envelope::WrappedValue::new(String::from_utf8(text).unwrap());
    let err = cb.keyring().unwrap(&env).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnwrap, "{err}");
}

#[tokio::test]
async fn aliyun_kms_oss2_encoding_with_passphrase() {
    let fake = support::aliyun_kms::FakeKms::start("LTAI-test", "ali-secret", None);
    let (good, wrong) = aliyun_oss2_keys(&fake);
    conformance("aliyun-kms oss2", good, wrong).await;
    assert!(
        fake.calls("GenerateDataKey") > 0,
        "oss2 encoding takes the CEK from GenerateDataKey"
    );
}

#[tokio::test]
async fn aliyun_kms_sts_credentials_and_bad_secrets() {
    let fake = support::aliyun_kms::FakeKms::start("STS.id", "sts-secret", Some("sts-token"));
    let k = fake.create_key();
    let creds = cryptobucket::AliyunCredentials::new("STS.id", "sts-secret");
    let with_token = cryptobucket::AliyunKmsKey::new(
        &k,
        "cn-hangzhou",
        creds.clone().security_token("sts-token"),
    )
    .endpoint_url(&fake.endpoint);
    let (_server, cb) = bucket_with(Fault::None, Keyring::single(with_token, MatDesc::new())).await;
    cb.put_object()
        .key("o")
        .body(b"sts".to_vec())
        .send()
        .await
        .unwrap();
    let got = cb.get_object().key("o").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap()[..], b"sts");
    for (name, key) in [
        (
            "no token",
            cryptobucket::AliyunKmsKey::new(&k, "cn-hangzhou", creds.clone()),
        ),
        (
            "wrong secret",
            cryptobucket::AliyunKmsKey::new(
                &k,
                "cn-hangzhou",
                cryptobucket::AliyunCredentials::new("STS.id", "nope").security_token("sts-token"),
            ),
        ),
    ] {
        let ring = Keyring::single(key.endpoint_url(&fake.endpoint), MatDesc::new());
        let err = ring
            .unwrap(
                &cb.head_object()
                    .key("o")
                    .send()
                    .await
                    .unwrap()
                    .envelope
                    .unwrap(),
            )
            .await
            .unwrap_err();
        // Credentials the service refuses: access denied, with the service's code.
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{name}: {err}");
        assert!(!err.is_retryable(), "{name}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("SignatureDoesNotMatch") || text.contains("SecurityToken"),
            "{name}: {text}"
        );
        assert!(
            !text.contains("sts-secret") && !text.contains("sts-token"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn aliyun_kms_is_called_once_per_transfer() {
    let fake = support::aliyun_kms::FakeKms::start("LTAI-test", "ali-secret", None);
    let k = fake.create_key();
    let (_server, cb) =
        bucket_with(Fault::None, Keyring::single(ali(&fake, &k), MatDesc::new())).await;
    // Blob encoding: one Encrypt for the CEK, one for the IV; per upload, not per part.
    four_part_round_trip(&cb, || assert_eq!(fake.calls("Encrypt"), 2)).await;
    assert_eq!(
        fake.calls("Decrypt"),
        2,
        "one unwrap (key + IV) for four ranges"
    );
}
