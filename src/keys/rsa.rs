//! RSA key wrapping: `RSA/NONE/PKCS1Padding` (written by default, read) and
//! `RSA/NONE/OAEPWithSHA-1AndMGF1Padding` (read; written on request), plus legacy V1 `rsa`.
//!
//! The RSA operations are AWS-LC's (the library aws-sdk-s3 already links for TLS), called
//! through `aws-lc-sys` because the safe `aws-lc-rs` API refuses keys below 2048 bits and the
//! OSS SDKs' own test objects use RSA-1024. AWS-LC's PKCS#1 v1.5 decryption runs in constant
//! time (blinded, constant-time modular exponentiation and padding check); the pure-Rust `rsa`
//! crate is avoided because of RUSTSEC-2023-0071 (Marvin). Every unwrap failure, whatever its
//! cause, becomes the same [`ErrorKind::KeyUnwrap`](crate::ErrorKind::KeyUnwrap) error.

use std::ptr::NonNull;

use aws_lc_sys as sys;
use futures::future::BoxFuture;
use zeroize::{Zeroize, Zeroizing};

use super::{KeyProvider, WrappedMaterial, pem};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{Envelope, FormatVersion, WrapAlgorithm, WrappedValue};
use crate::error::{Error, Result};

/// Smallest modulus accepted. 1024-bit keys are read for compatibility with old objects, but
/// they are weak; [`generate_rsa_pem`] makes 2048 bits or more.
const MIN_BITS: u32 = 1024;

/// An owned AWS-LC `RSA*`.
struct Rsa(NonNull<sys::RSA>);

// SAFETY: AWS-LC RSA objects are safe to use from several threads for encrypt/decrypt
// (internal blinding state is locked); we never mutate the key after construction.
unsafe impl Send for Rsa {}
unsafe impl Sync for Rsa {}

impl Drop for Rsa {
    fn drop(&mut self) {
        // SAFETY: we own one reference; RSA_free zeroizes private components.
        unsafe { sys::RSA_free(self.0.as_ptr()) }
    }
}

impl Rsa {
    fn from_raw(ptr: *mut sys::RSA, what: &str) -> Result<Self> {
        clear_errors();
        let rsa = NonNull::new(ptr)
            .map(Rsa)
            .ok_or_else(|| Error::invalid_key(format!("could not parse {what}")))?;
        // SAFETY: valid RSA pointer.
        let bits = unsafe { sys::RSA_bits(rsa.0.as_ptr()) };
        if bits < MIN_BITS {
            return Err(Error::invalid_key(format!(
                "{what} has {bits} bits; at least {MIN_BITS} are required"
            )));
        }
        Ok(rsa)
    }

    fn with_evp(ptr: *mut sys::EVP_PKEY, what: &str) -> Result<Self> {
        let Some(pkey) = NonNull::new(ptr) else {
            clear_errors();
            return Err(Error::invalid_key(format!("could not parse {what}")));
        };
        // SAFETY: valid EVP_PKEY; get1 returns a new reference (or null) that we own.
        let rsa = unsafe {
            let rsa = if sys::EVP_PKEY_id(pkey.as_ptr()) == sys::EVP_PKEY_RSA {
                sys::EVP_PKEY_get1_RSA(pkey.as_ptr())
            } else {
                std::ptr::null_mut()
            };
            sys::EVP_PKEY_free(pkey.as_ptr());
            rsa
        };
        if rsa.is_null() {
            clear_errors();
            return Err(Error::invalid_key(format!("{what} is not an RSA key")));
        }
        Self::from_raw(rsa, what)
    }

    fn parse_der(der: &[u8], label: &str) -> Result<Self> {
        let mut cbs = sys::CBS {
            data: der.as_ptr(),
            len: der.len(),
        };
        // SAFETY: `der` outlives every call; the parsers copy what they keep.
        unsafe {
            match label {
                "RSA PRIVATE KEY" => Self::from_raw(
                    sys::RSA_private_key_from_bytes(der.as_ptr(), der.len()),
                    "the PKCS#1 private key",
                ),
                "PRIVATE KEY" => Self::with_evp(
                    sys::EVP_parse_private_key(&mut cbs),
                    "the PKCS#8 private key",
                ),
                "RSA PUBLIC KEY" => Self::from_raw(
                    sys::RSA_public_key_from_bytes(der.as_ptr(), der.len()),
                    "the PKCS#1 public key",
                ),
                "PUBLIC KEY" => Self::with_evp(
                    sys::EVP_parse_public_key(&mut cbs),
                    "the SubjectPublicKeyInfo public key",
                ),
                other => Err(Error::invalid_key(format!(
                    "unsupported PEM block {other:?}; expected RSA PRIVATE KEY, PRIVATE KEY, RSA PUBLIC KEY or PUBLIC KEY"
                ))),
            }
        }
    }

    fn is_private(&self) -> bool {
        // SAFETY: valid pointer; RSA_get0_d returns a borrowed pointer or null.
        unsafe { !sys::RSA_get0_d(self.0.as_ptr()).is_null() }
    }

    fn size(&self) -> usize {
        // SAFETY: valid pointer.
        unsafe { sys::RSA_size(self.0.as_ptr()) as usize }
    }

    fn bits(&self) -> u32 {
        // SAFETY: valid pointer.
        unsafe { sys::RSA_bits(self.0.as_ptr()) }
    }

    fn encrypt(&self, padding: RsaPadding, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.size()];
        let mut out_len = 0usize;
        // SAFETY: buffers are valid for the given lengths.
        let ok = unsafe {
            sys::RSA_encrypt(
                self.0.as_ptr(),
                &mut out_len,
                out.as_mut_ptr(),
                out.len(),
                plaintext.as_ptr(),
                plaintext.len(),
                padding.raw(),
            )
        };
        clear_errors();
        if ok != 1 {
            return Err(Error::invalid_key(
                "RSA encryption failed (key too small for the padding?)",
            ));
        }
        out.truncate(out_len);
        Ok(out)
    }

    /// Decrypts into a zeroizing buffer. `None` on any failure, without saying why.
    fn decrypt(&self, padding: RsaPadding, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; self.size()]);
        let mut out_len = 0usize;
        // SAFETY: buffers are valid for the given lengths.
        let ok = unsafe {
            sys::RSA_decrypt(
                self.0.as_ptr(),
                &mut out_len,
                out.as_mut_ptr(),
                out.len(),
                ciphertext.as_ptr(),
                ciphertext.len(),
                padding.raw(),
            )
        };
        clear_errors();
        if ok != 1 {
            return None;
        }
        out.truncate(out_len);
        Some(out)
    }
}

fn clear_errors() {
    // SAFETY: clears this thread's AWS-LC error queue; always safe.
    unsafe { sys::ERR_clear_error() }
}

/// RSA padding used for wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RsaPadding {
    /// RSAES-PKCS1-v1_5 (`RSA/NONE/PKCS1Padding`), readable by every OSS SDK.
    Pkcs1,
    /// RSA-OAEP with SHA-1 and MGF1-SHA-1 (`RSA/NONE/OAEPWithSHA-1AndMGF1Padding`), readable by
    /// oss2's `LocalRsaProvider` only.
    OaepSha1,
}

impl RsaPadding {
    fn raw(self) -> i32 {
        match self {
            Self::Pkcs1 => sys::RSA_PKCS1_PADDING,
            Self::OaepSha1 => sys::RSA_PKCS1_OAEP_PADDING,
        }
    }

    fn wrap_alg(self) -> WrapAlgorithm {
        match self {
            Self::Pkcs1 => WrapAlgorithm::RsaPkcs1,
            Self::OaepSha1 => WrapAlgorithm::RsaOaepSha1,
        }
    }
}

/// An RSA master key: a public key (enough for writing) and optionally the private key.
///
/// ```
/// use cryptobucket::{RsaKeyPair, RsaPadding};
/// let (private_pem, public_pem) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// let writer = RsaKeyPair::from_public_pem(&public_pem).unwrap();
/// assert!(!writer.has_private_key());
/// let both = RsaKeyPair::from_pem(Some(&public_pem), Some(&private_pem)).unwrap()
///     .with_padding(RsaPadding::OaepSha1);
/// assert!(both.has_private_key());
/// assert!(!format!("{both:?}").contains("PRIVATE"));
/// ```
pub struct RsaKeyPair {
    public: Rsa,
    private: Option<Rsa>,
    padding: RsaPadding,
}

impl std::fmt::Debug for RsaKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKeyPair")
            .field("bits", &self.public.bits())
            .field("has_private_key", &self.private.is_some())
            .field("padding", &self.padding)
            .finish()
    }
}

impl RsaKeyPair {
    /// From PEM texts. At least one must be given; a private key alone also serves for writing.
    /// Accepts `RSA PRIVATE KEY` (PKCS#1), `PRIVATE KEY` (PKCS#8), `RSA PUBLIC KEY` (PKCS#1) and
    /// `PUBLIC KEY` (SPKI).
    pub fn from_pem(public_pem: Option<&str>, private_pem: Option<&str>) -> Result<Self> {
        let private = private_pem.map(|p| parse_pem(p, true)).transpose()?;
        let public = public_pem.map(|p| parse_pem(p, false)).transpose()?;
        let (public, private) = match (public, private) {
            (Some(public), private) => (public, private),
            (None, Some(private)) => {
                // The private key holds the public part; parse it again as the public half.
                let again = parse_pem(private_pem.expect("present"), true)?;
                (again, Some(private))
            }
            (None, None) => {
                return Err(Error::invalid_key(
                    "an RSA key needs a public or a private key",
                ));
            }
        };
        if let Some(private) = &private {
            let probe = [0x5au8; 16];
            let ct = public.encrypt(RsaPadding::Pkcs1, &probe)?;
            if private
                .decrypt(RsaPadding::Pkcs1, &ct)
                .as_deref()
                .map(Vec::as_slice)
                != Some(&probe[..])
            {
                return Err(Error::invalid_key(
                    "the public and private keys do not belong together",
                ));
            }
        }
        Ok(Self {
            public,
            private,
            padding: RsaPadding::Pkcs1,
        })
    }

    /// From a private key PEM (PKCS#1 or PKCS#8).
    pub fn from_private_pem(pem: &str) -> Result<Self> {
        Self::from_pem(None, Some(pem))
    }

    /// From a public key PEM (PKCS#1 or SPKI): can write, cannot read.
    pub fn from_public_pem(pem: &str) -> Result<Self> {
        Self::from_pem(Some(pem), None)
    }

    /// Chooses the padding used when writing (reading accepts both).
    pub fn with_padding(mut self, padding: RsaPadding) -> Self {
        self.padding = padding;
        self
    }

    /// True when objects can be read with this key.
    pub fn has_private_key(&self) -> bool {
        self.private.is_some()
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> u32 {
        self.public.bits()
    }

    fn unwrap_sync(&self, envelope: &Envelope) -> Result<ContentMaterial> {
        let Some(private) = &self.private else {
            return Err(Error::invalid_key(
                "this RSA key has no private key, so it can only write; supply the private key to read",
            ));
        };
        let padding = match envelope.wrap_alg {
            WrapAlgorithm::RsaPkcs1 => RsaPadding::Pkcs1,
            WrapAlgorithm::RsaOaepSha1 => RsaPadding::OaepSha1,
            _ => return Err(Error::key_unwrap()),
        };
        let key_ct = envelope.wrapped_key.decode(crate::envelope::META_KEY)?;
        let iv_ct = envelope.wrapped_iv.decode(crate::envelope::META_START)?;
        // Always run both decryptions and judge them together: one outcome, one error.
        let key = private.decrypt(padding, &key_ct);
        let iv = private.decrypt(padding, &iv_ct);
        let (Some(key), Some(iv)) = (key, iv) else {
            return Err(Error::key_unwrap());
        };
        match envelope.version {
            FormatVersion::V2 => {
                if key.len() != CEK_LEN || iv.len() != IV_LEN {
                    return Err(Error::key_unwrap());
                }
                ContentMaterial::from_slices(&key, &iv)
            }
            FormatVersion::V1 => {
                // V1's "start" is an ASCII decimal used as the whole initial counter block.
                let counter = std::str::from_utf8(&iv)
                    .ok()
                    .and_then(|s| s.trim().parse::<u128>().ok())
                    .ok_or_else(Error::key_unwrap)?;
                if key.len() != CEK_LEN {
                    return Err(Error::key_unwrap());
                }
                let mut cek = [0u8; CEK_LEN];
                cek.copy_from_slice(&key);
                let m = ContentMaterial::from_parts(cek, counter.to_be_bytes());
                cek.zeroize();
                Ok(m)
            }
        }
    }
}

fn parse_pem(text: &str, want_private: bool) -> Result<Rsa> {
    let (label, der) = pem::decode(text)?;
    let rsa = Rsa::parse_der(&der, &label)?;
    if want_private && !rsa.is_private() {
        return Err(Error::invalid_key(format!(
            "expected a private key but the PEM holds {label}"
        )));
    }
    if !want_private && rsa.is_private() {
        return Err(Error::invalid_key(
            "expected a public key but the PEM holds a private key",
        ));
    }
    Ok(rsa)
}

impl KeyProvider for RsaKeyPair {
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            let key = self.public.encrypt(self.padding, material.cek())?;
            let iv = self.public.encrypt(self.padding, material.iv())?;
            Ok(WrappedMaterial {
                wrap_alg: self.padding.wrap_alg(),
                key: WrappedValue::from_bytes(&key),
                iv: WrappedValue::from_bytes(&iv),
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move { self.unwrap_sync(envelope) })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        matches!(alg, WrapAlgorithm::RsaPkcs1 | WrapAlgorithm::RsaOaepSha1)
    }

    fn describe(&self) -> String {
        let pad = match self.padding {
            RsaPadding::Pkcs1 => "PKCS#1 v1.5",
            RsaPadding::OaepSha1 => "OAEP-SHA1",
        };
        let role = if self.private.is_some() {
            "read/write"
        } else {
            "write-only"
        };
        format!("RSA-{} ({pad}, {role})", self.bits())
    }
}

/// Generates an RSA key pair; returns `(private PKCS#8 PEM, public SPKI PEM)`.
/// `bits` must be 2048, 3072, 4096 or 8192.
///
/// ```
/// let (private_pem, public_pem) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
/// assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
/// assert!(cryptobucket::generate_rsa_pem(1024).is_err());
/// ```
pub fn generate_rsa_pem(bits: u32) -> Result<(Zeroizing<String>, String)> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        8192 => KeySize::Rsa8192,
        other => {
            return Err(Error::invalid_input(format!(
                "unsupported RSA key size {other}; use 2048, 3072, 4096 or 8192"
            )));
        }
    };
    let key = PrivateDecryptingKey::generate(size)
        .map_err(|_| Error::invalid_key("RSA key generation failed"))?;
    let private_der: Pkcs8V1Der<'static> = key
        .as_der()
        .map_err(|_| Error::invalid_key("RSA key encoding failed"))?;
    let public_der: PublicKeyX509Der<'static> = key
        .public_key()
        .as_der()
        .map_err(|_| Error::invalid_key("RSA key encoding failed"))?;
    let private_pem = pem::encode("PRIVATE KEY", private_der.as_ref());
    let public_pem = pem::encode("PUBLIC KEY", public_der.as_ref());
    Ok((private_pem, public_pem.to_string()))
}
