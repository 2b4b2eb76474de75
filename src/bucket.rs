//! [`CryptoBucket`]: an S3 bucket whose objects are encrypted on the client.
//!
//! The builders mirror aws-sdk-s3's fluent style: `bucket.put_object().key("k").body(b).send()`.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::MetadataDirective;

use crate::body::{DecryptingStream, PutBody};
use crate::cipher::ContentMaterial;
use crate::engine::TransferConfig;
use crate::envelope::{self, Envelope};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::Keyring;
use crate::range::{ByteRange, ContentRange};

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
    /// Return plain objects as they are, for buckets that mix both on purpose.
    PassThrough,
}

struct Inner {
    client: Client,
    bucket: String,
    keyring: Keyring,
    unencrypted: UnencryptedPolicy,
    transfer: TransferConfig,
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
    inner: Arc<Inner>,
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

/// Builder of a [`CryptoBucket`].
#[derive(Default)]
pub struct CryptoBucketBuilder {
    client: Option<Client>,
    bucket: Option<String>,
    keyring: Option<Keyring>,
    unencrypted: UnencryptedPolicy,
    transfer: TransferConfig,
}

impl std::fmt::Debug for CryptoBucketBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoBucketBuilder")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl CryptoBucketBuilder {
    /// The S3 client (required).
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The bucket name (required).
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The keys (required).
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// How to treat objects without encryption metadata (default: refuse).
    pub fn unencrypted_policy(mut self, policy: UnencryptedPolicy) -> Self {
        self.unencrypted = policy;
        self
    }

    /// Part size, concurrency, multipart threshold, attempts and failed-upload policy for
    /// every transfer of this bucket (each call may override them).
    ///
    /// ```no_run
    /// # fn demo(client: aws_sdk_s3::Client, keyring: cryptobucket::Keyring) -> cryptobucket::Result<()> {
    /// use cryptobucket::{CryptoBucket, PartSize, engine::TransferConfig};
    /// let bucket = CryptoBucket::builder().client(client).bucket("models").keyring(keyring)
    ///     .transfer_config(TransferConfig::new().part_size(PartSize::Target(32 << 20)).concurrency(16))
    ///     .build()?;
    /// # let _ = bucket; Ok(()) }
    /// ```
    pub fn transfer_config(mut self, config: TransferConfig) -> Self {
        self.transfer = config;
        self
    }

    /// Builds the bucket; fails when a required field is missing or the transfer
    /// configuration is invalid.
    pub fn build(self) -> Result<CryptoBucket> {
        let missing =
            |f: &str| Error::invalid_input(format!("CryptoBucket builder: {f} is required"));
        self.transfer.validate()?;
        Ok(CryptoBucket {
            inner: Arc::new(Inner {
                client: self.client.ok_or_else(|| missing("client"))?,
                bucket: self.bucket.ok_or_else(|| missing("bucket"))?,
                keyring: self.keyring.ok_or_else(|| missing("keyring"))?,
                unencrypted: self.unencrypted,
                transfer: self.transfer,
            }),
        })
    }
}

impl CryptoBucket {
    /// A bucket with the default policy (plain objects refused).
    pub fn new(client: Client, bucket: impl Into<String>, keyring: Keyring) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                bucket: bucket.into(),
                keyring,
                unencrypted: UnencryptedPolicy::Refuse,
                transfer: TransferConfig::default(),
            }),
        }
    }

    /// A builder.
    pub fn builder() -> CryptoBucketBuilder {
        CryptoBucketBuilder::default()
    }

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

    /// Starts an encrypted upload.
    pub fn put_object(&self) -> PutObjectFluentBuilder {
        PutObjectFluentBuilder {
            bucket: self.clone(),
            key: None,
            body: None,
            content_type: None,
            metadata: HashMap::new(),
            record_md5: None,
            config: self.inner.transfer,
            if_match: None,
        }
    }

    /// Starts a decrypting download.
    pub fn get_object(&self) -> GetObjectFluentBuilder {
        GetObjectFluentBuilder {
            bucket: self.clone(),
            key: None,
            range: None,
            if_match: None,
            pin: None,
        }
    }

    /// Starts a HEAD request that also parses the encryption metadata.
    pub fn head_object(&self) -> HeadObjectFluentBuilder {
        HeadObjectFluentBuilder {
            bucket: self.clone(),
            key: None,
        }
    }

    /// Starts a delete.
    pub fn delete_object(&self) -> DeleteObjectFluentBuilder {
        DeleteObjectFluentBuilder {
            bucket: self.clone(),
            key: None,
        }
    }

    /// Starts an encrypted multipart upload (see [`crate::multipart`]).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let upload = bucket.create_multipart_upload().key("ckpt.bin").data_size(20 << 20).send().await?;
    /// assert_eq!(upload.part_count(), Some(3)); // 8 MiB parts by default
    /// # Ok(()) }
    /// ```
    pub fn create_multipart_upload(&self) -> crate::multipart::CreateMultipartUploadFluentBuilder {
        crate::multipart::CreateMultipartUploadFluentBuilder::new(self.clone())
    }

    /// Uploads a local file: one PUT when small, otherwise a parallel encrypted multipart upload
    /// that keeps a checkpoint and resumes after a crash (see [`crate::resumable`]).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let out = bucket.upload_file().key("ckpt/model.safetensors")
    ///     .path("model.safetensors").concurrency(16).send().await?;
    /// if out.resumed_bytes > 0 { println!("resumed: {} bytes were already there", out.resumed_bytes); }
    /// # Ok(()) }
    /// ```
    pub fn upload_file(&self) -> crate::resumable::UploadFileFluentBuilder {
        crate::resumable::UploadFileFluentBuilder::new(self.clone())
    }

    /// Downloads an object to a local file with parallel ranged GETs, resumably; the file
    /// appears only when complete (see [`crate::resumable`]).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// bucket.download_file().key("ckpt/model.safetensors").path("model.safetensors").send().await?;
    /// # Ok(()) }
    /// ```
    pub fn download_file(&self) -> crate::resumable::DownloadFileFluentBuilder {
        crate::resumable::DownloadFileFluentBuilder::new(self.clone())
    }

    /// Re-wraps an object's content key under another master key without touching the body
    /// (see [`crate::rewrap`]): key rotation without rewriting terabytes.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let target = bucket.keyring().by_name("prod-2024").cloned().expect("a key named prod-2024");
    /// let out = bucket.rewrap_object().key("ckpt/model.bin").to(target).send().await?;
    /// println!("{} -> {}", out.from, out.to);
    /// # Ok(()) }
    /// ```
    pub fn rewrap_object(&self) -> crate::rewrap::RewrapObjectFluentBuilder {
        crate::rewrap::RewrapObjectFluentBuilder::new(self.clone())
    }

    /// Starts a same-store copy that keeps the encryption metadata (and so the body stays
    /// readable with the same keys).
    pub fn copy_object(&self) -> CopyObjectFluentBuilder {
        CopyObjectFluentBuilder {
            bucket: self.clone(),
            source_bucket: None,
            source_key: None,
            key: None,
        }
    }

    /// Parses the envelope from object metadata and applies the unencrypted-object policy.
    fn envelope_of(
        &self,
        key: &str,
        meta: Option<&HashMap<String, String>>,
    ) -> Result<Option<Envelope>> {
        let empty = HashMap::new();
        let env = Envelope::from_metadata(meta.unwrap_or(&empty))?;
        self.check_unencrypted(key, env.as_ref())?;
        Ok(env)
    }

    /// Applies the unencrypted-object policy to an object with envelope `env`.
    pub(crate) fn check_unencrypted(&self, key: &str, env: Option<&Envelope>) -> Result<()> {
        if env.is_none() && self.inner.unencrypted == UnencryptedPolicy::Refuse {
            return Err(Error::new(
                ErrorKind::NotEncrypted,
                format!(
                    "object {key:?} has no client-side-encryption metadata; refusing to return it as \
                     if it were encrypted (use UnencryptedPolicy::PassThrough to read plain objects)"
                ),
            ));
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

/// Refuses user metadata that would shadow the encryption envelope.
pub(crate) fn check_user_metadata(meta: &HashMap<String, String>) -> Result<()> {
    match meta.keys().find(|k| envelope::is_envelope_key(k)) {
        Some(bad) => Err(Error::invalid_input(format!(
            "user metadata key {bad:?} collides with the encryption metadata"
        ))),
        None => Ok(()),
    }
}

pub(crate) fn require_key(key: Option<String>) -> Result<String> {
    key.ok_or_else(|| Error::invalid_input("the object key is required (call .key(...))"))
}

fn user_metadata(meta: Option<&HashMap<String, String>>) -> HashMap<String, String> {
    meta.map(|m| {
        m.iter()
            .filter(|(k, _)| !envelope::is_envelope_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// Builder of an encrypted PUT; see [`CryptoBucket::put_object`].
pub struct PutObjectFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
    body: Option<PutBody>,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
    record_md5: Option<String>,
    config: TransferConfig,
    if_match: Option<String>,
}

impl std::fmt::Debug for PutObjectFluentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutObjectFluentBuilder")
            .field("key", &self.key)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// What a PUT returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PutObjectOutput {
    /// ETag of the stored ciphertext.
    pub e_tag: Option<String>,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// The envelope written (wrapped keys only).
    pub envelope: Envelope,
}

impl PutObjectFluentBuilder {
    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Plaintext body (bytes, file or reader); empty when not set.
    pub fn body(mut self, body: impl Into<PutBody>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Content type stored with the object.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets or clears the content type.
    pub fn set_content_type(mut self, content_type: Option<String>) -> Self {
        self.content_type = content_type;
        self
    }

    /// Adds one user-metadata entry (stored in clear; must not use the encryption prefixes).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Records a caller-computed base64 MD5 of the plaintext as
    /// `client-side-encryption-unencrypted-content-md5`, as oss2 does when given Content-MD5.
    ///
    /// Off by default and discouraged: a plaintext hash stored in clear lets anyone with read
    /// access confirm guesses of the content (the weakness behind CVE-2022-2582), and no SDK
    /// verifies it on download. Computing MD5 also costs far more than the encryption itself.
    pub fn record_unencrypted_md5(mut self, md5_base64: impl Into<String>) -> Self {
        self.record_md5 = Some(md5_base64.into());
        self
    }

    /// Part size if the body is sent as a multipart upload (over the
    /// [threshold](Self::multipart_threshold) or of unknown length). Default
    /// [`PartSize::Auto`](crate::PartSize::Auto): 8 MiB or more for known lengths, 16 MiB for
    /// streams.
    pub fn part_size(mut self, part_size: crate::PartSize) -> Self {
        self.config.part_size = part_size;
        self
    }

    /// Parts in flight at once in a multipart upload (default 8). Memory for a stream of
    /// unknown length is about this many parts.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Bodies larger than this many bytes are sent as a multipart upload (default and maximum:
    /// 5 GiB, S3's single-PUT limit).
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.config.multipart_threshold = Some(bytes);
        self
    }

    /// Replaces the whole transfer configuration for this call (default: the bucket's).
    pub fn transfer_config(mut self, config: crate::engine::TransferConfig) -> Self {
        self.config = config;
        self
    }

    /// Writes only if the object's current ETag is `etag` (a conditional write, on stores that
    /// support it: S3, s3s, ...); otherwise the store answers 412, [`ErrorKind::Changed`], and
    /// nothing is written. For a multipart upload the condition applies to the completion.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Encrypts and uploads: one PUT, or a multipart upload for bodies over the threshold and
    /// for streams longer than one part.
    pub async fn send(self) -> Result<PutObjectOutput> {
        let key = require_key(self.key.clone())?;
        check_user_metadata(&self.metadata)?;
        self.config.validate()?;
        let threshold = self
            .config
            .multipart_threshold
            .unwrap_or(MAX_SINGLE_PUT)
            .min(MAX_SINGLE_PUT);
        let mut this = self;
        let body = this
            .body
            .take()
            .unwrap_or_else(|| PutBody::from_bytes(bytes::Bytes::new()));
        match body.len() {
            Some(len) if len <= threshold => this.single(key, body, len).await,
            Some(_) => this.multipart(key, body).await,
            None => {
                // Read the first part: a stream that ends within it is one ordinary PUT.
                let part_size = this.config.part_size.resolve(None)?;
                let mut reader = match body.into_part_source()? {
                    crate::body::PartSource::Reader(r) => r,
                    _ => unreachable!("only readers have unknown length"),
                };
                let mut first = Vec::new();
                {
                    use tokio::io::AsyncReadExt as _;
                    (&mut reader)
                        .take(part_size)
                        .read_to_end(&mut first)
                        .await
                        .map_err(|e| Error::io("cannot read the upload source", e))?;
                }
                if (first.len() as u64) < part_size {
                    let len = first.len() as u64;
                    return this.single(key, PutBody::from_bytes(first), len).await;
                }
                use tokio::io::AsyncReadExt as _;
                let rest = std::io::Cursor::new(first).chain(reader);
                this.multipart(key, PutBody::from_stream(rest)).await
            }
        }
    }

    async fn single(self, key: String, body: PutBody, len: u64) -> Result<PutObjectOutput> {
        let inner = &self.bucket.inner;
        let (material, mut env) = inner.keyring.seal().await?;
        env.unencrypted_content_length = Some(len);
        env.unencrypted_content_md5 = self.record_md5;
        let mut meta = self.metadata;
        meta.extend(env.to_metadata());
        let out = inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(&key)
            .content_length(len as i64)
            .set_content_type(self.content_type)
            .set_metadata(Some(meta))
            .set_if_match(self.if_match)
            .body(body.into_encrypted(&material, 0)?)
            .send()
            .await
            .map_err(|e| Error::from_sdk("PutObject", e).with_object(&inner.bucket, &key))?;
        Ok(PutObjectOutput {
            e_tag: out.e_tag,
            version_id: out.version_id,
            envelope: env,
        })
    }

    async fn multipart(self, key: String, body: PutBody) -> Result<PutObjectOutput> {
        if self.record_md5.is_some() {
            return Err(Error::invalid_input(
                "record_unencrypted_md5 applies to single PUTs only; this body is sent as a \
                 multipart upload",
            ));
        }
        let mut create = self
            .bucket
            .create_multipart_upload()
            .key(key)
            .part_size(self.config.part_size);
        if let Some(ct) = self.content_type {
            create = create.content_type(ct);
        }
        for (k, v) in self.metadata {
            create = create.metadata(k, v);
        }
        let (upload, out) =
            crate::multipart::put_multipart(create, body, &self.config, self.if_match.as_deref())
                .await?;
        Ok(PutObjectOutput {
            e_tag: out.e_tag,
            version_id: out.version_id,
            envelope: upload.envelope().clone(),
        })
    }
}

/// Builder of a decrypting GET; see [`CryptoBucket::get_object`].
#[derive(Debug)]
pub struct GetObjectFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
    range: Option<ByteRange>,
    if_match: Option<String>,
    /// The object version every response must come from, and its material unwrapped once
    /// (parallel downloads unwrap once, not once per range).
    pin: Option<(Pin, Option<ContentMaterial>)>,
}

/// What a GET returns: the plaintext stream and what is known about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct GetObjectOutput {
    /// Decrypted body; yields exactly `content_length` bytes or an error.
    pub body: DecryptingStream,
    /// Length of the returned plaintext.
    pub content_length: u64,
    /// Absolute `(first, last)` plaintext offsets returned, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// Size of the whole object (plaintext).
    pub object_size: u64,
    /// ETag of the stored object.
    pub e_tag: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// The user's own metadata (encryption entries removed).
    pub metadata: HashMap<String, String>,
    /// The encryption envelope; `None` for a plain object read under
    /// [`UnencryptedPolicy::PassThrough`].
    pub envelope: Option<Envelope>,
}

impl GetObjectOutput {
    /// Writes the plaintext to the file `dest`: into a partial file of its own beside it (mode
    /// 0600, created exclusively), synced, then renamed into place; on any failure the partial
    /// file is removed and `dest` is untouched. Returns the bytes written. For whole objects
    /// of any size prefer [`CryptoBucket::download_file`] (parallel, resumable).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let header = bucket.get_object().key("model.safetensors")
    ///     .range("0-1048575".parse()?).send().await?;
    /// header.save("header.bin").await?;
    /// # Ok(()) }
    /// ```
    pub async fn save(self, dest: impl AsRef<std::path::Path>) -> Result<u64> {
        let dest = std::path::absolute(dest.as_ref())
            .map_err(|e| Error::io(format!("cannot resolve {}", dest.as_ref().display()), e))?;
        let expected = self.content_length;
        let partial = crate::partial::PartialFile::create(&dest, expected)?;
        let written = async {
            let mut file = tokio::fs::File::from_std(partial.handle()?);
            let n = self.body.write_to(&mut file).await?;
            if n != expected {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!("received {n} of {expected} bytes"),
                ));
            }
            Ok(n)
        }
        .await;
        match written {
            Ok(n) => {
                partial.publish(&dest, n)?;
                Ok(n)
            }
            Err(e) => {
                partial.discard();
                Err(e)
            }
        }
    }
}

impl GetObjectFluentBuilder {
    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A plaintext byte range (any alignment; see [`ByteRange`]).
    pub fn range(mut self, range: ByteRange) -> Self {
        self.range = Some(range);
        self
    }

    /// Sets or clears the range.
    pub fn set_range(mut self, range: Option<ByteRange>) -> Self {
        self.range = range;
        self
    }

    /// Only succeed if the object's ETag still equals `etag`.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Pins the response to one version of the object: its ETag, size and wrapped key must be
    /// those of `pin` (else [`ErrorKind::Changed`]), and `material`, unwrapped once by the caller,
    /// decrypts it. Parallel downloads use this for every range, so a store that ignores
    /// `If-Match` cannot mix two versions into one file.
    pub(crate) fn pinned(mut self, pin: Pin, material: Option<ContentMaterial>) -> Self {
        self.if_match = Some(pin.e_tag.clone());
        self.pin = Some((pin, material));
        self
    }

    /// Sends the GET; the returned body decrypts as it streams.
    pub async fn send(self) -> Result<GetObjectOutput> {
        let key = require_key(self.key)?;
        let cb = &self.bucket;
        let inner = &cb.inner;
        let resp = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(&key)
            .set_range(self.range.map(|r| r.to_header()))
            .set_if_match(self.if_match)
            .customize()
            .config_override(crate::client::retry_override(self.pin.is_none()))
            .send()
            .await
            .map_err(|e| {
                let e = Error::from_sdk("GetObject", e).with_object(&inner.bucket, &key);
                match (e.kind(), self.range) {
                    (ErrorKind::RangeNotSatisfiable, Some(r)) => Error::new(
                        ErrorKind::RangeNotSatisfiable,
                        format!("range {r} lies outside object {key:?}"),
                    )
                    .with_object(&inner.bucket, &key),
                    _ => e,
                }
            })?;
        let envelope = cb.envelope_of(&key, resp.metadata())?;
        let body_len = u64::try_from(resp.content_length().unwrap_or(-1)).map_err(|_| {
            Error::invalid_response("the GET response has no valid Content-Length")
                .with_object(&inner.bucket, &key)
        })?;
        if let Some((pin, _)) = &self.pin {
            pin.check_e_tag(&inner.bucket, &key, resp.e_tag())?;
        }

        // Where does the body sit in the object, and what slice of it do we return?
        let content_range = resp.content_range().map(ContentRange::parse).transpose()?;
        let (total, body_start) = match &content_range {
            Some(cr) => {
                if cr.len() != body_len {
                    return Err(Error::invalid_response(format!(
                        "Content-Range {}-{} does not match Content-Length {body_len}",
                        cr.first, cr.last
                    )));
                }
                let total = cr.total.ok_or_else(|| {
                    Error::invalid_response(
                        "the server's Content-Range does not give the object size",
                    )
                })?;
                (total, cr.first)
            }
            None => match self.range {
                // No range asked for and none announced: the body is the whole object.
                None => (body_len, 0),
                // A ranged GET answered without Content-Range: a 200 with the whole object (a
                // server that ignores Range) or a 206 that left the header out. Only the
                // object's size can tell which; the body length must then prove it.
                Some(r) => {
                    let size = match (&self.pin, envelope.as_ref()) {
                        (Some((pin, _)), _) => pin.size,
                        (None, Some(env)) if env.recorded_plaintext_size().is_some() => {
                            env.recorded_plaintext_size().unwrap_or_default()
                        }
                        _ => {
                            let head = cb.head_object().key(&key).send().await?;
                            if head.e_tag.as_deref() != resp.e_tag() {
                                return Err(Error::new(
                                    ErrorKind::Changed,
                                    format!("object {key:?} changed while it was being read"),
                                )
                                .with_object(&inner.bucket, &key)
                                .with_retryable(true));
                            }
                            head.object_size
                        }
                    };
                    if body_len == size {
                        (size, 0)
                    } else {
                        match r.resolve(size) {
                            Ok((s, l)) if l == body_len => (size, s),
                            _ => {
                                return Err(Error::invalid_response(format!(
                                    "asked for bytes {r} of {key:?} ({size} bytes) and got {body_len}                                      bytes without a Content-Range; that is neither the range nor                                      the whole object"
                                ))
                                .with_object(&inner.bucket, &key));
                            }
                        }
                    }
                }
            },
        };
        let (start, len) = match self.range {
            Some(r) => r.resolve(total)?,
            None => (0, total),
        };
        if (body_start, body_len) != (start, len) && (body_start, body_len) != (0, total) {
            return Err(Error::invalid_response(format!(
                "asked for bytes {} of {key:?} but the server returned bytes {body_start}-{} of {total}",
                self.range
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "(all)".into()),
                body_start + body_len.saturating_sub(1)
            ))
            .with_object(&inner.bucket, &key));
        }
        if let Some((pin, _)) = &self.pin {
            pin.check_object(&inner.bucket, &key, total, envelope.as_ref())?;
        }
        // Bytes of the body before the first byte we return: non-zero when the server ignored
        // the Range header and sent the whole object.
        let skip = start - body_start;

        let cipher = match &envelope {
            Some(env) => {
                check_recorded_size(&key, env, total)?;
                let material = match &self.pin {
                    Some((_, Some(m))) => m.clone(),
                    _ => inner.keyring.unwrap(env).await?,
                };
                Some(material.cipher_at(start)?)
            }
            None => None,
        };
        Ok(GetObjectOutput {
            content_length: len,
            range: self.range.map(|_| (start, start + len.saturating_sub(1))),
            object_size: total,
            e_tag: resp.e_tag().map(str::to_owned),
            content_type: resp.content_type().map(str::to_owned),
            metadata: user_metadata(resp.metadata()),
            envelope,
            body: DecryptingStream::new(resp.body, cipher, skip, len),
        })
    }
}

/// The version of an object a multi-request read is bound to: every response must show the
/// same ETag, object size and wrapped key, or the read stops with [`ErrorKind::Changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    pub(crate) e_tag: String,
    pub(crate) size: u64,
    /// The wrapped content key's header text; `None` for a plain object.
    pub(crate) wrapped_key: Option<String>,
}

impl Pin {
    fn changed(bucket: &str, key: &str, what: String) -> Error {
        Error::new(
            ErrorKind::Changed,
            format!("s3://{bucket}/{key} changed during the transfer: {what}"),
        )
        .with_object(bucket, key)
        .with_retryable(true)
    }

    fn check_e_tag(&self, bucket: &str, key: &str, got: Option<&str>) -> Result<()> {
        if got == Some(self.e_tag.as_str()) {
            return Ok(());
        }
        Err(Self::changed(
            bucket,
            key,
            format!(
                "a response carried ETag {} instead of the pinned {} (the store ignored If-Match)",
                got.unwrap_or("(none)"),
                self.e_tag
            ),
        ))
    }

    fn check_object(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        env: Option<&Envelope>,
    ) -> Result<()> {
        if size != self.size {
            return Err(Self::changed(
                bucket,
                key,
                format!(
                    "a response describes an object of {size} bytes instead of {}",
                    self.size
                ),
            ));
        }
        if env.map(|e| e.wrapped_key.text.as_str()) != self.wrapped_key.as_deref() {
            return Err(Self::changed(
                bucket,
                key,
                "a response carries another wrapped content key".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Builder of a HEAD; see [`CryptoBucket::head_object`].
#[derive(Debug)]
pub struct HeadObjectFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
}

/// What a HEAD returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeadObjectOutput {
    /// Object size (plaintext and ciphertext are the same length).
    pub object_size: u64,
    /// ETag.
    pub e_tag: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// The user's own metadata (encryption entries removed).
    pub metadata: HashMap<String, String>,
    /// The parsed envelope; `None` for a plain object.
    pub envelope: Option<Envelope>,
    /// When the object was last written, if the store says.
    pub last_modified: Option<std::time::SystemTime>,
}

impl HeadObjectFluentBuilder {
    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends the HEAD. Plain objects give `envelope: None` (whatever the policy); malformed
    /// encryption metadata is an error.
    pub async fn send(self) -> Result<HeadObjectOutput> {
        let key = require_key(self.key)?;
        let inner = &self.bucket.inner;
        let resp = inner
            .client
            .head_object()
            .bucket(&inner.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("HeadObject", e).with_object(&inner.bucket, &key))?;
        let empty = HashMap::new();
        let envelope = Envelope::from_metadata(resp.metadata().unwrap_or(&empty))?;
        // A HEAD without Content-Length says nothing about the size; taking it as 0 would
        // "download" any object as an empty file.
        let object_size = resp
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid_response("the HEAD response has no valid Content-Length")
                    .with_object(&inner.bucket, &key)
            })?;
        Ok(HeadObjectOutput {
            object_size,
            e_tag: resp.e_tag().map(str::to_owned),
            content_type: resp.content_type().map(str::to_owned),
            metadata: user_metadata(resp.metadata()),
            envelope,
            last_modified: resp
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    }
}

/// Builder of a delete; see [`CryptoBucket::delete_object`].
#[derive(Debug)]
pub struct DeleteObjectFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
}

impl DeleteObjectFluentBuilder {
    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Deletes the object (succeeds if it does not exist, as S3 does).
    pub async fn send(self) -> Result<()> {
        let key = require_key(self.key)?;
        let inner = &self.bucket.inner;
        inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("DeleteObject", e).with_object(&inner.bucket, &key))?;
        Ok(())
    }
}

/// Builder of a same-store copy; see [`CryptoBucket::copy_object`].
#[derive(Debug)]
pub struct CopyObjectFluentBuilder {
    bucket: CryptoBucket,
    source_bucket: Option<String>,
    source_key: Option<String>,
    key: Option<String>,
}

impl CopyObjectFluentBuilder {
    /// Source key (required).
    pub fn source_key(mut self, key: impl Into<String>) -> Self {
        self.source_key = Some(key.into());
        self
    }

    /// Source bucket in the same store (default: this bucket).
    pub fn source_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.source_bucket = Some(bucket.into());
        self
    }

    /// Destination key in this bucket (required).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Copies ciphertext and metadata server-side. The source is checked first: it must carry
    /// valid encryption metadata (or the policy must allow plain objects).
    pub async fn send(self) -> Result<Option<String>> {
        let key = require_key(self.key)?;
        let source_key = self.source_key.ok_or_else(|| {
            Error::invalid_input("the source key is required (call .source_key(...))")
        })?;
        let inner = &self.bucket.inner;
        let source_bucket = self.source_bucket.unwrap_or_else(|| inner.bucket.clone());
        let head = inner
            .client
            .head_object()
            .bucket(&source_bucket)
            .key(&source_key)
            .send()
            .await
            .map_err(|e| {
                Error::from_sdk("HeadObject", e).with_object(&source_bucket, &source_key)
            })?;
        self.bucket.envelope_of(&source_key, head.metadata())?;
        let out = inner
            .client
            .copy_object()
            .copy_source(format!(
                "{source_bucket}/{}",
                percent_encode_key(&source_key)
            ))
            .bucket(&inner.bucket)
            .key(&key)
            .metadata_directive(MetadataDirective::Copy)
            .send()
            .await
            .map_err(|e| Error::from_sdk("CopyObject", e).with_object(&inner.bucket, &key))?;
        Ok(out.copy_object_result.and_then(|r| r.e_tag))
    }
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
