//! Directory trees, both ways, on the transfer engine: [`CryptoBucket::upload_dir`] and
//! [`CryptoBucket::download_dir`](crate::CryptoBucket::download_dir).
//!
//! One memory budget for the whole tree: files that fit in one part run `concurrency` at once
//! (each holds at most one part), then larger files one after another with `concurrency` parts
//! in flight, so memory stays within `concurrency × part size` either way. A large file
//! starts as soon as the one before has sent its parts: that one's completion
//! (CompleteMultipartUpload, or the final sync and rename) overlaps the next one's parts and
//! holds no part buffers. Every file goes through [`upload_file`](crate::CryptoBucket::upload_file) /
//! [`download_file`](crate::CryptoBucket::download_file) (retries, checkpoints, resume). With
//! [`skip_identical`](UploadDirFluentBuilder::skip_identical) (`sync`), a file whose copy has
//! the same size and is not older is left alone; otherwise everything is copied (`cp -r`).
//! A failed file does not stop the others: the output lists each failure.
//!
//! [`CryptoBucket::upload_dir`]: crate::CryptoBucket::upload_dir

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use futures::stream::FuturesUnordered;
use futures::{StreamExt as _, TryStreamExt as _};

use super::TransferOptions;
use crate::engine::{Handoff, Reporter, TransferConfig, until_handed_off};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedHandle;
use crate::parts::PartSize;
use crate::progress::{ProgressEvent, ProgressListener};

/// How many HEADs (or local stats) a `skip_identical` comparison runs at once.
const CHECKS_AT_ONCE: usize = 16;

/// What a directory transfer did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct DirTransferOutput {
    /// Files (or objects) copied: (local path, object key, bytes). With `dry_run`: the ones
    /// that would be.
    pub copied: Vec<(PathBuf, String, u64)>,
    /// Left alone as identical (`skip_identical`): same size, copy not older.
    pub skipped: Vec<(PathBuf, String)>,
    /// Those that failed, with why; the others were still copied.
    pub failed: Vec<(PathBuf, String, crate::Error)>,
    /// Entries of a local tree that an upload does not copy, with why: special files (FIFOs,
    /// sockets, devices), symlinks whose target is gone or that would loop, and every symlink
    /// with [`follow_symlinks(false)`](UploadDirFluentBuilder::follow_symlinks).
    pub left_out: Vec<(PathBuf, String)>,
    /// Nothing was transferred: this is the plan.
    pub dry_run: bool,
}

impl DirTransferOutput {
    /// Bytes copied (or to copy).
    pub fn bytes(&self) -> u64 {
        self.copied.iter().map(|c| c.2).sum()
    }

    /// `Ok` if nothing failed, else an [`ErrorKind::Partial`] error naming how many failed,
    /// with the first failure as its source (retryable when every failure is).
    pub fn into_result(mut self) -> Result<Self> {
        if self.failed.is_empty() {
            return Ok(self);
        }
        let n = self.failed.len();
        let retryable = self.failed.iter().all(|f| f.2.is_retryable());
        let (path, key, e) = self.failed.remove(0);
        let msg = format!(
            "{n} of {} files failed; first: {} <-> {key}: {}",
            n + self.copied.len(),
            path.display(),
            e.message()
        );
        Err(Error::new(ErrorKind::Partial, msg)
            .with_retryable(retryable)
            .with_source(e))
    }
}

/// One file of a tree: local path, object key, size, modification time.
pub(crate) struct Item {
    pub(crate) path: PathBuf,
    pub(crate) key: String,
    pub(crate) size: u64,
    modified: Option<SystemTime>,
}

impl Item {
    /// A file to copy from object `key` (`size` bytes, plaintext) to `path`.
    pub(crate) fn download(path: PathBuf, key: String, size: u64) -> Self {
        Self {
            path,
            key,
            size,
            modified: None,
        }
    }
}

/// The setters both directory builders share.
macro_rules! dir_setters {
    () => {
        /// Leave files whose copy has the same size and is not older (`sync`); default:
        /// copy everything (`cp -r`).
        pub fn skip_identical(mut self, skip: bool) -> Self {
            self.skip_identical = skip;
            self
        }

        /// Decide what would be copied, copy nothing.
        pub fn dry_run(mut self, dry_run: bool) -> Self {
            self.dry_run = dry_run;
            self
        }

        super::transfer_option_setters!("part or range");
    };
}

/// Builder of a directory upload; see [`CryptoBucket::upload_dir`](crate::CryptoBucket::upload_dir).
#[derive(Debug)]
pub struct UploadDirFluentBuilder {
    bucket: SharedHandle,
    dir: Option<PathBuf>,
    prefix: String,
    opts: TransferOptions,
    skip_identical: bool,
    dry_run: bool,
    follow_symlinks: bool,
}

/// Builder of a directory download; see
/// [`CryptoBucket::download_dir`](crate::CryptoBucket::download_dir).
#[derive(Debug)]
pub struct DownloadDirFluentBuilder {
    bucket: SharedHandle,
    dir: Option<PathBuf>,
    prefix: String,
    opts: TransferOptions,
    skip_identical: bool,
    dry_run: bool,
}

fn dir_prefix(prefix: &str) -> String {
    let mut p = prefix.trim_start_matches('/').to_owned();
    if !p.is_empty() && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// True when `a` is at least as new as `b` (unknown times count as not newer); whole seconds,
/// as object stores keep them.
fn not_older(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    match (a, b) {
        (Some(a), Some(b)) => secs(a) >= secs(b),
        _ => false,
    }
}

impl UploadDirFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            opts: TransferOptions::new(*bucket.transfer_config()),
            bucket,
            dir: None,
            prefix: String::new(),
            skip_identical: false,
            dry_run: false,
            follow_symlinks: true,
        }
    }

    /// Whether symlinks in the tree count as what they point to (default: yes, as with
    /// `aws s3 cp`; a Hugging Face cache snapshot, for one, is all symlinks into its blob
    /// store). A file reached through a link is uploaded under the link's name; a linked
    /// directory is walked unless it contains the link (that would loop). With `false`,
    /// symlinks are left out. Either way, what is left out is listed in
    /// [`DirTransferOutput::left_out`].
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let out = bucket.upload_dir().path("run1").prefix("runs/run1/")
    ///     .follow_symlinks(false).send().await?;
    /// for (path, why) in &out.left_out {
    ///     eprintln!("left out {}: {why}", path.display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlinks = follow;
        self
    }

    /// The local directory.
    pub fn path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Key prefix the tree goes under (`models/run1/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    dir_setters!();

    /// Uploads the tree: its regular files, and what symlinks point to (see
    /// [`follow_symlinks`](Self::follow_symlinks)); special files are left out.
    pub async fn send(self) -> Result<DirTransferOutput> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.keeps_checkpoint());
        crate::engine::run_transfer(
            tracing::info_span!(
                "upload_dir",
                bucket = %self.bucket.bucket(),
                prefix = %self.prefix,
                dir = ?self.dir
            ),
            cancel.as_ref(),
            "the directory upload",
            resumable,
            Box::pin(self.run()),
        )
        .await
    }

    async fn run(self) -> Result<DirTransferOutput> {
        self.opts.validate()?;
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| Error::invalid_input("the directory is required (call .path(...))"))?;
        if !dir.is_dir() {
            return Err(Error::invalid_input(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let prefix = dir_prefix(&self.prefix);
        let Walk { items, left_out } = walk(&dir, &prefix, self.follow_symlinks)?;
        for (path, why) in &left_out {
            tracing::warn!(path = %path.display(), "left out: {why}");
        }
        let bucket = &self.bucket;
        let checks = futures::stream::iter(items)
            .map(|item| async move {
                if !self.skip_identical {
                    return (item, false);
                }
                let same = crate::ops::head_object::HeadObjectFluentBuilder::new(bucket.clone())
                    .key(&item.key)
                    .send()
                    .await
                    .is_ok_and(|h| {
                        h.envelope.is_some()
                            && h.object_size == item.size
                            && not_older(h.last_modified, item.modified)
                    });
                (item, same)
            })
            .buffered(CHECKS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut out = run_tree(
            checks,
            &self.opts,
            self.dry_run,
            |item, config, listener, handoff| {
                let b = super::UploadFileFluentBuilder::new(bucket.clone())
                    .key(&item.key)
                    .path(&item.path)
                    .options(self.opts.for_item(config, listener, handoff));
                async move { b.send().await.map(|_| ()) }
            },
        )
        .await?;
        out.left_out = left_out;
        Ok(out)
    }
}

impl DownloadDirFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            opts: TransferOptions::new(*bucket.transfer_config()),
            bucket,
            dir: None,
            prefix: String::new(),
            skip_identical: false,
            dry_run: false,
        }
    }

    /// Key prefix of the tree (`models/run1/`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The local directory to fill (created as needed).
    pub fn path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    dir_setters!();
    super::download_setters!();

    /// Downloads every object under the prefix. Every key is checked before anything is
    /// written: one that would leave the directory (`..`, absolute, empty segments) stops the
    /// run.
    pub async fn send(self) -> Result<DirTransferOutput> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.keeps_checkpoint());
        crate::engine::run_transfer(
            tracing::info_span!(
                "download_dir",
                bucket = %self.bucket.bucket(),
                prefix = %self.prefix,
                dir = ?self.dir
            ),
            cancel.as_ref(),
            "the directory download",
            resumable,
            Box::pin(self.run()),
        )
        .await
    }

    async fn run(self) -> Result<DirTransferOutput> {
        self.opts.validate()?;
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| Error::invalid_input("the directory is required (call .path(...))"))?;
        let prefix = dir_prefix(&self.prefix);
        let listed: Vec<crate::ListEntry> =
            crate::ListObjectsFluentBuilder::new(self.bucket.clone())
                .prefix(&prefix)
                .recursive(true)
                .into_stream()
                .try_collect()
                .await?;
        let mut items = Vec::new();
        for entry in listed {
            let crate::ListEntry::Object(o) = entry else {
                continue;
            };
            let rel = o.key.strip_prefix(&prefix).unwrap_or(&o.key);
            if rel.is_empty() || rel.ends_with('/') {
                continue; // "directory" markers
            }
            items.push(Item {
                path: local_path(&dir, rel)?,
                key: o.key.clone(),
                size: o.size,
                modified: o.last_modified,
            });
        }
        let checks: Vec<(Item, bool)> = items
            .into_iter()
            .map(|item| {
                let same = self.skip_identical
                    && std::fs::metadata(&item.path).is_ok_and(|m| {
                        m.is_file()
                            && m.len() == item.size
                            && not_older(m.modified().ok(), item.modified)
                    });
                (item, same)
            })
            .collect();
        let bucket = &self.bucket;
        run_tree(
            checks,
            &self.opts,
            self.dry_run,
            |item, config, listener, handoff| {
                let b = super::DownloadFileFluentBuilder::new(bucket.clone())
                    .key(&item.key)
                    .path(&item.path)
                    .options(self.opts.for_item(config, listener, handoff));
                let parent = item.path.parent().map(Path::to_owned);
                async move {
                    if let Some(p) = parent {
                        tokio::fs::create_dir_all(&p)
                            .await
                            .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
                    }
                    b.send().await.map(|_| ())
                }
            },
        )
        .await
    }
}

/// Runs the copies of a tree within one budget: small items `concurrency` at once (one part
/// each), then large ones one by one with `concurrency` parts in flight, each starting as soon
/// as the one before has sent its parts (its completion overlaps the next one's parts; see
/// [`Handoff`]). `start` makes the transfer of one item with the configuration, progress
/// listener and handoff to use.
pub(crate) async fn run_tree<F, Fut>(
    checks: Vec<(Item, bool)>,
    opts: &TransferOptions,
    dry_run: bool,
    start: F,
) -> Result<DirTransferOutput>
where
    F: Fn(&Item, TransferConfig, ProgressListener, Handoff) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut out = DirTransferOutput {
        dry_run,
        ..DirTransferOutput::default()
    };
    let mut todo = Vec::new();
    for (item, same) in checks {
        if same {
            out.skipped.push((item.path, item.key));
        } else {
            todo.push(item);
        }
    }
    if dry_run {
        out.copied = todo.into_iter().map(|i| (i.path, i.key, i.size)).collect();
        return Ok(out);
    }
    let total: u64 = todo.iter().map(|i| i.size).sum();
    let report = Reporter::new(opts.progress.clone(), total);
    report.emit(ProgressEvent::Started {
        resumed_bytes: 0,
        resumed_parts: 0,
    });
    // Each file reports into the tree's totals.
    let forward = |report: Reporter| {
        ProgressListener::new(move |p| match &p.event {
            ProgressEvent::Started { resumed_bytes, .. } => {
                report.add(*resumed_bytes);
            }
            ProgressEvent::PartDone { bytes, .. } => {
                report.add(*bytes);
                report.emit(p.event.clone());
            }
            ProgressEvent::Finished => {}
            other => report.emit(other.clone()),
        })
    };
    // "Fits in one part" as the single-file transfers decide it (the part size for that size).
    let fits = |i: &Item| {
        opts.config
            .part_size
            .resolve(Some(i.size))
            .is_ok_and(|part| i.size <= part)
    };
    let (small, large): (Vec<Item>, Vec<Item>) = todo.into_iter().partition(fits);
    let one_part = TransferConfig {
        concurrency: 1,
        ..opts.config
    };
    let results: Vec<(Item, Result<()>)> = futures::stream::iter(small)
        .map(|item| {
            let fut = start(&item, one_part, forward(report.clone()), Handoff::default());
            async move { (item, fut.await) }
        })
        .buffer_unordered(opts.config.concurrency)
        .collect()
        .await;
    let mut record = |item: Item, r: Result<()>| match r {
        Ok(()) => out.copied.push((item.path, item.key, item.size)),
        Err(e) => out.failed.push((item.path, item.key, e)),
    };
    for (item, r) in results {
        record(item, r);
    }
    let mut running = FuturesUnordered::new();
    for (n, item) in large.into_iter().enumerate() {
        let (handoff, parts_sent) = Handoff::new();
        let fut = start(&item, opts.config, forward(report.clone()), handoff);
        running.push(async move { (n, (item, fut.await)) });
        // The next file starts once this one has sent its parts (or ended); what finishes
        // meanwhile is recorded.
        until_handed_off(&mut running, n, parts_sent, |(item, r)| record(item, r)).await;
    }
    while let Some((_, (item, r))) = running.next().await {
        record(item, r);
    }
    report.emit(ProgressEvent::Finished);
    Ok(out)
}

/// What a walk of a local tree found: the files to copy, and what it left out, with why.
struct Walk {
    items: Vec<Item>,
    left_out: Vec<(PathBuf, String)>,
}

/// Every regular file under `dir`, its key `prefix` + the relative path with `/` separators,
/// sorted by key. `follow`: symlinks count as what they point to (a file reached through a
/// link is named after the link; a linked directory is walked unless it contains the link,
/// which would loop); otherwise they are left out. Special files (FIFOs, sockets, devices)
/// and links whose target is gone are left out, and reported.
fn walk(dir: &Path, prefix: &str, follow: bool) -> Result<Walk> {
    let io = |p: &Path, e| Error::io(format!("cannot read {}", p.display()), e);
    let mut out = Walk {
        items: Vec::new(),
        left_out: Vec::new(),
    };
    // Each directory to read, with the real paths of itself and the directories above it
    // (a linked directory that is one of them would be walked forever).
    let root = std::fs::canonicalize(dir).map_err(|e| io(dir, e))?;
    let mut stack = vec![(dir.to_path_buf(), vec![root])];
    while let Some((d, real)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let entry = entry.map_err(|e| io(&d, e))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(|e| io(&path, e))?;
            let link = ty.is_symlink();
            if link && !follow {
                out.left_out
                    .push((path, "a symlink (symlinks are not followed)".to_owned()));
                continue;
            }
            // A link's target (`metadata` follows it), else the entry itself.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if link => {
                    out.left_out
                        .push((path, format!("a symlink whose target cannot be read: {e}")));
                    continue;
                }
                Err(e) => return Err(io(&path, e)),
            };
            if meta.is_dir() {
                let here = match link {
                    true => std::fs::canonicalize(&path).map_err(|e| io(&path, e))?,
                    false => real
                        .last()
                        .map_or(path.clone(), |r| r.join(entry.file_name())),
                };
                if real.contains(&here) {
                    out.left_out.push((
                        path,
                        "a symlink to a directory that contains it (it would loop)".to_owned(),
                    ));
                    continue;
                }
                let mut below = real.clone();
                below.push(here);
                stack.push((path, below));
            } else if meta.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let parts: Option<Vec<&str>> =
                    rel.components().map(|c| c.as_os_str().to_str()).collect();
                let Some(parts) = parts else {
                    return Err(Error::invalid_input(format!(
                        "{} is not valid UTF-8; cannot name an object after it",
                        path.display()
                    )));
                };
                out.items.push(Item {
                    key: format!("{prefix}{}", parts.join("/")),
                    path,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            } else {
                out.left_out.push((
                    path,
                    "not a regular file or directory (a FIFO, socket or device)".to_owned(),
                ));
            }
        }
    }
    out.items.sort_by(|a, b| a.key.cmp(&b.key));
    out.left_out.sort();
    Ok(out)
}

/// The local path for an object key below the prefix, refusing keys that would escape `dir`
/// (`..`, absolute paths, empty segments, backslashes): object keys come from the network.
fn local_path(dir: &Path, rel: &str) -> Result<PathBuf> {
    let unsafe_key = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "refusing object key suffix {rel:?}: it is not a plain relative path (.., \
                 absolute or empty segments)"
            ),
        )
    };
    let mut out = dir.to_path_buf();
    for seg in rel.split('/') {
        let mut comps = Path::new(seg).components();
        match (comps.next(), comps.next()) {
            (Some(Component::Normal(c)), None) if !seg.contains('\\') => out.push(c),
            _ => return Err(unsafe_key()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_cannot_escape_the_directory() {
        let d = Path::new("/dst");
        assert_eq!(local_path(d, "a/b.bin").unwrap(), Path::new("/dst/a/b.bin"));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\x",
            "",
        ] {
            assert!(local_path(d, bad).is_err(), "{bad}");
        }
    }
}
