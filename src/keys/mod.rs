//! Key providers and the keyring that chooses among them.
//!
//! A [`KeyProvider`] wraps a fresh content key and IV for writing and unwraps them for reading.
//! A [`Keyring`] holds any number of providers, each with a material description
//! ([`MatDesc`]); one is the default used for writing. On reading, the object's `matdesc` picks
//! the key: parsed-map equality, no silent fallback.

pub mod aes;
pub mod aliyun_kms;
pub mod aws_kms;
mod config;
pub mod ecies;
mod kms_http;
pub mod passphrase;
mod pem;
mod rsa;
pub mod volcengine_kms;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::cipher::ContentMaterial;
use crate::envelope::{Envelope, MatDesc, WrapAlgorithm, WrappedValue};
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::{IntegrityPolicy, IntegrityRecord, SignerPublicKey, SigningKey, TagKey};

pub use self::aes::AesMasterKey;
pub use self::aliyun_kms::{AliyunCredentials, AliyunKmsEncoding, AliyunKmsKey};
pub use self::aws_kms::AwsKmsKey;
pub use self::config::{KeyringFile, PassphrasePrompt};
pub use self::ecies::EciesP256Key;
pub use self::passphrase::PassphraseKey;
pub use self::rsa::{RsaKeyPair, RsaPadding, generate_rsa_pem};
pub use self::volcengine_kms::{VolcengineCredentials, VolcengineKmsKey};

/// The material from separately unwrapped key and IV: both, or the one uniform
/// [`ErrorKind::KeyUnwrap`] whichever failed (no oracle on which half).
pub(crate) fn material_from(
    cek: Result<zeroize::Zeroizing<Vec<u8>>>,
    iv: Result<zeroize::Zeroizing<Vec<u8>>>,
) -> Result<ContentMaterial> {
    match (cek, iv) {
        (Ok(cek), Ok(iv)) => ContentMaterial::from_slices(&cek, &iv),
        _ => Err(Error::key_unwrap()),
    }
}

/// The wrapped form of a [`ContentMaterial`], ready to be stored as metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedMaterial {
    /// Algorithm that wrapped it.
    pub wrap_alg: WrapAlgorithm,
    /// Wrapped content key (header text).
    pub key: WrappedValue,
    /// Wrapped IV (header text).
    pub iv: WrappedValue,
}

/// Wraps and unwraps content keys with one master key.
///
/// Implementations must return [`Error`]s of kind [`ErrorKind::KeyUnwrap`] for every failure to
/// unwrap, without distinguishing causes (padding oracles).
///
/// ```
/// use cryptobucket::{ContentMaterial, KeyProvider, RsaKeyPair};
/// # tokio_test_block(async {
/// let (private_pem, _public_pem) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// let key = RsaKeyPair::from_private_pem(&private_pem).unwrap();
/// let m = ContentMaterial::generate().unwrap();
/// let wrapped = key.wrap(&m).await.unwrap();
/// assert_eq!(wrapped.wrap_alg.as_str(), "RSA/NONE/PKCS1Padding");
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Makes the content material of a new object and its wrapped form. The default generates
    /// it locally ([`ContentMaterial::generate`]) and calls [`wrap`](Self::wrap); a KMS may
    /// generate the key itself (one call instead of two).
    fn generate<'a>(&'a self) -> BoxFuture<'a, Result<(ContentMaterial, WrappedMaterial)>> {
        Box::pin(async move {
            let material = ContentMaterial::generate()?;
            let wrapped = self.wrap(&material).await?;
            Ok((material, wrapped))
        })
    }

    /// Wraps existing `material` for storage (new objects, and re-wrapping on key rotation).
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>>;

    /// Unwraps the key material of `envelope`.
    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>>;

    /// True when this provider can unwrap objects wrapped with `alg`.
    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool;

    /// A short human description (no secrets), e.g. `RSA-2048 (PKCS#1 v1.5)`.
    fn describe(&self) -> String;
}

/// One key of a [`Keyring`]: a provider plus its material description and an optional name.
///
/// ```
/// use cryptobucket::{KeyEntry, MatDesc, RsaKeyPair};
/// let (private_pem, _) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// let entry = KeyEntry::new(RsaKeyPair::from_private_pem(&private_pem).unwrap())
///     .matdesc(MatDesc::new().with("team", "a"))
///     .name("team-a");
/// assert_eq!(entry.get_name(), Some("team-a"));
/// ```
#[derive(Clone, Debug)]
pub struct KeyEntry {
    name: Option<String>,
    matdesc: MatDesc,
    provider: Arc<dyn KeyProvider>,
}

impl KeyEntry {
    /// An entry with an empty material description.
    pub fn new(provider: impl KeyProvider + 'static) -> Self {
        Self::from_arc(Arc::new(provider))
    }

    /// An entry from a shared provider.
    pub fn from_arc(provider: Arc<dyn KeyProvider>) -> Self {
        Self {
            name: None,
            matdesc: MatDesc::new(),
            provider,
        }
    }

    /// Sets the material description written with, and matched against, this key.
    pub fn matdesc(mut self, matdesc: MatDesc) -> Self {
        self.matdesc = matdesc;
        self
    }

    /// Names the entry (for messages and for choosing a key by name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The entry's name, if any.
    pub fn get_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The entry's material description.
    pub fn get_matdesc(&self) -> &MatDesc {
        &self.matdesc
    }

    /// The entry's provider.
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} {}", self.matdesc),
            None => self.matdesc.to_string(),
        }
    }
}

/// The set of master keys a [`CryptoBucket`](crate::CryptoBucket) may use.
///
/// ```
/// use cryptobucket::{KeyEntry, Keyring, MatDesc, RsaKeyPair};
/// let (a, _) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// let (b, _) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// let keyring = Keyring::builder()
///     .default_key(KeyEntry::new(RsaKeyPair::from_private_pem(&a).unwrap())
///         .matdesc(MatDesc::new().with("v", "2")))
///     .key(KeyEntry::new(RsaKeyPair::from_private_pem(&b).unwrap())
///         .matdesc(MatDesc::new().with("v", "1")))
///     .build()
///     .unwrap();
/// assert_eq!(keyring.default_entry().get_matdesc(), &MatDesc::new().with("v", "2"));
/// ```
#[derive(Clone, Debug)]
pub struct Keyring {
    entries: Vec<KeyEntry>,
    default: usize,
    integrity: IntegrityPolicy,
}

/// Builder of a [`Keyring`].
#[derive(Default, Debug)]
pub struct KeyringBuilder {
    entries: Vec<KeyEntry>,
    default: Vec<usize>,
    integrity: IntegrityPolicy,
}

impl KeyringBuilder {
    /// Adds a key used for reading only (unless it is the only key).
    pub fn key(mut self, entry: KeyEntry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Adds the key used for writing (and for reading).
    pub fn default_key(mut self, entry: KeyEntry) -> Self {
        self.default.push(self.entries.len());
        self.entries.push(entry);
        self
    }

    /// Strict mode: every object read must carry integrity data (objects written by other SDKs
    /// are refused with [`ErrorKind::MissingIntegrity`]), and RSA-wrapped objects must be signed
    /// by a [trusted signer](Self::trust_signer). Off by default.
    pub fn strict(mut self, strict: bool) -> Self {
        self.integrity.strict = strict;
        self
    }

    /// The key that signs the integrity record of every object written with this keyring.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.integrity.signing_key = Some(Arc::new(key));
        self
    }

    /// Trusts integrity records signed by `key` (the public half of a writer's
    /// [`SigningKey`]).
    pub fn trust_signer(mut self, key: SignerPublicKey) -> Self {
        self.integrity.trusted.push(key);
        self
    }

    /// Checks that there is at least one key and exactly one default (a single key is the
    /// default by itself).
    pub fn build(self) -> Result<Keyring> {
        let default = match (self.entries.len(), self.default.as_slice()) {
            (0, _) => return Err(Error::invalid_key("the keyring has no keys")),
            (1, []) => 0,
            (_, [d]) => *d,
            (_, []) => {
                return Err(Error::invalid_key(
                    "the keyring has several keys but none is marked default; mark exactly one",
                ));
            }
            (_, _) => {
                return Err(Error::invalid_key(
                    "the keyring has more than one default key; mark exactly one",
                ));
            }
        };
        let mut integrity = self.integrity;
        if let Some(k) = &integrity.signing_key {
            // A writer trusts its own signatures.
            let own = k.public_key();
            if !integrity.trusted.contains(&own) {
                integrity.trusted.push(own);
            }
        }
        Ok(Keyring {
            entries: self.entries,
            default,
            integrity,
        })
    }
}

impl Keyring {
    /// A builder.
    pub fn builder() -> KeyringBuilder {
        KeyringBuilder::default()
    }

    /// A keyring of one key with the given matdesc.
    pub fn single(provider: impl KeyProvider + 'static, matdesc: MatDesc) -> Self {
        Self {
            entries: vec![KeyEntry::new(provider).matdesc(matdesc)],
            default: 0,
            integrity: IntegrityPolicy::default(),
        }
    }

    /// The keyring's integrity settings (strict mode, signing key, trusted signers).
    pub fn integrity(&self) -> &IntegrityPolicy {
        &self.integrity
    }

    /// Sets strict mode on an existing keyring (see [`KeyringBuilder::strict`]).
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.integrity.strict = strict;
        self
    }

    /// The key used for writing.
    pub fn default_entry(&self) -> &KeyEntry {
        &self.entries[self.default]
    }

    /// All keys, in registration order.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// The entry named `name`.
    pub fn by_name(&self, name: &str) -> Option<&KeyEntry> {
        self.entries
            .iter()
            .find(|e| e.name.as_deref() == Some(name))
    }

    /// The entries that may unwrap `envelope`: same matdesc (parsed), a provider that speaks its
    /// wrap algorithm; the default first.
    pub fn candidates(&self, envelope: &Envelope) -> Result<Vec<&KeyEntry>> {
        let mut same_desc: Vec<(usize, &KeyEntry)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.matdesc == envelope.matdesc)
            .collect();
        if same_desc.is_empty() {
            let known: Vec<String> = self.entries.iter().map(KeyEntry::label).collect();
            return Err(Error::new(
                ErrorKind::NoMatchingKey,
                format!(
                    "no key in the keyring has the object's matdesc {}; keyring has: {}",
                    envelope.matdesc,
                    known.join(", ")
                ),
            ));
        }
        same_desc.sort_by_key(|(i, _)| *i != self.default);
        let out: Vec<&KeyEntry> = same_desc
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.provider.can_unwrap(&envelope.wrap_alg))
            .collect();
        if out.is_empty() {
            return Err(Error::new(
                ErrorKind::NoMatchingKey,
                format!(
                    "the object (matdesc {}) is wrapped with {}, but no keyring key with that matdesc can unwrap {}",
                    envelope.matdesc, envelope.wrap_alg, envelope.wrap_alg
                ),
            ));
        }
        Ok(out)
    }

    /// Unwraps `envelope` with the matching key(s).
    pub async fn unwrap(&self, envelope: &Envelope) -> Result<ContentMaterial> {
        let mut last = None;
        for entry in self.candidates(envelope)? {
            match entry.provider.unwrap(envelope).await {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(Error::key_unwrap))
    }

    /// Unwraps `envelope` and, when the object carries an integrity `record`, checks its key
    /// commitment and returns the tag key. With a record, a failed unwrap is not reported as
    /// such (implicit rejection): a bad padding, a wrong key and a valid unwrap to another
    /// key all end the same way, as [`ErrorKind::CommitmentMismatch`], at the same point and
    /// before any byte of the body is read, so a store that rewrites wrapped keys learns
    /// nothing from how the read ends.
    pub(crate) async fn unwrap_committed(
        &self,
        envelope: &Envelope,
        record: Option<&IntegrityRecord>,
    ) -> Result<(ContentMaterial, Option<TagKey>)> {
        let Some(record) = record else {
            return Ok((self.unwrap(envelope).await?, None));
        };
        let mut last = None;
        for entry in self.candidates(envelope)? {
            match entry.provider.unwrap(envelope).await {
                Ok(m) => match record.open(&m, envelope.part_size) {
                    Ok(k) => return Ok((m, Some(k))),
                    Err(e) => last = Some(e),
                },
                Err(e) if e.kind() == ErrorKind::KeyUnwrap => {
                    last = Some(Error::new(
                        ErrorKind::CommitmentMismatch,
                        "the content key does not match the object's key commitment (the \
                         wrapped key, the IV or the integrity record was changed, or the key \
                         is not the one that wrote it)",
                    ))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(Error::key_unwrap))
    }

    /// Wraps fresh material with the default key; returns the material and its envelope.
    pub(crate) async fn seal(&self) -> Result<(ContentMaterial, Envelope)> {
        let entry = self.default_entry();
        let (material, wrapped) = entry.provider.generate().await?;
        let envelope = Envelope {
            version: crate::envelope::FormatVersion::V2,
            wrap_alg: wrapped.wrap_alg,
            wrapped_key: wrapped.key,
            wrapped_iv: wrapped.iv,
            matdesc: entry.matdesc.clone(),
            unencrypted_content_length: None,
            unencrypted_content_md5: None,
            data_size: None,
            part_size: None,
        };
        Ok((material, envelope))
    }
}
