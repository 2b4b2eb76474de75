//! Whole-file transfers: parallel, retried, and resumable after a crash.
//!
//! [`CryptoBucket::upload_file`] sends a file as an encrypted multipart upload with bounded
//! concurrency; [`CryptoBucket::download_file`] fetches an object with parallel ranged GETs into
//! a preallocated temp file. Both keep a [`crate::checkpoint`] after every finished
//! part, so a run killed at any point (pre-emption, network loss, Ctrl-C) continues where it
//! stopped when started again, sending or fetching only what is missing.
//!
//! Memory stays bounded whatever the file size: each part streams in 1 MiB chunks, so a
//! transfer holds about `concurrency × (chunk + HTTP buffers)`, well under
//! `concurrency × part size`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::task::JoinSet;

use crate::body::PutBody;
use crate::bucket::{CryptoBucket, check_recorded_size, require_key};
use crate::checkpoint::{self, Checkpoint, DonePart, LocalFile};
use crate::cipher::ContentMaterial;
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::multipart::{CompletedPart, MultipartUpload, PartSize};
use crate::progress::{ProgressEvent, ProgressListener};
use crate::range::ByteRange;

/// Parts in flight at once when not configured: enough to fill a fast link from one host, and
/// with 8 MiB parts well under 200 MiB of memory.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Attempts per part (the first one included) before a transfer gives up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Options shared by uploads and downloads.
#[derive(Debug, Clone)]
struct TransferOptions {
    part_size: PartSize,
    concurrency: usize,
    checkpoint_dir: Option<PathBuf>,
    resumable: bool,
    progress: Option<ProgressListener>,
    max_attempts: u32,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            part_size: PartSize::Auto,
            concurrency: DEFAULT_CONCURRENCY,
            checkpoint_dir: None,
            resumable: true,
            progress: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl TransferOptions {
    fn checkpoint_path(&self, kind: &str, bucket: &str, key: &str, local: &Path) -> PathBuf {
        let dir = self
            .checkpoint_dir
            .clone()
            .unwrap_or_else(checkpoint::default_dir);
        checkpoint::path_for(&dir, kind, bucket, key, local)
    }

    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::invalid_input("concurrency must be at least 1"));
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid_input("max_attempts must be at least 1"));
        }
        Ok(())
    }
}

/// The setters both transfer builders share; `$unit` is "part" or "range" in their docs.
macro_rules! transfer_option_setters {
    ($unit:literal) => {
        #[doc = concat!("Size of each ", $unit, " (default [`PartSize::Auto`]: 8 MiB, more for objects over ~78 GiB).")]
        pub fn part_size(mut self, part_size: PartSize) -> Self {
            self.opts.part_size = part_size;
            self
        }

        #[doc = concat!("How many ", $unit, "s are in flight at once (default [`DEFAULT_CONCURRENCY`]).")]
        pub fn concurrency(mut self, n: usize) -> Self {
            self.opts.concurrency = n;
            self
        }

        /// Where the checkpoint lives while the transfer is unfinished (default
        /// [`checkpoint::default_dir`]).
        pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
            self.opts.checkpoint_dir = Some(dir.into());
            self
        }

        /// Keep a checkpoint and resume from one (default `true`). When `false`, nothing is
        /// left behind by a failed transfer (a failed upload is aborted).
        pub fn resumable(mut self, resumable: bool) -> Self {
            self.opts.resumable = resumable;
            self
        }

        #[doc = concat!("Attempts per ", $unit, " before giving up (default [`DEFAULT_MAX_ATTEMPTS`]); only retryable failures ([`Error::is_retryable`]) are retried.")]
        pub fn max_attempts(mut self, n: u32) -> Self {
            self.opts.max_attempts = n;
            self
        }

        /// Progress callback.
        pub fn progress(mut self, listener: ProgressListener) -> Self {
            self.opts.progress = Some(listener);
            self
        }
    };
}

/// Tracks bytes done and reports progress.
#[derive(Debug, Clone)]
struct Reporter {
    listener: Option<ProgressListener>,
    total: u64,
    done: Arc<AtomicU64>,
}

impl Reporter {
    fn new(listener: Option<ProgressListener>, total: u64) -> Self {
        Self {
            listener,
            total,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    fn add(&self, bytes: u64) -> u64 {
        self.done.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    fn emit(&self, event: ProgressEvent) {
        if let Some(l) = &self.listener {
            l.emit(self.total, self.done.load(Ordering::Relaxed), event);
        }
    }
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, or `max` attempts are
/// used; waits 200 ms, 400 ms, ... (at most 5 s, with jitter) between attempts. Each attempt
/// re-encrypts the same bytes with the same key and counter, so retries are identical.
async fn with_retries<T, F, Fut>(
    max: u32,
    part: u32,
    report: &Reporter,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && n < max => {
                n += 1;
                report.emit(ProgressEvent::Retrying {
                    part_number: part,
                    attempt: n,
                    reason: e.to_string(),
                });
                let base = 200u64 << (n - 2).min(5);
                let mut jitter = [0u8; 1];
                let _ = aws_lc_rs::rand::fill(&mut jitter);
                let wait = base.min(5000) + u64::from(jitter[0]);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `jobs` with at most `concurrency` at once; `on_done` sees each result as it arrives
/// (in the caller's task, so it may write the checkpoint). After the first error no new job
/// starts, the running ones finish (their parts still count for a resume), and the first error
/// is returned.
async fn run_bounded<T, Fut>(
    concurrency: usize,
    jobs: impl IntoIterator<Item = Fut>,
    mut on_done: impl FnMut(T) -> Result<()>,
) -> Result<()>
where
    T: Send + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let mut jobs = jobs.into_iter();
    let mut set = JoinSet::new();
    let mut first_err: Option<Error> = None;
    loop {
        while first_err.is_none() && set.len() < concurrency {
            match jobs.next() {
                Some(job) => {
                    set.spawn(job);
                }
                None => break,
            }
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let outcome = match joined {
            Ok(Ok(v)) => on_done(v),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(Error::new(
                ErrorKind::Io,
                format!("a transfer task failed: {join}"),
            )),
        };
        if let Err(e) = outcome
            && first_err.is_none()
        {
            first_err = Some(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::io(format!("cannot resolve {}", path.display()), e))
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<i128> {
    let t = meta.modified().ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    })
}

async fn store_checkpoint(cp: &Checkpoint, path: &Path) -> Result<()> {
    let (cp, path) = (cp.clone(), path.to_owned());
    tokio::task::spawn_blocking(move || cp.store(&path))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("checkpoint writer failed: {e}")))?
}

/// Records finished parts in the checkpoint on a blocking thread, off the async workers. Parts
/// that finish while a write is under way go into the next write together, so a fast transfer
/// costs one fsync per batch, not per part. For downloads it first syncs the data file, so a
/// checkpoint never claims bytes the disk might not hold after a power cut.
struct Checkpointer {
    tx: Option<std::sync::mpsc::Sender<DonePart>>,
    task: tokio::task::JoinHandle<Result<Checkpoint>>,
}

impl Checkpointer {
    /// `store`: write the checkpoint file (resumable transfers); otherwise parts are only
    /// collected. `data_file`: synced before each write.
    fn start(
        mut cp: Checkpoint,
        path: PathBuf,
        material: ContentMaterial,
        data_file: Option<PathBuf>,
        store: bool,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<DonePart>();
        let task = tokio::task::spawn_blocking(move || {
            let file = data_file
                .map(|p| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(|e| Error::io(format!("cannot open {}", p.display()), e))
                })
                .transpose()?;
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                if let Some(f) = &file {
                    f.sync_data()
                        .map_err(|e| Error::io("cannot sync the downloaded data", e))?;
                }
                cp.parts.extend(batch);
                cp.parts.sort_by_key(|p| p.part_number);
                if store {
                    cp.seal(&material)?;
                    cp.store(&path)?;
                }
            }
            Ok(cp)
        });
        Self { tx: Some(tx), task }
    }

    fn record(&self, part: DonePart) -> Result<()> {
        match &self.tx {
            Some(tx) if tx.send(part).is_ok() => Ok(()),
            _ => Err(Error::new(ErrorKind::Io, "the checkpoint writer stopped")),
        }
    }

    /// Waits until every recorded part is written; returns the final checkpoint, or the
    /// writer's error.
    async fn finish(mut self) -> Result<Checkpoint> {
        drop(self.tx.take());
        self.task
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("checkpoint writer failed: {e}")))?
    }
}

/// The outcome of the parts and of their checkpoint writer: the writer's error wins (it is the
/// cause when both failed).
async fn settle<T>(run: Result<T>, writer: Checkpointer) -> Result<(T, Checkpoint)> {
    let cp = writer.finish().await;
    let cp = cp?;
    Ok((run?, cp))
}

fn invalid_checkpoint(path: &Path, err: Error) -> Error {
    Error::new(
        ErrorKind::InvalidCheckpoint,
        format!(
            "checkpoint {}: its key material cannot be used ({}); refusing it. Delete it to \
             start over",
            path.display(),
            err.message()
        ),
    )
    .with_source(err)
}

// ---------------------------------------------------------------------------------------------
// Upload

/// Builder of a whole-file upload; see [`CryptoBucket::upload_file`].
#[derive(Debug)]
pub struct UploadFileFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
    path: Option<PathBuf>,
    opts: TransferOptions,
    multipart_threshold: Option<u64>,
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
    pub(crate) fn new(bucket: CryptoBucket) -> Self {
        Self {
            bucket,
            key: None,
            path: None,
            opts: TransferOptions::default(),
            multipart_threshold: None,
            content_type: None,
            metadata: HashMap::new(),
        }
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
        self.multipart_threshold = Some(bytes);
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
        let threshold = match self.multipart_threshold {
            Some(t) => t,
            None => self.opts.part_size.resolve(Some(size))?,
        };
        if size <= threshold.min(crate::bucket::MAX_SINGLE_PUT) {
            return self.single_put(&key, &path, size, &report).await;
        }
        let local = LocalFile {
            path: path.clone(),
            size,
            mtime_ns: mtime_ns(&meta),
        };
        let cp_path = self
            .opts
            .checkpoint_path("upload", self.bucket.bucket(), &key, &path);
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
                cp.envelope = upload.envelope().to_metadata().into_iter().collect();
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

        let result = self
            .send_parts(&upload, &mut cp, &cp_path, &path, &report)
            .await;
        let result = match result {
            Ok(sent) => self.finish(&upload, &cp, &local).await.map(|e| (e, sent)),
            Err(e) => Err(e),
        };
        match result {
            Ok((e_tag, bytes_sent)) => {
                if self.opts.resumable {
                    Checkpoint::remove(&cp_path)?;
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
                if !self.opts.resumable || e.kind() == ErrorKind::Changed {
                    let _ = upload.abort().await;
                    let _ = Checkpoint::remove(&cp_path);
                }
                Err(e)
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
        let out = with_retries(self.opts.max_attempts, 1, report, || async {
            let mut put = self
                .bucket
                .put_object()
                .key(key)
                .body(PutBody::from_path(path).await?)
                .set_content_type(self.content_type.clone());
            for (k, v) in &self.metadata {
                put = put.metadata(k, v);
            }
            put.send().await
        })
        .await?;
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
        let mut create = self
            .bucket
            .create_multipart_upload()
            .key(key)
            .data_size(size)
            .part_size(self.opts.part_size);
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
        let upload = MultipartUpload::resume(&self.bucket, key, &upload_id, env.clone())
            .await
            .map_err(|e| invalid_checkpoint(cp_path, e))?;
        cp.verify(cp_path, upload.material())?;

        let restart = |reason: String| async {
            let _ = upload.abort().await;
            Checkpoint::remove(cp_path)?;
            Ok(Resume::Fresh(Some(reason)))
        };
        if cp.local.size != local.size || cp.local.mtime_ns != local.mtime_ns {
            return restart(format!(
                "{} changed since the interrupted upload (size or modification time); aborted \
                 upload {upload_id} and starting over",
                local.path.display()
            ))
            .await;
        }
        if let PartSize::Target(p) = self.opts.part_size
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
                if let Ok(head) = self.bucket.head_object().key(key).send().await
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
        // A part counts as done only if the checkpoint recorded it and the server still has
        // it with the same size (and the same ETag, where the server reports ETags).
        let done: Vec<DonePart> = cp
            .parts
            .iter()
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
            let max = self.opts.max_attempts;
            jobs.push(async move {
                with_retries(max, n, &report, || async {
                    let body = PutBody::from_file_range(&path, offset, len).await?;
                    upload.upload_part(n, body).await
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
        let run = run_bounded(self.opts.concurrency, jobs, |part: CompletedPart| {
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
        if now.len() != local.size || mtime_ns(&now) != local.mtime_ns {
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{} changed while it was being uploaded; the upload was aborted, nothing was \
                     written",
                    local.path.display()
                ),
            ));
        }
        let parts = cp
            .parts
            .iter()
            .map(|p| CompletedPart::new(p.part_number, p.e_tag.clone().unwrap_or_default(), p.size))
            .collect();
        Ok(upload.complete(parts).await?.e_tag)
    }
}

enum Resume {
    Continue(MultipartUpload, Box<Checkpoint>, Vec<DonePart>),
    AlreadyComplete(Option<String>, u64),
    Fresh(Option<String>),
}

// ---------------------------------------------------------------------------------------------
// Download

/// Builder of a whole-object download to a file; see [`CryptoBucket::download_file`].
#[derive(Debug)]
pub struct DownloadFileFluentBuilder {
    bucket: CryptoBucket,
    key: Option<String>,
    path: Option<PathBuf>,
    opts: TransferOptions,
}

/// What a finished download reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DownloadFileOutput {
    /// Plaintext size.
    pub size: u64,
    /// ETag of the object that was downloaded.
    pub e_tag: Option<String>,
    /// Range size used.
    pub part_size: u64,
    /// Bytes taken over from an interrupted earlier run (not fetched again).
    pub resumed_bytes: u64,
    /// Bytes fetched by this run.
    pub bytes_received: u64,
    /// Why an earlier checkpoint was not continued, if one existed and was dropped.
    pub restarted: Option<String>,
}

impl DownloadFileFluentBuilder {
    pub(crate) fn new(bucket: CryptoBucket) -> Self {
        Self {
            bucket,
            key: None,
            path: None,
            opts: TransferOptions::default(),
        }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Destination file; it appears (atomically, by rename) only once complete.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    transfer_option_setters!("range");

    /// Downloads (or resumes downloading) the object. If the object changes meanwhile (its
    /// ETag no longer matches), the download starts over once from the new version.
    pub async fn send(self) -> Result<DownloadFileOutput> {
        let key = require_key(self.key.clone())?;
        let dest = absolute(self.path.as_deref().ok_or_else(|| {
            Error::invalid_input("the destination file is required (call .path(...))")
        })?)?;
        self.opts.validate()?;
        let name = dest.file_name().ok_or_else(|| {
            Error::invalid_input(format!("{} is not a file name", dest.display()))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(".cryptobucket-partial");
        let temp = dest.with_file_name(temp_name);
        let cp_path = self
            .opts
            .checkpoint_path("download", self.bucket.bucket(), &key, &dest);
        let mut restarted = None;
        for round in 0..2 {
            match self
                .attempt(&key, &dest, &temp, &cp_path, restarted.clone())
                .await
            {
                Err(e) if e.kind() == ErrorKind::Changed && round == 0 => {
                    let reason = format!(
                        "s3://{}/{key} changed during the download; starting over from the new \
                         version",
                        self.bucket.bucket()
                    );
                    if let Some(l) = &self.opts.progress {
                        l.emit(
                            0,
                            0,
                            ProgressEvent::Restarted {
                                reason: reason.clone(),
                            },
                        );
                    }
                    let _ = std::fs::remove_file(&temp);
                    Checkpoint::remove(&cp_path)?;
                    restarted = Some(reason);
                }
                other => return other,
            }
        }
        unreachable!("the loop returns in its second round")
    }

    async fn attempt(
        &self,
        key: &str,
        dest: &Path,
        temp: &Path,
        cp_path: &Path,
        mut restarted: Option<String>,
    ) -> Result<DownloadFileOutput> {
        let bucket = &self.bucket;
        // Retried like the parts: a store that is briefly unavailable (503, a node failing
        // over) should not fail a download before it starts.
        let quiet = Reporter::new(self.opts.progress.clone(), 0);
        let head = with_retries(self.opts.max_attempts, 0, &quiet, || {
            bucket.head_object().key(key).send()
        })
        .await?;
        bucket.check_unencrypted(key, head.envelope.as_ref())?;
        let size = head.object_size;
        if let Some(env) = &head.envelope {
            check_recorded_size(key, env, size)?;
        }
        let e_tag = head
            .e_tag
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::invalid_response("the server gave no ETag, which resumable downloads pin")
            })?;
        // Unwrap once for all ranges.
        let material = match &head.envelope {
            Some(env) => Some((
                env.wrapped_key.text.clone(),
                bucket.keyring().unwrap(env).await?,
            )),
            None => None,
        };
        // Checkpoints of plain objects are bound to an all-zero key (nothing secret to bind).
        let binding_key = material
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| ContentMaterial::from_parts([0; 32], [0; 16]));
        let envelope_meta: BTreeMap<String, String> = head
            .envelope
            .as_ref()
            .map(|e| e.to_metadata().into_iter().collect())
            .unwrap_or_default();
        let report = Reporter::new(self.opts.progress.clone(), size);

        let mut cp = None;
        if self.opts.resumable
            && let Some(old) = Checkpoint::load(cp_path)?
        {
            old.check_identity(cp_path, "download", bucket.bucket(), key, dest)?;
            let temp_ok = std::fs::metadata(temp).is_ok_and(|m| m.len() == size);
            let reason = if old.e_tag.as_deref() != Some(e_tag.as_str()) || old.local.size != size {
                Some(format!(
                    "s3://{}/{key} changed since the interrupted download; starting over",
                    bucket.bucket()
                ))
            } else if !temp_ok || old.temp_path.as_deref() != Some(temp) {
                Some(format!(
                    "the partial file {} is missing or has the wrong size; starting over",
                    temp.display()
                ))
            } else {
                old.verify(cp_path, &binding_key)?;
                None
            };
            match reason {
                None => cp = Some(old),
                Some(r) => {
                    report.emit(ProgressEvent::Restarted { reason: r.clone() });
                    Checkpoint::remove(cp_path)?;
                    restarted = Some(r);
                }
            }
        }
        let cp = match cp {
            Some(cp) => cp,
            None => {
                let part_size = self.opts.part_size.resolve(Some(size))?;
                let file = std::fs::File::create(temp)
                    .map_err(|e| Error::io(format!("cannot create {}", temp.display()), e))?;
                file.set_len(size)
                    .map_err(|e| Error::io(format!("cannot allocate {}", temp.display()), e))?;
                let mut cp = Checkpoint::new(
                    "download",
                    bucket.bucket(),
                    key,
                    LocalFile {
                        path: dest.to_owned(),
                        size,
                        mtime_ns: None,
                    },
                );
                cp.e_tag = Some(e_tag.clone());
                cp.temp_path = Some(temp.to_owned());
                cp.part_size = part_size;
                cp.envelope = envelope_meta.clone();
                if self.opts.resumable {
                    cp.seal(&binding_key)?;
                    store_checkpoint(&cp, cp_path).await?;
                }
                cp
            }
        };
        let part_size = cp.part_size;
        if part_size == 0 || part_size % 16 != 0 {
            return Err(Error::new(
                ErrorKind::InvalidCheckpoint,
                format!(
                    "checkpoint {}: bad part size {part_size}",
                    cp_path.display()
                ),
            ));
        }
        let resumed_bytes: u64 = cp.parts.iter().map(|p| p.size).sum();
        report.add(resumed_bytes);
        report.emit(ProgressEvent::Started {
            resumed_bytes,
            resumed_parts: cp.parts.len() as u32,
        });

        let count = size.div_ceil(part_size);
        let mut jobs = Vec::new();
        for i in 0..count {
            let n = i as u32 + 1;
            if cp.parts.iter().any(|p| p.part_number == n) {
                continue;
            }
            let offset = i * part_size;
            let len = (size - offset).min(part_size);
            let (bucket, key, temp, e_tag) = (
                bucket.clone(),
                key.to_owned(),
                temp.to_owned(),
                e_tag.clone(),
            );
            let (material, report) = (material.clone(), report.clone());
            let max = self.opts.max_attempts;
            jobs.push(async move {
                with_retries(max, n, &report, || {
                    fetch_range(&bucket, &key, &temp, &e_tag, material.as_ref(), offset, len)
                })
                .await?;
                Ok(DonePart {
                    part_number: n,
                    e_tag: None,
                    size: len,
                })
            });
        }
        let mut received = 0u64;
        let resumable = self.opts.resumable;
        let writer = Checkpointer::start(
            cp.clone(),
            cp_path.to_owned(),
            binding_key.clone(),
            resumable.then(|| temp.to_owned()),
            resumable,
        );
        let run = run_bounded(self.opts.concurrency, jobs, |part: DonePart| {
            received += part.size;
            report.add(part.size);
            report.emit(ProgressEvent::PartDone {
                part_number: part.part_number,
                bytes: part.size,
            });
            writer.record(part)
        })
        .await;
        settle(run, writer).await?;

        // Every byte is in place: make it durable, then publish it under its name.
        let io = |what: &str, e| Error::io(format!("cannot {what} {}", temp.display()), e);
        std::fs::OpenOptions::new()
            .write(true)
            .open(temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("sync", e))?;
        std::fs::rename(temp, dest).map_err(|e| io("rename", e))?;
        checkpoint::sync_dir(dest.parent().unwrap_or(Path::new(".")));
        if resumable {
            Checkpoint::remove(cp_path)?;
        }
        report.emit(ProgressEvent::Finished);
        Ok(DownloadFileOutput {
            size,
            e_tag: Some(e_tag),
            part_size,
            resumed_bytes,
            bytes_received: received,
            restarted,
        })
    }
}

/// Fetches plaintext bytes `offset..offset+len` (pinned to `e_tag`) into `temp` at `offset`.
/// (The checkpoint writer syncs the file before recording the part.)
async fn fetch_range(
    bucket: &CryptoBucket,
    key: &str,
    temp: &Path,
    e_tag: &str,
    material: Option<&(String, ContentMaterial)>,
    offset: u64,
    len: u64,
) -> Result<()> {
    let mut get = bucket
        .get_object()
        .key(key)
        .range(ByteRange::Inclusive {
            first: offset,
            last: offset + len - 1,
        })
        .if_match(e_tag);
    if let Some((wrapped, m)) = material {
        get = get.preset_material(wrapped, m.clone());
    }
    let out = get.send().await?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(temp)
        .map_err(|e| Error::io(format!("cannot open {}", temp.display()), e))?;
    let file = Arc::new(file);
    // Decrypted chunks are gathered to about 1 MiB and written with positioned writes on the
    // blocking pool: one thread hand-off per MiB instead of one per network chunk.
    let mut body = out.body;
    let mut pending: Vec<bytes::Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut at = offset;
    loop {
        let chunk = body.next().await.transpose()?;
        let end = chunk.is_none();
        if let Some(c) = chunk {
            pending_len += c.len();
            pending.push(c);
        }
        if pending_len >= WRITE_BATCH || (end && pending_len > 0) {
            let (f, batch, pos) = (file.clone(), std::mem::take(&mut pending), at);
            at += pending_len as u64;
            pending_len = 0;
            tokio::task::spawn_blocking(move || write_all_at(&f, &batch, pos))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("writer task failed: {e}")))?
                .map_err(|e| Error::io(format!("cannot write {}", temp.display()), e))?;
        }
        if end {
            return Ok(());
        }
    }
}

/// Bytes gathered before one positioned write of a download.
const WRITE_BATCH: usize = 1 << 20;

fn write_all_at(
    file: &std::fs::File,
    chunks: &[bytes::Bytes],
    mut pos: u64,
) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt as _;
        for c in chunks {
            file.write_all_at(c, pos)?;
            pos += c.len() as u64;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek as _, Write as _};
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(pos))?;
        for c in chunks {
            f.write_all(c)?;
        }
        Ok(())
    }
}
