//! The transfer engine: one configuration, one retry layer and one bounded scheduler for every
//! multi-request transfer (`put_object`'s multipart path, `upload_file`, `download_file`).
//!
//! - [`TransferConfig`]: part size, concurrency, multipart threshold, attempts per part and
//!   what to do with a failed upload; set once on the bucket
//!   ([`CryptoBucketBuilder::transfer_config`](crate::CryptoBucketBuilder::transfer_config)) and
//!   overridable per call, validated in one place.
//! - `with_retries`: the only retry loop (the S3 client's own retries are switched off for
//!   requests the engine sends, so attempts do not multiply).
//! - `run_bounded`: at most `concurrency` jobs in flight, first error wins, the others finish
//!   so their parts still count for a resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::error::{Error, ErrorKind, Result};
use crate::parts::PartSize;
use crate::progress::{ProgressEvent, ProgressListener};

/// Parts in flight at once when not configured: enough to fill a fast link from one host, and
/// with 8 MiB parts well under 200 MiB of memory.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Attempts per part (the first one included) before a transfer gives up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Most parts or ranges in flight that a configuration accepts.
pub const MAX_CONCURRENCY: usize = 1024;

/// What happens to a multipart upload that fails or is cancelled.
///
/// ```
/// use cryptobucket::engine::FailedUploadPolicy;
/// assert_eq!(FailedUploadPolicy::default(), FailedUploadPolicy::Abort);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailedUploadPolicy {
    /// Abort it on the server (its parts are deleted), unless a checkpoint keeps it for a
    /// resume (`upload_file` with `resumable(true)`).
    #[default]
    Abort,
    /// Leave it on the server (for a later resume or inspection; a lifecycle rule should clean
    /// up what is never resumed).
    Retain,
}

/// How transfers are cut into parts and run. Set on the bucket, overridable per call.
///
/// ```
/// use cryptobucket::engine::{FailedUploadPolicy, TransferConfig};
/// use cryptobucket::PartSize;
/// let cfg = TransferConfig::new()
///     .part_size(PartSize::Target(16 << 20))
///     .concurrency(16)
///     .failed_upload_policy(FailedUploadPolicy::Retain);
/// cfg.validate().unwrap();
/// assert!(TransferConfig::new().concurrency(0).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferConfig {
    pub(crate) part_size: PartSize,
    pub(crate) concurrency: usize,
    pub(crate) multipart_threshold: Option<u64>,
    pub(crate) max_attempts: u32,
    pub(crate) failed_upload: FailedUploadPolicy,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            part_size: PartSize::Auto,
            concurrency: DEFAULT_CONCURRENCY,
            multipart_threshold: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            failed_upload: FailedUploadPolicy::Abort,
        }
    }
}

impl TransferConfig {
    /// The defaults: [`PartSize::Auto`], [`DEFAULT_CONCURRENCY`] parts in flight, multipart
    /// above one part (files) or 5 GiB (`put_object`), [`DEFAULT_MAX_ATTEMPTS`] attempts,
    /// failed uploads aborted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of each part of an upload and each range of a download.
    pub fn part_size(mut self, part_size: PartSize) -> Self {
        self.part_size = part_size;
        self
    }

    /// Parts or ranges in flight at once (1..=[`MAX_CONCURRENCY`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Bodies larger than this go up as a multipart upload (default: one part for files,
    /// 5 GiB for `put_object`).
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = Some(bytes);
        self
    }

    /// Attempts per part or range, the first included (at least 1); only retryable failures
    /// ([`Error::is_retryable`]) are tried again.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// What to do with a multipart upload that fails or is cancelled.
    pub fn failed_upload_policy(mut self, policy: FailedUploadPolicy) -> Self {
        self.failed_upload = policy;
        self
    }

    /// The part size setting.
    pub fn get_part_size(&self) -> PartSize {
        self.part_size
    }

    /// The concurrency setting.
    pub fn get_concurrency(&self) -> usize {
        self.concurrency
    }

    /// The attempts setting.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The failed-upload policy.
    pub fn get_failed_upload_policy(&self) -> FailedUploadPolicy {
        self.failed_upload
    }

    /// Checks every setting; the one validation all transfers share.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(Error::invalid_input(format!(
                "concurrency must be 1..={MAX_CONCURRENCY}, got {}",
                self.concurrency
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid_input("max_attempts must be at least 1"));
        }
        if let PartSize::Target(p) = self.part_size {
            // The size rules proper depend on the data size; check what needs none here.
            PartSize::Target(p).resolve(None)?;
        }
        Ok(())
    }
}

/// Tracks bytes done and reports progress.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    listener: Option<ProgressListener>,
    total: u64,
    done: Arc<AtomicU64>,
}

impl Reporter {
    pub(crate) fn new(listener: Option<ProgressListener>, total: u64) -> Self {
        Self {
            listener,
            total,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A reporter that reports nothing.
    pub(crate) fn silent() -> Self {
        Self::new(None, 0)
    }

    pub(crate) fn add(&self, bytes: u64) -> u64 {
        self.done.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    pub(crate) fn emit(&self, event: ProgressEvent) {
        // The same events as tracing output, in the span of the transfer emitting them.
        match &event {
            ProgressEvent::Started {
                resumed_bytes,
                resumed_parts,
            } if *resumed_bytes > 0 || *resumed_parts > 0 => {
                tracing::info!(resumed_bytes, resumed_parts, "resuming")
            }
            ProgressEvent::PartDone { part_number, bytes } => {
                tracing::debug!(part_number, bytes, "part done")
            }
            ProgressEvent::Retrying {
                part_number,
                attempt,
                reason,
            } => tracing::warn!(part_number, attempt, %reason, "retrying"),
            ProgressEvent::Restarted { reason } => tracing::info!(%reason, "starting over"),
            ProgressEvent::Warning { message } => tracing::warn!(%message),
            _ => {}
        }
        if let Some(l) = &self.listener {
            l.emit(self.total, self.done.load(Ordering::Relaxed), event);
        }
    }
}

/// Whether the engine tries a failed request again: retryable errors
/// ([`Error::is_retryable`]), except a changed object, which is retryable as a whole (the
/// caller restarts from the new version), never by asking for the same pinned range again.
pub(crate) fn worth_retrying(e: &Error) -> bool {
    e.is_retryable() && e.kind() != ErrorKind::Changed
}

/// The pause before attempt `attempt` (2 = the first retry): 200 ms, 400 ms, ... at most 5 s,
/// plus up to 255 ms of jitter so parallel parts do not retry in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.saturating_sub(2).min(5);
    let mut jitter = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut jitter);
    Duration::from_millis(base.min(5000) + u64::from(jitter[0]))
}

/// Runs `attempt` until it succeeds, fails with an error not [worth
/// retrying](worth_retrying), or `max` attempts are used, pausing ([`backoff`]) between
/// attempts. Each attempt re-encrypts the same bytes with the same key and counter, so
/// retries are identical.
pub(crate) async fn with_retries<T, F, Fut>(
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
            Err(e) if worth_retrying(&e) && n < max => {
                n += 1;
                report.emit(ProgressEvent::Retrying {
                    part_number: part,
                    attempt: n,
                    reason: e.to_string(),
                });
                tokio::time::sleep(backoff(n)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a transfer that is one file of a tree lets the tree start its next large file early:
/// it [`signal`](Self::signal)s once its parts (or ranges) are all sent, and what remains
/// (CompleteMultipartUpload, the final sync and rename) then overlaps the next file's parts
/// instead of leaving the link and the parts budget idle. The rest holds no part buffers, so
/// memory stays within `concurrency × part size`. A transfer that ends without signalling
/// (it failed, or it was one request) releases the tree by ending ([`until_handed_off`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Handoff(Option<Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>>);

impl Handoff {
    /// A handoff and what the tree awaits: resolved (`Ok` or `Err`) once the transfer
    /// signalled or is gone.
    pub(crate) fn new() -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self(Some(Arc::new(std::sync::Mutex::new(Some(tx))))), rx)
    }

    /// Tells the tree this transfer's parts are all sent (no-op when not part of a tree, or
    /// signalled already).
    pub(crate) fn signal(&self) {
        if let Some(slot) = &self.0
            && let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(());
        }
    }
}

/// Waits until transfer `current` (the last one pushed onto `running`, each tagged with its
/// number) has sent its parts (`parts_sent`) or ended, handing every transfer that ends
/// meanwhile to `done`. Ending counts even when the transfer's handoff is still held elsewhere,
/// so a transfer that fails before its first part never leaves its tree waiting.
pub(crate) async fn until_handed_off<T, Fut>(
    running: &mut futures::stream::FuturesUnordered<Fut>,
    current: usize,
    parts_sent: tokio::sync::oneshot::Receiver<()>,
    mut done: impl FnMut(T),
) where
    Fut: Future<Output = (usize, T)>,
{
    use futures::StreamExt as _;
    tokio::pin!(parts_sent);
    loop {
        tokio::select! {
            _ = &mut parts_sent => return,
            Some((n, out)) = running.next() => {
                done(out);
                if n == current {
                    return;
                }
            }
        }
    }
}

/// Runs `jobs` with at most `concurrency` at once; `on_done` sees each result as it arrives
/// (in the caller's task, so it may write the checkpoint). After the first error no new job
/// starts, the running ones finish (their parts still count for a resume), and the first error
/// is returned. Dropping the returned future cancels every job.
pub(crate) async fn run_bounded<T, Fut>(
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
        while first_err.is_none() && set.len() < concurrency.max(1) {
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

/// Runs a transfer inside its tracing `span` until it ends or `cancel` is cancelled; a
/// cancelled transfer's future is dropped (its guards abort or keep the multipart upload as
/// its policy says, its checkpoint writer stores what it was handed) and
/// [`ErrorKind::Cancelled`] is returned.
pub(crate) async fn run_transfer<T>(
    span: tracing::Span,
    cancel: Option<&tokio_util::sync::CancellationToken>,
    what: &str,
    resumable: bool,
    transfer: impl Future<Output = Result<T>>,
) -> Result<T> {
    use tracing::Instrument as _;
    let run = async {
        let out = match cancel {
            None => transfer.await,
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Error::new(
                    ErrorKind::Cancelled,
                    if resumable {
                        format!("{what} was cancelled; what its checkpoint holds is kept, the same call resumes it")
                    } else {
                        format!("{what} was cancelled")
                    },
                )),
                r = transfer => r,
            },
        };
        match &out {
            Ok(_) => tracing::info!("done"),
            Err(e) => tracing::warn!(error = %e, retryable = e.is_retryable(), "failed"),
        }
        out
    };
    run.instrument(span).await
}

/// Aborts a multipart upload when dropped armed: the future that drove it was cancelled. The
/// abort runs on the current tokio runtime in the background (best effort: without a runtime,
/// or if it fails, the store's lifecycle rules must clean up).
pub(crate) struct AbortOnDrop(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl AbortOnDrop {
    /// A guard that runs `abort` if dropped before [`disarm`](Self::disarm); `None` gives a
    /// guard that does nothing (the failed-upload policy keeps the upload).
    pub(crate) fn new<F>(abort: Option<F>) -> Self
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        Self(abort.map(|f| {
            Box::pin(async move {
                let _ = f.await;
            }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        }))
    }

    /// The driver finished (or handles the failure itself): nothing to do on drop.
    pub(crate) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(abort) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(abort);
        }
    }
}
