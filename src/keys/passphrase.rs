//! A passphrase as the master key, done right: Argon2id with a random salt per object and its
//! parameters stored with the object, then an AES-256-GCM key wrap bound to the object's
//! algorithms. For teams with no KMS and no key pair (and never SHA-256(password), as the
//! model-encryption scripts people migrate from do).
//!
//! Wire format (this crate's own, `CRYPTOBUCKET/PASSPHRASE-ARGON2ID`, [`WRAP_ALG`]):
//!
//! ```text
//! KEK   = Argon2id(passphrase, salt (16 random bytes), m KiB, t passes, p lanes, 32 bytes), v=19
//! client-side-encryption-key   = "argon2id$v=19$m=M,t=T,p=P$" b64(salt) "$" b64(n1 ‖ AES-256-GCM(KEK, n1, CEK, aad_key))
//! client-side-encryption-start = b64(n2 ‖ AES-256-GCM(KEK, n2, IV, aad_iv))
//! aad_key = "cryptobucket/passphrase/v1|key|AES/CTR/NoPadding|" ‖ the parameter prefix up to the salt
//! aad_iv  = "cryptobucket/passphrase/v1|iv|AES/CTR/NoPadding|"  ‖ the same
//! ```
//!
//! n1, n2: random 96-bit nonces; b64: standard base64 with padding. The parameters travel with
//! the object, so they can be raised for new objects while old ones still read; a reader refuses
//! parameters beyond [`MAX_MEMORY_KIB`] / [`MAX_PASSES`] (a hostile object cannot make it
//! allocate or spin without bound).

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::{KeyProvider, WrappedMaterial};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{CEK_ALG_AES_CTR, Envelope, WrapAlgorithm, WrappedValue};
use crate::error::{Error, ErrorKind, Result};

/// The wrap-algorithm string of objects wrapped by [`PassphraseKey`].
pub const WRAP_ALG: &str = "CRYPTOBUCKET/PASSPHRASE-ARGON2ID";
/// Largest Argon2 memory cost a reader accepts (1 GiB).
pub const MAX_MEMORY_KIB: u32 = 1 << 20;
/// Largest Argon2 pass count a reader accepts.
pub const MAX_PASSES: u32 = 16;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// Argon2id cost parameters.
///
/// The default (64 MiB, 3 passes, 1 lane) is above OWASP's minimums for Argon2id (19 MiB with 2
/// passes, or 12 MiB with 3, 1 lane) and takes about a tenth of a second per object.
///
/// ```
/// let p = cryptobucket::keys::passphrase::KdfParams::default();
/// assert_eq!((p.memory_kib, p.passes, p.lanes), (65536, 3, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes (parallelism).
    pub lanes: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            passes: 3,
            lanes: 1,
        }
    }
}

impl KdfParams {
    fn check(&self) -> Result<()> {
        let ok = (8 * self.lanes..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_PASSES).contains(&self.passes)
            && (1..=16).contains(&self.lanes);
        if ok {
            Ok(())
        } else {
            Err(Error::invalid_metadata(format!(
                "Argon2id parameters m={},t={},p={} are outside what this reader accepts \
                 (m ≤ {MAX_MEMORY_KIB} KiB, t ≤ {MAX_PASSES}, p ≤ 16)",
                self.memory_kib, self.passes, self.lanes
            )))
        }
    }

    fn prefix(&self) -> String {
        format!(
            "argon2id$v=19$m={},t={},p={}$",
            self.memory_kib, self.passes, self.lanes
        )
    }

    fn parse_prefix(text: &str) -> Result<(Self, &str)> {
        let bad = || Error::invalid_metadata("the passphrase-wrapped key header is malformed");
        let rest = text.strip_prefix("argon2id$v=19$").ok_or_else(bad)?;
        let (params, rest) = rest.split_once('$').ok_or_else(bad)?;
        let mut p = [None; 3];
        for field in params.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(bad)?;
            let slot = match k {
                "m" => 0,
                "t" => 1,
                "p" => 2,
                _ => return Err(bad()),
            };
            p[slot] = Some(v.parse::<u32>().map_err(|_| bad())?);
        }
        let [Some(memory_kib), Some(passes), Some(lanes)] = p else {
            return Err(bad());
        };
        let params = Self {
            memory_kib,
            passes,
            lanes,
        };
        params.check()?;
        Ok((params, rest))
    }
}

/// A passphrase master key (zeroized on drop, redacted in `Debug`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use cryptobucket::{ContentMaterial, KeyProvider, PassphraseKey};
/// use cryptobucket::keys::passphrase::KdfParams;
/// let key = PassphraseKey::new("correct horse battery staple")
///     .with_params(KdfParams { memory_kib: 19 * 1024, passes: 2, lanes: 1 });
/// let wrapped = key.wrap(&ContentMaterial::generate().unwrap()).await.unwrap();
/// assert!(wrapped.key.text.starts_with("argon2id$v=19$m=19456,t=2,p=1$"));
/// assert!(!format!("{key:?}").contains("horse"));
/// # });
/// ```
#[derive(Clone)]
pub struct PassphraseKey {
    passphrase: Zeroizing<String>,
    params: KdfParams,
}

impl fmt::Debug for PassphraseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

fn aad(which: &str, prefix: &str) -> Vec<u8> {
    format!("cryptobucket/passphrase/v1|{which}|{CEK_ALG_AES_CTR}|{prefix}").into_bytes()
}

impl PassphraseKey {
    /// A key from a passphrase, with the default [`KdfParams`] for writing.
    pub fn new(passphrase: impl Into<String>) -> Self {
        Self {
            passphrase: Zeroizing::new(passphrase.into()),
            params: KdfParams::default(),
        }
    }

    /// The passphrase from an environment variable.
    pub fn from_env(var: &str) -> Result<Self> {
        let p = Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::invalid_key(format!("the passphrase variable {var} is not set"))
        })?);
        Self::checked(&p)
    }

    /// The passphrase from the first line of a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::io(format!("cannot read passphrase file {}", path.display()), e)
        })?);
        Self::checked(text.lines().next().unwrap_or(""))
    }

    /// The passphrase as a prompt returned it (refused when empty).
    ///
    /// ```
    /// let key = cryptobucket::PassphraseKey::from_prompt(zeroize::Zeroizing::new("correct horse".into()));
    /// assert!(key.is_ok());
    /// ```
    pub fn from_prompt(passphrase: Zeroizing<String>) -> Result<Self> {
        Self::checked(&passphrase)
    }

    fn checked(p: &str) -> Result<Self> {
        if p.is_empty() {
            return Err(Error::invalid_key("the passphrase is empty"));
        }
        Ok(Self::new(p))
    }

    /// Cost parameters for new objects (reading uses each object's own).
    pub fn with_params(mut self, params: KdfParams) -> Self {
        self.params = params;
        self
    }

    fn kek(&self, params: &KdfParams, salt: &[u8]) -> Result<LessSafeKey> {
        params.check()?;
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(params.memory_kib, params.passes, params.lanes, Some(32))
                .map_err(|e| Error::invalid_metadata(format!("Argon2id parameters: {e}")))?,
        );
        let mut kek = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(self.passphrase.as_bytes(), salt, &mut kek[..])
            .map_err(|e| Error::invalid_metadata(format!("Argon2id: {e}")))?;
        let key = UnboundKey::new(&AES_256_GCM, &kek[..]).map_err(|_| Error::key_unwrap())?;
        Ok(LessSafeKey::new(key))
    }

    fn seal(kek: &LessSafeKey, value: &[u8], aad: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| Error::new(ErrorKind::Io, "the system random number generator failed"))?;
        let mut buf = Zeroizing::new(value.to_vec());
        let tag = kek
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| Error::key_unwrap())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        out.extend_from_slice(tag.as_ref());
        Ok(B64.encode(out))
    }

    fn open(kek: &LessSafeKey, text: &str, aad: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut raw = Zeroizing::new(B64.decode(text.trim()).map_err(|_| Error::key_unwrap())?);
        if raw.len() != NONCE_LEN + len + TAG_LEN {
            return Err(Error::key_unwrap());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&raw[..NONCE_LEN]).map_err(|_| Error::key_unwrap())?;
        let plain = kek
            .open_in_place(nonce, Aad::from(aad), &mut raw[NONCE_LEN..])
            .map_err(|_| Error::key_unwrap())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

impl KeyProvider for PassphraseKey {
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            let mut salt = [0u8; SALT_LEN];
            aws_lc_rs::rand::fill(&mut salt).map_err(|_| {
                Error::new(ErrorKind::Io, "the system random number generator failed")
            })?;
            let prefix = self.params.prefix();
            let this = self.clone();
            let params = self.params;
            // Argon2id takes a while: off the async threads.
            let kek = tokio::task::spawn_blocking(move || this.kek(&params, &salt))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("key derivation failed: {e}")))??;
            let key = format!(
                "{prefix}{}${}",
                B64.encode(salt),
                Self::seal(&kek, material.cek(), &aad("key", &prefix))?
            );
            let iv = Self::seal(&kek, material.iv(), &aad("iv", &prefix))?;
            Ok(WrappedMaterial {
                wrap_alg: WrapAlgorithm::PassphraseArgon2id,
                key: WrappedValue::new(key),
                iv: WrappedValue::new(iv),
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move {
            let text = envelope.wrapped_key.text.trim();
            let (params, rest) = KdfParams::parse_prefix(text)?;
            let prefix = params.prefix();
            let (salt, sealed) = rest.split_once('$').ok_or_else(Error::key_unwrap)?;
            let salt = B64.decode(salt).map_err(|_| Error::key_unwrap())?;
            if salt.len() < 8 {
                return Err(Error::key_unwrap());
            }
            let this = self.clone();
            let kek = tokio::task::spawn_blocking(move || this.kek(&params, &salt))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("key derivation failed: {e}")))??;
            let cek = Self::open(&kek, sealed, &aad("key", &prefix), CEK_LEN);
            let iv = Self::open(&kek, &envelope.wrapped_iv.text, &aad("iv", &prefix), IV_LEN);
            super::material_from(cek, iv)
        })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        *alg == WrapAlgorithm::PassphraseArgon2id
    }

    fn describe(&self) -> String {
        format!(
            "passphrase (Argon2id m={} KiB, t={}, p={})",
            self.params.memory_kib, self.params.passes, self.params.lanes
        )
    }
}
