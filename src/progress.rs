//! Progress reporting of file transfers.
//!
//! [`upload_file`](crate::CryptoBucket::upload_file) and
//! [`download_file`](crate::CryptoBucket::download_file) call a listener with a [`Progress`]
//! whenever something happens: the transfer starts (or resumes), a part finishes, or it
//! restarts for a reason the user should hear about. The CLI renders these as a progress bar.

use std::fmt;
use std::sync::Arc;

/// What just happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The transfer begins; `resumed_bytes` were already done by an earlier, interrupted run
    /// (0 for a fresh start).
    Started {
        /// Bytes taken over from a checkpoint.
        resumed_bytes: u64,
        /// Parts taken over from a checkpoint.
        resumed_parts: u32,
    },
    /// A part (or the single request of a small file) finished.
    PartDone {
        /// 1-based part number.
        part_number: u32,
        /// Its size.
        bytes: u64,
    },
    /// A part failed and is retried after a pause.
    Retrying {
        /// 1-based part number.
        part_number: u32,
        /// Attempt about to start (2 = first retry).
        attempt: u32,
        /// Why the previous attempt failed.
        reason: String,
    },
    /// An earlier checkpoint could not be continued and the transfer starts over.
    Restarted {
        /// Why (source file changed, upload vanished, object changed, ...).
        reason: String,
    },
    /// Something the user should know that does not fail the transfer (a finished transfer
    /// whose checkpoint could not be removed, ...).
    Warning {
        /// What happened.
        message: String,
    },
    /// Everything is transferred.
    Finished,
}

/// A progress report: totals, and the event that caused it.
///
/// ```
/// use cryptobucket::progress::{Progress, ProgressEvent, ProgressListener};
/// let listener = ProgressListener::new(|p: &Progress| {
///     if let ProgressEvent::PartDone { part_number, .. } = p.event {
///         eprintln!("part {part_number} done, {:.0}%", 100.0 * p.fraction());
///     }
/// });
/// # let _ = listener;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of the whole transfer.
    pub total: u64,
    /// Bytes done so far, including those resumed from a checkpoint.
    pub done: u64,
    /// What happened.
    pub event: ProgressEvent,
}

impl Progress {
    /// `done / total` (1.0 for an empty transfer).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.done as f64 / self.total as f64
        }
    }
}

/// A progress callback, shared between the tasks of a transfer.
///
/// ```
/// use cryptobucket::progress::{Progress, ProgressListener};
/// let listener = ProgressListener::new(|p: &Progress| eprintln!("{} / {}", p.done, p.total));
/// # let _ = listener;
/// ```
#[derive(Clone)]
pub struct ProgressListener(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressListener {
    /// Wraps a callback. It runs on the transfer's tasks: keep it quick.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn emit(&self, total: u64, done: u64, event: ProgressEvent) {
        (self.0)(&Progress { total, done, event });
    }
}

impl fmt::Debug for ProgressListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressListener")
    }
}
