//! The passphrase provider against an independent implementation (argon2-cffi + cryptography,
//! `tests/interop/passphrase_peer.py`), wrong passphrases, raised and hostile parameters.

use cryptobucket_testkit as support;

use cryptobucket::keys::passphrase::KdfParams;
use cryptobucket::{
    ContentMaterial, CryptoBucket, ErrorKind, KeyProvider, Keyring, MatDesc, PassphraseKey,
};
use serde_json::json;
use support::{Fault, TestServer, pattern};

const LIGHT: KdfParams = KdfParams {
    memory_kib: 19 * 1024,
    passes: 2,
    lanes: 1,
};

fn peer(req: serde_json::Value) -> serde_json::Value {
    support::python_peer("tests/interop/passphrase_peer.py", &req)
}

#[tokio::test]
async fn independent_implementation_agrees_both_ways() {
    let key = PassphraseKey::new("correct horse battery staple");
    let m = ContentMaterial::generate().unwrap();
    // Ours (default parameters), unwrapped by argon2-cffi + cryptography.
    let w = key.wrap(&m).await.unwrap();
    assert_eq!(w.wrap_alg.as_str(), "CRYPTOBUCKET/PASSPHRASE-ARGON2ID");
    assert!(
        w.key.text.starts_with("argon2id$v=19$m=65536,t=3,p=1$"),
        "{}",
        w.key.text
    );
    let back = peer(json!({
        "op": "unwrap", "passphrase": "correct horse battery staple",
        "key": w.key.text, "iv": w.iv.text,
    }));
    assert_eq!(back["cek"], hex::encode(m.cek()));
    assert_eq!(back["iv"], hex::encode(m.iv()));
    // Theirs (other parameters), unwrapped by us through a bucket's envelope.
    let theirs = peer(json!({
        "op": "wrap", "passphrase": "correct horse battery staple",
        "cek": hex::encode([4u8; 32]), "iv": hex::encode([5u8; 16]), "m": 12288, "t": 3, "p": 2,
    }));
    let mut env = cryptobucket::Envelope::from_metadata(
        &[
            (
                "client-side-encryption-key",
                theirs["key"].as_str().unwrap(),
            ),
            (
                "client-side-encryption-start",
                theirs["iv"].as_str().unwrap(),
            ),
            ("client-side-encryption-cek-alg", "AES/CTR/NoPadding"),
            (
                "client-side-encryption-wrap-alg",
                "CRYPTOBUCKET/PASSPHRASE-ARGON2ID",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
    .unwrap()
    .unwrap();
    let got = key.unwrap(&env).await.unwrap();
    assert_eq!((got.cek(), got.iv()), (&[4u8; 32], &[5u8; 16]));
    // A wrong passphrase is the uniform unwrap error.
    let e = PassphraseKey::new("Tr0ub4dor&3")
        .unwrap(&env)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnwrap);
    // Hostile parameters are refused before any memory is allocated.
    let text = env.wrapped_key.text.replace("m=12288", "m=4000000000");
    env.wrapped_key = cryptobucket::envelope::WrappedValue::new(text);
    let e = key.unwrap(&env).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidMetadata, "{e}");
}

#[tokio::test]
async fn raised_parameters_still_read_old_objects() {
    let server = TestServer::start_with(Fault::None);
    server.create_bucket("bkt").await;
    let bucket = |k: PassphraseKey| {
        let c = server.client();
        async move { CryptoBucket::new(c.await, "bkt", Keyring::single(k, MatDesc::new())) }
    };
    let old = bucket(PassphraseKey::new("pw").with_params(LIGHT)).await;
    let data = pattern(70_000, 1);
    old.put_object()
        .key("old")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let raised = KdfParams {
        memory_kib: 32 * 1024,
        passes: 4,
        lanes: 2,
    };
    let new = bucket(PassphraseKey::new("pw").with_params(raised)).await;
    new.put_object()
        .key("new")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    for k in ["old", "new"] {
        let got = new.get_object().key(k).send().await.unwrap();
        assert!(got.body.collect().await.unwrap() == data, "{k}");
    }
    let wrong = bucket(PassphraseKey::new("pw2")).await;
    let e = wrong.get_object().key("old").send().await.unwrap_err();
    // The object has integrity data: the key commitment decides, uniformly.
    assert_eq!(e.kind(), ErrorKind::CommitmentMismatch, "{e}");
}

#[test]
fn keyring_file_entries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw.txt"), "s3cret words\n").unwrap();
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();
    let load = |body: &str| {
        cryptobucket::KeyringFile::from_toml_str(
            &format!("[[keys]]\nkind = \"passphrase\"\n{body}"),
            dir.path(),
        )
    };
    let k = load("passphrase_file = \"pw.txt\"\n").unwrap();
    assert!(
        k.default_entry()
            .provider()
            .describe()
            .starts_with("passphrase (Argon2id m=65536")
    );
    assert!(!format!("{k:?}").contains("s3cret"));
    assert!(
        load("passphrase_file = \"empty.txt\"\n")
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
    let e = load("").unwrap_err();
    assert!(
        e.to_string().contains("passphrase_env or passphrase_file"),
        "{e}"
    );
}
