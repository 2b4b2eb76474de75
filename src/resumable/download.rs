//! [`CryptoBucket::download_file`](crate::CryptoBucket::download_file): an object to a local file with parallel ranged GETs,
//! every range pinned to one version of the object, resumable after a crash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;

use super::spans::{Board, Claim, spans};
use super::{
    Checkpointer, TransferOptions, absolute, remove_finished_checkpoint, settle, store_checkpoint,
};
use crate::checkpoint::{Checkpoint, DonePart, LocalFile};
use crate::cipher::ContentMaterial;
use crate::engine::{Reporter, TransferConfig, backoff, run_bounded, with_retries, worth_retrying};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::gocryptfs::GocryptfsKeys;
use crate::gocryptfs::blocks::DecryptBlocks;
use crate::handle::{SharedHandle, require_key};
use crate::multipart::PartSize;
use crate::ops::get_object::{GetObjectFluentBuilder, Pin};
use crate::partial::{PartialFile, TransferLock};
use crate::progress::{ProgressEvent, ProgressListener};
use crate::range::ByteRange;
use crate::reader::Format;
use crate::veturbo::VeturboKeySource;

/// How often a download starts over because the object changed under it before it gives up
/// with [`ErrorKind::Changed`].
pub const MAX_RESTARTS: u32 = 3;

/// Builder of a whole-object download to a file; see [`CryptoBucket::download_file`](crate::CryptoBucket::download_file).
#[derive(Debug)]
pub struct DownloadFileFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
    path: Option<PathBuf>,
    opts: TransferOptions,
    veturbo: Option<Arc<dyn VeturboKeySource>>,
    /// The object is a stored file of a gocryptfs tree with these keys.
    gocryptfs: Option<Arc<GocryptfsKeys>>,
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
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            opts: TransferOptions::new(*bucket.transfer_config()),
            bucket,
            key: None,
            path: None,
            veturbo: None,
            gocryptfs: None,
        }
    }

    /// All transfer options at once (a file of a tree: [`TransferOptions::for_item`]).
    pub(crate) fn options(mut self, opts: TransferOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The object is a stored file of a gocryptfs tree unlocked with `keys`: its blocks are
    /// fetched by ranges and every one is verified and decrypted before it is written.
    pub(crate) fn gocryptfs(mut self, keys: Arc<GocryptfsKeys>) -> Self {
        self.gocryptfs = Some(keys);
        self
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
    super::download_setters!();

    /// Download a veTurboIO file (headered or not; keys from `source`: a
    /// [`VeturboKey`](crate::veturbo::VeturboKey), or a KMS for headered files) and write its
    /// plaintext, instead of one of this crate's objects. Same engine: parallel ranges,
    /// checkpoint, resume, pinned version. The format has no MAC, so strict mode refuses it.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// use cryptobucket::veturbo::VeturboKey;
    /// bucket.download_file().key("models/llama.veturbo").path("llama.safetensors")
    ///     .veturbo(VeturboKey::from_env()?).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn veturbo(mut self, source: impl VeturboKeySource + 'static) -> Self {
        self.veturbo = Some(Arc::new(source));
        self
    }

    /// Downloads (or resumes downloading) the object into a partial file of its own, then
    /// renames it into place. Every range must come from the version the download pinned
    /// (same ETag, size and wrapped key, whether or not the store honours `If-Match`); if the
    /// object changes, the download starts over from the new version, at most
    /// [`MAX_RESTARTS`] times, then fails with [`ErrorKind::Changed`]. A failed, cancelled or
    /// dropped download that cannot be resumed (`resumable(false)`, the object changed, or an
    /// object of one range, which gets no checkpoint) leaves no partial file.
    pub async fn send(mut self) -> Result<DownloadFileOutput> {
        // Whatever order the setters came in: without syncs, no checkpoint.
        self.opts.resumable = self.opts.keeps_checkpoint();
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.resumable);
        let (bucket, key) = (self.bucket.bucket().to_owned(), self.key.clone());
        crate::engine::run_transfer(
            tracing::info_span!(
                "download_file",
                bucket = %self.bucket.bucket(),
                key = self.key.as_deref().unwrap_or_default(),
                path = ?self.path
            ),
            cancel.as_ref(),
            "the download",
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

    async fn run(self) -> Result<DownloadFileOutput> {
        let key = require_key(self.key.clone())?;
        let dest = absolute(self.path.as_deref().ok_or_else(|| {
            Error::invalid_input("the destination file is required (call .path(...))")
        })?)?;
        self.opts.validate()?;
        // Before any request: a directory here would only fail the rename at the very end.
        crate::partial::check_destination(&dest)?;
        let cp_path = self
            .opts
            .checkpoint_path(self.kind(), self.bucket.bucket(), &key, &dest);
        // One run of this transfer at a time: a second one would share the checkpoint.
        let lock = if self.opts.resumable {
            let lock = TransferLock::acquire(&cp_path, "download")?;
            lock.remove_orphan(&dest);
            Some(lock)
        } else {
            None
        };
        let mut restarted = None;
        let mut round = 0;
        loop {
            match self
                .attempt(&key, &dest, &cp_path, lock.as_ref(), restarted.clone())
                .await
            {
                Err(e) if e.kind() == ErrorKind::Changed && round < MAX_RESTARTS => {
                    round += 1;
                    let reason = format!(
                        "s3://{}/{key} changed during the download ({}); starting over from \
                         the new version",
                        self.bucket.bucket(),
                        e.message()
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
                    restarted = Some(reason);
                }
                Err(e) if e.kind() == ErrorKind::Changed => {
                    return Err(Error::new(
                        ErrorKind::Changed,
                        format!(
                            "the object kept changing: {} restarts, and it changed again ({}); \
                             nothing was written",
                            MAX_RESTARTS,
                            e.message()
                        ),
                    )
                    .with_object(self.bucket.bucket(), &key)
                    .with_operation("download_file")
                    .with_retryable(true)
                    .with_source(e));
                }
                other => return other,
            }
        }
    }

    /// The checkpoint kind: downloads of veTurboIO files never meet those of envelope objects.
    fn kind(&self) -> &'static str {
        match (&self.veturbo, &self.gocryptfs) {
            (Some(_), _) => "download-veturbo",
            (None, Some(_)) => "download-gocryptfs",
            (None, None) => "download",
        }
    }

    /// Pins the object and gets what decodes it. An envelope object is learnt from a GET of
    /// its first range rather than a HEAD (unless a checkpoint may already hold that range):
    /// the response carries the metadata, ETag and size, so an object of one range downloads
    /// with this one request, and a larger one saves the HEAD's round trip.
    async fn pin(&self, key: &str, first_range: Option<u64>) -> Result<Pinned> {
        let bucket = &self.bucket;
        if let Some(keys) = &self.gocryptfs {
            return self.pin_gocryptfs(keys, key, first_range).await;
        }
        if let Some(source) = &self.veturbo {
            let reader = crate::reader::ObjectReaderBuilder::new(bucket.clone())
                .key(key)
                .veturbo_shared(source.clone())
                .open()
                .await?;
            let Format::Veturbo { key: vkey, .. } = reader.format() else {
                return Err(Error::new(
                    ErrorKind::Io,
                    "the reader did not open a veTurboIO file",
                ));
            };
            let mut recorded = BTreeMap::new();
            if let Some(h) = reader.veturbo_header() {
                recorded.insert("veturbo-meta-data-key".to_owned(), h.meta_data_key.clone());
            }
            recorded.insert("veturbo-mode".to_owned(), vkey.mode().as_str().to_owned());
            let binding = vkey.checkpoint_binding();
            return Ok(Pinned {
                pin: reader.pin().clone(),
                format: Decode::Read(reader.format().clone()),
                size: reader.size(),
                recorded,
                binding,
                opened: None,
            });
        }
        if let Some(len) = first_range {
            // Retried here, its retries reported (before the size is known), as a range is.
            let report = Reporter::new(self.opts.progress.clone(), 0);
            let first = with_retries(self.opts.config.max_attempts, 1, &report, || {
                GetObjectFluentBuilder::new(bucket.clone())
                    .key(key)
                    .range(ByteRange::Inclusive {
                        first: 0,
                        last: len - 1,
                    })
                    .single_attempt()
                    .send()
            })
            .await;
            match first {
                Ok(out) => {
                    let pin = Pin::of_response(bucket.bucket(), key, &out)?;
                    let (material, envelope) = (out.material.clone(), out.envelope.clone());
                    let opened = out.range.map(|r| (Box::pin(out.body) as Body, r));
                    return Ok(Pinned::envelope(pin, material, envelope.as_ref(), opened));
                }
                // An empty object has no first byte: learn it from a HEAD.
                Err(e) if e.kind() == ErrorKind::RangeNotSatisfiable => {}
                Err(e) => return Err(e),
            }
        }
        // The HEAD is retried by the engine: a store that is briefly unavailable (503, a node
        // failing over) should not fail a download before it starts.
        let (pin, material, head) = Pin::object(bucket, key).await?;
        Ok(Pinned::envelope(
            pin,
            material,
            head.envelope.as_ref(),
            None,
        ))
    }

    /// Pins a stored file of a gocryptfs tree and reads its file id: from a GET of its header
    /// and first range (kept as the first range's response) or, for an empty file or a
    /// resume, a HEAD and a GET of the header.
    async fn pin_gocryptfs(
        &self,
        keys: &Arc<GocryptfsKeys>,
        key: &str,
        first_range: Option<u64>,
    ) -> Result<Pinned> {
        use crate::gocryptfs::{BLOCK, HEADER_LEN, parse_file_header, plain_size};
        let bucket = &self.bucket;
        let bad = |what: String| {
            Error::new(ErrorKind::TagMismatch, what).with_object(bucket.bucket(), key)
        };
        // The plaintext size of a stored size; one no gocryptfs file has is refused at once.
        let size_of = |stored: u64| {
            plain_size(stored).ok_or_else(|| {
                bad(format!(
                    "{stored} bytes is no gocryptfs file size (truncated?)"
                ))
            })
        };
        let mut opened = None;
        let (pin, file_id) = match first_range {
            Some(len) => {
                let unit = len.next_multiple_of(BLOCK as u64);
                let (_, end) = crate::gocryptfs::blocks::stored_span(0, unit, u64::MAX);
                let report = Reporter::new(self.opts.progress.clone(), 0);
                let first = with_retries(self.opts.config.max_attempts, 1, &report, || async {
                    let out = GetObjectFluentBuilder::new(bucket.clone())
                        .key(key)
                        .range(ByteRange::Inclusive {
                            first: 0,
                            last: end - 1,
                        })
                        .stored(None)
                        .single_attempt()
                        .send()
                        .await?;
                    let pin = Pin::of_response(bucket.bucket(), key, &out)?;
                    size_of(pin.size)?;
                    let (header, rest) = split_off(Box::pin(out.body), HEADER_LEN).await?;
                    Ok((pin, header, rest))
                })
                .await;
                match first {
                    Ok((pin, header, rest)) => {
                        let file_id = parse_file_header(&header)
                            .ok_or_else(|| bad(format!("{key}: bad gocryptfs header")))?;
                        opened = Some((rest, unit));
                        (pin, file_id)
                    }
                    // An empty file has no header: learn it from a HEAD.
                    Err(e) if e.kind() == ErrorKind::RangeNotSatisfiable => {
                        crate::gocryptfs::remote::resolve_stored(bucket, key).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => crate::gocryptfs::remote::resolve_stored(bucket, key).await?,
        };
        let size = size_of(pin.size)?;
        let opened = opened.and_then(|(rest, unit)| {
            let last = size.min(unit).checked_sub(1)?;
            let body = DecryptBlocks::new(rest, keys.clone(), file_id, 0, key.to_owned());
            Some((Box::pin(body) as Body, (0, last)))
        });
        Ok(Pinned {
            recorded: BTreeMap::from([("gocryptfs-file-id".to_owned(), hex::encode(file_id))]),
            binding: ContentMaterial::from_parts(*keys.checkpoint_key(), file_id),
            format: Decode::Gocryptfs {
                keys: keys.clone(),
                file_id,
                stored_size: pin.size,
            },
            size,
            pin,
            opened,
        })
    }

    /// One pass: pin the object, take over or create the partial file, fetch what is missing,
    /// publish. `lock`: the transfer's lock (resumable runs), where a partial file without a
    /// checkpoint is recorded.
    async fn attempt(
        &self,
        key: &str,
        dest: &Path,
        cp_path: &Path,
        lock: Option<&TransferLock>,
        mut restarted: Option<String>,
    ) -> Result<DownloadFileOutput> {
        let bucket = &self.bucket;
        // The first range is read with the pinning request, unless a checkpoint may hold it.
        let first_range = match self.opts.resumable && cp_path.exists() {
            true => None,
            false => Some(self.opts.config.part_size.resolve(Some(0))?),
        };
        // Ranges of a gocryptfs file are whole blocks.
        let block_unit = |unit: u64| match self.gocryptfs {
            Some(_) => unit.next_multiple_of(crate::gocryptfs::BLOCK as u64),
            None => unit,
        };
        let Pinned {
            pin,
            format,
            size,
            recorded: envelope_meta,
            binding: binding_key,
            opened,
        } = self.pin(key, first_range).await?;
        let e_tag = pin.e_tag.clone();
        let report = Reporter::new(self.opts.progress.clone(), size);

        let mut resumed = None;
        if self.opts.resumable
            && let Some(old) = Checkpoint::load(cp_path)?
        {
            old.check_identity(cp_path, self.kind(), bucket.bucket(), key, dest)?;
            let partial = match (&old.temp_path, &old.temp_identity) {
                (Some(p), Some(id)) => PartialFile::reopen(p, id, size)?,
                _ => None,
            };
            let reason = if old.e_tag.as_deref() != Some(e_tag.as_str())
                || old.local.size != size
                || old.envelope != envelope_meta
            {
                Some(format!(
                    "s3://{}/{key} changed since the interrupted download; starting over",
                    bucket.bucket()
                ))
            } else if partial.is_none() {
                Some(
                    "the partial file of the interrupted download is gone or is not the file \
                     it wrote; starting over"
                        .to_owned(),
                )
            } else {
                old.verify(cp_path, &binding_key)?;
                None
            };
            match (reason, partial) {
                (None, Some(partial)) => resumed = Some((old, partial)),
                (reason, _) => {
                    let r = reason.unwrap_or_default();
                    if let (Some(p), Some(id)) = (&old.temp_path, &old.temp_identity) {
                        PartialFile::remove_if_same(p, id);
                    }
                    report.emit(ProgressEvent::Restarted { reason: r.clone() });
                    Checkpoint::remove(cp_path)?;
                    restarted = Some(r);
                }
            }
        }
        let (cp, partial, checkpointed) = match resumed {
            Some((cp, partial)) => (cp, partial, true),
            None => {
                let part_size = block_unit(self.opts.config.part_size.resolve(Some(size))?);
                // An object of one range gets no checkpoint: a range is recorded only once it
                // is whole, and then the file is published, so a checkpoint could never hold
                // anything to resume. (Saves a checkpoint file, its syncs and its removal per
                // small file.)
                let checkpointed = self.opts.resumable && size > part_size;
                // Recorded in the lock before it exists: if this run is killed before a
                // checkpoint names it, the next run removes it.
                let mut partial = PartialFile::create(dest, size, lock)?;
                let mut cp = Checkpoint::new(
                    self.kind(),
                    bucket.bucket(),
                    key,
                    LocalFile {
                        path: dest.to_owned(),
                        size,
                        mtime_ns: None,
                        dev: None,
                        ino: None,
                        ctime_ns: None,
                    },
                );
                cp.e_tag = Some(e_tag.clone());
                cp.temp_path = Some(partial.path().to_owned());
                cp.temp_identity = Some(partial.identity().clone());
                cp.part_size = part_size;
                cp.envelope = envelope_meta.clone();
                if checkpointed {
                    cp.seal(&binding_key)?;
                    // Dropped before the checkpoint is stored: the file goes with it.
                    store_checkpoint(&cp, cp_path).await?;
                    partial.keep();
                    if let Some(lock) = lock {
                        lock.clear_record();
                    }
                }
                (cp, partial, checkpointed)
            }
        };
        match self
            .fetch_missing(
                key,
                &cp,
                cp_path,
                &partial,
                &pin,
                format,
                size,
                binding_key,
                checkpointed,
                opened,
                &report,
            )
            .await
        {
            Ok((received, resumed_bytes)) => {
                self.opts.handoff.signal();
                // Every byte is in place and synced: publish it under its name.
                partial.publish(dest, size, self.opts.durable)?;
                if checkpointed {
                    remove_finished_checkpoint(cp_path, &report);
                }
                report.emit(ProgressEvent::Finished);
                Ok(DownloadFileOutput {
                    size,
                    e_tag: Some(e_tag),
                    part_size: cp.part_size,
                    resumed_bytes,
                    bytes_received: received,
                    restarted,
                })
            }
            Err(e) => {
                // Nothing to resume from (no checkpoint, the object changed, or it failed
                // verification): no decrypted byte stays on disk.
                if !checkpointed
                    || e.kind() == ErrorKind::Changed
                    || e.kind().is_integrity_failure()
                {
                    partial.discard();
                    if checkpointed {
                        let _ = Checkpoint::remove(cp_path);
                    }
                }
                Err(e)
            }
        }
    }

    /// Fetches the ranges the checkpoint does not hold; returns (bytes fetched, bytes resumed).
    /// `checkpointed`: record the ranges in the checkpoint file (syncing the data first).
    ///
    /// The checkpoint unit (`cp.part_size`, a "range") and the request are separate: the
    /// missing ranges are grouped into about `concurrency` contiguous spans, each fetched with
    /// one GET, and each range is recorded as soon as its bytes are written. Long requests
    /// keep the per-request cost (latency, a fresh read on the server) out of the throughput;
    /// small ranges keep a resume fine-grained. A stream that has finished its span takes the
    /// back half of the longest one still running (see [`super::spans`]), so one slow
    /// connection does not hold the download back.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_missing(
        &self,
        key: &str,
        cp: &Checkpoint,
        cp_path: &Path,
        partial: &PartialFile,
        pin: &Pin,
        format: Decode,
        size: u64,
        binding_key: ContentMaterial,
        checkpointed: bool,
        opened: Option<(Body, (u64, u64))>,
        report: &Reporter,
    ) -> Result<(u64, u64)> {
        let unit = cp.part_size;
        let align = match format {
            Decode::Gocryptfs { .. } => crate::gocryptfs::BLOCK as u64,
            Decode::Read(_) => 16,
        };
        if unit == 0 || !unit.is_multiple_of(align) {
            return Err(Error::new(
                ErrorKind::InvalidCheckpoint,
                format!("checkpoint {}: bad part size {unit}", cp_path.display()),
            ));
        }
        let resumed_bytes: u64 = cp.parts.iter().map(|p| p.size).sum();
        report.add(resumed_bytes);
        report.emit(ProgressEvent::Started {
            resumed_bytes,
            resumed_parts: cp.parts.len() as u32,
        });
        let count = u32::try_from(size.div_ceil(unit))
            .map_err(|_| Error::invalid_input("too many ranges for one download"))?;
        let done: std::collections::HashSet<u32> = cp.parts.iter().map(|p| p.part_number).collect();
        let missing: Vec<u32> = (1..=count).filter(|n| !done.contains(n)).collect();
        let spans = spans(&missing, self.opts.config.concurrency, unit);
        let streams = spans.len().min(self.opts.config.concurrency.max(1));
        // The pinning GET's response serves range 1 if it is exactly that range and missing.
        let first_range = size.min(unit).checked_sub(1).map(|last| (0, last));
        let opened = opened
            .filter(|(_, range)| Some(*range) == first_range && !done.contains(&1))
            .map(|(body, _)| body);

        let writer = Checkpointer::start(
            cp.clone(),
            cp_path.to_owned(),
            binding_key,
            if checkpointed {
                Some(partial.handle()?)
            } else {
                None
            },
            checkpointed,
        );
        let sink = writer.sender();
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fetcher = Arc::new(Fetcher {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            file: Arc::new(partial.handle()?),
            pin: pin.clone(),
            format,
            size,
            unit,
            board: Board::new(spans),
            opened: std::sync::Mutex::new(opened),
            sink,
            report: report.clone(),
            received: received.clone(),
            max_attempts: self.opts.config.max_attempts,
        });
        // Each stream takes a span, fetches it, and takes the next (or part of a running
        // one) until none is left; the last one out drops the checkpoint writer's sender.
        let jobs: Vec<_> = (0..streams).map(|_| fetcher.clone().stream()).collect();
        drop(fetcher);
        let run = run_bounded(self.opts.config.concurrency, jobs, |()| Ok(())).await;
        settle(run, writer).await?;
        Ok((
            received.load(std::sync::atomic::Ordering::Relaxed),
            resumed_bytes,
        ))
    }
}

/// The plaintext of one response, as it streams.
type Body = std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes>> + Send>>;

/// How a download decodes the bytes it fetches.
#[derive(Clone)]
enum Decode {
    /// As a reader does (this crate's envelope, veTurboIO).
    Read(Format),
    /// Stored blocks of a gocryptfs file: id from its header, stored size.
    Gocryptfs {
        keys: Arc<GocryptfsKeys>,
        file_id: [u8; 16],
        stored_size: u64,
    },
}

/// What a download learnt about the object before fetching it.
struct Pinned {
    pin: Pin,
    format: Decode,
    /// Plaintext size.
    size: u64,
    /// What the checkpoint records of the object's encryption.
    recorded: BTreeMap<String, String>,
    /// The key the checkpoint is bound to.
    binding: ContentMaterial,
    /// The pinning GET's plaintext, not read yet, and the range it covers (the first).
    opened: Option<(Body, (u64, u64))>,
}

impl Pinned {
    fn envelope(
        pin: Pin,
        material: Option<ContentMaterial>,
        envelope: Option<&Envelope>,
        opened: Option<(Body, (u64, u64))>,
    ) -> Self {
        // Checkpoints of plain objects are bound to an all-zero key (nothing secret to bind).
        let binding = material
            .clone()
            .unwrap_or_else(|| ContentMaterial::from_parts([0; 32], [0; 16]));
        let recorded = envelope
            .map(|e| e.to_metadata().into_iter().collect())
            .unwrap_or_default();
        Self {
            size: pin.size,
            pin,
            format: Decode::Read(Format::Envelope(material)),
            recorded,
            binding,
            opened,
        }
    }
}

/// What a download's streams share: the object, the file, and the [`Board`] of ranges.
struct Fetcher {
    bucket: SharedHandle,
    key: String,
    file: Arc<std::fs::File>,
    pin: Pin,
    format: Decode,
    /// Plaintext size of the object.
    size: u64,
    /// Range (checkpoint unit) size.
    unit: u64,
    board: Board,
    /// The plaintext of the pinning GET's response when it is exactly range 1 (missing):
    /// whoever takes the span of range 1 reads it instead of asking again.
    opened: std::sync::Mutex<Option<Body>>,
    sink: super::PartSink,
    report: Reporter,
    received: Arc<std::sync::atomic::AtomicU64>,
    max_attempts: u32,
}

impl Fetcher {
    /// One stream: takes spans from the board until none is left. After a failure the board
    /// hands out nothing more (the other streams finish what they hold, so it is recorded).
    async fn stream(self: Arc<Self>) -> Result<()> {
        while let Some(claim) = self.board.take() {
            let opened = match claim.first {
                1 => self.opened.lock().ok().and_then(|mut o| o.take()),
                _ => None,
            };
            let outcome = self.fetch(claim, opened).await;
            self.board.finish(claim.lane);
            if outcome.is_err() {
                self.board.stop();
            }
            outcome?;
        }
        Ok(())
    }

    /// Fetches the claimed span with one GET (up to the lane's end, which another stream may
    /// lower meanwhile); after a retryable failure it continues from the first range not yet
    /// written. Each range gets `max_attempts` attempts: the stream that broke inside a range
    /// was that range's attempt.
    ///
    /// `opened`: the plaintext of a response already open on the span's first range (the
    /// pinning GET's).
    #[tracing::instrument(level = "debug", name = "get_ranges", skip_all, fields(key = %self.key, first = claim.first, end = self.board.end(claim.lane)))]
    async fn fetch(&self, claim: Claim, mut opened: Option<Body>) -> Result<()> {
        let mut next = claim.first;
        let mut attempt = 1;
        loop {
            let end = self.board.end(claim.lane);
            if next >= end {
                break;
            }
            let before = next;
            // The response already open covers the first range only; then one GET for the rest.
            let (response, stop) = match opened.take() {
                Some(body) => (Ok(body), next + 1),
                None => (self.request(next, end).await, end),
            };
            let outcome = match response {
                Ok(out) => self.write_body(claim.lane, out, &mut next, stop).await,
                Err(e) => Err(e),
            };
            // A response that ends cleanly short of its ranges is a truncated one (the next
            // attempt asks again), never a reason to ask forever.
            let outcome = match outcome {
                Ok(()) if next < stop.min(self.board.end(claim.lane)) => Err(Error::new(
                    ErrorKind::Truncated,
                    format!("the response ended before range {next} was complete"),
                )
                .with_retryable(true)),
                other => other,
            };
            match outcome {
                Ok(()) => {}
                Err(e) => {
                    if next > before {
                        attempt = 1; // a new range: the broken stream was its first attempt
                    }
                    if !worth_retrying(&e) || attempt >= self.max_attempts {
                        return Err(e);
                    }
                    attempt += 1;
                    self.report.emit(ProgressEvent::Retrying {
                        part_number: next,
                        attempt,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        tracing::debug!("ranges written");
        Ok(())
    }

    /// Byte offset where range `n` starts (the object's end for ranges past it).
    fn start_of(&self, n: u32) -> u64 {
        (u64::from(n.saturating_sub(1)) * self.unit).min(self.size)
    }

    /// One GET of ranges `next..end`: its plaintext, decrypted and verified as it streams.
    async fn request(&self, next: u32, end: u32) -> Result<Body> {
        let start = self.start_of(next);
        let stop = self.start_of(end);
        let get = GetObjectFluentBuilder::new(self.bucket.clone()).key(&self.key);
        let get = match &self.format {
            Decode::Read(Format::Envelope(material)) => get
                .range(ByteRange::Inclusive {
                    first: start,
                    last: stop - 1,
                })
                .pinned(self.pin.clone(), material.clone()),
            Decode::Read(Format::Veturbo { offset, key }) => get
                .range(ByteRange::Inclusive {
                    first: offset + start,
                    last: offset + stop - 1,
                })
                .pinned(self.pin.clone(), None)
                .stored(Some(key.cipher_at(start)?)),
            Decode::Gocryptfs {
                keys,
                file_id,
                stored_size,
            } => {
                let (first, last) =
                    crate::gocryptfs::blocks::stored_span(start, stop, *stored_size);
                let out = get
                    .range(ByteRange::Inclusive {
                        first,
                        last: last - 1,
                    })
                    .pinned(self.pin.clone(), None)
                    .stored(None)
                    .send()
                    .await?;
                return Ok(Box::pin(DecryptBlocks::new(
                    out.body,
                    keys.clone(),
                    *file_id,
                    start / crate::gocryptfs::BLOCK as u64,
                    self.key.clone(),
                )));
            }
        };
        Ok(Box::pin(get.send().await?.body))
    }

    /// Writes `body`, the plaintext of ranges `*next..end`; advances `*next` past every range
    /// written and recorded. Stops early (dropping the response) when another stream has
    /// taken the ranges from some point on: nothing past the lane's end is written.
    async fn write_body(&self, lane: u64, mut body: Body, next: &mut u32, end: u32) -> Result<()> {
        // Decrypted chunks are gathered to about 1 MiB and written with positioned writes on
        // the blocking pool; a range is recorded once all of its bytes are written.
        let mut pending: Vec<bytes::Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut at = self.start_of(*next);
        loop {
            // A body that breaks off: what arrived is genuine plaintext of the pinned version,
            // so it is written and its whole ranges recorded before the error is returned
            // (the retry or the next run then starts after them).
            let (chunk, failure) = match body.next().await.transpose() {
                Ok(c) => (c, None),
                Err(e) => (None, Some(e)),
            };
            let end_of_body = chunk.is_none();
            if let Some(c) = chunk {
                pending_len += c.len();
                pending.push(c);
            }
            if pending_len >= WRITE_BATCH || (end_of_body && pending_len > 0) {
                // Another stream may have taken the ranges from the lane's end on.
                let limit = self.start_of(end.min(self.board.end(lane)));
                let keep = usize::try_from(limit.saturating_sub(at)).unwrap_or(usize::MAX);
                let cut = keep < pending_len;
                let mut batch = std::mem::take(&mut pending);
                if cut {
                    trim(&mut batch, keep);
                }
                let (f, pos) = (self.file.clone(), at);
                at += pending_len.min(keep) as u64;
                pending_len = 0;
                tokio::task::spawn_blocking(move || {
                    crate::partial::write_chunks_at(&f, &batch, pos)
                })
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("writer task failed: {e}")))?
                .map_err(|e| Error::io("cannot write the partial download file", e))?;
                self.record_written(lane, next, end, at)?;
                // Cut short: the rest of the response belongs to another stream's GET.
                if cut || (*next < end && *next >= self.board.end(lane)) {
                    return Ok(());
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if end_of_body {
                return Ok(());
            }
        }
    }

    /// Records every range of `*next..end` that lies wholly below `written` and is still the
    /// lane's (the checkpoint writer syncs the file before it stores them), and advances
    /// `*next` past them.
    fn record_written(&self, lane: u64, next: &mut u32, end: u32, written: u64) -> Result<()> {
        // Ranges wholly written: those that end at or below `written`.
        let mut whole = *next;
        while whole < end && (u64::from(whole) * self.unit).min(self.size) <= written {
            whole += 1;
        }
        if whole == *next {
            return Ok(());
        }
        let upto = self.board.commit(lane, whole);
        while *next < upto {
            let len = self.start_of(*next + 1) - self.start_of(*next);
            self.sink.send(DonePart {
                part_number: *next,
                e_tag: None,
                size: len,
                tags: None,
            })?;
            self.received
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
            self.report.add(len);
            self.report.emit(ProgressEvent::PartDone {
                part_number: *next,
                bytes: len,
            });
            *next += 1;
        }
        Ok(())
    }
}

/// Shortens `chunks` to their first `keep` bytes.
fn trim(chunks: &mut Vec<bytes::Bytes>, mut keep: usize) {
    chunks.retain_mut(|c| {
        let take = c.len().min(keep);
        keep -= take;
        c.truncate(take);
        take > 0
    });
}

/// Splits the first `n` bytes off `body`: (those bytes, the rest of the body).
async fn split_off(mut body: Body, n: usize) -> Result<(bytes::Bytes, Body)> {
    let mut head = bytes::BytesMut::new();
    while head.len() < n {
        match body.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "the response ended after {} of its first {n} bytes",
                        head.len()
                    ),
                )
                .with_retryable(true));
            }
        }
    }
    let rest = head.split_off(n).freeze();
    let body = futures::stream::once(async move { Ok(rest) }).chain(body);
    Ok((head.freeze(), Box::pin(body)))
}

/// Bytes gathered before one positioned write of a download.
const WRITE_BATCH: usize = 1 << 20;
