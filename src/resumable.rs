//! Whole-file transfers: parallel, retried, and resumable after a crash.
//!
//! [`CryptoBucket::upload_file`](crate::CryptoBucket::upload_file) sends a file as an encrypted multipart upload with bounded
//! concurrency; [`CryptoBucket::download_file`](crate::CryptoBucket::download_file) fetches an object with parallel ranged GETs into
//! a preallocated temp file. Both keep a [`crate::checkpoint`] after every finished
//! part, so a run killed at any point (pre-emption, network loss, Ctrl-C) continues where it
//! stopped when started again, sending or fetching only what is missing.
//!
//! Memory stays bounded whatever the file size: each part streams in 1 MiB chunks, so a
//! transfer holds about `concurrency × (chunk + HTTP buffers)`, well under
//! `concurrency × part size`.

use std::path::{Path, PathBuf};

use crate::checkpoint::{self, Checkpoint, DonePart};
use crate::cipher::ContentMaterial;
use crate::engine::TransferConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{ProgressEvent, ProgressListener};

pub use crate::engine::{DEFAULT_CONCURRENCY, DEFAULT_MAX_ATTEMPTS};

/// Options shared by uploads and downloads: the engine's [`TransferConfig`] (from the bucket,
/// overridden per call) and what only whole-file transfers have.
#[derive(Debug, Clone)]
pub(crate) struct TransferOptions {
    pub(crate) config: TransferConfig,
    pub(crate) checkpoint_dir: Option<PathBuf>,
    pub(crate) resumable: bool,
    pub(crate) progress: Option<ProgressListener>,
    pub(crate) cancel: Option<tokio_util::sync::CancellationToken>,
    /// Set by a tree for each large file (see [`Handoff`](crate::engine::Handoff)).
    pub(crate) handoff: crate::engine::Handoff,
    /// Downloads: sync what is written (see `durable` on the download builders).
    pub(crate) durable: bool,
}

impl TransferOptions {
    pub(crate) fn new(config: TransferConfig) -> Self {
        Self {
            config,
            checkpoint_dir: None,
            resumable: true,
            progress: None,
            cancel: None,
            handoff: crate::engine::Handoff::default(),
            durable: true,
        }
    }

    pub(crate) fn checkpoint_path(
        &self,
        kind: &str,
        bucket: &str,
        key: &str,
        local: &Path,
    ) -> PathBuf {
        let dir = self
            .checkpoint_dir
            .clone()
            .unwrap_or_else(checkpoint::default_dir);
        checkpoint::path_for(&dir, kind, bucket, key, local)
    }

    /// Whether the transfer keeps a checkpoint: asked to, and durable (a download that does
    /// not sync could not tell which ranges survived a crash).
    pub(crate) fn keeps_checkpoint(&self) -> bool {
        self.resumable && self.durable
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.config.validate()
    }

    /// The options of one file of a tree: these, with the tree's `config` for the file, its
    /// progress listener and its handoff (cancellation stays with the tree).
    pub(crate) fn for_item(
        &self,
        config: TransferConfig,
        progress: ProgressListener,
        handoff: crate::engine::Handoff,
    ) -> Self {
        Self {
            config,
            progress: Some(progress),
            cancel: None,
            handoff,
            ..self.clone()
        }
    }
}

/// The setters both transfer builders share; `$unit` is "part" or "range" in their docs.
macro_rules! transfer_option_setters {
    ($unit:literal) => {
        #[doc = concat!("Size of each ", $unit, " (default: the bucket's [`TransferConfig`](crate::TransferConfig), else [`PartSize::Auto`](crate::PartSize::Auto): 8 MiB, more for objects over ~78 GiB).")]
        pub fn part_size(mut self, part_size: PartSize) -> Self {
            self.opts.config.part_size = part_size;
            self
        }

        #[doc = concat!("How many ", $unit, "s are in flight at once (default [`DEFAULT_CONCURRENCY`](crate::engine::DEFAULT_CONCURRENCY)).")]
        pub fn concurrency(mut self, n: usize) -> Self {
            self.opts.config.concurrency = n;
            self
        }

        /// Replaces the whole transfer configuration for this call.
        pub fn transfer_config(mut self, config: TransferConfig) -> Self {
            self.opts.config = config;
            self
        }

        /// Where the checkpoint lives while the transfer is unfinished (default
        /// [`checkpoint::default_dir`](crate::checkpoint::default_dir)).
        pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
            self.opts.checkpoint_dir = Some(dir.into());
            self
        }

        /// Keep a checkpoint and resume from one (default `true`). When `false`, nothing is
        /// left behind by a failed transfer (a failed upload is aborted, a failed download's
        /// partial file removed).
        pub fn resumable(mut self, resumable: bool) -> Self {
            self.opts.resumable = resumable;
            self
        }

        #[doc = concat!("Attempts per ", $unit, " before giving up (default [`DEFAULT_MAX_ATTEMPTS`](crate::engine::DEFAULT_MAX_ATTEMPTS)); only retryable failures ([`Error::is_retryable`](crate::Error::is_retryable)) are retried.")]
        pub fn max_attempts(mut self, n: u32) -> Self {
            self.opts.config.max_attempts = n;
            self
        }

        /// Progress callback.
        pub fn progress(mut self, listener: ProgressListener) -> Self {
            self.opts.progress = Some(listener);
            self
        }

        /// Stops the transfer when `token` is cancelled: it ends promptly with
        /// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled), keeping what a failure
        /// keeps (a resumable transfer its checkpoint, so the same call resumes it).
        pub fn cancellation_token(mut self, token: crate::CancellationToken) -> Self {
            self.opts.cancel = Some(token);
            self
        }
    };
}
pub(crate) use transfer_option_setters;

/// The setters only downloads have.
macro_rules! download_setters {
    () => {
        /// Whether the download is on disk when `send` returns (default `true`): each range
        /// is synced before the checkpoint records it, each file before it is renamed into
        /// place.
        ///
        /// `false` skips every sync, as `cp`, `curl`, rclone and the AWS CLI do: a file is
        /// renamed into place as soon as its bytes are written, and until the kernel writes
        /// it back it may sit only in the page cache (a power loss or kernel crash can then
        /// leave it incomplete under its final name). Such a download keeps no checkpoint,
        /// whatever `resumable` says (it could not tell which ranges survived a crash): a
        /// failed one leaves nothing and starts over when run again. Meant for scratch copies, such
        /// as a model fetched to a node's local disk to be loaded right away, where the
        /// disk's write-back time matters more than surviving a crash.
        ///
        /// ```no_run
        /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
        /// bucket.download_file().key("models/llama.safetensors").path("/scratch/llama.safetensors")
        ///     .durable(false).send().await?;
        /// # Ok(()) }
        /// ```
        pub fn durable(mut self, durable: bool) -> Self {
            self.opts.durable = durable;
            self
        }
    };
}
pub(crate) use download_setters;

mod dirs;
mod download;
mod spans;
pub(crate) mod stored;
mod upload;

pub use dirs::{DirTransferOutput, DownloadDirFluentBuilder, UploadDirFluentBuilder};
pub(crate) use dirs::{Item, run_tree};
pub use download::{DownloadFileFluentBuilder, DownloadFileOutput, MAX_RESTARTS};
pub use upload::{UploadFileFluentBuilder, UploadFileOutput};

pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
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

/// What an upload's source looks like: size, mtime, and the file's identity (device, inode,
/// ctime), so that a same-size replacement with a preserved mtime (`cp -p`, `rsync -a`) is seen
/// as the change it is.
pub(crate) fn local_file(path: &Path, meta: &std::fs::Metadata) -> crate::checkpoint::LocalFile {
    #[cfg(unix)]
    let (dev, ino, ctime_ns) = {
        use std::os::unix::fs::MetadataExt as _;
        (
            Some(meta.dev()),
            Some(meta.ino()),
            Some(i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())),
        )
    };
    #[cfg(not(unix))]
    let (dev, ino, ctime_ns) = (None, None, None);
    crate::checkpoint::LocalFile {
        path: path.to_owned(),
        size: meta.len(),
        mtime_ns: mtime_ns(meta),
        dev,
        ino,
        ctime_ns,
    }
}

/// True when `now` is the same source file, unchanged, as `then`.
pub(crate) fn same_source(
    now: &crate::checkpoint::LocalFile,
    then: &crate::checkpoint::LocalFile,
) -> bool {
    now.size == then.size
        && now.mtime_ns == then.mtime_ns
        && now.dev == then.dev
        && now.ino == then.ino
        && now.ctime_ns == then.ctime_ns
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
///
/// Dropped unfinished (the transfer's future was dropped or cancelled), it waits until the
/// writer has stored what it was handed (bounded), so the transfer's lock, released after it,
/// never lets a rerun start while the last checkpoint write is still under way.
struct Checkpointer {
    sink: PartSink,
    task: tokio::task::JoinHandle<Result<Checkpoint>>,
    /// Disconnected when the writer thread has ended.
    ended: std::sync::mpsc::Receiver<()>,
}

/// Where part tasks record finished parts: one shared sender, closed by the [`Checkpointer`]
/// when the transfer ends or is dropped, so no task can keep the writer alive.
#[derive(Clone)]
struct PartSink(std::sync::Arc<std::sync::Mutex<Option<std::sync::mpsc::Sender<DonePart>>>>);

impl PartSink {
    fn send(&self, part: DonePart) -> Result<()> {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) if tx.send(part).is_ok() => Ok(()),
            _ => Err(Error::new(ErrorKind::Io, "the checkpoint writer stopped")),
        }
    }

    /// Drops the sender; true when it was still open.
    fn close(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if self.sink.close() {
            // The sink was the only sender (part tasks share it, never clone the sender), so
            // the writer ends after the write under way. Bounded anyway.
            let _ = self.ended.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

impl Checkpointer {
    /// `store`: write the checkpoint file (resumable transfers); otherwise parts are only
    /// collected. `data_file`: synced before each write.
    fn start(
        mut cp: Checkpoint,
        path: PathBuf,
        material: ContentMaterial,
        file: Option<std::fs::File>,
        store: bool,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<DonePart>();
        let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _ended = ended_tx;
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
        Self {
            sink: PartSink(std::sync::Arc::new(std::sync::Mutex::new(Some(tx)))),
            task,
            ended,
        }
    }

    /// A handle that tasks use to record parts themselves (downloads record each range as its
    /// bytes land, in the middle of a longer GET).
    fn sender(&self) -> PartSink {
        self.sink.clone()
    }

    fn record(&self, part: DonePart) -> Result<()> {
        self.sink.send(part)
    }

    /// Waits until every recorded part is written; returns the final checkpoint, or the
    /// writer's error.
    async fn finish(mut self) -> Result<Checkpoint> {
        self.sink.close();
        (&mut self.task)
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("checkpoint writer failed: {e}")))?
    }
}

/// Removes a finished transfer's checkpoint. The transfer itself succeeded, so a checkpoint
/// that cannot be removed is reported as a warning (progress event), not as a failure: a later
/// run recognises the finished transfer.
fn remove_finished_checkpoint(path: &Path, report: &crate::engine::Reporter) {
    if let Err(e) = Checkpoint::remove(path) {
        report.emit(ProgressEvent::Warning {
            message: format!("the transfer finished, but its checkpoint stays: {e}"),
        });
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
