//! [`CryptoBucket::upload_file`](crate::CryptoBucket::upload_file): a local file as one PUT or a parallel, resumable multipart
//! upload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{
    Checkpointer, TransferOptions, absolute, invalid_checkpoint, local_file,
    remove_finished_checkpoint, same_source, settle, store_checkpoint,
};
use crate::body::PutBody;
use crate::checkpoint::{Checkpoint, DonePart, LocalFile};
use crate::engine::{FailedUploadPolicy, Reporter, TransferConfig, run_bounded, with_retries};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{MAX_SINGLE_PUT, SharedHandle, require_key};
use crate::integrity::{IntegrityRecord, TAG_LEN};
use crate::multipart::{
    CompletedPart, CreateMultipartUploadFluentBuilder, MultipartUpload, PartSize,
};
use crate::ops::head_object::HeadObjectFluentBuilder;
use crate::ops::put_object::PutObjectFluentBuilder;
use crate::partial::TransferLock;
use crate::progress::{ProgressEvent, ProgressListener};

/// Builder of a whole-file upload; see [`CryptoBucket::upload_file`](crate::CryptoBucket::upload_file).
#[derive(Debug)]
pub struct UploadFileFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
    path: Option<PathBuf>,
    opts: TransferOptions,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
}

/// What a finished upload reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UploadFileOutput {
    /// ETag of the object.
    pub e_tag: Option<String>,
    /// Plaintext size.
    pub size: u64,
    /// Part size, for multipart uploads (`None`: one PUT).
    pub part_size: Option<u64>,
    /// Number of parts (1 for a single PUT).
    pub parts: u32,
    /// Bytes taken over from an interrupted earlier run (not sent again).
    pub resumed_bytes: u64,
    /// Plaintext bytes of parts sent by this run (retries not counted twice).
    pub bytes_sent: u64,
    /// Why an earlier checkpoint was not continued, if one existed and was dropped.
    pub restarted: Option<String>,
}

impl UploadFileFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            opts: TransferOptions::new(*bucket.transfer_config()),
            bucket,
            key: None,
            path: None,
            content_type: None,
            metadata: HashMap::new(),
        }
    }

    /// All transfer options at once (a file of a tree: [`TransferOptions::for_item`]).
    pub(crate) fn options(mut self, opts: TransferOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The local file to upload.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    transfer_option_setters!("part");

    /// Files of at most this size go up in one PUT (default: the part size, so a file that
    /// fits in one part is one request); larger ones as a multipart upload.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.opts.config.multipart_threshold = Some(bytes);
        self
    }

    /// Content type of the object.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds one user-metadata entry (stored in clear).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Uploads (or resumes uploading) the file.
    pub async fn send(self) -> Result<UploadFileOutput> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.resumable);
        let (bucket, key) = (self.bucket.bucket().to_owned(), self.key.clone());
        crate::engine::run_transfer(
            tracing::info_span!(
                "upload_file",
                bucket = %self.bucket.bucket(),
                key = self.key.as_deref().unwrap_or_default(),
                path = ?self.path
            ),
            cancel.as_ref(),
            "the upload",
            resumable,
            Box::pin(self.run()),
        )
        .await
        // Local failures (disk full, unreadable file) name the object too.
        .map_err(|e| match key {
            Some(key) => e.with_object(bucket, key),
            None => e,
        })
    }

    async fn run(self) -> Result<UploadFileOutput> {
        let key = require_key(self.key.clone())?;
        let path = absolute(self.path.as_deref().ok_or_else(|| {
            Error::invalid_input("the file to upload is required (call .path(...))")
        })?)?;
        self.opts.validate()?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(Error::invalid_input(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        let report = Reporter::new(self.opts.progress.clone(), size);
        let threshold = match self.opts.config.multipart_threshold {
            Some(t) => t,
            None => self.opts.config.part_size.resolve(Some(size))?,
        };
        if size <= threshold.min(MAX_SINGLE_PUT) {
            return self.single_put(&key, &path, size, &report).await;
        }
        let local = local_file(&path, &meta);
        let cp_path = self
            .opts
            .checkpoint_path("upload", self.bucket.bucket(), &key, &path);
        // One run of this transfer at a time: a second one would share the checkpoint.
        let _lock = TransferLock::acquire(&cp_path, "upload")?;
        let mut restarted = None;
        let mut resumed = None;
        if self.opts.resumable {
            match self.try_resume(&key, &local, &cp_path).await? {
                Resume::Continue(upload, cp, done) => resumed = Some((upload, *cp, done)),
                Resume::AlreadyComplete(e_tag, part_size) => {
                    report.add(size);
                    report.emit(ProgressEvent::Started {
                        resumed_bytes: size,
                        resumed_parts: size.div_ceil(part_size) as u32,
                    });
                    report.emit(ProgressEvent::Finished);
                    return Ok(UploadFileOutput {
                        e_tag,
                        size,
                        part_size: Some(part_size),
                        parts: size.div_ceil(part_size) as u32,
                        resumed_bytes: size,
                        bytes_sent: 0,
                        restarted: None,
                    });
                }
                Resume::Fresh(reason) => {
                    if let Some(r) = &reason {
                        report.emit(ProgressEvent::Restarted { reason: r.clone() });
                    }
                    restarted = reason;
                }
            }
        }
        let (upload, mut cp, done) = match resumed {
            Some(r) => r,
            None => {
                let upload = self.create(&key, size).await?;
                let mut cp = Checkpoint::new("upload", self.bucket.bucket(), &key, local.clone());
                cp.upload_id = Some(upload.upload_id().to_owned());
                cp.part_size = upload.part_size();
                cp.envelope = upload.recorded_metadata().into_iter().collect();
                if self.opts.resumable {
                    cp.seal(upload.material())?;
                    if let Err(e) = store_checkpoint(&cp, &cp_path).await {
                        let _ = upload.abort().await;
                        return Err(e);
                    }
                }
                (upload, cp, Vec::new())
            }
        };
        let resumed_bytes: u64 = done.iter().map(|p| p.size).sum();
        report.add(resumed_bytes);
        report.emit(ProgressEvent::Started {
            resumed_bytes,
            resumed_parts: done.len() as u32,
        });
        cp.parts = done;
        // Cancelled (the future dropped) without a checkpoint to resume from: abort.
        let mut guard = crate::multipart::abort_on_drop(
            &upload,
            if self.opts.resumable {
                FailedUploadPolicy::Retain
            } else {
                self.opts.config.failed_upload
            },
        );

        let result = self
            .send_parts(&upload, &mut cp, &cp_path, &path, &report)
            .await;
        self.opts.handoff.signal();
        let result = match result {
            Ok(sent) => self.finish(&upload, &cp, &local).await.map(|e| (e, sent)),
            Err(e) => Err(e),
        };
        guard.disarm();
        match result {
            Ok((e_tag, bytes_sent)) => {
                if self.opts.resumable {
                    remove_finished_checkpoint(&cp_path, &report);
                }
                report.emit(ProgressEvent::Finished);
                Ok(UploadFileOutput {
                    e_tag,
                    size,
                    part_size: Some(upload.part_size()),
                    parts: upload.part_count().unwrap_or(1),
                    resumed_bytes,
                    bytes_sent,
                    restarted,
                })
            }
            Err(e) => {
                // A changed source can never be resumed; without a checkpoint nothing can.
                let dead = !self.opts.resumable || e.kind() == ErrorKind::Changed;
                if dead && self.opts.config.failed_upload == FailedUploadPolicy::Abort {
                    let _ = upload.abort().await;
                }
                if dead {
                    let _ = Checkpoint::remove(&cp_path);
                }
                Err(e.with_upload_id(upload.upload_id()))
            }
        }
    }

    async fn single_put(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        report: &Reporter,
    ) -> Result<UploadFileOutput> {
        report.emit(ProgressEvent::Started {
            resumed_bytes: 0,
            resumed_parts: 0,
        });
        // One PUT: retried inside `put_object` by the engine (the file body is replayable),
        // with this call's attempts.
        let mut put = PutObjectFluentBuilder::new(self.bucket.clone())
            .key(key)
            .body(PutBody::from_path(path).await?)
            .set_content_type(self.content_type.clone())
            .transfer_config(self.opts.config);
        for (k, v) in &self.metadata {
            put = put.metadata(k, v);
        }
        let out = put.send().await?;
        report.add(size);
        report.emit(ProgressEvent::PartDone {
            part_number: 1,
            bytes: size,
        });
        report.emit(ProgressEvent::Finished);
        Ok(UploadFileOutput {
            e_tag: out.e_tag,
            size,
            part_size: None,
            parts: 1,
            resumed_bytes: 0,
            bytes_sent: size,
            restarted: None,
        })
    }

    async fn create(&self, key: &str, size: u64) -> Result<MultipartUpload> {
        let mut create = CreateMultipartUploadFluentBuilder::new(self.bucket.clone())
            .key(key)
            .data_size(size)
            .part_size(self.opts.config.part_size);
        if let Some(ct) = &self.content_type {
            create = create.content_type(ct);
        }
        for (k, v) in &self.metadata {
            create = create.metadata(k, v);
        }
        create.send().await
    }

    /// Decides what to do with an existing checkpoint.
    async fn try_resume(&self, key: &str, local: &LocalFile, cp_path: &Path) -> Result<Resume> {
        let Some(cp) = Checkpoint::load(cp_path)? else {
            return Ok(Resume::Fresh(None));
        };
        cp.check_identity(cp_path, "upload", self.bucket.bucket(), key, &local.path)?;
        let meta: HashMap<String, String> = cp.envelope.clone().into_iter().collect();
        let env = Envelope::from_metadata(&meta)
            .map_err(|e| invalid_checkpoint(cp_path, e))?
            .ok_or_else(|| {
                invalid_checkpoint(
                    cp_path,
                    Error::invalid_metadata("it records no encryption envelope"),
                )
            })?;
        let upload_id = cp.upload_id.clone().ok_or_else(|| {
            invalid_checkpoint(cp_path, Error::invalid_metadata("it records no upload id"))
        })?;
        if env.part_size != Some(cp.part_size) || env.data_size != Some(cp.local.size) {
            return Err(invalid_checkpoint(
                cp_path,
                Error::invalid_metadata("its envelope disagrees with its part size or file size"),
            ));
        }
        // Unwrap through the keyring again (never from the checkpoint), then check the binding.
        let record =
            IntegrityRecord::from_metadata(&meta).map_err(|e| invalid_checkpoint(cp_path, e))?;
        let upload =
            MultipartUpload::resume_with(&self.bucket, key, &upload_id, env.clone(), record)
                .await
                .map_err(|e| invalid_checkpoint(cp_path, e))?;
        cp.verify(cp_path, upload.material())?;

        let restart = |reason: String| async {
            let _ = upload.abort().await;
            Checkpoint::remove(cp_path)?;
            Ok(Resume::Fresh(Some(reason)))
        };
        if !same_source(&cp.local, local) {
            return restart(format!(
                "{} changed since the interrupted upload (size, modification time or file \
                 identity); aborted upload {upload_id} and starting over",
                local.path.display()
            ))
            .await;
        }
        if let PartSize::Target(p) = self.opts.config.part_size
            && p != cp.part_size
        {
            return restart(format!(
                "the part size changed from {} to {p} since the interrupted upload; aborted \
                 upload {upload_id} and starting over",
                cp.part_size
            ))
            .await;
        }
        let listed = match upload.list_parts().await {
            Ok(listed) => listed,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Finished by the earlier run, which died before removing the checkpoint?
                if let Ok(head) = HeadObjectFluentBuilder::new(self.bucket.clone())
                    .key(key)
                    .send()
                    .await
                    && head.object_size == local.size
                    && head
                        .envelope
                        .as_ref()
                        .is_some_and(|h| h.wrapped_key.text == env.wrapped_key.text)
                {
                    Checkpoint::remove(cp_path)?;
                    return Ok(Resume::AlreadyComplete(head.e_tag, cp.part_size));
                }
                Checkpoint::remove(cp_path)?;
                return Ok(Resume::Fresh(Some(format!(
                    "upload {upload_id} no longer exists on the server (completed, aborted or \
                     expired, or the earlier run died while completing it); starting over"
                ))));
            }
            Err(e) => return Err(e),
        };
        // A part counts as done only if the checkpoint recorded it (with its integrity tags,
        // when the upload has integrity data) and the server still has it with the same size
        // (and the same ETag, where the server reports ETags).
        let needs_tags = upload.integrity_record().is_some();
        let done: Vec<DonePart> = cp
            .parts
            .iter()
            .filter(|p| !needs_tags || p.tags.is_some())
            .filter(|p| {
                listed.iter().any(|l| {
                    l.part_number == p.part_number
                        && l.size == p.size
                        && (l.e_tag.is_none() || l.e_tag == p.e_tag)
                })
            })
            .cloned()
            .collect();
        Ok(Resume::Continue(upload, Box::new(cp), done))
    }

    /// Uploads the parts not in `cp.parts`; returns the bytes sent.
    async fn send_parts(
        &self,
        upload: &MultipartUpload,
        cp: &mut Checkpoint,
        cp_path: &Path,
        path: &Path,
        report: &Reporter,
    ) -> Result<u64> {
        let count = upload.part_count().unwrap_or(1);
        let todo: Vec<u32> = (1..=count)
            .filter(|n| !cp.parts.iter().any(|p| p.part_number == *n))
            .collect();
        let mut jobs = Vec::with_capacity(todo.len());
        for n in todo {
            let (offset, len) = upload.part_range(n)?;
            let (upload, path, report) = (upload.clone(), path.to_owned(), report.clone());
            let max = self.opts.config.max_attempts;
            jobs.push(async move {
                with_retries(max, n, &report, || async {
                    let body = PutBody::from_file_range(&path, offset, len).await?;
                    upload.upload_part_once(n, body).await
                })
                .await
            });
        }
        let mut sent = 0u64;
        let writer = Checkpointer::start(
            cp.clone(),
            cp_path.to_owned(),
            upload.material().clone(),
            None,
            self.opts.resumable,
        );
        let run = run_bounded(self.opts.config.concurrency, jobs, |part: CompletedPart| {
            sent += part.size;
            report.add(part.size);
            report.emit(ProgressEvent::PartDone {
                part_number: part.part_number,
                bytes: part.size,
            });
            writer.record(DonePart {
                part_number: part.part_number,
                e_tag: Some(part.e_tag),
                size: part.size,
                tags: part.integrity_tags.as_deref().map(encode_tags),
            })
        })
        .await;
        let ((), done) = settle(run, writer).await?;
        *cp = done;
        Ok(sent)
    }

    /// Checks the source did not change during the upload, then completes it.
    async fn finish(
        &self,
        upload: &MultipartUpload,
        cp: &Checkpoint,
        local: &LocalFile,
    ) -> Result<Option<String>> {
        let now = tokio::fs::metadata(&local.path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", local.path.display()), e))?;
        if !same_source(&local_file(&local.path, &now), local) {
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{} changed while it was being uploaded; the upload was aborted, nothing was \
                     written",
                    local.path.display()
                ),
            ));
        }
        let mut parts = Vec::with_capacity(cp.parts.len());
        for p in &cp.parts {
            let mut part =
                CompletedPart::new(p.part_number, p.e_tag.clone().unwrap_or_default(), p.size);
            if let Some(t) = &p.tags {
                part = part.with_integrity_tags(decode_tags(t)?);
            }
            parts.push(part);
        }
        Ok(upload.complete(parts).await?.e_tag)
    }
}

/// A part's tags as the checkpoint stores them (base64 of the concatenation).
fn encode_tags(tags: &[[u8; TAG_LEN]]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(tags.concat())
}

fn decode_tags(text: &str) -> Result<Vec<[u8; TAG_LEN]>> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Error::new(ErrorKind::InvalidCheckpoint, "a part's tags are not base64"))?;
    crate::integrity::parse_tags(&raw)
        .map_err(|_| Error::new(ErrorKind::InvalidCheckpoint, "a part's tags are cut off"))
}

enum Resume {
    Continue(MultipartUpload, Box<Checkpoint>, Vec<DonePart>),
    AlreadyComplete(Option<String>, u64),
    Fresh(Option<String>),
}
