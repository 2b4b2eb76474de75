//! [`CryptoBucket`]: an S3 bucket whose objects are encrypted on the client.
//!
//! The builders mirror aws-sdk-s3's fluent style: `bucket.put_object().key("k").body(b).send()`.

use std::sync::Arc;

use aws_sdk_s3::Client;

use crate::engine::TransferConfig;
use crate::error::{Error, Result};
use crate::handle::Handle;

pub use crate::handle::CryptoBucket;
use crate::keys::Keyring;

pub use crate::handle::{MAX_SINGLE_PUT, UnencryptedPolicy};
pub use crate::ops::copy_object::CopyObjectFluentBuilder;
pub use crate::ops::delete_object::DeleteObjectFluentBuilder;
pub use crate::ops::get_object::{GetObjectFluentBuilder, GetObjectOutput};
pub use crate::ops::head_object::{HeadObjectFluentBuilder, HeadObjectOutput};
pub use crate::ops::list_objects::{ListEntry, ListObjectsFluentBuilder, ObjectEntry};
pub use crate::ops::put_object::{PutObjectFluentBuilder, PutObjectOutput};

/// Builder of a [`CryptoBucket`].
#[derive(Default)]
pub struct CryptoBucketBuilder {
    client: Option<Client>,
    bucket: Option<String>,
    keyring: Option<Keyring>,
    unencrypted: UnencryptedPolicy,
    transfer: TransferConfig,
    strict: Option<bool>,
    no_integrity: bool,
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

    /// Strict mode for this bucket, overriding the keyring's
    /// ([`KeyringBuilder::strict`](crate::keys::KeyringBuilder::strict)): every object read
    /// must carry integrity data, and RSA-wrapped ones a trusted signature.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = Some(strict);
        self
    }

    /// Whether new objects get integrity data (tags, key commitment, signature). On by
    /// default; turn it off only for readers that cannot tolerate the extra metadata or the
    /// `.cbtags` sidecar objects (the OSS SDKs ignore both).
    pub fn write_integrity(mut self, on: bool) -> Self {
        self.no_integrity = !on;
        self
    }

    /// Builds the bucket; fails when a required field is missing or the transfer
    /// configuration is invalid.
    pub fn build(self) -> Result<CryptoBucket> {
        let missing =
            |f: &str| Error::invalid_input(format!("CryptoBucket builder: {f} is required"));
        self.transfer.validate()?;
        let keyring = self.keyring.ok_or_else(|| missing("keyring"))?;
        let mut integrity = keyring.integrity().clone();
        if let Some(strict) = self.strict {
            integrity.strict = strict;
        }
        Ok(CryptoBucket {
            inner: Arc::new(Handle {
                client: self.client.ok_or_else(|| missing("client"))?,
                bucket: self.bucket.ok_or_else(|| missing("bucket"))?,
                integrity,
                keyring,
                unencrypted: self.unencrypted,
                transfer: self.transfer,
                write_integrity: !self.no_integrity,
            }),
        })
    }
}

impl CryptoBucket {
    /// A bucket with the default policy (plain objects refused).
    pub fn new(client: Client, bucket: impl Into<String>, keyring: Keyring) -> Self {
        Self {
            inner: Arc::new(Handle {
                client,
                bucket: bucket.into(),
                integrity: keyring.integrity().clone(),
                keyring,
                unencrypted: UnencryptedPolicy::Refuse,
                transfer: TransferConfig::default(),
                write_integrity: true,
            }),
        }
    }

    /// A builder.
    pub fn builder() -> CryptoBucketBuilder {
        CryptoBucketBuilder::default()
    }

    /// Starts an encrypted upload.
    pub fn put_object(&self) -> PutObjectFluentBuilder {
        PutObjectFluentBuilder::new(self.inner.clone())
    }

    /// Starts a decrypting download.
    pub fn get_object(&self) -> GetObjectFluentBuilder {
        GetObjectFluentBuilder::new(self.inner.clone())
    }

    /// Opens an object for random-access plaintext reads (parallel ranges, decrypted and
    /// verified, pinned to one version); this crate's objects or, with
    /// [`veturbo`](crate::reader::ObjectReaderBuilder::veturbo), veTurboIO files. See
    /// [`crate::reader`].
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let reader = bucket.reader().key("model.safetensors").open().await?;
    /// let first_kib = reader.read(0, 1024).await?;
    /// # let _ = first_kib; Ok(()) }
    /// ```
    pub fn reader(&self) -> crate::reader::ObjectReaderBuilder {
        crate::reader::ObjectReaderBuilder::new(self.inner.clone())
    }

    /// Starts a listing: entries with plaintext sizes and, on request, each object's
    /// envelope (see [`ListObjectsFluentBuilder`](crate::ListObjectsFluentBuilder)).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// use futures::TryStreamExt as _;
    /// let all: Vec<_> = bucket.list().prefix("ckpt/").recursive(true).into_stream().try_collect().await?;
    /// # let _ = all; Ok(()) }
    /// ```
    pub fn list(&self) -> crate::ListObjectsFluentBuilder {
        crate::ListObjectsFluentBuilder::new(self.inner.clone())
    }

    /// Starts a HEAD request that also parses the encryption metadata.
    pub fn head_object(&self) -> HeadObjectFluentBuilder {
        HeadObjectFluentBuilder::new(self.inner.clone())
    }

    /// Starts a delete.
    pub fn delete_object(&self) -> DeleteObjectFluentBuilder {
        DeleteObjectFluentBuilder::new(self.inner.clone())
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
        crate::multipart::CreateMultipartUploadFluentBuilder::new(self.inner.clone())
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
        crate::resumable::UploadFileFluentBuilder::new(self.inner.clone())
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
        crate::resumable::DownloadFileFluentBuilder::new(self.inner.clone())
    }

    /// Uploads a local directory tree under a key prefix on the transfer engine: small files
    /// several at once, large ones with parallel parts, all within one memory budget
    /// (`concurrency × part size`); each file resumable. `skip_identical(true)` is `sync`.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let out = bucket.upload_dir().path("checkpoints/run1").prefix("runs/run1/")
    ///     .skip_identical(true).send().await?.into_result()?;
    /// println!("{} files, {} bytes; {} already there", out.copied.len(), out.bytes(), out.skipped.len());
    /// # Ok(()) }
    /// ```
    pub fn upload_dir(&self) -> crate::resumable::UploadDirFluentBuilder {
        crate::resumable::UploadDirFluentBuilder::new(self.inner.clone())
    }

    /// Downloads every object under a key prefix into a local directory, as
    /// [`upload_dir`](Self::upload_dir) uploads (keys that would leave the directory are
    /// refused before anything is written).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// bucket.download_dir().prefix("runs/run1/").path("restore/run1").send().await?.into_result()?;
    /// # Ok(()) }
    /// ```
    pub fn download_dir(&self) -> crate::resumable::DownloadDirFluentBuilder {
        crate::resumable::DownloadDirFluentBuilder::new(self.inner.clone())
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
        crate::rewrap::RewrapObjectFluentBuilder::new(self.inner.clone())
    }

    /// Starts a same-store copy that keeps the encryption metadata (and so the body stays
    /// readable with the same keys).
    pub fn copy_object(&self) -> CopyObjectFluentBuilder {
        CopyObjectFluentBuilder::new(self.inner.clone())
    }
}
