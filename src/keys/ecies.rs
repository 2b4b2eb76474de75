//! ECIES over P-256 to a recipient certificate or public key, with Volcengine Ark's
//! construction, so that whoever holds the certificate's private key (an inference sandbox, a
//! TEE) can read, with no shared secret and no KMS.
//!
//! Wire format (this crate's own wrap algorithm, `CRYPTOBUCKET/ECIES-P256`, [`WRAP_ALG`]): the
//! CEK and the IV are wrapped separately, each with a **fresh** ephemeral P-256 key (Ark reuses
//! one key and nonce per request; a key wrap must not):
//!
//! ```text
//! z      = ECDH(ephemeral private key, recipient public key)        x-coordinate, 32 bytes
//! okm    = HKDF-SHA256(IKM = z, salt = none, info = empty, L = 44)
//! sealed = AES-256-GCM(key = okm[0..32], nonce = okm[32..44], aad = empty, value)
//! header = b64(0x04 ‖ X ‖ Y of the ephemeral key) "." b64(sealed ‖ tag)
//! ```
//!
//! `client-side-encryption-key` holds the CEK's header, `client-side-encryption-start` the
//! IV's. The first half is Ark's `token`, the second what Ark's `encrypt_string_with_key` makes
//! of the value: the Ark SDK's key agreement code (PyPI `volcengine-ark-runtime`) is a peer.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use x509_cert::der::{Decode as _, asn1::ObjectIdentifier};
use zeroize::Zeroizing;

use super::{KeyProvider, WrappedMaterial, pem};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{Envelope, WrapAlgorithm, WrappedValue};
use crate::error::{Error, Result};

/// The wrap-algorithm string of objects wrapped by [`EciesP256Key`].
pub const WRAP_ALG: &str = "CRYPTOBUCKET/ECIES-P256";

const POINT_LEN: usize = 65;
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// A P-256 recipient: its public key (to write) and, to read, its private key.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cryptobucket::{ContentMaterial, EciesP256Key, KeyProvider};
/// let key = EciesP256Key::generate().unwrap();
/// let m = ContentMaterial::generate().unwrap();
/// let wrapped = key.wrap(&m).await.unwrap();
/// assert_eq!(wrapped.wrap_alg.as_str(), "CRYPTOBUCKET/ECIES-P256");
/// # });
/// ```
pub struct EciesP256Key {
    /// Uncompressed point `0x04 ‖ X ‖ Y`.
    public: [u8; POINT_LEN],
    private: Option<PrivateKey>,
}

impl fmt::Debug for EciesP256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EciesP256Key")
            .field("public_key", &hex::encode(&self.public[1..9]))
            .field("can_read", &self.private.is_some())
            .finish()
    }
}

fn bad_key(what: impl fmt::Display) -> Error {
    Error::invalid_key(format!("ECIES P-256 key: {what}"))
}

/// The uncompressed P-256 point of a DER SubjectPublicKeyInfo, checking its algorithm.
fn point_of_spki(spki: &x509_cert::spki::SubjectPublicKeyInfoOwned) -> Result<[u8; POINT_LEN]> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(PRIME256V1) {
        return Err(bad_key(format!(
            "the key is not on P-256 (algorithm {}, curve {})",
            spki.algorithm.oid,
            curve
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into())
        )));
    }
    let bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad_key("the public key bit string is not whole bytes"))?;
    let point: [u8; POINT_LEN] = bytes
        .try_into()
        .map_err(|_| bad_key("the public key is not an uncompressed point"))?;
    // Rejects points not on the curve.
    agreement::ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, &point))
        .map_err(|_| bad_key("the public key is not a valid P-256 point"))?;
    Ok(point)
}

impl EciesP256Key {
    /// A new random key pair (for tests and for generating a recipient).
    pub fn generate() -> Result<Self> {
        let private = PrivateKey::generate(&ECDH_P256).map_err(|_| bad_key("generation failed"))?;
        Self::from_private(private)
    }

    fn from_private(private: PrivateKey) -> Result<Self> {
        let public = private
            .compute_public_key()
            .map_err(|_| bad_key("cannot compute the public key"))?;
        Ok(Self {
            public: public
                .as_ref()
                .try_into()
                .map_err(|_| bad_key("unexpected public key encoding"))?,
            private: Some(private),
        })
    }

    /// A write-only key from the recipient's PEM: an X.509 certificate (checked to be on
    /// P-256 and valid now) or a bare `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_recipient_pem(pem_text: &str) -> Result<Self> {
        let (label, der) = pem::decode(pem_text)?;
        let public = match label.as_str() {
            "CERTIFICATE" => {
                let cert = x509_cert::Certificate::from_der(&der)
                    .map_err(|e| bad_key(format!("not a valid X.509 certificate ({e})")))?;
                let validity = &cert.tbs_certificate.validity;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let (from, until) = (
                    validity.not_before.to_unix_duration(),
                    validity.not_after.to_unix_duration(),
                );
                if now < from || now > until {
                    return Err(bad_key(format!(
                        "the recipient certificate is not valid now (valid from {} to {} seconds \
                         after the epoch); refusing to encrypt to it",
                        from.as_secs(),
                        until.as_secs()
                    )));
                }
                point_of_spki(&cert.tbs_certificate.subject_public_key_info)?
            }
            "PUBLIC KEY" => {
                let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(&der)
                    .map_err(|e| bad_key(format!("not a valid public key ({e})")))?;
                point_of_spki(&spki)?
            }
            other => {
                return Err(bad_key(format!(
                    "expected a CERTIFICATE or PUBLIC KEY PEM block, got {other}"
                )));
            }
        };
        Ok(Self {
            public,
            private: None,
        })
    }

    /// A key that reads (and writes) from the recipient's private key PEM: PKCS#8 (`PRIVATE
    /// KEY`) or SEC1 (`EC PRIVATE KEY`), on P-256.
    pub fn from_private_pem(pem_text: &str) -> Result<Self> {
        let (label, der) = pem::decode(pem_text)?;
        if label != "PRIVATE KEY" && label != "EC PRIVATE KEY" {
            return Err(bad_key(format!(
                "expected a PRIVATE KEY or EC PRIVATE KEY PEM block, got {label}"
            )));
        }
        let private = PrivateKey::from_private_key_der(&ECDH_P256, &der)
            .map_err(|_| bad_key("not a P-256 private key"))?;
        Self::from_private(private)
    }

    /// A new recipient for `keygen`: a P-256 private key (PKCS#8 PEM, in a zeroizing buffer)
    /// and a self-signed X.509 certificate for it (ECDSA-SHA256, subject `CN=common_name`,
    /// valid from a minute ago for `valid_for`). Give the certificate to writers
    /// (`recipient = ...`) and keep the private key where the objects are read.
    ///
    /// ```
    /// use cryptobucket::EciesP256Key;
    /// let (private_pem, cert_pem) =
    ///     EciesP256Key::generate_self_signed("sandbox", std::time::Duration::from_secs(86_400))
    ///         .unwrap();
    /// let reader = EciesP256Key::from_private_pem(&private_pem).unwrap();
    /// let writer = EciesP256Key::from_recipient_pem(&cert_pem).unwrap();
    /// assert_eq!(reader.public_point(), writer.public_point());
    /// ```
    pub fn generate_self_signed(
        common_name: &str,
        valid_for: std::time::Duration,
    ) -> Result<(Zeroizing<String>, String)> {
        let fail = |what: &str, e: rcgen::Error| bad_key(format!("{what}: {e}"));
        let key_pair = Zeroizing::new(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| fail("key generation failed", e))?,
        );
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| fail("certificate parameters", e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now
            + time::Duration::try_from(valid_for)
                .map_err(|_| bad_key("the validity period is too long"))?;
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyAgreement,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&*key_pair)
            .map_err(|e| fail("self-signing failed", e))?;
        Ok((Zeroizing::new(key_pair.serialize_pem()), cert.pem()))
    }

    /// The recipient's uncompressed public point (`0x04 ‖ X ‖ Y`).
    pub fn public_point(&self) -> &[u8; POINT_LEN] {
        &self.public
    }

    /// Ark's key schedule: AES-256-GCM key and nonce from the ECDH secret.
    fn schedule(z: &[u8]) -> Result<(LessSafeKey, Nonce)> {
        let mut okm = Zeroizing::new([0u8; 44]);
        Salt::new(HKDF_SHA256, &[])
            .extract(z)
            .expand(&[], HkdfLen(44))
            .and_then(|o| o.fill(&mut okm[..]))
            .map_err(|_| Error::key_unwrap())?;
        let key = UnboundKey::new(&AES_256_GCM, &okm[..32]).map_err(|_| Error::key_unwrap())?;
        let nonce =
            Nonce::try_assume_unique_for_key(&okm[32..44]).map_err(|_| Error::key_unwrap())?;
        Ok((LessSafeKey::new(key), nonce))
    }

    fn seal(&self, value: &[u8]) -> Result<WrappedValue> {
        let fail = |_| bad_key("ECDH with the recipient key failed");
        let eph = PrivateKey::generate(&ECDH_P256).map_err(fail)?;
        let eph_public = eph.compute_public_key().map_err(fail)?;
        let (key, nonce) = agreement::agree(
            &eph,
            UnparsedPublicKey::new(&ECDH_P256, &self.public),
            Error::key_unwrap(),
            Self::schedule,
        )?;
        let mut sealed = Zeroizing::new(value.to_vec());
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| Error::key_unwrap())?;
        let mut body = sealed.to_vec();
        body.extend_from_slice(tag.as_ref());
        Ok(WrappedValue::new(format!(
            "{}.{}",
            B64.encode(eph_public.as_ref()),
            B64.encode(body)
        )))
    }

    fn open(
        &self,
        private: &PrivateKey,
        value: &WrappedValue,
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (token, sealed) = value
            .text
            .trim()
            .split_once('.')
            .ok_or_else(Error::key_unwrap)?;
        let point = B64.decode(token).map_err(|_| Error::key_unwrap())?;
        let mut sealed = Zeroizing::new(B64.decode(sealed).map_err(|_| Error::key_unwrap())?);
        let (key, nonce) = agreement::agree(
            private,
            UnparsedPublicKey::new(&ECDH_P256, &point),
            Error::key_unwrap(),
            Self::schedule,
        )?;
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| Error::key_unwrap())?;
        if plain.len() != len {
            return Err(Error::key_unwrap());
        }
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// An HKDF output length of `n` bytes.
struct HkdfLen(usize);

impl aws_lc_rs::hkdf::KeyType for HkdfLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl KeyProvider for EciesP256Key {
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            Ok(WrappedMaterial {
                wrap_alg: WrapAlgorithm::EciesP256,
                key: self.seal(material.cek())?,
                iv: self.seal(material.iv())?,
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move {
            let private = self.private.as_ref().ok_or_else(|| {
                Error::invalid_key(
                    "this ECIES key has only the recipient's public key; reading needs its \
                     private key",
                )
            })?;
            let cek = self.open(private, &envelope.wrapped_key, CEK_LEN);
            let iv = self.open(private, &envelope.wrapped_iv, IV_LEN);
            super::material_from(cek, iv)
        })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        *alg == WrapAlgorithm::EciesP256
    }

    fn describe(&self) -> String {
        format!(
            "ECIES P-256 recipient {}{}",
            hex::encode(&self.public[1..9]),
            if self.private.is_some() {
                ""
            } else {
                " (write-only)"
            }
        )
    }
}
