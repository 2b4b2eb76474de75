//! ECIES P-256 recipients (Volcengine Ark's construction) against the real peers: Ark's own key
//! agreement code wraps, an independent `cryptography` derivation unwraps
//! (`tests/interop/ecies_peer.py`).

use cryptobucket_testkit as support;

use std::collections::HashMap;

use cryptobucket::envelope::{CEK_ALG_AES_CTR, META_CEK_ALG, META_KEY, META_START, META_WRAP_ALG};
use cryptobucket::{
    ContentMaterial, CryptoBucket, EciesP256Key, ErrorKind, KeyProvider, Keyring, MatDesc,
};
use serde_json::{Value, json};
use support::{Fault, TestServer, pattern, put_raw, reference_ctr};

fn peer(req: Value) -> Value {
    support::python_peer("tests/interop/ecies_peer.py", &req)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[tokio::test]
async fn ark_key_agreement_wraps_what_we_read_and_cryptography_reads_what_we_wrap() {
    let certs = peer(json!({"op": "certs"}));
    let reader = EciesP256Key::from_private_pem(s(&certs["pkcs8"])).unwrap();
    let sec1 = EciesP256Key::from_private_pem(s(&certs["sec1"])).unwrap();
    assert_eq!(reader.public_point(), sec1.public_point());
    let from_cert = EciesP256Key::from_recipient_pem(s(&certs["cert"])).unwrap();
    let from_public = EciesP256Key::from_recipient_pem(s(&certs["public"])).unwrap();
    assert_eq!(from_cert.public_point(), reader.public_point());
    assert_eq!(from_public.public_point(), reader.public_point());

    // 1. Ark's code wraps a CEK and IV for the certificate; an object made with them reads.
    let (cek, iv) = ([7u8; 32], {
        let mut iv = [9u8; 16];
        iv[8..12].fill(0);
        iv
    });
    let ark = peer(json!({
        "op": "ark-wrap",
        "cert": s(&certs["cert"]),
        "values": [hex::encode(cek), hex::encode(iv)],
    }));
    let headers: Vec<String> = ark["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| s(h).to_owned())
        .collect();
    let server = TestServer::start_with(Fault::None);
    server.create_bucket("bkt").await;
    let cb = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(sec1, MatDesc::new()),
    );
    let data = pattern(100_000, 3);
    let mut body = data.clone();
    reference_ctr(&cek, &iv, 0, &mut body);
    let meta = HashMap::from([
        (META_KEY.to_owned(), headers[0].clone()),
        (META_START.to_owned(), headers[1].clone()),
        (META_CEK_ALG.to_owned(), CEK_ALG_AES_CTR.to_owned()),
        (
            META_WRAP_ALG.to_owned(),
            "CRYPTOBUCKET/ECIES-P256".to_owned(),
        ),
    ]);
    put_raw(&cb, "ark", body, meta).await;
    let got = cb.get_object().key("ark").send().await.unwrap();
    assert!(got.body.collect().await.unwrap() == data);

    // 2. Our wrap (to the certificate only) unwraps with an independent derivation.
    let m = ContentMaterial::generate().unwrap();
    let w = from_cert.wrap(&m).await.unwrap();
    assert_eq!(w.wrap_alg.as_str(), "CRYPTOBUCKET/ECIES-P256");
    let (k1, _) = w.key.text.split_once('.').unwrap();
    let (k2, _) = w.iv.text.split_once('.').unwrap();
    assert_ne!(k1, k2, "a fresh ephemeral key for each wrapped value");
    let back = peer(json!({
        "op": "unwrap",
        "key": s(&certs["pkcs8"]),
        "headers": [w.key.text, w.iv.text],
    }));
    assert_eq!(s(&back["values"][0]), hex::encode(m.cek()));
    assert_eq!(s(&back["values"][1]), hex::encode(m.iv()));

    // 3. Written through the bucket with the certificate alone, read with the private key.
    let writer = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(from_cert, MatDesc::new().with("to", "sandbox")),
    );
    writer
        .put_object()
        .key("ours")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let e = writer.get_object().key("ours").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey, "write-only key: {e}");
    let reading = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(reader, MatDesc::new().with("to", "sandbox")),
    );
    let got = reading.get_object().key("ours").send().await.unwrap();
    assert_eq!(got.integrity, cryptobucket::IntegrityState::Verified);
    assert!(got.body.collect().await.unwrap() == data);

    // 4. Another recipient's key cannot read either object: typed errors.
    let other = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(EciesP256Key::generate().unwrap(), MatDesc::new()),
    );
    let e = other.get_object().key("ark").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnwrap, "{e}");
    let other = CryptoBucket::new(
        server.client().await,
        "bkt",
        Keyring::single(
            EciesP256Key::generate().unwrap(),
            MatDesc::new().with("to", "sandbox"),
        ),
    );
    let e = other.get_object().key("ours").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommitmentMismatch, "{e}");
}

#[test]
fn expired_and_foreign_curve_certificates_are_refused() {
    let certs = peer(json!({"op": "certs"}));
    let e = EciesP256Key::from_recipient_pem(s(&certs["expired"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(e.to_string().contains("not valid now"), "{e}");
    let e = EciesP256Key::from_recipient_pem(s(&certs["p384"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    assert!(e.to_string().contains("not on P-256"), "{e}");
    let e = EciesP256Key::from_private_pem(s(&certs["cert"])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidKey);
    // Debug shows no private material.
    let k = EciesP256Key::from_private_pem(s(&certs["pkcs8"])).unwrap();
    let dbg = format!("{k:?}");
    assert!(
        dbg.contains("can_read: true") && !dbg.contains("PRIVATE"),
        "{dbg}"
    );
}

#[test]
fn keyring_file_entries() {
    let certs = peer(json!({"op": "certs"}));
    let dir = tempfile::tempdir().unwrap();
    for (name, key) in [
        ("cert.pem", "cert"),
        ("key.pem", "sec1"),
        ("other.pem", "p384"),
    ] {
        std::fs::write(dir.path().join(name), s(&certs[key])).unwrap();
    }
    let load = |body: &str| {
        cryptobucket::KeyringFile::from_toml_str(
            &format!("[[keys]]\nkind = \"ecies-p256\"\n{body}"),
            dir.path(),
        )
    };
    let k = load("recipient = \"cert.pem\"\nprivate_key = \"key.pem\"\n").unwrap();
    assert!(
        k.default_entry()
            .provider()
            .describe()
            .starts_with("ECIES P-256 recipient")
    );
    let w = load("recipient = \"cert.pem\"\n").unwrap();
    assert!(
        w.default_entry()
            .provider()
            .describe()
            .ends_with("(write-only)")
    );
    let e = load("recipient = \"other.pem\"\n").unwrap_err();
    assert!(e.to_string().contains("not on P-256"), "{e}");
    let e = load("").unwrap_err();
    assert!(e.to_string().contains("needs recipient"), "{e}");
    let e = load("recipient = \"cert.pem\"\nkey_env = \"X\"\n").unwrap_err();
    assert!(e.to_string().contains("do not apply"), "{e}");
}

/// `keygen --ecies-p256`'s library half: `cryptography` reads the certificate as a valid,
/// self-signed P-256 certificate of that key, and the Ark SDK's own code encrypts to it what our
/// generated private key then reads.
#[test]
fn generated_recipient_certificates_are_valid_for_cryptography_and_ark() {
    let day = std::time::Duration::from_secs(86_400);
    let (private, cert) = EciesP256Key::generate_self_signed("sandbox-7", 30 * day).unwrap();
    let facts = peer(json!({"op": "check-cert", "cert": cert, "key": private.as_str()}));
    assert_eq!(facts["curve"], "secp256r1", "{facts}");
    assert_eq!(facts["private_curve"], "secp256r1", "{facts}");
    assert_eq!(facts["common_name"], "sandbox-7", "{facts}");
    assert_eq!(facts["self_signed"], true, "{facts}");
    assert_eq!(facts["key_matches"], true, "{facts}");
    assert_eq!(facts["valid_now"], true, "{facts}");
    assert_eq!(facts["key_agreement"], true, "{facts}");
    assert_eq!(facts["signature_hash"], "sha256", "{facts}");
    assert!(
        (28..=30).contains(&facts["days"].as_i64().unwrap()),
        "{facts}"
    );

    let values = [[5u8; 32].to_vec(), [6u8; 16].to_vec()];
    let ark = peer(json!({
        "op": "ark-wrap",
        "cert": cert,
        "values": values.iter().map(hex::encode).collect::<Vec<_>>(),
    }));
    let reader = EciesP256Key::from_private_pem(&private).unwrap();
    let writer = EciesP256Key::from_recipient_pem(&cert).unwrap();
    assert_eq!(reader.public_point(), writer.public_point());
    let ours = peer(json!({
        "op": "unwrap",
        "key": private.as_str(),
        "headers": ark["headers"],
    }));
    assert_eq!(
        ours["values"],
        json!(values.iter().map(hex::encode).collect::<Vec<_>>())
    );
    // ...and our reader opens Ark's headers too, by the unwrap path objects take.
    let header = |i: usize| s(&ark["headers"][i]).to_owned();
    let meta = HashMap::from([
        (META_KEY.to_owned(), header(0)),
        (META_START.to_owned(), header(1)),
        (META_CEK_ALG.to_owned(), CEK_ALG_AES_CTR.to_owned()),
        (
            META_WRAP_ALG.to_owned(),
            cryptobucket::keys::ecies::WRAP_ALG.to_owned(),
        ),
    ]);
    let envelope = cryptobucket::Envelope::from_metadata(&meta)
        .unwrap()
        .unwrap();
    let m = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(reader.unwrap(&envelope))
        .unwrap();
    assert_eq!(m.iv()[..], values[1][..]);
    assert_eq!(m.cek()[..], values[0][..]);
}
