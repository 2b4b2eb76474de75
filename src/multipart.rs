//! Encrypted multipart uploads: the low-level API.
//!
//! One content key and IV per object, fixed at initiate; part `n` (1-based) holds plaintext
//! bytes `(n-1) × part_size ..` encrypted with the counter `IV + (n-1) × part_size / 16`. Parts
//! can therefore be uploaded in any order, in parallel, and retried: a retried part is encrypted
//! with the same key and counter, so it is byte-identical. The finished object equals
//! single-stream AES-CTR over the whole plaintext, which is what every OSS SDK reads.
//!
//! [`upload_file`](crate::CryptoBucket::upload_file) drives this API for whole files; use it
//! directly for data that is produced in pieces.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as SdkCompletedPart};

use crate::body::{PutBody, TagSink};
use crate::cipher::{BLOCK_LEN, ContentMaterial};
use crate::engine::{FailedUploadPolicy, Reporter, TransferConfig, with_retries};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{CryptoBucket, SharedHandle, check_user_metadata, require_key};
use crate::integrity::{IntegrityRecord, LengthMode, TAG_LEN, TagKey, length_field};

pub use crate::parts::{
    DEFAULT_PART_SIZE, DEFAULT_UNKNOWN_SIZE_PART_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE,
    PartSize,
};

/// One finished part, as [`MultipartUpload::complete`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The ETag the store returned for the part.
    pub e_tag: String,
    /// Plaintext (= ciphertext) length of the part.
    pub size: u64,
    /// The integrity tags of the part's chunks, as [`MultipartUpload::upload_part`] computed
    /// them (`None` for uploads without integrity data). Keep them with the ETag when you
    /// record parts yourself: completing an upload with integrity data needs them.
    pub integrity_tags: Option<Vec<[u8; TAG_LEN]>>,
}

impl CompletedPart {
    /// A completed part record (for resuming from your own bookkeeping).
    ///
    /// ```
    /// let p = cryptobucket::multipart::CompletedPart::new(1, "\"abc\"", 8 << 20);
    /// assert_eq!(p.part_number, 1);
    /// ```
    pub fn new(part_number: u32, e_tag: impl Into<String>, size: u64) -> Self {
        Self {
            part_number,
            e_tag: e_tag.into(),
            size,
            integrity_tags: None,
        }
    }

    /// Attaches the part's integrity tags (see [`integrity_tags`](Self::integrity_tags)).
    pub fn with_integrity_tags(mut self, tags: Vec<[u8; TAG_LEN]>) -> Self {
        self.integrity_tags = Some(tags);
        self
    }
}

/// A part as the store lists it ([`MultipartUpload::list_parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// ETag, when the store reports one (some S3 implementations do not).
    pub e_tag: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// What completing an upload returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CompleteMultipartUploadOutput {
    /// ETag of the assembled object.
    pub e_tag: Option<String>,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// Plaintext size of the object.
    pub size: u64,
}

/// Builder of an encrypted multipart upload; see [`CryptoBucket::create_multipart_upload`](crate::CryptoBucket::create_multipart_upload).
pub struct CreateMultipartUploadFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
    data_size: Option<u64>,
    part_size: PartSize,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
}

impl fmt::Debug for CreateMultipartUploadFluentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateMultipartUploadFluentBuilder")
            .field("key", &self.key)
            .field("data_size", &self.data_size)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl CreateMultipartUploadFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            bucket,
            key: None,
            data_size: None,
            part_size: PartSize::Auto,
            content_type: None,
            metadata: HashMap::new(),
        }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Total plaintext size, recorded as `client-side-encryption-data-size`.
    ///
    /// Give it whenever it is known: OSS checks server-side that the parts add up to it, and
    /// downloads check the object against it. Without it (a stream of unknown length) the
    /// upload works on S3-compatible stores; OSS's CSE checks require it.
    pub fn data_size(mut self, size: u64) -> Self {
        self.data_size = Some(size);
        self
    }

    /// Part size (default [`PartSize::Auto`]), recorded as `client-side-encryption-part-size`.
    pub fn part_size(mut self, part_size: PartSize) -> Self {
        self.part_size = part_size;
        self
    }

    /// Content type of the final object.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds one user-metadata entry (stored in clear).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Generates and wraps the content key, and initiates the upload.
    pub async fn send(self) -> Result<MultipartUpload> {
        let key = require_key(self.key)?;
        let part_size = self.part_size.resolve(self.data_size)?;
        check_user_metadata(&self.metadata)?;
        let (material, mut env) = self.bucket.keyring().seal().await?;
        env.data_size = self.data_size;
        env.part_size = Some(part_size);
        let mut meta = self.metadata;
        meta.extend(env.to_metadata());
        let mode = match self.data_size {
            Some(_) => LengthMode::Bound,
            None => LengthMode::Unbound,
        };
        let integrity = self
            .bucket
            .new_integrity(&material, Some(part_size), mode)?;
        if let Some((record, _)) = &integrity {
            record.to_metadata(&mut meta);
        }
        let out = self
            .bucket
            .client()
            .create_multipart_upload()
            .bucket(self.bucket.bucket())
            .key(&key)
            .set_content_type(self.content_type)
            .set_metadata(Some(meta))
            .send()
            .await
            .map_err(|e| {
                Error::from_sdk("CreateMultipartUpload", e).with_object(self.bucket.bucket(), &key)
            })?;
        let upload_id = out.upload_id.ok_or_else(|| {
            Error::invalid_response("CreateMultipartUpload returned no upload id")
        })?;
        Ok(MultipartUpload {
            inner: Arc::new(UploadInner {
                bucket: self.bucket,
                key,
                upload_id,
                material,
                envelope: env,
                part_size,
                data_size: self.data_size,
                integrity,
            }),
        })
    }
}

struct UploadInner {
    bucket: SharedHandle,
    key: String,
    upload_id: String,
    material: ContentMaterial,
    envelope: Envelope,
    part_size: u64,
    data_size: Option<u64>,
    /// The integrity record written at initiate and its tag key (`None`: no integrity data).
    integrity: Option<(IntegrityRecord, Arc<TagKey>)>,
}

/// An encrypted multipart upload in progress. Cheap to clone; clones share the content key, so
/// parts can be sent from several tasks at once.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::multipart::PartSize;
/// let part = 8 * 1024 * 1024;
/// let data = vec![7u8; 2 * part + 100];
/// let upload = bucket.create_multipart_upload().key("big").data_size(data.len() as u64)
///     .part_size(PartSize::Target(part as u64)).send().await?;
/// // Any order, any concurrency:
/// let p3 = upload.upload_part(3, data[2 * part..].to_vec()).await?;
/// let p1 = upload.upload_part(1, data[..part].to_vec()).await?;
/// let p2 = upload.upload_part(2, data[part..2 * part].to_vec()).await?;
/// upload.complete(vec![p3, p1, p2]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MultipartUpload {
    inner: Arc<UploadInner>,
}

impl fmt::Debug for MultipartUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipartUpload")
            .field("key", &self.inner.key)
            .field("upload_id", &self.inner.upload_id)
            .field("part_size", &self.inner.part_size)
            .field("data_size", &self.inner.data_size)
            .finish_non_exhaustive()
    }
}

impl MultipartUpload {
    /// Re-attaches to an upload started earlier (by this process or another), given the
    /// envelope that was written at initiate. The content key is unwrapped through the bucket's
    /// keyring, once. The envelope must carry `part-size`.
    ///
    /// S3 cannot tell us which key an upload was started with, so keep the envelope with the
    /// upload id (as [`upload_file`](CryptoBucket::upload_file)'s checkpoints do); a wrong
    /// envelope would produce an object that mixes two keys.
    ///
    /// An upload started with integrity data needs its record too (`record`: from
    /// [`integrity_record`](Self::integrity_record) at initiate); its key commitment is checked
    /// against the unwrapped key.
    pub async fn resume(
        bucket: &CryptoBucket,
        key: impl Into<String>,
        upload_id: impl Into<String>,
        envelope: Envelope,
        record: Option<IntegrityRecord>,
    ) -> Result<Self> {
        Self::resume_with(bucket.handle(), key, upload_id, envelope, record).await
    }

    /// [`resume`](Self::resume) for the crate's operations, which hold the shared handle.
    pub(crate) async fn resume_with(
        bucket: &SharedHandle,
        key: impl Into<String>,
        upload_id: impl Into<String>,
        envelope: Envelope,
        record: Option<IntegrityRecord>,
    ) -> Result<Self> {
        let part_size = envelope.part_size.ok_or_else(|| {
            Error::invalid_metadata("the envelope of a multipart upload must record its part size")
        })?;
        if part_size == 0 || part_size % BLOCK_LEN != 0 {
            return Err(Error::invalid_metadata(format!(
                "part size {part_size} is not a positive multiple of 16"
            )));
        }
        let (material, tag_key) = bucket
            .keyring()
            .unwrap_committed(&envelope, record.as_ref())
            .await?;
        if let Some(r) = &record
            && part_size % u64::from(r.chunk_size) != 0
        {
            return Err(Error::invalid_metadata(format!(
                "part size {part_size} is not a multiple of the integrity chunk size {}",
                r.chunk_size
            )));
        }
        Ok(Self {
            inner: Arc::new(UploadInner {
                bucket: bucket.clone(),
                key: key.into(),
                upload_id: upload_id.into(),
                material,
                data_size: envelope.data_size,
                envelope,
                part_size,
                integrity: record.zip(tag_key.map(Arc::new)),
            }),
        })
    }

    /// Object key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The store's upload id.
    pub fn upload_id(&self) -> &str {
        &self.inner.upload_id
    }

    /// Part size in bytes (every part but the last has exactly this size).
    pub fn part_size(&self) -> u64 {
        self.inner.part_size
    }

    /// Total plaintext size, when known.
    pub fn data_size(&self) -> Option<u64> {
        self.inner.data_size
    }

    /// The envelope written at initiate (wrapped key material only).
    pub fn envelope(&self) -> &Envelope {
        &self.inner.envelope
    }

    /// The integrity record written at initiate (`None`: the upload writes no integrity data).
    /// Keep it with the envelope to [`resume`](Self::resume) the upload elsewhere.
    pub fn integrity_record(&self) -> Option<&IntegrityRecord> {
        self.inner.integrity.as_ref().map(|(r, _)| r)
    }

    /// The metadata written at initiate that a resumed upload needs: the envelope and the
    /// integrity record.
    pub(crate) fn recorded_metadata(&self) -> HashMap<String, String> {
        let mut m = self.inner.envelope.to_metadata();
        if let Some(r) = self.integrity_record() {
            r.to_metadata(&mut m);
        }
        m
    }

    /// Number of parts, when the data size is known (an empty object has one empty part).
    pub fn part_count(&self) -> Option<u32> {
        self.inner
            .data_size
            .map(|size| size.div_ceil(self.inner.part_size).max(1) as u32)
    }

    /// Plaintext `(offset, length)` of part `part_number`, when the data size is known.
    ///
    /// ```no_run
    /// # fn demo(upload: cryptobucket::multipart::MultipartUpload) -> cryptobucket::Result<()> {
    /// let (offset, len) = upload.part_range(2)?;
    /// assert_eq!(offset, upload.part_size());
    /// # let _ = len; Ok(()) }
    /// ```
    pub fn part_range(&self, part_number: u32) -> Result<(u64, u64)> {
        let offset = self.part_offset(part_number)?;
        let size = self.inner.data_size.ok_or_else(|| {
            Error::invalid_input("the upload's data size is unknown, so part lengths are too")
        })?;
        if offset >= size && !(size == 0 && part_number == 1) {
            return Err(Error::invalid_input(format!(
                "part {part_number} starts at byte {offset}, past the {size}-byte object"
            )));
        }
        Ok((offset, (size - offset).min(self.inner.part_size)))
    }

    fn part_offset(&self, part_number: u32) -> Result<u64> {
        if part_number == 0 || u64::from(part_number) > MAX_PARTS {
            return Err(Error::invalid_input(format!(
                "part number {part_number} is outside 1..={MAX_PARTS}"
            )));
        }
        Ok(u64::from(part_number - 1) * self.inner.part_size)
    }

    /// Encrypts `body` as part `part_number` and uploads it. The body must be exactly the
    /// part's plaintext: `part_size` bytes, or the remainder for the last part. The S3
    /// client's own retry policy applies (the transfers built on this retry in the engine
    /// instead).
    pub async fn upload_part(
        &self,
        part_number: u32,
        body: impl Into<PutBody>,
    ) -> Result<CompletedPart> {
        self.send_part(part_number, body.into(), true).await
    }

    /// [`upload_part`](Self::upload_part) as the engine sends it: one attempt, the engine's
    /// retry loop decides about more.
    pub(crate) async fn upload_part_once(
        &self,
        part_number: u32,
        body: PutBody,
    ) -> Result<CompletedPart> {
        self.send_part(part_number, body, false).await
    }

    #[tracing::instrument(level = "debug", name = "upload_part", skip_all, fields(key = %self.inner.key, part = part_number))]
    async fn send_part(
        &self,
        part_number: u32,
        body: PutBody,
        sdk_retries: bool,
    ) -> Result<CompletedPart> {
        let offset = self.part_offset(part_number)?;
        let len = body
            .len()
            .ok_or_else(|| Error::invalid_input("a part must have a known length"))?;
        match self.inner.data_size {
            Some(_) => {
                let (_, expected) = self.part_range(part_number)?;
                if len != expected {
                    return Err(Error::invalid_input(format!(
                        "part {part_number} must be {expected} bytes, got {len}"
                    )));
                }
            }
            None if len > self.inner.part_size || len == 0 && part_number > 1 => {
                return Err(Error::invalid_input(format!(
                    "part {part_number} is {len} bytes; parts are 1..={} bytes",
                    self.inner.part_size
                )));
            }
            None => {}
        }
        let inner = &self.inner;
        let sink = inner.integrity.as_ref().map(|(r, k)| {
            TagSink::new(
                k.clone(),
                length_field(r.length_mode, inner.data_size.unwrap_or(0)),
            )
        });
        let out = inner
            .bucket
            .client()
            .upload_part()
            .bucket(inner.bucket.bucket())
            .key(&inner.key)
            .upload_id(&inner.upload_id)
            .part_number(part_number as i32)
            .content_length(len as i64)
            .body(body.into_encrypted(&inner.material, offset, sink.as_ref())?)
            .customize()
            .config_override(crate::client::retry_override(sdk_retries))
            .send()
            .await
            .map_err(|e| self.upload_error("UploadPart", e))?;
        let e_tag = out
            .e_tag
            .ok_or_else(|| Error::invalid_response("UploadPart returned no ETag"))?;
        tracing::debug!(bytes = len, "part stored");
        let integrity_tags = match &sink {
            Some(sink) => Some(sink.take().ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    "the part body ended without its integrity tags",
                )
            })?),
            None => None,
        };
        Ok(CompletedPart {
            part_number,
            e_tag,
            size: len,
            integrity_tags,
        })
    }

    /// The parts the store holds for this upload, sorted by part number.
    pub async fn list_parts(&self) -> Result<Vec<ListedPart>> {
        let inner = &self.inner;
        list_upload_parts(&inner.bucket, &inner.key, &inner.upload_id).await
    }

    /// Checks that `parts` make up the whole object (numbers 1..=n, every part but the last of
    /// `part_size` bytes, the total equal to the data size when known), then completes.
    pub async fn complete(
        &self,
        parts: Vec<CompletedPart>,
    ) -> Result<CompleteMultipartUploadOutput> {
        self.complete_if(parts, None).await
    }

    /// [`complete`](Self::complete), only if the object's current ETag is `if_match` (a
    /// conditional write: the store answers 412, [`ErrorKind::Changed`], otherwise).
    pub(crate) async fn complete_if(
        &self,
        mut parts: Vec<CompletedPart>,
        if_match: Option<&str>,
    ) -> Result<CompleteMultipartUploadOutput> {
        let inner = &self.inner;
        parts.sort_by_key(|p| p.part_number);
        if parts.is_empty() {
            return Err(Error::invalid_input("no parts to complete the upload with"));
        }
        let mut total = 0u64;
        for (i, p) in parts.iter().enumerate() {
            let expected = i as u32 + 1;
            if p.part_number != expected {
                return Err(Error::invalid_input(format!(
                    "part {expected} is missing (or duplicated) among the parts to complete"
                )));
            }
            let last = i + 1 == parts.len();
            if !last && p.size != inner.part_size {
                return Err(Error::invalid_input(format!(
                    "part {} is {} bytes; every part but the last must be {}",
                    p.part_number, p.size, inner.part_size
                )));
            }
            total += p.size;
        }
        if let Some(size) = inner.data_size
            && size != total
        {
            return Err(Error::invalid_input(format!(
                "the parts hold {total} bytes but the upload was started for {size}"
            )));
        }
        let tags = match &inner.integrity {
            Some((record, key)) => Some(Self::assemble_tags(record, key, &parts, total)?),
            None => None,
        };
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        SdkCompletedPart::builder()
                            .part_number(p.part_number as i32)
                            .e_tag(&p.e_tag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let out = inner
            .bucket
            .client()
            .complete_multipart_upload()
            .bucket(inner.bucket.bucket())
            .key(&inner.key)
            .upload_id(&inner.upload_id)
            .multipart_upload(completed)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.upload_error("CompleteMultipartUpload", e))?;
        if let (Some((record, _)), Some(tags)) = (&inner.integrity, tags) {
            crate::ops::sidecar::put(&inner.bucket, &inner.key, record, &tags).await?;
        }
        Ok(CompleteMultipartUploadOutput {
            e_tag: out.e_tag,
            version_id: out.version_id,
            size: total,
        })
    }

    /// The whole object's tags from its parts' (checked to cover every chunk).
    fn assemble_tags(
        record: &IntegrityRecord,
        key: &Arc<TagKey>,
        parts: &[CompletedPart],
        total: u64,
    ) -> Result<Vec<[u8; TAG_LEN]>> {
        let c = u64::from(record.chunk_size);
        let mut tags = Vec::with_capacity(record.chunk_count(total) as usize);
        for p in parts {
            let t = p.integrity_tags.as_ref().ok_or_else(|| {
                Error::invalid_input(format!(
                    "part {} has no integrity tags; complete with the parts upload_part                      returned (or attach their tags with CompletedPart::with_integrity_tags)",
                    p.part_number
                ))
            })?;
            if t.len() as u64 != p.size.div_ceil(c) {
                return Err(Error::invalid_input(format!(
                    "part {} carries {} integrity tags; its {} bytes have {} chunks",
                    p.part_number,
                    t.len(),
                    p.size,
                    p.size.div_ceil(c)
                )));
            }
            tags.extend_from_slice(t);
        }
        if total.is_multiple_of(c) {
            let length = length_field(record.length_mode, total);
            tags.push(crate::integrity::empty_final_tag(key, total, length));
        }
        Ok(tags)
    }

    /// Aborts the upload; the store discards its parts.
    pub async fn abort(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .bucket
            .client()
            .abort_multipart_upload()
            .bucket(inner.bucket.bucket())
            .key(&inner.key)
            .upload_id(&inner.upload_id)
            .send()
            .await
            .map_err(|e| self.upload_error("AbortMultipartUpload", e))?;
        Ok(())
    }

    pub(crate) fn material(&self) -> &ContentMaterial {
        &self.inner.material
    }

    fn upload_error<E>(
        &self,
        op: &str,
        err: aws_sdk_s3::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        upload_error(op, inner.bucket.bucket(), &inner.key, &inner.upload_id, err)
    }
}

/// The parts the store holds for upload `upload_id` of `key`, sorted by part number (every
/// page followed; a store whose paging does not advance is an error, never an endless loop).
pub(crate) async fn list_upload_parts(
    bucket: &SharedHandle,
    key: &str,
    upload_id: &str,
) -> Result<Vec<ListedPart>> {
    let mut parts = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0u32;
    loop {
        pages += 1;
        let marker_before = marker.clone();
        let out = bucket
            .client()
            .list_parts()
            .bucket(bucket.bucket())
            .key(key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.take())
            .send()
            .await
            .map_err(|e| upload_error("ListParts", bucket.bucket(), key, upload_id, e))?;
        for p in out.parts() {
            let (Some(n), Some(size)) = (p.part_number(), p.size()) else {
                return Err(Error::invalid_response(
                    "ListParts returned a part without number or size",
                ));
            };
            let (Ok(part_number), Ok(size)) = (u32::try_from(n), u64::try_from(size)) else {
                return Err(Error::invalid_response(
                    "ListParts returned a negative part number or size",
                ));
            };
            parts.push(ListedPart {
                part_number,
                e_tag: p.e_tag().map(str::to_owned).filter(|t| !t.is_empty()),
                size,
            });
        }
        match next_page(
            marker_before.as_deref(),
            out.is_truncated(),
            out.next_part_number_marker(),
            pages,
        ) {
            Ok(Some(next)) => marker = Some(next),
            Ok(None) => break,
            Err(e) => {
                return Err(e
                    .with_operation("ListParts")
                    .with_object(bucket.bucket(), key)
                    .with_upload_id(upload_id));
            }
        }
    }
    parts.sort_by_key(|p| p.part_number);
    parts.dedup_by_key(|p| p.part_number);
    Ok(parts)
}

/// An error of request `op` on upload `upload_id`: names the object and upload; a missing
/// upload says so plainly.
pub(crate) fn upload_error<E>(
    op: &str,
    bucket: &str,
    key: &str,
    upload_id: &str,
    err: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let e = Error::from_sdk(op, err)
        .with_object(bucket, key)
        .with_upload_id(upload_id);
    if e.kind() == ErrorKind::NotFound {
        Error::new(
            ErrorKind::NotFound,
            "the upload no longer exists (completed, aborted or expired)",
        )
        .with_operation(op)
        .with_object(bucket, key)
        .with_upload_id(upload_id)
        .with_source(e)
    } else {
        e
    }
}

/// Most ListParts pages one listing follows (10,000 parts need at most 10 pages of 1,000; a
/// store that pages one part at a time still fits).
const MAX_LIST_PAGES: u32 = 10_001;

/// The marker of the next ListParts page, or `None` when the listing is complete. A store
/// that claims more pages but repeats or lowers its marker (or pages without end) would loop
/// forever: that is an [`ErrorKind::InvalidResponse`].
///
/// ```
/// # use cryptobucket::multipart::next_list_parts_page as next_page;
/// assert_eq!(next_page(None, Some(true), Some("1000"), 1).unwrap(), Some("1000".to_owned()));
/// assert_eq!(next_page(Some("1000"), Some(false), None, 2).unwrap(), None);
/// assert!(next_page(Some("1000"), Some(true), Some("1000"), 2).is_err());
/// assert!(next_page(Some("1000"), Some(true), Some("7"), 2).is_err());
/// ```
#[doc(hidden)]
pub fn next_list_parts_page(
    previous: Option<&str>,
    is_truncated: Option<bool>,
    next: Option<&str>,
    pages: u32,
) -> Result<Option<String>> {
    if is_truncated != Some(true) {
        return Ok(None);
    }
    let bad = |why: &str| Error::invalid_response(format!("ListParts paging is broken: {why}"));
    let next = next
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("more pages claimed, but no next marker given"))?;
    let next_n: u64 = next
        .trim()
        .parse()
        .map_err(|_| bad("the next marker is not a part number"))?;
    if let Some(prev) = previous {
        let prev_n: u64 = prev.trim().parse().unwrap_or(0);
        if next_n <= prev_n {
            return Err(bad(&format!(
                "the next marker {next_n} does not advance past {prev_n}"
            )));
        }
    }
    if pages >= MAX_LIST_PAGES || next_n >= MAX_PARTS {
        return Err(bad("more pages than an upload of 10,000 parts can have"));
    }
    Ok(Some(next.trim().to_owned()))
}
use next_list_parts_page as next_page;

/// Sends `body` as an encrypted multipart upload with at most `config.concurrency` parts in
/// flight; the path [`put_object`](CryptoBucket::put_object) takes for bodies over the
/// threshold and for streams of unknown length. Files and bytes are read part by part where
/// they lie; a reader is read sequentially into part buffers, so memory stays within
/// `concurrency × part size`. Each part is retried by the engine with the same bytes. On
/// failure, and when the returned future is dropped, the upload is aborted (unless the
/// configuration says [`FailedUploadPolicy::Retain`]).
pub(crate) async fn put_multipart(
    create: CreateMultipartUploadFluentBuilder,
    body: PutBody,
    config: &TransferConfig,
    if_match: Option<&str>,
) -> Result<(MultipartUpload, CompleteMultipartUploadOutput)> {
    let data_size = body.len();
    let create = match data_size {
        Some(n) => create.data_size(n),
        None => create,
    };
    let upload = create.send().await?;
    let mut guard = abort_on_drop(&upload, config.failed_upload);
    let outcome = match send_all_parts(&upload, body, config).await {
        Ok(parts) => upload.complete_if(parts, if_match).await,
        Err(e) => Err(e),
    };
    guard.disarm();
    match outcome {
        Ok(out) => Ok((upload, out)),
        Err(e) => {
            if config.failed_upload == FailedUploadPolicy::Abort {
                let _ = upload.abort().await;
            }
            Err(e.with_upload_id(upload.upload_id()))
        }
    }
}

/// A guard that aborts `upload` if the future driving it is dropped, when `policy` says so.
pub(crate) fn abort_on_drop(
    upload: &MultipartUpload,
    policy: FailedUploadPolicy,
) -> crate::engine::AbortOnDrop {
    let upload = upload.clone();
    crate::engine::AbortOnDrop::new(
        (policy == FailedUploadPolicy::Abort).then_some(async move { upload.abort().await }),
    )
}

/// One part's plaintext, re-readable for every attempt.
enum PartData {
    Bytes(bytes::Bytes),
    File(std::path::PathBuf, u64, u64),
}

impl PartData {
    async fn body(&self) -> Result<PutBody> {
        match self {
            Self::Bytes(b) => Ok(PutBody::from_bytes(b.clone())),
            Self::File(path, offset, len) => PutBody::from_file_range(path, *offset, *len).await,
        }
    }
}

async fn send_all_parts(
    upload: &MultipartUpload,
    body: PutBody,
    config: &TransferConfig,
) -> Result<Vec<CompletedPart>> {
    use crate::body::PartSource;
    use tokio::io::AsyncReadExt as _;

    let part_size = upload.part_size();
    let known = body.len();
    let concurrency = config.concurrency.max(1);
    let max_attempts = config.max_attempts.max(1);
    let mut source = body.into_part_source()?;
    let mut set = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut first_err: Option<Error> = None;
    type Joined = std::result::Result<Result<CompletedPart>, tokio::task::JoinError>;
    fn record(joined: Joined, parts: &mut Vec<CompletedPart>, first_err: &mut Option<Error>) {
        let failed = match joined {
            Ok(Ok(p)) => {
                parts.push(p);
                return;
            }
            Ok(Err(e)) => e,
            Err(e) => Error::new(ErrorKind::Io, format!("a part upload task failed: {e}")),
        };
        first_err.get_or_insert(failed);
    }
    let mut n: u32 = 0;
    loop {
        // At most `concurrency` parts, and so part buffers, in flight.
        while set.len() >= concurrency {
            if let Some(joined) = set.join_next().await {
                record(joined, &mut parts, &mut first_err);
            }
        }
        if first_err.is_some() {
            break;
        }
        n += 1;
        let offset = u64::from(n - 1) * part_size;
        let remaining = known.map(|total| total.saturating_sub(offset));
        let (part, last) = match &mut source {
            PartSource::Bytes(b) => {
                let len = remaining.unwrap_or(0).min(part_size);
                let start = offset as usize;
                let part = PartData::Bytes(b.slice(start..start + len as usize));
                (part, remaining == Some(len))
            }
            PartSource::File(path, start) => {
                let len = remaining.unwrap_or(0).min(part_size);
                let part = PartData::File(path.clone(), *start + offset, len);
                (part, remaining == Some(len))
            }
            PartSource::Reader(reader) => {
                let want = remaining.unwrap_or(part_size).min(part_size);
                let mut buf = Vec::with_capacity(want as usize);
                reader
                    .take(want)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| Error::io("cannot read the upload source", e))?;
                let got = buf.len() as u64;
                if known.is_some() && got < want {
                    return Err(Error::new(
                        ErrorKind::Io,
                        format!(
                            "the upload source ended after {} of {} bytes",
                            offset + got,
                            known.unwrap_or(0)
                        ),
                    ));
                }
                if got == 0 && n > 1 {
                    break; // a stream that ended exactly at a part boundary
                }
                let last = match remaining {
                    Some(r) => r == got,
                    None => got < part_size,
                };
                (PartData::Bytes(buf.into()), last)
            }
        };
        let u = upload.clone();
        set.spawn(async move {
            let report = Reporter::silent();
            with_retries(max_attempts, n, &report, || async {
                u.upload_part_once(n, part.body().await?).await
            })
            .await
        });
        if last {
            break;
        }
    }
    while let Some(joined) = set.join_next().await {
        record(joined, &mut parts, &mut first_err);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(parts),
    }
}
