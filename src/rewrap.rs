//! Key rotation: re-wrap an object's content key and IV under another master key without
//! touching the body.
//!
//! The object's CEK and IV are unwrapped with the bucket's keyring, wrapped again by the target
//! key, and written back by a same-key server-side copy that replaces the metadata (the
//! ciphertext is copied as is: no download, no re-encryption). Content type and the other
//! standard headers and the user's own metadata are kept; the copy is conditional on the
//! object's ETag, so a concurrent overwrite is never clobbered with stale key material.
//!
//! Objects over 5 GiB (CopyObject's limit) are copied with a multipart copy (UploadPartCopy)
//! on the transfer engine (parts in parallel, retried), every part pinned to the source ETag,
//! and completed only if the object is still that version (checked by HEAD and sent as
//! `If-Match` on the completion).
//!
//! **What rewrap does not do.** It keeps the object's content key: only the wrapping changes.
//! Whoever held the old master key and read an object's wrapped key before can still decrypt
//! the body, and in a versioned bucket the old versions keep the old wrapping, readable with
//! the old key. Rewrap retires a master key for *new reads*; it is not a data-key rotation. A
//! true rotation (a new content key, the body re-encrypted) is a download and re-upload:
//! `get_object` into `put_object` with the target keyring, which reads and writes every byte.
//!
//! **OSS refuses** CopyObject requests that change the encryption metadata of a
//! client-side-encrypted object, so rewrap works on S3-compatible stores (S3, MinIO, Garage,
//! ...), not on OSS's own API.

use std::collections::HashMap;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};

use crate::engine::{Reporter, TransferConfig, run_bounded, with_retries};
use crate::envelope::{self, Envelope, MatDesc};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{Handle, MAX_SINGLE_PUT, SharedHandle, percent_encode_key, require_key};
use crate::keys::KeyEntry;
use crate::ops::get_object::{GetObjectFluentBuilder, Pin};
use crate::ops::put_object::PutObjectFluentBuilder;

/// Builder of a rewrap; see [`CryptoBucket::rewrap_object`](crate::CryptoBucket::rewrap_object).
#[derive(Debug)]
pub struct RewrapObjectFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
    to: Option<KeyEntry>,
    multipart_threshold: u64,
    reencrypt: bool,
    dry_run: bool,
    config: TransferConfig,
}

/// The object's content key, after the integrity policy (strict mode, signers) accepted its
/// record and the key commitment matched: what a rewrap or re-encryption needs before it
/// touches the object.
async fn unwrap_checked(
    handle: &SharedHandle,
    meta: &HashMap<String, String>,
    env: &Envelope,
    key: &str,
) -> Result<crate::cipher::ContentMaterial> {
    let bucket = handle.bucket();
    let record = crate::integrity::IntegrityRecord::from_metadata(meta)
        .map_err(|e| e.with_object(bucket, key))?;
    handle
        .integrity
        .check(record.as_ref(), &env.wrap_alg)
        .map_err(|e| e.with_object(bucket, key))?;
    let (material, _) = handle
        .keyring()
        .unwrap_committed(env, record.as_ref())
        .await
        .map_err(|e| e.with_object(bucket, key))?;
    Ok(material)
}

/// What a rewrap did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RewrapOutput {
    /// True when the object was already under the target key (nothing was written).
    pub skipped: bool,
    /// The object's matdesc before.
    pub from: MatDesc,
    /// Its matdesc now.
    pub to: MatDesc,
    /// ETag after the copy (unchanged when skipped or in a dry run).
    pub e_tag: Option<String>,
    /// True in a [dry run](RewrapObjectFluentBuilder::dry_run): every check passed and the
    /// object would have been written (unless `skipped`), but nothing was.
    pub dry_run: bool,
}

impl RewrapObjectFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            config: *bucket.transfer_config(),
            bucket,
            key: None,
            to: None,
            multipart_threshold: MAX_SINGLE_PUT,
            reencrypt: false,
            dry_run: false,
        }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The key to wrap under (its provider and matdesc), e.g.
    /// `keyring.by_name("prod-2").cloned()`.
    pub fn to(mut self, entry: KeyEntry) -> Self {
        self.to = Some(entry);
        self
    }

    /// Objects larger than this are copied with a multipart copy (default and maximum 5 GiB,
    /// CopyObject's limit; lower it to exercise the multipart path).
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes.min(MAX_SINGLE_PUT);
        self
    }

    /// A true data-key rotation instead of a re-wrap: a new content key and IV, the body read,
    /// decrypted, encrypted again under the target key and written back in place (streaming;
    /// parts in parallel above the multipart threshold). Every byte is read and written, and
    /// afterwards the old content key decrypts nothing of the current version. The write is
    /// conditional on the object still being the version read (`If-Match`): a concurrent
    /// overwrite is never clobbered ([`ErrorKind::Changed`]).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let target = bucket.keyring().by_name("prod-2025").cloned().expect("a key named prod-2025");
    /// bucket.rewrap_object().key("ckpt/model.bin").to(target).reencrypt(true).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn reencrypt(mut self, yes: bool) -> Self {
        self.reencrypt = yes;
        self
    }

    /// Checks everything a rewrap checks (the object's metadata and integrity policy, the
    /// current key unwraps it, the target key wraps and unwraps it back) and writes nothing;
    /// the output says whether the object would be skipped. A re-encryption's dry run does
    /// not read the body.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let target = bucket.keyring().by_name("prod-2025").cloned().expect("a key named prod-2025");
    /// let plan = bucket.rewrap_object().key("m.bin").to(target).dry_run(true).send().await?;
    /// assert!(plan.dry_run);
    /// # Ok(()) }
    /// ```
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }

    /// Concurrency and attempts of the part copies, and part size and multipart threshold of a
    /// re-encryption (default: the bucket's).
    pub fn transfer_config(mut self, config: TransferConfig) -> Self {
        self.config = config;
        self
    }

    /// Re-wraps the object (or skips it if it is already under the target key).
    #[tracing::instrument(name = "rewrap", skip_all, fields(key = ?self.key))]
    pub async fn send(self) -> Result<RewrapOutput> {
        let key = require_key(self.key)?;
        let to = self
            .to
            .ok_or_else(|| Error::invalid_input("the target key is required (call .to(...))"))?;
        let client = self.bucket.client();
        let bucket = self.bucket.bucket();
        let head = client
            .head_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("HeadObject", e).with_object(bucket, &key))?;
        let empty = HashMap::new();
        let meta = head.metadata().unwrap_or(&empty);
        let env = Envelope::from_metadata(meta)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotEncrypted,
                format!("object {key:?} has no client-side-encryption metadata; nothing to rewrap"),
            )
        })?;
        let e_tag = head.e_tag().map(str::to_owned);
        let size = head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid_response("the HEAD response has no valid Content-Length")
                    .with_object(bucket, &key)
            })?;

        if self.reencrypt && self.dry_run {
            // What a re-encryption needs before it reads a byte: policy and the current key.
            unwrap_checked(&self.bucket, meta, &env, &key).await?;
            // The target key can make a content key (for KMS: one GenerateDataKey call).
            to.provider().generate().await?;
            return Ok(RewrapOutput {
                skipped: false,
                from: env.matdesc,
                to: to.get_matdesc().clone(),
                e_tag,
                dry_run: true,
            });
        }
        if self.reencrypt {
            let e_tag = e_tag.ok_or_else(|| {
                Error::invalid_response("the store gave no ETag; a re-encryption must pin one")
                    .with_object(bucket, &key)
            })?;
            let source = Source {
                env,
                e_tag,
                size,
                head: &head,
            };
            return reencrypt(&self.bucket, &key, to, source, self.config).await;
        }
        // Already under the target key?
        if env.matdesc == *to.get_matdesc()
            && to.provider().can_unwrap(&env.wrap_alg)
            && to.provider().unwrap(&env).await.is_ok()
        {
            return Ok(RewrapOutput {
                skipped: true,
                from: env.matdesc.clone(),
                to: env.matdesc,
                e_tag,
                dry_run: self.dry_run,
            });
        }
        // A rewrap re-signs nothing and does not read the body, so it must not bless an object
        // whose key does not match its integrity record (or that strict mode would refuse).
        let material = unwrap_checked(&self.bucket, meta, &env, &key).await?;
        let wrapped = to.provider().wrap(&material).await?;
        let new_env = Envelope {
            version: envelope::FormatVersion::V2,
            wrap_alg: wrapped.wrap_alg,
            wrapped_key: wrapped.key,
            wrapped_iv: wrapped.iv,
            matdesc: to.get_matdesc().clone(),
            ..env.clone()
        };
        // Check the new wrap before writing it: the target must be able to read it back.
        let back = to.provider().unwrap(&new_env).await?;
        if back.cek() != material.cek() || back.iv() != material.iv() {
            return Err(Error::new(
                ErrorKind::KeyUnwrap,
                "the target key did not unwrap what it wrapped; nothing was written",
            ));
        }
        if self.dry_run {
            return Ok(RewrapOutput {
                skipped: false,
                from: env.matdesc,
                to: new_env.matdesc,
                e_tag,
                dry_run: true,
            });
        }
        let mut new_meta: HashMap<String, String> = meta
            .iter()
            .filter(|(k, _)| !envelope::is_envelope_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        new_meta.extend(new_env.to_metadata());

        let source = format!("{bucket}/{}", percent_encode_key(&key));
        let new_tag = if size <= self.multipart_threshold {
            let mut copy = client
                .copy_object()
                .copy_source(&source)
                .bucket(bucket)
                .key(&key)
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(new_meta))
                .set_content_type(head.content_type().map(str::to_owned))
                .set_content_encoding(head.content_encoding().map(str::to_owned))
                .set_content_disposition(head.content_disposition().map(str::to_owned))
                .set_content_language(head.content_language().map(str::to_owned))
                .set_cache_control(head.cache_control().map(str::to_owned));
            if let Some(t) = &e_tag {
                copy = copy.copy_source_if_match(t);
            }
            copy.send()
                .await
                .map_err(|e| Error::from_sdk("CopyObject", e).with_object(bucket, &key))?
                .copy_object_result
                .and_then(|r| r.e_tag)
        } else {
            let part = self
                .multipart_threshold
                .clamp(crate::multipart::MIN_PART_SIZE, 1 << 30);
            let target = CopyTarget {
                key: &key,
                source: &source,
                size,
                part,
                e_tag: e_tag.as_deref(),
            };
            multipart_copy(&self.bucket, target, new_meta, &head, self.config).await?
        };
        Ok(RewrapOutput {
            skipped: false,
            from: env.matdesc,
            to: new_env.matdesc,
            e_tag: new_tag,
            dry_run: false,
        })
    }
}

struct CopyTarget<'a> {
    key: &'a str,
    source: &'a str,
    size: u64,
    part: u64,
    e_tag: Option<&'a str>,
}

/// Copies `source` onto `key` with new metadata in parts (UploadPartCopy), pinned to the source
/// ETag.
async fn multipart_copy(
    cb: &Handle,
    t: CopyTarget<'_>,
    meta: HashMap<String, String>,
    head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    config: TransferConfig,
) -> Result<Option<String>> {
    let CopyTarget {
        key,
        source,
        size,
        part: copy_part,
        e_tag,
    } = t;
    let client = cb.client();
    let bucket = cb.bucket();
    let id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_metadata(Some(meta))
        .set_content_type(head.content_type().map(str::to_owned))
        .set_content_encoding(head.content_encoding().map(str::to_owned))
        .set_content_disposition(head.content_disposition().map(str::to_owned))
        .set_content_language(head.content_language().map(str::to_owned))
        .set_cache_control(head.cache_control().map(str::to_owned))
        .send()
        .await
        .map_err(|e| Error::from_sdk("CreateMultipartUpload", e).with_object(bucket, key))?
        .upload_id
        .ok_or_else(|| Error::invalid_response("CreateMultipartUpload returned no upload id"))?;
    let result = async {
        // The part copies run on the transfer engine: bounded concurrency and its one retry
        // layer (the S3 client's own retries are off for them).
        let mut jobs = Vec::new();
        let mut offset = 0u64;
        let mut n = 1u32;
        while offset < size {
            let last = (offset + copy_part).min(size) - 1;
            let (client, bucket, key, id, source) = (
                client.clone(),
                bucket.to_owned(),
                key.to_owned(),
                id.clone(),
                source.to_owned(),
            );
            let e_tag = e_tag.map(str::to_owned);
            let max = config.max_attempts;
            jobs.push(async move {
                with_retries(max, n, &Reporter::silent(), || async {
                    let out = client
                        .upload_part_copy()
                        .bucket(&bucket)
                        .key(&key)
                        .upload_id(&id)
                        .part_number(n as i32)
                        .copy_source(&source)
                        .copy_source_range(format!("bytes={offset}-{last}"))
                        .set_copy_source_if_match(e_tag.clone())
                        .customize()
                        .config_override(crate::client::retry_override(false))
                        .send()
                        .await
                        .map_err(|e| Error::from_sdk("UploadPartCopy", e))?;
                    let tag = out.copy_part_result.and_then(|r| r.e_tag).ok_or_else(|| {
                        Error::invalid_response("UploadPartCopy returned no ETag")
                    })?;
                    Ok(CompletedPart::builder()
                        .part_number(n as i32)
                        .e_tag(tag)
                        .build())
                })
                .await
            });
            offset = last + 1;
            n += 1;
        }
        let mut parts = Vec::with_capacity(jobs.len());
        run_bounded(config.concurrency, jobs, |p: CompletedPart| {
            parts.push(p);
            Ok(())
        })
        .await?;
        parts.sort_by_key(|p| p.part_number());
        // The parts are copies of the pinned version; completing would replace whatever the
        // object is now. If it changed meanwhile, stop: the newer object is not ours to
        // clobber. The check is made twice: by HEAD (any store) and as If-Match on the
        // completion itself (stores with conditional writes close the last window).
        if let Some(t) = e_tag {
            let now = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| Error::from_sdk("HeadObject", e))?;
            if now.e_tag() != Some(t) {
                return Err(changed(key, t, now.e_tag()));
            }
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .set_if_match(e_tag.map(str::to_owned))
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Error::from_sdk("CompleteMultipartUpload", e))
    }
    .await;
    let result = result.map_err(|e| e.with_object(bucket, key).with_upload_id(&id));
    match result {
        Ok(out) => Ok(out.e_tag),
        Err(e) => {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .send()
                .await;
            Err(e)
        }
    }
}

fn changed(key: &str, pinned: &str, now: Option<&str>) -> Error {
    Error::new(
        ErrorKind::Changed,
        format!(
            "object {key:?} changed during the rewrap (ETag {pinned} became {}); the newer \
             object was left as it is, rewrap it again",
            now.unwrap_or("(none)")
        ),
    )
    .with_retryable(true)
}

/// The version of an object a re-encryption reads.
struct Source<'a> {
    env: Envelope,
    e_tag: String,
    size: u64,
    head: &'a aws_sdk_s3::operation::head_object::HeadObjectOutput,
}

/// Reads `key` (pinned to its version), and writes it back under `to` with a new content key,
/// on condition that it is still that version.
async fn reencrypt(
    cb: &SharedHandle,
    key: &str,
    to: KeyEntry,
    source: Source<'_>,
    config: TransferConfig,
) -> Result<RewrapOutput> {
    let Source {
        env,
        e_tag,
        size,
        head,
    } = source;
    let target: SharedHandle = std::sync::Arc::new(Handle {
        client: cb.client.clone(),
        bucket: cb.bucket.clone(),
        keyring: crate::Keyring::builder().default_key(to.clone()).build()?,
        unencrypted: cb.unencrypted,
        transfer: config,
        integrity: cb.integrity.clone(),
        write_integrity: cb.write_integrity,
    });
    let pin = Pin {
        e_tag: e_tag.clone(),
        size,
        wrapped_key: Some(env.wrapped_key.text.clone()),
    };
    let got = GetObjectFluentBuilder::new(cb.clone())
        .key(key)
        .pinned(pin, None)
        .send()
        .await?;
    let mut put = PutObjectFluentBuilder::new(target)
        .key(key)
        .body(crate::PutBody::from_reader(
            got.body.into_async_read(),
            size,
        ))
        .set_content_type(head.content_type().map(str::to_owned))
        .if_match(&e_tag);
    for (k, v) in got.metadata {
        put = put.metadata(k, v);
    }
    let out = put.send().await.map_err(|e| {
        if e.kind() == ErrorKind::Changed {
            changed(key, &e_tag, None)
        } else {
            e
        }
    })?;
    Ok(RewrapOutput {
        skipped: false,
        from: env.matdesc,
        to: to.get_matdesc().clone(),
        e_tag: out.e_tag,
        dry_run: false,
    })
}
