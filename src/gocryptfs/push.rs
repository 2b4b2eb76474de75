//! Writing a plain local directory into a bucket prefix as a gocryptfs v2 tree, with no FUSE,
//! no root and no local copy: names and contents are encrypted as they are uploaded, small
//! files several at once, large ones through the transfer engine as multipart uploads whose
//! parts hold whole stored blocks (the first part also the file header), parts in parallel.
//!
//! A push is resumable: a checkpoint (see `push_state`) keeps the tree's config, directory
//! IVs and the files already stored, and each large file keeps a part-level checkpoint, so a
//! rerun after a kill (with the same password) continues the same tree and sends only what is
//! missing. `gocryptfs.conf` is written last: a tree without it is visibly unfinished.
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! use cryptobucket::gocryptfs::push::push;
//! let out = push(&bucket, "model/", "eas/model/").password("secret").send().await?;
//! println!("{} files, {} bytes", out.stats.files, out.stats.bytes);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{StreamExt as _, TryStreamExt as _};
use zeroize::Zeroizing;

use super::push_state::PushState;
use super::tree::TreeStats;
use super::{
    BLOCK, BLOCK_OVERHEAD, CONF_NAME, DIRIV_NAME, GocryptfsConf, GocryptfsKeys, HEADER_LEN,
    MasterKey, file_header, long_name, new_file_id, random, stored_size,
};
use crate::checkpoint::LocalFile;
use crate::cipher::ContentMaterial;
use crate::engine::{Handoff, Reporter, TransferConfig, until_handed_off};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedHandle;
use crate::partial::TransferLock;
use crate::progress::{ProgressEvent, ProgressListener};
use crate::resumable::stored::{StoredLayout, StoredUpload, StoredUploadOutput};
use crate::resumable::{TransferOptions, absolute, local_file, same_source};

/// Stored blocks per multipart part (8,388,096 bytes: whole blocks, about 8 MiB).
const PART_BLOCKS: u64 = 2032;
/// Files up to this size go up in one PUT.
const SINGLE_MAX: u64 = 16 << 20;
/// The push checkpoint is rewritten at most this often while small files finish.
const STATE_INTERVAL: Duration = Duration::from_secs(1);

/// A file to upload: path relative to the tree, local path, object key, how it looks.
struct Job {
    rel: String,
    path: PathBuf,
    key: String,
    local: LocalFile,
}

enum Secret {
    Password(Zeroizing<String>, u8),
    Keys(GocryptfsConf, MasterKey),
}

/// Builder of a tree push; see [`push`].
pub struct PushDirBuilder {
    handle: SharedHandle,
    src: PathBuf,
    prefix: String,
    secret: Option<Secret>,
    opts: TransferOptions,
}

impl std::fmt::Debug for PushDirBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushDirBuilder")
            .field("src", &self.src)
            .field("prefix", &self.prefix)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PushOutput {
    /// Files, directories and plaintext bytes of the tree.
    pub stats: TreeStats,
    /// Files an interrupted earlier run had stored already (not sent again).
    pub resumed_files: u64,
    /// Plaintext bytes taken over from an interrupted earlier run (whole files and parts).
    pub resumed_bytes: u64,
    /// Why parts of an earlier run were not continued (a file changed, ...), if any were not.
    pub restarted: Vec<String>,
}

/// Encrypts the local directory `src` into `prefix` of `bucket` as a gocryptfs v2 tree. Give
/// a password ([`PushDirBuilder::password`]) or a config with its master key
/// ([`PushDirBuilder::keys`]), then [`send`](PushDirBuilder::send).
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::gocryptfs::push::push;
/// let out = push(&bucket, "model/", "eas/model/")
///     .password("correct horse battery staple")
///     .concurrency(16)
///     .send()
///     .await?;
/// println!("{} files ({} taken over from a killed run)", out.stats.files, out.resumed_files);
/// # Ok(()) }
/// ```
pub fn push(bucket: &crate::CryptoBucket, src: impl Into<PathBuf>, prefix: &str) -> PushDirBuilder {
    let handle = bucket.inner.clone();
    PushDirBuilder {
        opts: TransferOptions::new(*handle.transfer_config()),
        handle,
        src: src.into(),
        prefix: prefix.to_owned(),
        secret: None,
    }
}

/// Encrypts `src` into `prefix` of `bucket` as a gocryptfs tree with the given config and
/// master key: [`push`] with [`keys`](PushDirBuilder::keys). Refuses a prefix that already
/// holds a `gocryptfs.conf`.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::gocryptfs::{GocryptfsConf, push::push_dir};
/// let (conf, master) = GocryptfsConf::create("secret", 16)?;
/// let stats = push_dir(&bucket, "model/".as_ref(), "eas/model/", &conf, &master).await?;
/// println!("{} files, {} bytes", stats.files, stats.bytes);
/// # Ok(()) }
/// ```
pub async fn push_dir(
    bucket: &crate::CryptoBucket,
    src: &Path,
    prefix: &str,
    conf: &GocryptfsConf,
    master: &MasterKey,
) -> Result<TreeStats> {
    push(bucket, src, prefix)
        .keys(conf.clone(), master.clone())
        .send()
        .await
        .map(|o| o.stats)
}

impl PushDirBuilder {
    /// The tree's password: a new tree gets a fresh master key wrapped under it (scrypt cost
    /// [`scrypt_log_n`](Self::scrypt_log_n)); a rerun after a kill unlocks the interrupted
    /// push's config with it.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        let log_n = match &self.secret {
            Some(Secret::Password(_, n)) => *n,
            _ => 16,
        };
        self.secret = Some(Secret::Password(Zeroizing::new(password.into()), log_n));
        self
    }

    /// scrypt cost as log2(N) for a new tree's config (default 16, gocryptfs's own; 10..=20).
    pub fn scrypt_log_n(mut self, log_n: u8) -> Self {
        if let Some(Secret::Password(_, n)) = &mut self.secret {
            *n = log_n;
        } else {
            self.secret = Some(Secret::Password(Zeroizing::new(String::new()), log_n));
        }
        self
    }

    /// Uses this config and its master key (from [`GocryptfsConf::create`]). A rerun after a
    /// kill must give the same config.
    pub fn keys(mut self, conf: GocryptfsConf, master: MasterKey) -> Self {
        self.secret = Some(Secret::Keys(conf, master));
        self
    }

    /// Files (and parts of large files) in flight at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.opts.config.concurrency = n;
        self
    }

    /// Attempts per part or small file, the first included (at least 1); only retryable
    /// failures are tried again.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.opts.config.max_attempts = n;
        self
    }

    /// Replaces the transfer configuration (concurrency, attempts, failed-upload policy; the
    /// part size is fixed by the format: 2032 stored blocks).
    pub fn transfer_config(mut self, config: TransferConfig) -> Self {
        self.opts.config = config;
        self
    }

    /// Where the checkpoints live while the push is unfinished (default
    /// [`checkpoint::default_dir`](crate::checkpoint::default_dir)).
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.checkpoint_dir = Some(dir.into());
        self
    }

    /// Keep checkpoints and resume from them (default `true`). When `false`, a failed push
    /// aborts its multipart uploads and leaves no checkpoint.
    pub fn resumable(mut self, resumable: bool) -> Self {
        self.opts.resumable = resumable;
        self
    }

    /// Progress of the whole tree (plaintext bytes).
    pub fn progress(mut self, listener: ProgressListener) -> Self {
        self.opts.progress = Some(listener);
        self
    }

    /// Stops the push when `token` is cancelled ([`ErrorKind::Cancelled`]); a resumable push
    /// keeps its checkpoints, so the same call continues it.
    pub fn cancellation_token(mut self, token: crate::CancellationToken) -> Self {
        self.opts.cancel = Some(token);
        self
    }

    /// Pushes (or continues pushing) the tree.
    pub async fn send(self) -> Result<PushOutput> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.resumable);
        crate::engine::run_transfer(
            tracing::info_span!(
                "gocryptfs_push",
                bucket = %self.handle.bucket(),
                prefix = %self.prefix,
                src = ?self.src
            ),
            cancel.as_ref(),
            "the gocryptfs push",
            resumable,
            Box::pin(self.run()),
        )
        .await
    }

    async fn run(self) -> Result<PushOutput> {
        self.opts.validate()?;
        let handle = self.handle.clone();
        let src = absolute(&self.src)?;
        let mut prefix = self.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let conf_key = format!("{prefix}{CONF_NAME}");
        let state_path =
            self.opts
                .checkpoint_path("push-gocryptfs", handle.bucket(), &prefix, &src);
        let _lock = TransferLock::acquire(&state_path, "push")?;
        let previous = if self.opts.resumable {
            let s = PushState::load(&state_path)?;
            if let Some(s) = &s {
                s.check_identity(&state_path, handle.bucket(), &prefix, &src)?;
            }
            s
        } else {
            None
        };
        let (conf, master) = match (self.secret, &previous) {
            (None, _) => {
                return Err(Error::invalid_input(
                    "a push needs the tree's password or keys (call .password(...) or .keys(...))",
                ));
            }
            (Some(Secret::Password(pw, _)), Some(old)) => {
                let conf = GocryptfsConf::from_json(&old.conf)?;
                let master = conf.unlock(&pw).map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!(
                            "the interrupted push of {} (checkpoint {}) used another password:                              give that one, or delete the checkpoint to start a new tree",
                            src.display(),
                            state_path.display()
                        ),
                    )
                })?;
                (conf, master)
            }
            (Some(Secret::Password(pw, log_n)), None) => {
                if pw.is_empty() {
                    return Err(Error::invalid_input("the tree's password is empty"));
                }
                GocryptfsConf::create(&pw, log_n)?
            }
            (Some(Secret::Keys(conf, master)), old) => {
                if let Some(old) = old
                    && old.conf != conf.to_json()
                {
                    return Err(Error::new(
                        ErrorKind::InvalidCheckpoint,
                        format!(
                            "the interrupted push of {} (checkpoint {}) made a tree with another                              config; give that one, or delete the checkpoint to start over",
                            src.display(),
                            state_path.display()
                        ),
                    ));
                }
                (conf, master)
            }
        };
        let keys = Arc::new(GocryptfsKeys::new(&master));
        let mut state = match previous {
            Some(s) => {
                s.verify(&state_path, keys.checkpoint_key())?;
                s
            }
            None => PushState::new(handle.bucket(), &prefix, &src, conf.to_json()),
        };
        let conf_exists = crate::ops::head_object::HeadObjectFluentBuilder::new(handle.clone())
            .key(&conf_key)
            .send()
            .await
            .is_ok();

        let mut small: Vec<(String, Bytes)> = Vec::new();
        let jobs = walk(&src, &prefix, &keys, &mut state, &mut small)?;
        let mut stats = TreeStats {
            dirs: state.dirs.len() as u64,
            ..TreeStats::default()
        };
        for j in &jobs {
            stats.files += 1;
            stats.bytes += j.local.size;
        }
        if conf_exists {
            // Finished by a run that died before removing its checkpoint?
            if self.opts.resumable
                && !state.done.is_empty()
                && jobs.iter().all(|j| is_done(&state, j))
            {
                let _ = std::fs::remove_file(&state_path);
                return Ok(PushOutput {
                    stats,
                    resumed_files: stats.files,
                    resumed_bytes: stats.bytes,
                    restarted: Vec::new(),
                });
            }
            return Err(Error::invalid_input(format!(
                "s3://{}/{conf_key} exists; refusing to write a second gocryptfs tree over it",
                handle.bucket()
            )));
        }
        // The IVs are recorded before any object that depends on them is stored.
        if self.opts.resumable {
            state.store(&state_path, keys.checkpoint_key())?;
        }
        let report = Reporter::new(self.opts.progress.clone(), stats.bytes);
        let (todo, done): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !is_done(&state, j));
        let mut out = PushOutput {
            stats,
            resumed_files: done.len() as u64,
            resumed_bytes: done.iter().map(|j| j.local.size).sum(),
            restarted: Vec::new(),
        };
        report.add(out.resumed_bytes);
        report.emit(ProgressEvent::Started {
            resumed_bytes: out.resumed_bytes,
            resumed_parts: out.resumed_files as u32,
        });

        let concurrency = self.opts.config.concurrency;
        futures::stream::iter(small)
            .map(|(key, body)| put(&handle, key, body))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        // Small files several at once; large ones one after another, their parts in parallel.
        let (little, large): (Vec<Job>, Vec<Job>) =
            todo.into_iter().partition(|j| j.local.size <= SINGLE_MAX);
        let mut last_store = Instant::now();
        let mut unsaved = false;
        let mut small_files = futures::stream::iter(little.into_iter().map(|j| {
            let (keys, h, report) = (keys.clone(), handle.clone(), report.clone());
            async move {
                let body = tokio::task::spawn_blocking({
                    let (keys, path) = (keys.clone(), j.path.clone());
                    move || encrypt_small(&keys, &path)
                })
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("encoder task failed: {e}")))??;
                put(&h, j.key.clone(), body).await?;
                report.add(j.local.size);
                report.emit(ProgressEvent::PartDone {
                    part_number: 1,
                    bytes: j.local.size,
                });
                Ok::<_, Error>(j)
            }
        }))
        .buffer_unordered(concurrency);
        let mut failed = None;
        while let Some(r) = small_files.next().await {
            match r {
                Ok(j) => {
                    state.done.insert(j.rel, j.local);
                    unsaved = true;
                    if self.opts.resumable && last_store.elapsed() >= STATE_INTERVAL {
                        state.store(&state_path, keys.checkpoint_key())?;
                        (last_store, unsaved) = (Instant::now(), false);
                    }
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        drop(small_files);
        if self.opts.resumable && unsaved {
            state.store(&state_path, keys.checkpoint_key())?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // Each starts once the one before has sent its parts: a file's completion overlaps
        // the next one's parts (see `Handoff`). After a failure no new file starts; the
        // running one finishes and is recorded.
        let mut running = FuturesUnordered::new();
        let mut failed = None;
        let mut record = |j: Job, r: Result<StoredUploadOutput>| -> Result<()> {
            let sent = r?;
            out.resumed_bytes += sent.resumed_bytes;
            out.restarted.extend(sent.restarted);
            state.done.insert(j.rel, j.local);
            if self.opts.resumable {
                state.store(&state_path, keys.checkpoint_key())?;
            }
            Ok(())
        };
        for (n, j) in large.into_iter().enumerate() {
            let (handoff, parts_sent) = Handoff::new();
            // The options (with the file's handoff) are a temporary: only the upload holds the
            // handoff, so the wait below also ends when the upload drops it.
            let started = StoredUpload::prepare(
                &handle,
                &j.key,
                &j.path,
                "upload-gocryptfs",
                &TransferOptions {
                    handoff,
                    ..self.opts.clone()
                },
            )
            .and_then(|upload| {
                let file_id = match upload.recorded().and_then(|p| p.get(FILE_ID_PARAM)) {
                    Some(hex_id) => parse_file_id(hex_id)?,
                    None => new_file_id()?,
                };
                let layout = Arc::new(FileLayout {
                    keys: keys.clone(),
                    file_id,
                    size: upload.source_size(),
                });
                Ok((upload, layout))
            });
            let (upload, layout) = match started {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let report = report.clone();
            running.push(async move {
                let r = upload.run(layout, &report).await;
                (n, (j, r))
            });
            until_handed_off(&mut running, n, parts_sent, |(j, r)| {
                if let Err(e) = record(j, r) {
                    failed.get_or_insert(e);
                }
            })
            .await;
            if failed.is_some() {
                break;
            }
        }
        while let Some((_, (j, r))) = running.next().await {
            if let Err(e) = record(j, r) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // The config last: a tree without it is visibly unfinished.
        put(&handle, conf_key, Bytes::from(conf.to_json().into_bytes())).await?;
        if self.opts.resumable {
            let _ = std::fs::remove_file(&state_path);
        }
        report.emit(ProgressEvent::Finished);
        Ok(out)
    }
}

/// True when the checkpoint records `job` as stored and the file has not changed since.
fn is_done(state: &PushState, job: &Job) -> bool {
    state
        .done
        .get(&job.rel)
        .is_some_and(|then| same_source(&job.local, then))
}

/// Walks `src`: directory IVs (from the checkpoint, or new ones recorded in it), the small
/// objects of every directory (IV, long-name files) into `small`, and the files to store.
fn walk(
    src: &Path,
    prefix: &str,
    keys: &GocryptfsKeys,
    state: &mut PushState,
    small: &mut Vec<(String, Bytes)>,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut dirs = vec![(src.to_owned(), String::new(), prefix.to_owned())];
    while let Some((dir, rel, stored)) = dirs.pop() {
        let iv = match state.dirs.get(&rel) {
            Some(hex_iv) => {
                let mut iv = [0u8; 16];
                hex::decode_to_slice(hex_iv, &mut iv).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidCheckpoint,
                        "the push checkpoint holds a directory IV that is not 16 bytes of hex",
                    )
                })?;
                iv
            }
            None => {
                let iv = random::<16>()?;
                state.dirs.insert(rel.clone(), hex::encode(iv));
                iv
            }
        };
        small.push((format!("{stored}{DIRIV_NAME}"), Bytes::copy_from_slice(&iv)));
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                Error::invalid_input(format!("{:?} is not a UTF-8 name", e.path()))
            })?;
            let full = keys.encrypt_name(&iv, name)?;
            let on_disk = long_name(&full);
            if on_disk != full {
                small.push((
                    format!("{stored}{on_disk}.name"),
                    Bytes::from(full.into_bytes()),
                ));
            }
            let child = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::metadata(e.path())
                .map_err(|err| Error::io(format!("cannot stat {}", e.path().display()), err))?;
            if meta.is_dir() {
                dirs.push((e.path(), child, format!("{stored}{on_disk}/")));
            } else if meta.is_file() {
                jobs.push(Job {
                    rel: child,
                    local: local_file(&e.path(), &meta),
                    path: e.path(),
                    key: format!("{stored}{on_disk}"),
                });
            } else {
                return Err(Error::invalid_input(format!(
                    "{} is neither a file nor a directory (object stores hold no special files)",
                    e.path().display()
                )));
            }
        }
    }
    Ok(jobs)
}

/// A small file, read and encrypted whole (on a blocking thread).
fn encrypt_small(keys: &GocryptfsKeys, path: &Path) -> Result<Bytes> {
    let plain = Zeroizing::new(
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
    );
    let mut stored = Vec::with_capacity(stored_size(plain.len() as u64) as usize);
    if !plain.is_empty() {
        let id = new_file_id()?;
        stored.extend_from_slice(&file_header(&id));
        keys.encrypt_blocks_into(&id, 0, &plain, &mut stored)?;
    }
    Ok(Bytes::from(stored))
}

async fn put(handle: &SharedHandle, key: String, body: Bytes) -> Result<()> {
    crate::ops::put_stored::put_stored(handle, &key, body, "PutObject (gocryptfs)").await
}

const FILE_ID_PARAM: &str = "gocryptfs-file-id";

fn parse_file_id(text: &str) -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text, &mut id).map_err(|_| {
        Error::new(
            ErrorKind::InvalidCheckpoint,
            "a gocryptfs upload checkpoint holds a file id that is not 16 bytes of hex",
        )
    })?;
    Ok(id)
}

/// A large file as a gocryptfs stored file, in parts of [`PART_BLOCKS`] stored blocks (the
/// first part also holds the 18-byte header).
struct FileLayout {
    keys: Arc<GocryptfsKeys>,
    file_id: [u8; 16],
    size: u64,
}

impl FileLayout {
    fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK as u64)
    }
}

impl StoredLayout for FileLayout {
    fn kind(&self) -> &'static str {
        "upload-gocryptfs"
    }

    fn source_size(&self) -> u64 {
        self.size
    }

    fn stored_size(&self) -> u64 {
        stored_size(self.size)
    }

    fn part_size(&self) -> u64 {
        PART_BLOCKS * (BLOCK + BLOCK_OVERHEAD) as u64
    }

    fn part_count(&self) -> u32 {
        self.blocks().div_ceil(PART_BLOCKS).max(1) as u32
    }

    fn source_range(&self, n: u32) -> (u64, u64) {
        let first = u64::from(n - 1) * PART_BLOCKS;
        let start = first * BLOCK as u64;
        let end = ((first + PART_BLOCKS) * BLOCK as u64).min(self.size);
        (start, end.saturating_sub(start))
    }

    fn stored_len(&self, n: u32) -> u64 {
        let (_, len) = self.source_range(n);
        let header = if n == 1 { HEADER_LEN as u64 } else { 0 };
        header + len + len.div_ceil(BLOCK as u64) * BLOCK_OVERHEAD as u64
    }

    fn encode(&self, n: u32, source: &[u8]) -> Result<Vec<u8>> {
        let mut body = Vec::with_capacity(self.stored_len(n) as usize);
        if n == 1 {
            body.extend_from_slice(&file_header(&self.file_id));
        }
        let first = u64::from(n - 1) * PART_BLOCKS;
        self.keys
            .encrypt_blocks_into(&self.file_id, first, source, &mut body)?;
        Ok(body)
    }

    fn encode_in_place(&self, n: u32, buf: &mut [u8]) -> Result<()> {
        let (_, len) = self.source_range(n);
        let out_at = if n == 1 {
            buf[..HEADER_LEN].copy_from_slice(&file_header(&self.file_id));
            HEADER_LEN
        } else {
            0
        };
        let first = u64::from(n - 1) * PART_BLOCKS;
        self.keys
            .encrypt_blocks_in_place(&self.file_id, first, buf, out_at, len as usize)
    }

    fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(FILE_ID_PARAM.to_owned(), hex::encode(self.file_id))])
    }

    fn binding(&self) -> ContentMaterial {
        ContentMaterial::from_parts(*self.keys.checkpoint_key(), self.file_id)
    }
}
