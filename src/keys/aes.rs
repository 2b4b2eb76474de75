//! A local symmetric master key: a 256-bit key wrapping each object's CEK and IV with
//! AES-256-GCM. For air-gapped machines and TEEs where the master key is handed to the process
//! (an environment variable or a file) rather than held by a KMS.
//!
//! Wire format (this crate's own; the OSS SDKs have no symmetric wrap):
//! - wrap algorithm `CRYPTOBUCKET/AES-256-GCM` ([`WRAP_ALG`]);
//! - `client-side-encryption-key` = base64(nonce ‖ ciphertext ‖ tag) of the 32-byte CEK,
//!   `client-side-encryption-start` = the same for the 16-byte IV, each with a fresh random
//!   96-bit nonce;
//! - additional authenticated data `cryptobucket/aes-256-gcm/v1|key|AES/CTR/NoPadding` (and
//!   `|iv|` for the IV): the wrapped key and IV cannot be swapped, and an object whose content
//!   algorithm header was changed no longer unwraps (no downgrade).
//!
//! Unlike RSA, only the holder of the master key can write objects that unwrap with it.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use zeroize::{Zeroize as _, Zeroizing};

use futures::future::BoxFuture;

use super::{KeyProvider, WrappedMaterial};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{CEK_ALG_AES_CTR, Envelope, WrapAlgorithm, WrappedValue};
use crate::error::{Error, Result};

/// The wrap-algorithm string of objects wrapped by [`AesMasterKey`].
pub const WRAP_ALG: &str = "CRYPTOBUCKET/AES-256-GCM";

const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A 256-bit master key kept in memory (zeroized on drop, redacted in `Debug`).
///
/// ```
/// use cryptobucket::{AesMasterKey, ContentMaterial, KeyProvider};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let key = AesMasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
/// let m = ContentMaterial::generate().unwrap();
/// let wrapped = key.wrap(&m).await.unwrap();
/// assert_eq!(wrapped.wrap_alg.as_str(), "CRYPTOBUCKET/AES-256-GCM");
/// # });
/// ```
pub struct AesMasterKey {
    key: LessSafeKey,
    /// A non-secret fingerprint for `describe` (first 4 bytes of SHA-256 of the key).
    fingerprint: String,
}

impl fmt::Debug for AesMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesMasterKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl AesMasterKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            return Err(Error::invalid_key(format!(
                "an AES-256 master key is 32 bytes, got {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::invalid_key("AES-256-GCM key setup failed"))?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        Ok(Self {
            key: LessSafeKey::new(key),
            fingerprint: hex::encode(&digest.as_ref()[..4]),
        })
    }

    /// A key from base64 text (standard alphabet, padding optional, surrounding whitespace
    /// ignored): the form `openssl rand -base64 32` prints.
    pub fn from_base64(text: &str) -> Result<Self> {
        let cleaned: Zeroizing<String> = Zeroizing::new(text.split_whitespace().collect());
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = Zeroizing::new(engine.decode(cleaned.as_bytes()).map_err(|_| {
            Error::invalid_key("the AES master key is not valid base64 (expected 32 bytes, base64)")
        })?);
        Self::from_bytes(&bytes)
    }

    /// A key from the environment variable `var` (base64).
    pub fn from_env(var: &str) -> Result<Self> {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::invalid_key(format!(
                "environment variable {var} is not set (it should hold the base64 of a 32-byte key)"
            ))
        })?);
        Self::from_base64(&value).map_err(|e| Error::invalid_key(format!("{var}: {}", e.message())))
    }

    /// A key from a file holding either the 32 raw bytes or their base64.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
        );
        let key = if bytes.len() == 32 {
            Self::from_bytes(&bytes)
        } else {
            std::str::from_utf8(&bytes)
                .map_err(|_| Error::invalid_key("not base64"))
                .and_then(Self::from_base64)
        };
        key.map_err(|e| Error::invalid_key(format!("{}: {}", path.display(), e.message())))
    }

    fn seal(&self, role: &str, plain: &[u8]) -> Result<WrappedValue> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| Error::invalid_key("the system random number generator failed"))?;
        let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN));
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(role)),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| Error::invalid_key("AES-256-GCM wrapping failed"))?;
        buf.extend_from_slice(tag.as_ref());
        Ok(WrappedValue::new(B64.encode(&buf[..])))
    }

    fn open(&self, role: &str, value: &WrappedValue, len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(
            B64.decode(value.text.trim())
                .map_err(|_| Error::key_unwrap())?,
        );
        if buf.len() != NONCE_LEN + len + TAG_LEN {
            return Err(Error::key_unwrap());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).map_err(|_| Error::key_unwrap())?;
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad(role)), &mut buf[NONCE_LEN..])
            .map_err(|_| Error::key_unwrap())?
            .len();
        let out = Zeroizing::new(buf[NONCE_LEN..NONCE_LEN + plain_len].to_vec());
        buf.zeroize();
        Ok(out)
    }
}

fn aad(role: &str) -> Vec<u8> {
    format!("cryptobucket/aes-256-gcm/v1|{role}|{CEK_ALG_AES_CTR}").into_bytes()
}

impl KeyProvider for AesMasterKey {
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            Ok(WrappedMaterial {
                wrap_alg: WrapAlgorithm::LocalAes256Gcm,
                key: self.seal("key", material.cek())?,
                iv: self.seal("iv", material.iv())?,
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move {
            if envelope.wrap_alg != WrapAlgorithm::LocalAes256Gcm {
                return Err(Error::key_unwrap());
            }
            let cek = self.open("key", &envelope.wrapped_key, CEK_LEN)?;
            let iv = self.open("iv", &envelope.wrapped_iv, IV_LEN)?;
            ContentMaterial::from_slices(&cek, &iv)
        })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        *alg == WrapAlgorithm::LocalAes256Gcm
    }

    fn describe(&self) -> String {
        format!("AES-256-GCM master key {}", self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{FormatVersion, MatDesc};

    fn envelope(w: WrappedMaterial) -> Envelope {
        Envelope {
            version: FormatVersion::V2,
            wrap_alg: w.wrap_alg,
            wrapped_key: w.key,
            wrapped_iv: w.iv,
            matdesc: MatDesc::new(),
            unencrypted_content_length: None,
            unencrypted_content_md5: None,
            data_size: None,
            part_size: None,
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn round_trip_and_every_tamper_is_one_error() {
        let k = AesMasterKey::from_bytes(&[7; 32]).unwrap();
        let m = ContentMaterial::generate().unwrap();
        let env = envelope(block_on(k.wrap(&m)).unwrap());
        let back = block_on(k.unwrap(&env)).unwrap();
        assert_eq!((back.cek(), back.iv()), (m.cek(), m.iv()));

        let other = AesMasterKey::from_bytes(&[8; 32]).unwrap();
        let mut swapped = env.clone();
        std::mem::swap(&mut swapped.wrapped_key, &mut swapped.wrapped_iv);
        let mut flipped = env.clone();
        let mut raw = B64.decode(&flipped.wrapped_key.text).unwrap();
        raw[20] ^= 1;
        flipped.wrapped_key = WrappedValue::new(B64.encode(&raw));
        let mut garbage = env.clone();
        garbage.wrapped_iv = WrappedValue::new("%%%");
        for (k, e) in [
            (&other, &env),
            (&k, &swapped),
            (&k, &flipped),
            (&k, &garbage),
        ] {
            let err = block_on(k.unwrap(e)).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::KeyUnwrap);
        }
        // Debug shows a fingerprint, never the key.
        let dbg = format!("{k:?}");
        assert!(
            !dbg.contains("0707") && dbg.contains("fingerprint"),
            "{dbg}"
        );
    }

    #[test]
    fn key_sources() {
        let b64 = B64.encode([1u8; 32]);
        assert!(AesMasterKey::from_base64(&format!(" {b64}\n")).is_ok());
        assert!(AesMasterKey::from_base64(b64.trim_end_matches('=')).is_ok());
        assert!(AesMasterKey::from_base64(&B64.encode([1u8; 16])).is_err());
        assert!(AesMasterKey::from_base64("not base64!").is_err());
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [2u8; 32]).unwrap();
        assert!(AesMasterKey::from_file(&raw).is_ok());
        let text = dir.path().join("text");
        std::fs::write(&text, format!("{b64}\n")).unwrap();
        assert!(AesMasterKey::from_file(&text).is_ok());
        let e = AesMasterKey::from_env("CRYPTOBUCKET_TEST_SURELY_UNSET").unwrap_err();
        assert!(e.to_string().contains("CRYPTOBUCKET_TEST_SURELY_UNSET"));
    }
}
