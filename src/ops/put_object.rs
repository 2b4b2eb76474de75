//! `PutObject`: encrypt and upload, one PUT or (large bodies, streams) a multipart upload.

use std::collections::HashMap;

use crate::body::PutBody;
use crate::body::TagSink;
use crate::engine::{Reporter, TransferConfig, with_retries};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::handle::{MAX_SINGLE_PUT, SharedHandle, check_user_metadata, require_key};
use crate::integrity::{INLINE_MAX_TAGS, LengthMode};

/// Builder of an encrypted PUT; see [`CryptoBucket::put_object`](crate::CryptoBucket::put_object).
pub struct PutObjectFluentBuilder {
    bucket: SharedHandle,
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
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            config: bucket.transfer,
            bucket,
            key: None,
            body: None,
            content_type: None,
            metadata: HashMap::new(),
            record_md5: None,
            if_match: None,
        }
    }

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
    /// support it: S3, s3s, ...); otherwise the store answers 412, [`ErrorKind::Changed`](crate::ErrorKind::Changed), and
    /// nothing is written. For a multipart upload the condition applies to the completion.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Encrypts and uploads: one PUT, or a multipart upload for bodies over the threshold and
    /// for streams longer than one part.
    #[tracing::instrument(name = "put_object", skip_all, fields(bucket = %self.bucket.bucket(), key = ?self.key))]
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
        let inner = &*self.bucket;
        let (material, mut env) = inner.keyring.seal().await?;
        env.unencrypted_content_length = Some(len);
        env.unencrypted_content_md5 = self.record_md5;
        let mut meta = self.metadata;
        meta.extend(env.to_metadata());
        // Integrity: a small body's tags go into the metadata (computed up front, from the body
        // in memory); a larger body's are computed as it streams and stored in the sidecar
        // after the PUT.
        let mut body = body;
        let mut sidecar = None;
        if let Some((mut record, tag_key)) =
            inner.new_integrity(&material, None, LengthMode::Bound)?
        {
            if record.chunk_count(len) <= INLINE_MAX_TAGS {
                let plain = body.into_bytes().await?;
                let mut ct = bytes::BytesMut::from(&plain[..]);
                material.cipher_at(0)?.apply(&mut ct);
                let sink = TagSink::new(tag_key.clone(), len);
                record.inline_tags = Some(sink.tags_of(&ct, len));
                body = PutBody::from_bytes(plain);
            } else {
                sidecar = Some((record.clone(), TagSink::new(tag_key, len)));
            }
            record.to_metadata(&mut meta);
        }
        // Retried by the engine (same key, same counter: identical bytes) when the body can be
        // read again; a reader gets one attempt.
        let template = body.replay();
        let max = if template.is_some() {
            self.config.max_attempts
        } else {
            1
        };
        let mut first = Some(body);
        let sink = sidecar.as_ref().map(|(_, s)| s);
        let out = with_retries(max, 1, &Reporter::silent(), || {
            let body = first
                .take()
                .or_else(|| template.as_ref().and_then(PutBody::replay));
            let (meta, content_type, if_match) = (
                meta.clone(),
                self.content_type.clone(),
                self.if_match.clone(),
            );
            let (key, material) = (&key, &material);
            async move {
                let body = body.ok_or_else(|| {
                    Error::invalid_input("the upload body cannot be read a second time")
                })?;
                inner
                    .client
                    .put_object()
                    .bucket(&inner.bucket)
                    .key(key)
                    .content_length(len as i64)
                    .set_content_type(content_type)
                    .set_metadata(Some(meta))
                    .set_if_match(if_match)
                    .body(body.into_encrypted(material, 0, sink)?)
                    .customize()
                    .config_override(crate::client::retry_override(false))
                    .send()
                    .await
                    .map_err(|e| Error::from_sdk("PutObject", e).with_object(&inner.bucket, key))
            }
        })
        .await?;
        if let Some((record, sink)) = &sidecar {
            let tags = sink.finished_tags(len)?;
            crate::ops::sidecar::put(inner, &key, record, &tags).await?;
        }
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
        let mut create =
            crate::multipart::CreateMultipartUploadFluentBuilder::new(self.bucket.clone())
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
