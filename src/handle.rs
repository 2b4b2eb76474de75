//! The shared state every operation takes: the S3 client, the bucket, the keyring and the
//! policies, behind one `Arc` ([`CryptoBucket`](crate::CryptoBucket) is a thin, cloneable
//! wrapper around it). Operations (`ops/`), multipart uploads, whole-file transfers and rewrap
//! depend on this module, never on `bucket.rs`, so there is no import cycle between them;
//! the checks every operation shares live here too.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::Client;

use crate::engine::TransferConfig;
use crate::envelope::{self, Envelope};
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::{IntegrityPolicy, IntegrityRecord, LengthMode, TagKey};
use crate::keys::Keyring;

/// Largest single PUT S3 accepts (5 GiB).
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// What to do with an object that carries no encryption metadata.
///
/// ```
/// assert_eq!(cryptobucket::UnencryptedPolicy::default(), cryptobucket::UnencryptedPolicy::Refuse);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnencryptedPolicy {
    /// Fail with [`ErrorKind::NotEncrypted`]: a plain object in an encrypted bucket is
    /// suspicious (an attacker can plant one), so it is refused unless asked for.
    #[default]
    Refuse,
    /// Return plain objects as they are, for buckets that mix both on purpose (not in strict
    /// mode, which refuses anything it cannot verify).
    PassThrough,
}

/// The state behind a [`CryptoBucket`](crate::CryptoBucket).
pub(crate) struct Handle {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    pub(crate) keyring: Keyring,
    pub(crate) unencrypted: UnencryptedPolicy,
    pub(crate) transfer: TransferConfig,
    /// The keyring's integrity policy, with the bucket's strict-mode override applied.
    pub(crate) integrity: IntegrityPolicy,
    /// Whether new objects get integrity data (default true).
    pub(crate) write_integrity: bool,
}

/// What operations hold.
pub(crate) type SharedHandle = Arc<Handle>;

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("bucket", &self.bucket)
            .field("keys", &self.keyring.entries().len())
            .field("unencrypted", &self.unencrypted)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// The bucket name.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The keyring.
    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The transfer configuration operations start from.
    pub(crate) fn transfer_config(&self) -> &TransferConfig {
        &self.transfer
    }

    /// A new integrity record for an object about to be written with `material` (signed when
    /// the keyring has a signing key) and its tag key; `None` when writing integrity data is
    /// off. `part_size` (of a multipart upload) decides the chunk size and is committed to.
    pub(crate) fn new_integrity(
        &self,
        material: &crate::cipher::ContentMaterial,
        part_size: Option<u64>,
        mode: LengthMode,
    ) -> Result<Option<(IntegrityRecord, Arc<TagKey>)>> {
        if !self.write_integrity {
            return Ok(None);
        }
        let chunk = crate::integrity::chunk_size_for(part_size)?;
        let (mut record, key) = IntegrityRecord::new(material, chunk, mode, part_size)?;
        self.integrity.sign(&mut record);
        Ok(Some((record, Arc::new(key))))
    }

    /// Parses the envelope from object metadata and applies the unencrypted-object policy.
    pub(crate) fn envelope_of(
        &self,
        key: &str,
        meta: Option<&HashMap<String, String>>,
    ) -> Result<Option<Envelope>> {
        let empty = HashMap::new();
        let env = Envelope::from_metadata(meta.unwrap_or(&empty))?;
        self.check_unencrypted(key, env.as_ref())?;
        Ok(env)
    }

    /// Applies the unencrypted-object policy to an object with envelope `env`. Strict mode
    /// refuses plain objects whatever the policy: they cannot be verified either.
    pub(crate) fn check_unencrypted(&self, key: &str, env: Option<&Envelope>) -> Result<()> {
        if env.is_none() && self.integrity.strict {
            return Err(Error::new(
                ErrorKind::MissingIntegrity,
                format!(
                    "object {key:?} is not encrypted, so it carries no integrity data; strict \
                     mode refuses it"
                ),
            )
            .with_object(&self.bucket, key));
        }
        if env.is_none() && self.unencrypted == UnencryptedPolicy::Refuse {
            return Err(Error::new(
                ErrorKind::NotEncrypted,
                format!(
                    "object {key:?} has no client-side-encryption metadata; refusing to return it as \
                     if it were encrypted (plain objects are read with \
                     UnencryptedPolicy::PassThrough, CLI --allow-unencrypted)"
                ),
            )
            .with_object(&self.bucket, key));
        }
        Ok(())
    }
}

/// Refuses an object whose size differs from the plaintext length its envelope records
/// (truncated, extended or replaced), before any byte is decrypted.
pub(crate) fn check_recorded_size(key: &str, env: &Envelope, size: u64) -> Result<()> {
    match env.recorded_plaintext_size() {
        Some(recorded) if recorded != size => Err(Error::new(
            ErrorKind::SizeMismatch,
            format!(
                "object {key:?} is {size} bytes but its metadata records {recorded} plaintext bytes; \
                 it was truncated, extended or replaced, refusing to decrypt it"
            ),
        )),
        _ => Ok(()),
    }
}

/// True for metadata keys this crate manages: the encryption envelope and the integrity
/// record (`cryptobucket-*`).
pub(crate) fn is_reserved_key(key: &str) -> bool {
    envelope::is_envelope_key(key) || key.to_ascii_lowercase().starts_with("cryptobucket-")
}

/// Refuses user metadata that would shadow the encryption envelope or the integrity record.
pub(crate) fn check_user_metadata(meta: &HashMap<String, String>) -> Result<()> {
    match meta.keys().find(|k| is_reserved_key(k)) {
        Some(bad) => Err(Error::invalid_input(format!(
            "user metadata key {bad:?} collides with the encryption metadata"
        ))),
        None => Ok(()),
    }
}

/// The key a builder was given, or the error every builder gives without one.
pub(crate) fn require_key(key: Option<String>) -> Result<String> {
    key.ok_or_else(|| Error::invalid_input("the object key is required (call .key(...))"))
}

/// The user's own metadata: everything but the encryption entries.
pub(crate) fn user_metadata(meta: Option<&HashMap<String, String>>) -> HashMap<String, String> {
    meta.map(|m| {
        m.iter()
            .filter(|(k, _)| !is_reserved_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// Percent-encodes an object key for `x-amz-copy-source`, keeping `/`.
pub(crate) fn percent_encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A bucket with client-side encryption, compatible with the OSS SDKs' format.
///
/// Cheap to clone (shared state). Build it from an [`aws_sdk_s3::Client`]; for stores such as
/// Garage that reject aws-sdk-s3's default streaming checksum trailer, build that client with
/// [`ClientOptions`](crate::ClientOptions) (its default) or set
/// `RequestChecksumCalculation::WhenRequired` yourself.
///
/// ```no_run
/// # async fn demo() -> cryptobucket::Result<()> {
/// use cryptobucket::{CryptoBucket, Keyring, MatDesc, RsaKeyPair};
/// let conf = aws_config::load_from_env().await;
/// let client = aws_sdk_s3::Client::new(&conf);
/// let key = RsaKeyPair::from_private_pem(&std::fs::read_to_string("private.pem").unwrap())?;
/// let bucket = CryptoBucket::new(client, "my-bucket", Keyring::single(key, MatDesc::new()));
/// bucket.put_object().key("hello.txt").body(b"hello".to_vec()).send().await?;
/// let got = bucket.get_object().key("hello.txt").send().await?;
/// assert_eq!(&got.body.collect().await?[..], b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CryptoBucket {
    pub(crate) inner: SharedHandle,
}

impl std::fmt::Debug for CryptoBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoBucket")
            .field("bucket", &self.inner.bucket)
            .field("keys", &self.inner.keyring.entries().len())
            .field("unencrypted", &self.inner.unencrypted)
            .finish()
    }
}

impl CryptoBucket {
    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// The transfer configuration every operation starts from.
    pub fn transfer_config(&self) -> &TransferConfig {
        &self.inner.transfer
    }

    /// The shared state, for operations.
    pub(crate) fn handle(&self) -> &SharedHandle {
        &self.inner
    }
}
