//! Debug and Display never show key material.

use cryptobucket_testkit as support;

use base64::Engine as _;
use cryptobucket::{ContentMaterial, KeyEntry, Keyring, MatDesc};

#[test]
fn debug_output_has_no_key_bytes() {
    let m = ContentMaterial::from_parts([0xAB; 32], [0xCD; 16]);
    let (private_pem, _) = support::key_pem("a");
    let key = support::rsa("a");
    let keyring = Keyring::builder()
        .default_key(KeyEntry::new(support::rsa("a")).matdesc(MatDesc::new().with("k", "a")))
        .build()
        .unwrap();
    let cipher = m.cipher_at(3).unwrap();
    let aes = cryptobucket::AesMasterKey::from_bytes(&[0xAB; 32]).unwrap();
    let aes_ring = Keyring::single(
        cryptobucket::AesMasterKey::from_bytes(&[0xAB; 32]).unwrap(),
        MatDesc::new(),
    );
    let aes_err = cryptobucket::AesMasterKey::from_bytes(&[0xAB; 31]).unwrap_err();
    let ali = cryptobucket::AliyunKmsKey::new(
        "key-1",
        "cn-hangzhou",
        cryptobucket::AliyunCredentials::new("LTAI-visible-id", "q6urq6urSECRET")
            .security_token("q6urTOKEN"),
    )
    .passphrase("q6urPASS");
    let texts = [
        format!("{ali:?}"),
        format!("{m:?}"),
        format!("{key:?}"),
        format!("{keyring:?}"),
        format!("{cipher:?}"),
        format!("{aes:?}"),
        format!("{aes_ring:?}"),
        format!("{aes_err:?} {aes_err}"),
    ];
    let private_b64: String = private_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .take(3)
        .collect();
    for t in &texts {
        for needle in [
            "ab, ab", "171, 171", "abab", "205, 205", "cdcd", "ABAB", "q6ur",
        ] {
            assert!(!t.contains(needle), "{t} contains {needle}");
        }
        assert!(!t.contains(&private_b64[..40]), "{t}");
    }
    assert!(!texts[0].contains(&base64::engine::general_purpose::STANDARD.encode([0xAB; 32])));
}

/// Key-holding types wipe themselves: compile-time checks that they zeroize on drop (the
/// content material directly; the others hold their secrets in `Zeroizing` or in AWS-LC key
/// objects, which clear their key schedules when freed).
#[test]
fn key_material_zeroizes_on_drop() {
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroize_on_drop::<ContentMaterial>();
    // A clone is independent: wiping it leaves the original intact (no shared buffer).
    let m = ContentMaterial::from_parts([7; 32], [9; 16]);
    let mut c = m.clone();
    zeroize::Zeroize::zeroize(&mut c);
    assert_eq!(c.cek(), &[0; 32]);
    assert_eq!(m.cek(), &[7; 32]);
}
