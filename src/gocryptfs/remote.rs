//! Reading a gocryptfs tree stored in a bucket (its files as plain objects under a prefix, as
//! PAI-EAS keeps them in OSS) without mounting anything: list a directory with plaintext
//! names, read any byte range of a file (only the blocks it covers are fetched, every tag
//! checked), or copy the whole tree to a local directory.
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
//! let tree = GocryptfsRemote::open(&bucket, "models/llm/", Unlock::password("secret")).await?;
//! for e in tree.list("").await? {
//!     println!("{} {}", e.name, e.size);
//! }
//! let header = tree.read("model.safetensors", 0, 8).await?;
//! # let _ = header; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use zeroize::Zeroizing;

use super::blocks::stored_span;
use super::tree::TreeStats;
use super::{
    BLOCK, CONF_NAME, DIRIV_NAME, GocryptfsConf, GocryptfsKeys, HEADER_LEN, LONGNAME_PREFIX,
    MasterKey, long_name, parse_file_header, plain_size,
};
use crate::engine::{Reporter, TransferConfig, with_retries};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedHandle;
use crate::ops::get_object::{GetObjectFluentBuilder, Pin};
use crate::ops::head_object::HeadObjectFluentBuilder;
use crate::parts::PartSize;
use crate::progress::ProgressListener;
use crate::range::ByteRange;
use crate::resumable::{Item, TransferOptions, run_tree};

/// How to unlock a tree.
#[derive(Debug)]
#[non_exhaustive]
pub enum Unlock {
    /// The password (scrypt, as `gocryptfs.conf` says).
    Password(Zeroizing<String>),
    /// The raw master key (from a KMS, or released by attestation); the config is still read
    /// and its feature flags checked.
    MasterKey(MasterKey),
}

impl Unlock {
    /// A password.
    pub fn password(p: impl Into<String>) -> Self {
        Self::Password(Zeroizing::new(p.into()))
    }
}

/// One entry of a listed directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteEntry {
    /// Plaintext name.
    pub name: String,
    /// A directory?
    pub is_dir: bool,
    /// Plaintext size (files).
    pub size: u64,
    /// The stored object key (files) or prefix (directories, ending in `/`).
    pub stored: String,
}

/// A file of a remote tree, resolved: see [`GocryptfsRemote::open_file`].
#[derive(Debug, Clone)]
pub struct RemoteFile {
    key: String,
    size: u64,
    pin: Pin,
    file_id: [u8; 16],
}

impl RemoteFile {
    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// A gocryptfs tree under a bucket prefix, unlocked.
#[derive(Debug)]
pub struct GocryptfsRemote {
    handle: SharedHandle,
    prefix: String,
    keys: Arc<GocryptfsKeys>,
}

impl GocryptfsRemote {
    /// Reads `PREFIX/gocryptfs.conf` and unlocks the tree.
    pub async fn open(bucket: &crate::CryptoBucket, prefix: &str, unlock: Unlock) -> Result<Self> {
        let mut prefix = prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let handle = bucket.inner.clone();
        let conf_key = format!("{prefix}{CONF_NAME}");
        let text = get_whole(&handle, &conf_key).await?;
        let conf = GocryptfsConf::from_json(&String::from_utf8_lossy(&text))
            .map_err(|e| e.with_object(&handle.bucket, &conf_key))?;
        let master = match unlock {
            Unlock::Password(p) => conf
                .unlock(&p)
                .map_err(|e| e.with_object(&handle.bucket, &conf_key))?,
            Unlock::MasterKey(k) => k,
        };
        Ok(Self {
            keys: Arc::new(GocryptfsKeys::new(&master)),
            handle,
            prefix,
        })
    }

    /// The stored prefix of plaintext directory `dir` ("" or "a/b"), resolved name by name.
    async fn stored_dir(&self, dir: &str) -> Result<String> {
        let mut at = self.prefix.clone();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            let e = self.find(&at, part).await?;
            if !e.is_dir {
                return Err(Error::invalid_input(format!(
                    "{part:?} in {dir:?} is not a directory"
                )));
            }
            at = e.stored;
        }
        Ok(at)
    }

    async fn find(&self, stored_dir: &str, name: &str) -> Result<RemoteEntry> {
        self.list_stored(stored_dir)
            .await?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no {name:?} in the gocryptfs tree"),
                )
                .with_object(&self.handle.bucket, stored_dir)
            })
    }

    /// The entries of plaintext directory `dir` ("" for the root), sorted by name.
    pub async fn list(&self, dir: &str) -> Result<Vec<RemoteEntry>> {
        let stored = self.stored_dir(dir).await?;
        self.list_stored(&stored).await
    }

    async fn list_stored(&self, stored_dir: &str) -> Result<Vec<RemoteEntry>> {
        let h = &self.handle;
        let iv_key = format!("{stored_dir}{DIRIV_NAME}");
        let iv: [u8; 16] = get_whole(h, &iv_key).await?[..].try_into().map_err(|_| {
            Error::new(ErrorKind::InvalidFormat, "gocryptfs.diriv is not 16 bytes")
                .with_object(&h.bucket, &iv_key)
        })?;
        // One level (delimiter "/"), through the crate's listing.
        let raw: Vec<(String, bool, u64)> = crate::ListObjectsFluentBuilder::new(h.clone())
            .prefix(stored_dir)
            .into_stream()
            .map_ok(|entry| match entry {
                crate::ListEntry::Prefix(p) => (p, true, 0),
                crate::ListEntry::Object(o) => (o.key, false, o.size),
            })
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for (key, is_dir, stored_size) in raw {
            let on_disk = key[stored_dir.len()..].trim_end_matches('/').to_owned();
            if on_disk == CONF_NAME || on_disk == DIRIV_NAME || on_disk.is_empty() {
                continue;
            }
            let stored_name = if let Some(hash) = on_disk.strip_prefix(LONGNAME_PREFIX) {
                if hash.ends_with(".name") {
                    continue;
                }
                let name_key = format!("{stored_dir}{on_disk}.name");
                let full = get_whole(h, &name_key).await?;
                let full = String::from_utf8_lossy(&full).trim_end().to_owned();
                if long_name(&full) != on_disk {
                    return Err(Error::new(
                        ErrorKind::TagMismatch,
                        format!("{name_key} does not hash to its entry's name (changed)"),
                    )
                    .with_object(&h.bucket, &name_key));
                }
                full
            } else {
                on_disk
            };
            let name = self
                .keys
                .decrypt_name(&iv, &stored_name)
                .map_err(|e| e.with_object(&h.bucket, &key))?;
            let size = if is_dir {
                0
            } else {
                plain_size(stored_size).ok_or_else(|| {
                    Error::new(
                        ErrorKind::TagMismatch,
                        format!(
                            "{key}: {stored_size} bytes is no gocryptfs file size (truncated?)"
                        ),
                    )
                    .with_object(&h.bucket, &key)
                })?
            };
            out.push(RemoteEntry {
                name,
                is_dir,
                size,
                stored: key,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Resolves a plaintext file path ("a/b/model.bin").
    async fn file(&self, path: &str) -> Result<RemoteEntry> {
        let (dir, name) = path
            .trim_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path.trim_matches('/')));
        let stored = self.stored_dir(dir).await?;
        let e = self.find(&stored, name).await?;
        if e.is_dir {
            return Err(Error::invalid_input(format!("{path:?} is a directory")));
        }
        Ok(e)
    }

    /// Resolves file `path` once (its stored key, pinned version and file id) for any number
    /// of [`read_file`](Self::read_file) calls.
    pub async fn open_file(&self, path: &str) -> Result<RemoteFile> {
        let e = self.file(path).await?;
        self.resolve(e).await
    }

    async fn resolve(&self, e: RemoteEntry) -> Result<RemoteFile> {
        let (pin, file_id) = resolve_stored(&self.handle, &e.stored).await?;
        Ok(RemoteFile {
            key: e.stored,
            size: e.size,
            pin,
            file_id,
        })
    }

    /// `len` plaintext bytes of file `path` from `offset` (fewer at its end), every tag
    /// checked; for several reads of one file use [`open_file`](Self::open_file).
    pub async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes> {
        let f = self.open_file(path).await?;
        self.read_file(&f, offset, len).await
    }

    /// `len` plaintext bytes of `file` from `offset` (fewer at its end): one ranged GET of
    /// the blocks the range covers, every tag checked.
    pub async fn read_file(&self, file: &RemoteFile, offset: u64, len: u64) -> Result<Bytes> {
        if offset >= file.size || len == 0 {
            return Ok(Bytes::new());
        }
        self.read_blocks(&file.key, &file.pin, file.size, &file.file_id, offset, len)
            .await
    }

    /// Plaintext `offset .. offset + len` (within `size`) from the blocks that cover it.
    async fn read_blocks(
        &self,
        key: &str,
        pin: &Pin,
        size: u64,
        file_id: &[u8; 16],
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let len = len.min(size - offset);
        let first = offset / BLOCK as u64;
        let h = &self.handle;
        let (start, end) = stored_span(first * BLOCK as u64, offset + len, pin.size);
        let mut plain = BytesMut::from(get_range(h, key, pin, start, end - start).await?);
        self.keys
            .open_blocks_in_place(file_id, first, &mut plain, key)
            .map_err(|e| e.with_object(&h.bucket, key))?;
        let skip = (offset - first * BLOCK as u64) as usize;
        if plain.len() < skip + len as usize {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!("{key}: fewer blocks than its size says"),
            )
            .with_object(&h.bucket, key));
        }
        Ok(plain.freeze().slice(skip..skip + len as usize))
    }

    /// Copies the whole tree into the local directory `dst` (created if missing) through the
    /// resumable download path: files several at once and large ones in parallel ranges,
    /// every block verified before it is written, each file written to a partial file of its
    /// own (0600) and renamed into place when complete; a rerun after a failure or a kill
    /// resumes each unfinished file from its checkpoint.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    /// let tree = GocryptfsRemote::open(&bucket, "eas/model/", Unlock::password("secret")).await?;
    /// let stats = tree.pull("model/").concurrency(8).send().await?;
    /// println!("{} files, {} bytes", stats.files, stats.bytes);
    /// # Ok(()) }
    /// ```
    pub fn pull(&self, dst: impl Into<PathBuf>) -> PullTreeBuilder<'_> {
        PullTreeBuilder {
            opts: TransferOptions::new(*self.handle.transfer_config()),
            tree: self,
            dst: dst.into(),
        }
    }
}

/// Builder of a tree copy into a local directory; see [`GocryptfsRemote::pull`].
#[derive(Debug)]
pub struct PullTreeBuilder<'a> {
    tree: &'a GocryptfsRemote,
    dst: PathBuf,
    opts: TransferOptions,
}

impl PullTreeBuilder<'_> {
    crate::resumable::transfer_option_setters!("range");
    crate::resumable::download_setters!();

    /// Copies (or continues copying) the tree. A file that fails does not stop the others;
    /// the error ([`ErrorKind::Partial`]) names how many failed and the first failure.
    pub async fn send(self) -> Result<TreeStats> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.keeps_checkpoint());
        crate::engine::run_transfer(
            tracing::info_span!(
                "gocryptfs_pull",
                bucket = %self.tree.handle.bucket(),
                prefix = %self.tree.prefix,
                dst = ?self.dst
            ),
            cancel.as_ref(),
            "the gocryptfs pull",
            resumable,
            Box::pin(self.run()),
        )
        .await
    }

    async fn run(self) -> Result<TreeStats> {
        self.opts.validate()?;
        let tree = self.tree;
        let mut stats = TreeStats::default();
        let mut items = Vec::new();
        let mut dirs = vec![(tree.prefix.clone(), self.dst.clone())];
        while let Some((stored, local)) = dirs.pop() {
            std::fs::create_dir_all(&local)
                .map_err(|e| Error::io(format!("cannot create {}", local.display()), e))?;
            stats.dirs += 1;
            for e in tree.list_stored(&stored).await? {
                // Names are checked when decrypted: no `/`, `.` or `..` leaves the directory.
                let target = local.join(&e.name);
                if e.is_dir {
                    dirs.push((e.stored, target));
                } else {
                    items.push((Item::download(target, e.stored, e.size), false));
                }
            }
        }
        let opts = &self.opts;
        let out = run_tree(items, opts, false, |item, config, listener, handoff| {
            let b = crate::resumable::DownloadFileFluentBuilder::new(tree.handle.clone())
                .key(&item.key)
                .path(&item.path)
                .options(opts.for_item(config, listener, handoff))
                .gocryptfs(tree.keys.clone());
            async move { b.send().await.map(|_| ()) }
        })
        .await?
        .into_result()?;
        stats.files = out.copied.len() as u64;
        stats.bytes = out.bytes();
        Ok(stats)
    }
}

/// Pins a stored file of a tree (one HEAD) and reads its file id from its header (one ranged
/// GET; an empty file has neither header nor id).
pub(crate) async fn resolve_stored(handle: &SharedHandle, key: &str) -> Result<(Pin, [u8; 16])> {
    let head = HeadObjectFluentBuilder::new(handle.clone())
        .key(key)
        .send()
        .await?;
    let pin = Pin::of_head(handle, key, &head)?;
    if pin.size == 0 {
        return Ok((pin, [0; 16]));
    }
    let header = get_range(handle, key, &pin, 0, HEADER_LEN as u64).await?;
    let file_id = parse_file_header(&header).ok_or_else(|| {
        Error::new(
            ErrorKind::TagMismatch,
            format!("{key}: bad gocryptfs header"),
        )
        .with_object(&handle.bucket, key)
    })?;
    Ok((pin, file_id))
}

/// Stored bytes `start .. start + len` of the pinned version of `key`, as they are.
async fn get_range(
    handle: &SharedHandle,
    key: &str,
    pin: &Pin,
    start: u64,
    len: u64,
) -> Result<Bytes> {
    let max = handle.transfer.max_attempts;
    with_retries(max, 0, &Reporter::silent(), || async {
        let out = GetObjectFluentBuilder::new(handle.clone())
            .key(key)
            .range(ByteRange::Inclusive {
                first: start,
                last: start + len - 1,
            })
            .pinned(pin.clone(), None)
            .stored(None)
            .send()
            .await?;
        out.collect_exact().await
    })
    .await
}

/// A small stored object, whole, as it is.
async fn get_whole(handle: &SharedHandle, key: &str) -> Result<Bytes> {
    let out = GetObjectFluentBuilder::new(handle.clone())
        .key(key)
        .stored(None)
        .send()
        .await?;
    if out.content_length > 1 << 20 {
        return Err(Error::new(
            ErrorKind::InvalidFormat,
            format!("{key} is larger than a gocryptfs metadata file can be"),
        )
        .with_object(&handle.bucket, key));
    }
    out.body.collect().await
}
