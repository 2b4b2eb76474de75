//! Volcengine KMS: our request signer against the official one (PyPI `volcengine`,
//! `volcengine.auth.SignerV4`, in `tests/interop/volc_peer.py`), and the provider against the
//! local KMS server of the testkit, which checks every signature with its own code: wrong
//! secrets, tokens and keys, tampered blobs, veTurboIO headers whose data key KMS holds, and
//! the keyring file entry. The provider's conformance suite is in `tests/providers.rs`.

use cryptobucket_testkit as support;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cryptobucket::keys::volcengine_kms::sign_v4;
use cryptobucket::safetensors::SafetensorsIndex;
use cryptobucket::{
    ErrorKind, KeyProvider, Keyring, MatDesc, VolcengineCredentials, VolcengineKmsKey,
};
use serde_json::{Value, json};
use support::volc_kms::FakeVolcKms;
use support::{Fault, bucket_with, put_raw};

fn key(fake: &FakeVolcKms, creds: VolcengineCredentials) -> VolcengineKmsKey {
    VolcengineKmsKey::new("ml-ring", "ckpt", "cn-beijing", creds).endpoint_url(&fake.endpoint)
}

#[test]
fn signer_matches_the_official_volcengine_signer() {
    let cases = vec![
        json!({"method": "POST", "host": "open.volcengineapi.com", "path": "/",
               "query": {"Action": "Decrypt", "Version": "2021-02-18", "KeyringName": "ml", "KeyName": "k"},
               "content_type": "application/json", "body": "{\"CiphertextBlob\":\"AAAA\"}",
               "ak": "AKLTtest", "sk": "c2VjcmV0", "token": "", "region": "cn-beijing",
               "service": "kms", "date": "20240708T064450Z"}),
        json!({"method": "POST", "host": "127.0.0.1:8080", "path": "/",
               "query": {"Action": "Encrypt", "Version": "2021-02-18"},
               "content_type": "application/json; charset=UTF-8", "body": "{\"Plaintext\":\"ab+/==\"}",
               "ak": "STS.id", "sk": "sts secret", "token": "sts-session-token/+=", "region": "cn-shanghai",
               "service": "kms", "date": "20261124T235959Z"}),
        json!({"method": "GET", "host": "kms.cn-beijing.volcengineapi.com", "path": "/a b/ü/c",
               "query": {"Z": "last", "a": "x y+z/ü*~", "Empty": ""},
               "content_type": "application/x-www-form-urlencoded", "body": "",
               "ak": "AK", "sk": "SK", "token": "", "region": "cn-beijing",
               "service": "iam", "date": "20250101T000000Z"}),
        json!({"method": "PUT", "host": "h", "path": "/",
               "query": {},
               "content_type": "application/json", "body": "{\"k\":\"värde ✓\"}",
               "ak": "AK2", "sk": "ключ", "token": "t", "region": "ap-southeast-1",
               "service": "kms", "date": "20240229T120000Z"}),
    ];
    let official = support::python_peer(
        "tests/interop/volc_peer.py",
        &json!({"cases": cases.clone()}),
    );
    for (case, want) in cases.iter().zip(official["signed"].as_array().unwrap()) {
        let s = |k: &str| case[k].as_str().unwrap();
        let query: BTreeMap<String, String> = case["query"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let mut creds = VolcengineCredentials::new(s("ak"), s("sk"));
        if !s("token").is_empty() {
            creds = creds.session_token(s("token"));
        }
        let ours = sign_v4(
            s("method"),
            s("host"),
            s("path"),
            &query,
            s("content_type"),
            s("body").as_bytes(),
            &creds,
            s("region"),
            s("service"),
            s("date"),
        );
        assert_eq!(ours.authorization, want["authorization"], "{case}");
        assert_eq!(ours.x_content_sha256, want["x_content_sha256"], "{case}");
        assert_eq!(ours.x_date, want["x_date"], "{case}");
    }
}

#[tokio::test]
async fn round_trips_bad_credentials_unknown_keys_and_tampering() {
    let fake = FakeVolcKms::start("AKLT-id", "volc-secret", None, "cn-beijing");
    fake.create_key("ml-ring", "ckpt");
    let good = key(&fake, VolcengineCredentials::new("AKLT-id", "volc-secret"));
    let (_server, cb) = bucket_with(Fault::None, Keyring::single(good, MatDesc::new())).await;
    let out = cb
        .put_object()
        .key("o")
        .body(b"volcengine".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.envelope.wrap_alg.as_str(),
        "CRYPTOBUCKET/VOLCENGINE-KMS"
    );
    let got = cb.get_object().key("o").send().await.unwrap();
    assert_eq!(&got.body.collect().await.unwrap()[..], b"volcengine");
    assert_eq!(
        fake.calls("Encrypt"),
        1,
        "one Encrypt per object (the IV is in clear)"
    );
    assert_eq!(fake.calls("Decrypt"), 1);
    let env = out.envelope.clone();

    // A wrong secret: the server refuses the signature; access denied, not retryable, and
    // the secret appears nowhere.
    let wrong = key(
        &fake,
        VolcengineCredentials::new("AKLT-id", "not-the-secret"),
    );
    let err = wrong.unwrap(&env).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.service_code(), Some("SignatureDoesNotMatch"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert!(!format!("{wrong:?}").contains("not-the-secret"));
    // An unknown key: a key error naming it.
    let unknown = VolcengineKmsKey::new(
        "ml-ring",
        "no-such-key",
        "cn-beijing",
        VolcengineCredentials::new("AKLT-id", "volc-secret"),
    )
    .endpoint_url(&fake.endpoint);
    let err = unknown
        .wrap(&cryptobucket::ContentMaterial::generate().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
    assert!(err.to_string().contains("no-such-key"), "{err}");
    // A swapped IV header: the encryption context no longer matches; the uniform unwrap error.
    let mut swapped = env.clone();
    swapped.wrapped_iv = cryptobucket::envelope::WrappedValue::new(B64.encode([9u8; 16]));
    let good = key(&fake, VolcengineCredentials::new("AKLT-id", "volc-secret"));
    assert_eq!(
        good.unwrap(&swapped).await.unwrap_err().kind(),
        ErrorKind::KeyUnwrap
    );
    // A tampered blob.
    let mut tampered = env.clone();
    let mut text = tampered.wrapped_key.text.into_bytes();
    text[20] = if text[20] == b'A' { b'B' } else { b'A' };
    tampered.wrapped_key =
        cryptobucket::envelope::WrappedValue::new(String::from_utf8(text).unwrap());
    assert_eq!(
        good.unwrap(&tampered).await.unwrap_err().kind(),
        ErrorKind::KeyUnwrap
    );
}

#[tokio::test]
async fn sts_session_tokens() {
    let fake = FakeVolcKms::start("STS.id", "sts-secret", Some("sts-token"), "cn-beijing");
    fake.create_key("ml-ring", "ckpt");
    let creds = VolcengineCredentials::new("STS.id", "sts-secret");
    let with_token = key(&fake, creds.clone().session_token("sts-token"));
    let m = cryptobucket::ContentMaterial::generate().unwrap();
    let w = with_token.wrap(&m).await.unwrap();
    let env = cryptobucket::Envelope::from_metadata(&HashMap::from([
        ("client-side-encryption-key".to_owned(), w.key.text.clone()),
        ("client-side-encryption-start".to_owned(), w.iv.text.clone()),
        (
            "client-side-encryption-cek-alg".to_owned(),
            "AES/CTR/NoPadding".to_owned(),
        ),
        (
            "client-side-encryption-wrap-alg".to_owned(),
            w.wrap_alg.as_str().to_owned(),
        ),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(with_token.unwrap(&env).await.unwrap().cek(), m.cek());
    for (name, k) in [
        ("no token", key(&fake, creds.clone())),
        (
            "wrong token",
            key(&fake, creds.clone().session_token("other")),
        ),
    ] {
        let err = k.unwrap(&env).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{name}: {err}");
        assert!(!err.to_string().contains("sts-token"), "{err}");
    }
}

/// A headered veTurboIO file whose data key KMS holds (`meta_data_key` = KMS `Encrypt` of the
/// key), made by `cryptography`: read by tensor through the KMS key source.
#[tokio::test]
async fn veturbo_headers_take_their_key_from_kms() {
    let fake = FakeVolcKms::start("AKLT-id", "volc-secret", None, "cn-beijing");
    fake.create_key("ml-ring", "ckpt");
    let kms = key(&fake, VolcengineCredentials::new("AKLT-id", "volc-secret"));
    let data_key = [0x42u8; 16];
    let blob = kms.encrypt(&data_key, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let made: Value = support::python_peer(
        "tests/interop/tensors_peer.py",
        &json!({"op": "make", "dir": dir.path(), "big": 1000,
                "header_key": B64.encode(data_key), "meta_data_key": blob}),
    );
    let (_server, cb) = bucket_with(Fault::None, support::keyring_a()).await;
    put_raw(
        &cb,
        "vt",
        std::fs::read(dir.path().join("model.vt-header")).unwrap(),
        HashMap::new(),
    )
    .await;
    let reader = cb.reader().key("vt").veturbo(kms).open().await.unwrap();
    assert_eq!(reader.veturbo_header().unwrap().meta_data_key, blob);
    let index = SafetensorsIndex::read(&reader).await.unwrap();
    assert_eq!(
        index.tensors().len(),
        made["tensors"].as_object().unwrap().len()
    );
    // A headerless file names no KMS key: a clear key error.
    put_raw(
        &cb,
        "plain-vt",
        std::fs::read(dir.path().join("model.vt-env")).unwrap(),
        HashMap::new(),
    )
    .await;
    let kms = key(&fake, VolcengineCredentials::new("AKLT-id", "volc-secret"));
    let err = cb
        .reader()
        .key("plain-vt")
        .veturbo(kms)
        .open()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey, "{err}");
}

#[test]
fn keyring_file_entry() {
    // SAFETY: no other test in this binary reads these variables.
    unsafe {
        std::env::set_var("VOLCENGINE_ACCESS_KEY", "AKLT-file");
        std::env::set_var("VOLCENGINE_SECRET_KEY", "file-secret");
    }
    let ring = cryptobucket::KeyringFile::from_toml_str(
        "[[keys]]\nkind = \"volcengine-kms\"\nkeyring_name = \"ml\"\nkey_name = \"ckpt\"\nregion = \"cn-beijing\"\nendpoint_url = \"http://127.0.0.1:1\"\n",
        ".".as_ref(),
    )
    .unwrap();
    let d = ring.default_entry().provider().describe();
    assert_eq!(d, "Volcengine KMS key ml/ckpt (cn-beijing)");
    let e = cryptobucket::KeyringFile::from_toml_str(
        "[[keys]]\nkind = \"volcengine-kms\"\nkey_name = \"ckpt\"\nregion = \"cn-beijing\"\n",
        ".".as_ref(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("keyring_name"), "{e}");
    let e = cryptobucket::KeyringFile::from_toml_str(
        "[[keys]]\nkind = \"aes\"\nkey_env = \"X\"\nkeyring_name = \"ml\"\n",
        ".".as_ref(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("do not apply"), "{e}");
}
