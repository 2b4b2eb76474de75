//! Resumable multipart uploads of a local file kept in a format other than this crate's own
//! (gocryptfs files, veTurboIO files): a [`StoredLayout`] says how the file is cut into parts
//! and how each part's source bytes become stored bytes; everything else is the engine's, as for
//! [`upload_file`](crate::CryptoBucket::upload_file): bounded concurrency, the one retry layer,
//! progress, a checkpoint after every part (sealed with a key derived from the layout's secret,
//! holding only public parameters such as a file id or a header), a resume after a kill that
//! sends only the missing parts, and the failed-upload policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{
    Checkpointer, TransferOptions, invalid_checkpoint, local_file, remove_finished_checkpoint,
    same_source, settle, store_checkpoint,
};
use crate::checkpoint::{Checkpoint, DonePart, LocalFile};
use crate::cipher::ContentMaterial;
use crate::engine::{FailedUploadPolicy, Reporter, run_bounded};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedHandle;
use crate::multipart::MIN_PART_SIZE;
use crate::ops::put_stored::PlainUpload;
use crate::partial::TransferLock;
use crate::progress::ProgressEvent;

/// How a source file becomes a stored object of some format, part by part.
pub(crate) trait StoredLayout: Send + Sync + 'static {
    /// The checkpoint kind (`"upload-gocryptfs"`): checkpoints of different formats for the
    /// same file and key never meet.
    fn kind(&self) -> &'static str;
    /// Size of the source file.
    fn source_size(&self) -> u64;
    /// Size of the stored object.
    fn stored_size(&self) -> u64;
    /// Stored size of every part but the last.
    fn part_size(&self) -> u64;
    /// The source bytes (offset, length) that part `n` (1-based) encodes.
    fn source_range(&self, n: u32) -> (u64, u64);
    /// The stored bytes of part `n` from its source bytes.
    fn encode(&self, n: u32, source: &[u8]) -> Result<Vec<u8>>;
    /// Part `n` encoded in place: `buf` is [`stored_len(n)`](Self::stored_len) bytes long
    /// with the source bytes at its end; afterwards it holds the stored bytes and nothing of
    /// the source. The default encodes into a new buffer and copies.
    fn encode_in_place(&self, n: u32, buf: &mut [u8]) -> Result<()> {
        let (_, len) = self.source_range(n);
        let at = buf.len() - len as usize;
        let stored = self.encode(n, &buf[at..])?;
        if stored.len() != buf.len() {
            return Err(Error::invalid_input(
                "a part's stored size differs from its layout",
            ));
        }
        buf.copy_from_slice(&stored);
        Ok(())
    }
    /// What a resume must reuse (public values: a file id, a header), kept in the checkpoint.
    fn params(&self) -> BTreeMap<String, String>;
    /// The key the checkpoint is sealed with, derived from the layout's secret, so that a
    /// checkpoint edited or made under another key is refused.
    fn binding(&self) -> ContentMaterial;

    /// Number of parts (default: stored size over part size).
    fn part_count(&self) -> u32 {
        self.stored_size().div_ceil(self.part_size()).max(1) as u32
    }

    /// Stored size of part `n` (default: `part_size`, the last one what is left).
    fn stored_len(&self, n: u32) -> u64 {
        let start = u64::from(n - 1) * self.part_size();
        self.stored_size().min(start + self.part_size()) - start
    }
}

/// What a stored upload did.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoredUploadOutput {
    /// Source bytes taken over from an interrupted earlier run.
    pub(crate) resumed_bytes: u64,
    /// Source bytes of the parts this run sent.
    pub(crate) bytes_sent: u64,
    /// Why an earlier checkpoint was dropped, if one was.
    pub(crate) restarted: Option<String>,
}

/// One stored upload, prepared: the source looked at, the checkpoint (if any) read and the
/// transfer lock held. The caller reads [`recorded`](Self::recorded) to rebuild the layout an
/// interrupted run used, then [`run`](Self::run)s it.
pub(crate) struct StoredUpload {
    handle: SharedHandle,
    key: String,
    local: LocalFile,
    opts: TransferOptions,
    cp_path: PathBuf,
    previous: Option<Checkpoint>,
    restarted: Option<String>,
    /// Emit `Started` (with what was resumed) once that is known.
    announce: bool,
    _lock: TransferLock,
}

impl StoredUpload {
    /// Looks at `path` and at the checkpoint of (`kind`, bucket, `key`, `path`).
    pub(crate) fn prepare(
        handle: &SharedHandle,
        key: &str,
        path: &Path,
        kind: &str,
        opts: &TransferOptions,
    ) -> Result<Self> {
        opts.validate()?;
        let path = super::absolute(path)?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(Error::invalid_input(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let local = local_file(&path, &meta);
        let cp_path = opts.checkpoint_path(kind, handle.bucket(), key, &path);
        let lock = TransferLock::acquire(&cp_path, "upload")?;
        let previous = if opts.resumable {
            let cp = Checkpoint::load(&cp_path)?;
            if let Some(cp) = &cp {
                cp.check_identity(&cp_path, kind, handle.bucket(), key, &path)?;
            }
            cp
        } else {
            None
        };
        Ok(Self {
            handle: handle.clone(),
            key: key.to_owned(),
            local,
            opts: opts.clone(),
            cp_path,
            previous,
            restarted: None,
            announce: false,
            _lock: lock,
        })
    }

    /// Makes [`run`](Self::run) announce `Started`, with the bytes and parts it takes over,
    /// once it knows them (a single-file upload; a tree announces its own start).
    pub(crate) fn announce_start(mut self) -> Self {
        self.announce = true;
        self
    }

    /// Drops the interrupted run's checkpoint and aborts its upload (the caller cannot
    /// rebuild the layout it used); `reason` is reported as the restart's.
    pub(crate) async fn start_over(&mut self, reason: String) -> Result<()> {
        if let Some(cp) = self.previous.take() {
            if let Some(id) = &cp.upload_id {
                let _ = PlainUpload::attach(&self.handle, &self.key, id)
                    .abort()
                    .await;
            }
            Checkpoint::remove(&self.cp_path)?;
            self.restarted = Some(reason);
        }
        Ok(())
    }

    /// The layout parameters an interrupted run recorded (not yet verified: [`run`](Self::run)
    /// checks the checkpoint's seal against the layout built from them).
    pub(crate) fn recorded(&self) -> Option<&BTreeMap<String, String>> {
        self.previous.as_ref().map(|cp| &cp.envelope)
    }

    /// Size of the source file as prepared.
    pub(crate) fn source_size(&self) -> u64 {
        self.local.size
    }

    /// Uploads (or finishes uploading) the object. `report` gets the bytes of the source and
    /// part and retry events; finishing (and, without [`announce_start`](Self::announce_start),
    /// starting) is the caller's to announce.
    pub(crate) async fn run(
        mut self,
        layout: Arc<dyn StoredLayout>,
        report: &Reporter,
    ) -> Result<StoredUploadOutput> {
        if layout.source_size() != self.local.size {
            return Err(Error::invalid_input(
                "the layout is for a file of another size",
            ));
        }
        let (part_size, count) = (layout.part_size(), layout.part_count());
        if count > 1 && part_size < MIN_PART_SIZE {
            return Err(Error::invalid_input(format!(
                "parts of {part_size} bytes are below the minimum of {MIN_PART_SIZE}"
            )));
        }
        let binding = layout.binding();
        let mut restarted = self.restarted.take();
        if let Some(r) = &restarted {
            report.emit(ProgressEvent::Restarted { reason: r.clone() });
        }
        let mut resumed = None;
        if let Some(cp) = self.previous.take() {
            match self.try_resume(cp, layout.as_ref(), &binding).await? {
                Ok(r) => resumed = Some(r),
                Err(reason) => {
                    report.emit(ProgressEvent::Restarted {
                        reason: reason.clone(),
                    });
                    restarted = Some(reason);
                }
            }
        }
        let (upload, mut cp) = match resumed {
            Some(r) => r,
            None => {
                let upload = PlainUpload::create(&self.handle, &self.key).await?;
                let mut cp = Checkpoint::new(
                    layout.kind(),
                    self.handle.bucket(),
                    &self.key,
                    self.local.clone(),
                );
                cp.upload_id = Some(upload.upload_id().to_owned());
                cp.part_size = part_size;
                cp.envelope = layout.params();
                if self.opts.resumable {
                    cp.seal(&binding)?;
                    if let Err(e) = store_checkpoint(&cp, &self.cp_path).await {
                        let _ = upload.abort().await;
                        return Err(e);
                    }
                }
                (upload, cp)
            }
        };
        let resumed_bytes: u64 = cp
            .parts
            .iter()
            .map(|p| layout.source_range(p.part_number).1)
            .sum();
        report.add(resumed_bytes);
        if self.announce {
            report.emit(ProgressEvent::Started {
                resumed_bytes,
                resumed_parts: cp.parts.len() as u32,
            });
        }
        // Cancelled without a checkpoint to resume from: abort (as `upload_file` does).
        let mut guard = upload.abort_on_drop(
            !self.opts.resumable && self.opts.config.failed_upload == FailedUploadPolicy::Abort,
        );
        let sent = self
            .send_parts(&upload, &mut cp, layout.clone(), &binding, report)
            .await;
        self.opts.handoff.signal();
        let result = match sent {
            Ok(sent) => self.finish(&upload, &cp).await.map(|()| sent),
            Err(e) => Err(e),
        };
        guard.disarm();
        match result {
            Ok(bytes_sent) => {
                if self.opts.resumable {
                    remove_finished_checkpoint(&self.cp_path, report);
                }
                Ok(StoredUploadOutput {
                    resumed_bytes,
                    bytes_sent,
                    restarted,
                })
            }
            Err(e) => {
                let dead = !self.opts.resumable || e.kind() == ErrorKind::Changed;
                if dead && self.opts.config.failed_upload == FailedUploadPolicy::Abort {
                    let _ = upload.abort().await;
                }
                if dead {
                    let _ = Checkpoint::remove(&self.cp_path);
                }
                Err(e.with_upload_id(upload.upload_id()))
            }
        }
    }

    /// Continues the checkpoint's upload (`Ok(Ok(..))`), or says why it starts over
    /// (`Ok(Err(reason))`, the old upload aborted and the checkpoint removed).
    async fn try_resume(
        &self,
        cp: Checkpoint,
        layout: &dyn StoredLayout,
        binding: &ContentMaterial,
    ) -> Result<std::result::Result<(PlainUpload, Checkpoint), String>> {
        let path = &self.cp_path;
        cp.verify(path, binding)?;
        let upload_id = cp.upload_id.clone().ok_or_else(|| {
            invalid_checkpoint(path, Error::invalid_metadata("it records no upload id"))
        })?;
        let upload = PlainUpload::attach(&self.handle, &self.key, &upload_id);
        let restart = |reason: String| async {
            let _ = upload.abort().await;
            Checkpoint::remove(path)?;
            Ok(Err(reason))
        };
        if !same_source(&cp.local, &self.local) {
            return restart(format!(
                "{} changed since the interrupted upload (size, modification time or file \
                 identity); aborted upload {upload_id} and starting over",
                self.local.path.display()
            ))
            .await;
        }
        if cp.part_size != layout.part_size() || cp.envelope != layout.params() {
            return restart(format!(
                "the part size or format parameters changed since the interrupted upload; \
                 aborted upload {upload_id} and starting over"
            ))
            .await;
        }
        let listed = match upload.list_parts().await {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Checkpoint::remove(path)?;
                return Ok(Err(format!(
                    "upload {upload_id} no longer exists on the server (completed, aborted or \
                     expired); starting over"
                )));
            }
            Err(e) => return Err(e),
        };
        let count = layout.part_count();
        let mut cp = cp;
        cp.parts.retain(|p| {
            p.part_number >= 1
                && p.part_number <= count
                && p.size == layout.stored_len(p.part_number)
                && listed.iter().any(|l| {
                    l.part_number == p.part_number
                        && l.size == p.size
                        && (l.e_tag.is_none() || l.e_tag == p.e_tag)
                })
        });
        Ok(Ok((upload, cp)))
    }

    /// Sends the parts the checkpoint does not hold; returns the source bytes sent.
    async fn send_parts(
        &self,
        upload: &PlainUpload,
        cp: &mut Checkpoint,
        layout: Arc<dyn StoredLayout>,
        binding: &ContentMaterial,
        report: &Reporter,
    ) -> Result<u64> {
        let todo: Vec<u32> = (1..=layout.part_count())
            .filter(|n| !cp.parts.iter().any(|p| p.part_number == *n))
            .collect();
        let file = Arc::new(
            std::fs::File::open(&self.local.path)
                .map_err(|e| Error::io(format!("cannot open {}", self.local.path.display()), e))?,
        );
        let max = self.opts.config.max_attempts;
        // Part buffers are reused: each part is read into the end of one and encoded in place
        // (no second buffer, no fresh pages per part); a buffer goes back to the pool when the
        // request no longer holds it. After encoding a buffer holds only stored bytes; one
        // that failed half-way is wiped before it is dropped.
        let pool: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
        let jobs = todo.into_iter().map(|n| {
            let (layout, file, report) = (layout.clone(), file.clone(), report.clone());
            let (upload, pool) = (upload.clone(), pool.clone());
            let path = self.local.path.clone();
            async move {
                let (offset, len) = layout.source_range(n);
                let encoder = layout.clone();
                let stored_len = layout.stored_len(n) as usize;
                let mut buf = pool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop()
                    .unwrap_or_default();
                let body = tokio::task::spawn_blocking(move || {
                    buf.resize(stored_len, 0);
                    let mut buf = zeroize::Zeroizing::new(buf);
                    let at = stored_len - len as usize;
                    read_exact_at(&file, &mut buf[at..], offset).map_err(|e| {
                        Error::io(
                            format!("cannot read {} (did it change?)", path.display()),
                            e,
                        )
                    })?;
                    encoder.encode_in_place(n, &mut buf)?;
                    Ok::<_, Error>(Bytes::from(std::mem::take(&mut *buf)))
                })
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("encoder task failed: {e}")))??;
                let size = body.len() as u64;
                let e_tag = upload.upload_part(n, body.clone(), max, &report).await?;
                if let Ok(back) = body.try_into_mut() {
                    pool.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Vec::from(back));
                }
                Ok((n, e_tag, size, len))
            }
        });
        let writer = Checkpointer::start(
            cp.clone(),
            self.cp_path.clone(),
            binding.clone(),
            None,
            self.opts.resumable,
        );
        let mut sent = 0u64;
        let run = run_bounded(
            self.opts.config.concurrency,
            jobs,
            |(n, e_tag, size, len): (u32, String, u64, u64)| {
                sent += len;
                report.add(len);
                report.emit(ProgressEvent::PartDone {
                    part_number: n,
                    bytes: len,
                });
                writer.record(DonePart {
                    part_number: n,
                    e_tag: Some(e_tag),
                    size,
                    tags: None,
                })
            },
        )
        .await;
        let ((), done) = settle(run, writer).await?;
        *cp = done;
        Ok(sent)
    }

    /// Checks the source did not change during the upload, then completes it.
    async fn finish(&self, upload: &PlainUpload, cp: &Checkpoint) -> Result<()> {
        let path = &self.local.path;
        let now = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if !same_source(&local_file(path, &now), &self.local) {
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{} changed while it was being uploaded; the upload was aborted, nothing was \
                     written",
                    path.display()
                ),
            )
            .with_object(self.handle.bucket(), &self.key));
        }
        let parts = cp
            .parts
            .iter()
            .map(|p| (p.part_number, p.e_tag.clone().unwrap_or_default()))
            .collect();
        upload.complete(parts).await
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut f = file.try_clone()?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    f.read_exact(buf)
}
