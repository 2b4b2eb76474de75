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

use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use zeroize::Zeroizing;

use super::tree::TreeStats;
use super::{
    BLOCK, BLOCK_OVERHEAD, CONF_NAME, DIRIV_NAME, GocryptfsConf, GocryptfsKeys, HEADER_LEN,
    LONGNAME_PREFIX, MasterKey, long_name, parse_file_header, plain_size,
};
use crate::engine::{Reporter, with_retries};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::SharedHandle;
use crate::ops::get_object::{GetObjectFluentBuilder, Pin};
use crate::ops::head_object::HeadObjectFluentBuilder;
use crate::range::ByteRange;

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
    keys: GocryptfsKeys,
}

/// Bytes of stored blocks fetched per GET when reading whole files.
const PIECE_BLOCKS: u64 = 2032; // 8 MiB of stored blocks

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
            keys: GocryptfsKeys::new(&master),
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
        let pin = self.pin(&e.stored).await?;
        let file_id = match e.size {
            0 => [0; 16],
            _ => self.file_id(&e.stored, &pin).await?,
        };
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

    async fn pin(&self, key: &str) -> Result<Pin> {
        let head = HeadObjectFluentBuilder::new(self.handle.clone())
            .key(key)
            .send()
            .await?;
        Pin::of_head(&self.handle, key, &head)
    }

    /// The file id from the stored header.
    async fn file_id(&self, key: &str, pin: &Pin) -> Result<[u8; 16]> {
        let header = self.get_range(key, pin, 0, HEADER_LEN as u64).await?;
        parse_file_header(&header).ok_or_else(|| {
            Error::new(
                ErrorKind::TagMismatch,
                format!("{key}: bad gocryptfs header"),
            )
            .with_object(&self.handle.bucket, key)
        })
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
        let (first, last) = (offset / BLOCK as u64, (offset + len - 1) / BLOCK as u64);
        let full = (BLOCK + BLOCK_OVERHEAD) as u64;
        let h = &self.handle;
        let start = HEADER_LEN as u64 + first * full;
        let end = (HEADER_LEN as u64 + (last + 1) * full).min(pin.size);
        let stored = self.get_range(key, pin, start, end - start).await?;
        let mut plain = BytesMut::with_capacity(((last - first + 1) * BLOCK as u64) as usize);
        for (i, block) in stored.chunks(full as usize).enumerate() {
            let b = self
                .keys
                .decrypt_block(file_id, first + i as u64, block, key)
                .map_err(|e| e.with_object(&h.bucket, key))?;
            plain.extend_from_slice(&b);
        }
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

    async fn get_range(&self, key: &str, pin: &Pin, start: u64, len: u64) -> Result<Bytes> {
        let max = self.handle.transfer.max_attempts;
        with_retries(max, 0, &Reporter::silent(), || async {
            let out = GetObjectFluentBuilder::new(self.handle.clone())
                .key(key)
                .range(ByteRange::Inclusive {
                    first: start,
                    last: start + len - 1,
                })
                .pinned(pin.clone(), None)
                .stored(None)
                .send()
                .await?;
            let b = out.body.collect().await?;
            if b.len() as u64 != len {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!("received {} of {len} bytes", b.len()),
                )
                .with_retryable(true));
            }
            Ok(b)
        })
        .await
    }

    /// Copies the whole tree into the local directory `dst` (created if missing): each file
    /// read in 8 MiB pieces, several at once, verified, and written into a temporary file that
    /// is renamed into place only when complete.
    pub async fn pull(&self, dst: &Path) -> Result<TreeStats> {
        let mut stats = TreeStats::default();
        let mut dirs = vec![(self.prefix.clone(), dst.to_owned())];
        while let Some((stored, local)) = dirs.pop() {
            std::fs::create_dir_all(&local)
                .map_err(|e| Error::io(format!("cannot create {}", local.display()), e))?;
            stats.dirs += 1;
            for e in self.list_stored(&stored).await? {
                let target = local.join(&e.name);
                if e.is_dir {
                    dirs.push((e.stored, target));
                    continue;
                }
                let f = self.resolve(e).await?;
                let piece = PIECE_BLOCKS * BLOCK as u64;
                let starts: Vec<u64> = (0..f.size.div_ceil(piece)).map(|i| i * piece).collect();
                let tmp = tempfile::NamedTempFile::new_in(&local).map_err(|err| {
                    Error::io(format!("cannot create a file in {}", local.display()), err)
                })?;
                let mut file = tokio::fs::File::from_std(
                    tmp.reopen()
                        .map_err(|err| Error::io("cannot open the temp file", err))?,
                );
                let mut pieces = std::pin::pin!(
                    futures::stream::iter(starts)
                        .map(|at| self.read_file(&f, at, piece))
                        .buffered(self.handle.transfer.concurrency.max(1))
                );
                while let Some(b) = pieces.try_next().await? {
                    tokio::io::AsyncWriteExt::write_all(&mut file, &b)
                        .await
                        .map_err(|err| {
                            Error::io(format!("cannot write {}", target.display()), err)
                        })?;
                }
                file.sync_all()
                    .await
                    .map_err(|err| Error::io(format!("cannot write {}", target.display()), err))?;
                tmp.persist(&target).map_err(|err| {
                    Error::io(format!("cannot write {}", target.display()), err.error)
                })?;
                stats.files += 1;
                stats.bytes += f.size;
            }
        }
        Ok(stats)
    }
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
