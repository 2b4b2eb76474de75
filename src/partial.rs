//! Local files a transfer writes before they are finished, and the lock that keeps two runs of
//! one transfer apart.
//!
//! A download writes into a [`PartialFile`] beside its destination: a name of its own per
//! transfer (a random nonce in it), created exclusively (`O_CREAT|O_EXCL`, so never through a
//! symlink or into an existing file), mode 0600, and identified by device, inode and nonce.
//! The nonce is also written into the file itself, in a trailer after the data (inode numbers
//! are reused as soon as a file is deleted, so they alone cannot tell a new file from the old
//! one); the trailer is cut off when the file is published. The checkpoint records the
//! identity; a resume reopens the file without following symlinks and uses it only if device,
//! inode, length and trailer all still match, so a partial file of another transfer, a
//! replaced file or a planted symlink is never taken over. Every write goes through the one
//! open handle; the file is synced and renamed into place only when complete, and removed when
//! the transfer fails without a checkpoint to resume from, or is cancelled or dropped before a
//! checkpoint names the file (a dropped [`PartialFile`] removes its file unless
//! [`PartialFile::keep`] was called).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Who a partial file is: recorded in the checkpoint, checked on resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileIdentity {
    /// Device number (`st_dev`), 0 where the platform has none.
    pub(crate) dev: u64,
    /// Inode number (`st_ino`), 0 where the platform has none.
    pub(crate) ino: u64,
    /// Random hex nonce, also part of the file name.
    pub(crate) nonce: String,
}

/// A partial download file; see the module docs.
#[derive(Debug)]
pub(crate) struct PartialFile {
    path: PathBuf,
    file: File,
    identity: FileIdentity,
    /// Leave the file on disk when dropped (a checkpoint names it, or it was published).
    kept: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.kept {
            Self::remove_if_same(&self.path, &self.identity);
        }
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| Error::new(ErrorKind::Io, "the system random number generator failed"))?;
    Ok(hex::encode(b))
}

#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The mode a new file gets here, `0666` less the process's umask, which a published download
/// takes (as from `cp` or `aws s3 cp`); its partial file is private (0600) only while it is
/// incomplete. Read from `/proc/self/status` (setting the umask to learn it would race with
/// other threads creating files); where that is unavailable, the file stays 0600.
#[cfg(unix)]
fn public_mode() -> Option<u32> {
    mode_under_umask(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `0666` less the umask that `status` (the text of `/proc/self/status`) records, if it
/// records one that reads as octal permission bits.
#[cfg(unix)]
fn mode_under_umask(status: &str) -> Option<u32> {
    let umask = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    let umask = u32::from_str_radix(umask.trim(), 8)
        .ok()
        .filter(|u| *u <= 0o777)?;
    Some(0o666 & !umask)
}

/// Refuses, before anything is fetched or written, a destination that can never become the
/// downloaded file: a path without a file name, one ending in a path separator (it names a
/// directory), or an existing directory. (A symlink is fine: the rename replaces the link.)
pub(crate) fn check_destination(dest: &Path) -> Result<()> {
    let ends_in_separator = dest
        .as_os_str()
        .as_encoded_bytes()
        .last()
        .is_some_and(|&b| std::path::is_separator(char::from(b)));
    if dest.file_name().is_none() || ends_in_separator {
        return Err(Error::invalid_input(format!(
            "{} is not a file name (it names a directory)",
            dest.display()
        )));
    }
    if std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
        return Err(Error::invalid_input(format!(
            "{} is a directory; give the path of the file to create in it",
            dest.display()
        )));
    }
    Ok(())
}

impl PartialFile {
    /// Creates a new partial file for `dest` of `size` bytes (allocated, so a full disk fails
    /// now rather than midway), with the identity trailer after them:
    /// `.NAME.cryptobucket-NONCE.partial` in `dest`'s directory.
    ///
    /// `lock`: the transfer's lock, where the file's name is recorded before the file exists,
    /// so that the next run removes it if this one is killed before a checkpoint names it.
    pub(crate) fn create(dest: &Path, size: u64, lock: Option<&TransferLock>) -> Result<Self> {
        check_destination(dest)?;
        let name = dest.file_name().ok_or_else(|| {
            Error::invalid_input(format!("{} is not a file name", dest.display()))
        })?;
        let nonce = random_hex(NONCE_BYTES)?;
        let path = dest.with_file_name(format!(
            ".{}{PARTIAL_INFIX}{nonce}{PARTIAL_SUFFIX}",
            partial_stem(name)
        ));
        if let Some(lock) = lock {
            lock.record_partial(&path);
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts
            .open(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
        let (dev, ino) = dev_ino(&meta);
        let this = Self {
            path,
            file,
            identity: FileIdentity { dev, ino, nonce },
            kept: false,
        };
        let trailer = trailer(&this.identity.nonce);
        let written = reserve(&this.file, size)
            .and_then(|()| this.file.set_len(size))
            .and_then(|()| write_at(&this.file, trailer.as_bytes(), size));
        if let Err(e) = written {
            this.discard();
            return Err(Error::io(
                format!("cannot allocate {size} bytes for {}", dest.display()),
                e,
            ));
        }
        Ok(this)
    }

    /// Reopens the partial file a checkpoint names, if it is still the same file (same
    /// device, inode and nonce, a regular file, not a symlink, `size` bytes). `Ok(None)`: it is
    /// gone or not the same file; the caller starts over.
    pub(crate) fn reopen(path: &Path, identity: &FileIdentity, size: u64) -> Result<Option<Self>> {
        let named_by_nonce = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.ends_with(&format!(
                "{PARTIAL_INFIX}{}{PARTIAL_SUFFIX}",
                identity.nonce
            ))
        });
        if !named_by_nonce {
            return Ok(None);
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
        let file = match opts.open(path) {
            Ok(f) => f,
            Err(_) => return Ok(None),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot inspect {}", path.display()), e))?;
        let (dev, ino) = dev_ino(&meta);
        let want = trailer(&identity.nonce);
        if !meta.is_file()
            || meta.len() != size + want.len() as u64
            || (dev, ino) != (identity.dev, identity.ino)
        {
            return Ok(None);
        }
        let mut got = vec![0u8; want.len()];
        if read_at(&file, &mut got, size).is_err() || got != want.as_bytes() {
            return Ok(None);
        }
        Ok(Some(Self {
            path: path.to_owned(),
            file,
            identity: identity.clone(),
            kept: true,
        }))
    }

    /// Removes the file a checkpoint names if it is still that file (nothing else is ever
    /// deleted).
    pub(crate) fn remove_if_same(path: &Path, identity: &FileIdentity) {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.is_file()
            && dev_ino(&meta) == (identity.dev, identity.ino)
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Leaves the file on disk when this value is dropped without being published: call it
    /// once a checkpoint names the file. (A new partial file is removed when dropped, so a
    /// cancelled or dropped transfer that could not resume leaves no decrypted bytes behind; a
    /// reopened one is kept, as its checkpoint names it.)
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn identity(&self) -> &FileIdentity {
        &self.identity
    }

    /// A second handle to the same open file (for positioned writes from other tasks).
    pub(crate) fn handle(&self) -> Result<File> {
        self.file
            .try_clone()
            .map_err(|e| Error::io(format!("cannot reopen {}", self.path.display()), e))
    }

    /// Cuts the identity trailer off (the file is then `size` bytes), syncs the data (when
    /// `durable`) and renames the file to `dest`, after checking that the name still leads to
    /// this file.
    pub(crate) fn publish(mut self, dest: &Path, size: u64, durable: bool) -> Result<()> {
        let io = |what: &str, e| Error::io(format!("cannot {what} {}", self.path.display()), e);
        self.file.set_len(size).map_err(|e| io("finish", e))?;
        // Private while incomplete; once whole, the mode any new file gets here.
        #[cfg(unix)]
        if let Some(mode) = public_mode() {
            use std::os::unix::fs::PermissionsExt as _;
            self.file
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| io("set the mode of", e))?;
        }
        if durable {
            self.file.sync_all().map_err(|e| io("sync", e))?;
        }
        let meta = std::fs::symlink_metadata(&self.path).map_err(|e| io("inspect", e))?;
        if !meta.is_file() || dev_ino(&meta) != (self.identity.dev, self.identity.ino) {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} was replaced during the download; refusing to publish it",
                    self.path.display()
                ),
            ));
        }
        std::fs::rename(&self.path, dest).map_err(|e| {
            Error::io(
                format!(
                    "cannot rename {} to {}",
                    self.path.display(),
                    dest.display()
                ),
                e,
            )
        })?;
        self.kept = true; // it is `dest` now
        if durable {
            sync_dir(dest.parent().unwrap_or(Path::new(".")));
        }
        Ok(())
    }

    /// Removes the file (a failed transfer that will not be resumed), even if kept.
    pub(crate) fn discard(mut self) {
        self.kept = false;
    }

    /// Writes a new file `dest` of exactly `size` bytes through a partial file: `fill` gets a
    /// handle and returns how many bytes it wrote; the file is published only when that is
    /// `size`, and removed on any failure, leaving `dest` untouched. `durable`: synced before
    /// the rename (and the rename synced).
    pub(crate) async fn write_new<F, Fut>(
        dest: &Path,
        size: u64,
        durable: bool,
        fill: F,
    ) -> Result<u64>
    where
        F: FnOnce(File) -> Fut,
        Fut: Future<Output = Result<u64>>,
    {
        let dest = std::path::absolute(dest)
            .map_err(|e| Error::io(format!("cannot resolve {}", dest.display()), e))?;
        let partial = Self::create(&dest, size, None)?;
        let written = match partial.handle() {
            Ok(file) => fill(file).await.and_then(|n| {
                if n == size {
                    Ok(n)
                } else {
                    Err(Error::new(
                        ErrorKind::Truncated,
                        format!("wrote {n} of {size} bytes"),
                    ))
                }
            }),
            Err(e) => Err(e),
        };
        match written {
            Ok(n) => {
                partial.publish(&dest, n, durable)?;
                Ok(n)
            }
            Err(e) => {
                partial.discard();
                Err(e)
            }
        }
    }
}

/// A partial file's name: `.` + [`partial_stem`] of the destination's name + this + the
/// nonce + [`PARTIAL_SUFFIX`].
const PARTIAL_INFIX: &str = ".cryptobucket-";
const PARTIAL_SUFFIX: &str = ".partial";
/// Random bytes of a partial file's nonce (written in hex).
const NONCE_BYTES: usize = 8;
/// The longest file name most file systems take (ext4, XFS, btrfs, APFS, NTFS: 255 bytes).
const NAME_MAX: usize = 255;

/// The destination's name as it appears in its partial files' names: cut (at a character
/// boundary) so that the partial file's name stays within [`NAME_MAX`] bytes, since a
/// destination may itself have a name of up to 255 bytes. (Names that are not UTF-8 appear
/// with replacement characters; the nonce keeps partial file names apart.)
fn partial_stem(name: &std::ffi::OsStr) -> String {
    let room = NAME_MAX - 1 - PARTIAL_INFIX.len() - 2 * NONCE_BYTES - PARTIAL_SUFFIX.len();
    let name = name.to_string_lossy();
    let mut end = name.len().min(room);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The identity trailer written after the data of a partial file.
fn trailer(nonce: &str) -> String {
    format!("\ncryptobucket partial file {nonce}\n")
}

/// Allocates the first `len` bytes of `file` on disk, so that a disk too small for the
/// download fails now (`ENOSPC`) instead of midway, and writeback later fills blocks that are
/// already placed. A file system that cannot reserve space (no `fallocate`) gets a sparse file,
/// as does any platform but Linux.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(()); // fallocate refuses an empty range
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(file, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        Ok(())
    }
}

/// The largest single write [`write_at`] makes (the size rclone and Go's `io.Copy` write in).
/// Linux backs a buffered write with page-cache folios about as large as the write. Folios of
/// 1 MiB come from large blocks of free memory, which in a VM with free page reporting the host
/// has often taken back, so the kernel's copy into them faults page by page: measured here, the
/// copy then took 40-60% of a download's CPU against about 5% with small writes, and large
/// writes also hold the file's lock longer while the other streams wait. 32 KiB folios are the
/// largest the kernel hands out from its per-CPU lists of recently freed pages. The extra
/// system calls cost little (BENCHMARKS.md).
const WRITE_PIECE: usize = 32 << 10;

/// Writes all of `data` at byte `pos` (a positioned write; the file offset is not used), in
/// pieces of at most [`WRITE_PIECE`].
pub(crate) fn write_at(file: &File, data: &[u8], pos: u64) -> std::io::Result<()> {
    let mut at = pos;
    for piece in data.chunks(WRITE_PIECE) {
        write_piece_at(file, piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

/// Writes `chunks` one after another from byte `pos` on (see [`write_at`]).
pub(crate) fn write_chunks_at(
    file: &File,
    chunks: &[bytes::Bytes],
    mut pos: u64,
) -> std::io::Result<()> {
    for c in chunks {
        write_at(file, c, pos)?;
        pos += c.len() as u64;
    }
    Ok(())
}

fn write_piece_at(file: &File, data: &[u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, data, pos)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek as _, Write as _};
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(pos))?;
        f.write_all(data)
    }
}

fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read as _, Seek as _};
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(pos))?;
        f.read_exact(buf)
    }
}

/// An exclusive lock on one transfer (direction, bucket, key, local path), held while it runs:
/// a second run of the same transfer fails at once with [`ErrorKind::Busy`] instead of
/// writing the same checkpoint and files. The lock file sits beside the checkpoint; the OS
/// releases the lock when the process ends, however it ends, and a run that ends normally
/// removes the file. (A run that locked a file another run removed meanwhile sees that the
/// name no longer leads to its file and tries again, so two runs never both hold "the" lock.)
///
/// A lock file that outlived its run belongs to a run that was killed. A download records the
/// name of its partial file in its lock file before creating it
/// ([`record_partial`](Self::record_partial)) and clears the record once a checkpoint names
/// the file; the next run of the same transfer removes a recorded file
/// ([`remove_orphan`](Self::remove_orphan)), so a run killed before it had a checkpoint (or
/// one of one range, which never gets one) does not leave decrypted bytes behind for good.
#[derive(Debug)]
pub(crate) struct TransferLock {
    path: PathBuf,
    file: File,
}

impl TransferLock {
    pub(crate) fn acquire(checkpoint: &Path, what: &str) -> Result<Self> {
        let path = checkpoint.with_extension("lock");
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        for _ in 0..8 {
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let file = opts
                .open(&path)
                .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!(
                            "another run of this {what} is in progress (lock {}); wait for it \
                             or stop it",
                            path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("cannot lock {}", path.display()), e));
                }
            }
            // Still the file the name leads to (not removed by a run that just finished)?
            let ours = file.metadata().ok().map(|m| dev_ino(&m));
            let named = std::fs::symlink_metadata(&path).ok().map(|m| dev_ino(&m));
            if ours.is_some() && ours == named {
                return Ok(Self { path, file });
            }
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!("the lock file {} keeps changing", path.display()),
        ))
    }

    /// Records `path`, a partial file this run is about to create, in the lock file. Best
    /// effort (a lock file that cannot be written only loses the clean-up after a kill).
    pub(crate) fn record_partial(&self, path: &Path) {
        if let Ok(text) = serde_json::to_vec(&OrphanRecord {
            path: path.to_owned(),
        }) {
            let _ = self.file.set_len(0);
            let _ = write_at(&self.file, &text, 0);
        }
    }

    /// Clears the record: a checkpoint names the partial file now.
    pub(crate) fn clear_record(&self) {
        let _ = self.file.set_len(0);
    }

    /// Removes the partial file that a killed earlier run of this transfer (to `dest`)
    /// recorded in the lock file, and clears the record. Only a regular file (never a symlink)
    /// with the name of a partial file of `dest`, beside it, is removed (an edited lock file
    /// can name nothing else).
    pub(crate) fn remove_orphan(&self, dest: &Path) {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if len == 0 || len > 64 << 10 {
            return;
        }
        let mut text = vec![0u8; len as usize];
        if read_at(&self.file, &mut text, 0).is_ok()
            && let Ok(record) = serde_json::from_slice::<OrphanRecord>(&text)
            && is_partial_of(&record.path, dest)
            && std::fs::symlink_metadata(&record.path).is_ok_and(|m| m.is_file())
        {
            let _ = std::fs::remove_file(&record.path);
        }
        self.clear_record();
    }
}

/// Whether `path` has the name of a partial file of `dest` (`.NAME.cryptobucket-NONCE.partial`
/// in `dest`'s directory).
fn is_partial_of(path: &Path, dest: &Path) -> bool {
    let (Some(name), Some(dest_name)) = (
        path.file_name().and_then(|n| n.to_str()),
        dest.file_name().map(partial_stem),
    ) else {
        return false;
    };
    path.parent() == dest.parent()
        && name
            .strip_prefix('.')
            .and_then(|n| n.strip_prefix(dest_name.as_str()))
            .and_then(|n| n.strip_prefix(PARTIAL_INFIX))
            .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
            .is_some_and(|nonce| !nonce.is_empty() && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What a lock file records: the partial file its run creates.
#[derive(Serialize, Deserialize)]
struct OrphanRecord {
    path: PathBuf,
}

impl Drop for TransferLock {
    fn drop(&mut self) {
        // Removed while still held: a run waiting on the old file sees the name moved on.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Creates `dir` and its parents (mode 0700 on Unix) for checkpoints and lock files.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| {
        Error::io(
            format!("cannot create checkpoint directory {}", dir.display()),
            e,
        )
    })
}

/// Makes a rename in `dir` durable (best effort: not every platform can open a directory).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn partial_files_have_their_space_allocated_up_front() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let size = 64 << 20;
        let p = PartialFile::create(&dir.path().join("m.bin"), size, None).unwrap();
        let meta = std::fs::metadata(&p.path).unwrap();
        // Data plus the identity trailer; a sparse file would have a block or two.
        assert!(meta.len() > size);
        assert!(meta.blocks() * 512 >= size, "{} blocks", meta.blocks());
    }

    #[test]
    fn a_write_longer_than_a_piece_lands_whole_and_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let data: Vec<u8> = (0..3 * WRITE_PIECE + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let pos = 777;
        write_at(&file, &data, pos).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len() as u64, pos + data.len() as u64);
        assert!(back[..pos as usize].iter().all(|&b| b == 0));
        assert!(
            back[pos as usize..] == data[..],
            "the pieces landed elsewhere"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_published_mode_comes_from_the_umask_and_nothing_else() {
        let status = |umask: &str| format!("Name:\tcryptobucket\nUmask:\t{umask}\nState:\tR\n");
        assert_eq!(mode_under_umask(&status("0022")), Some(0o644));
        assert_eq!(mode_under_umask(&status("0027")), Some(0o640));
        assert_eq!(mode_under_umask(&status("0077")), Some(0o600));
        assert_eq!(mode_under_umask(&status("0000")), Some(0o666));
        // No umask line (kernels before 4.7), or one that is not octal bits: the file keeps
        // its private mode.
        assert_eq!(mode_under_umask("Name:\tcryptobucket\nState:\tR\n"), None);
        for bad in ["", "0o22", "22x", "-1", "1777", "99"] {
            assert_eq!(mode_under_umask(&status(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn only_partial_files_of_the_destination_count_as_its_partial_files() {
        let dest = Path::new("/d/model.bin");
        let ok = Path::new("/d/.model.bin.cryptobucket-0123abcd89ef4567.partial");
        assert!(is_partial_of(ok, dest));
        for other in [
            "/e/.model.bin.cryptobucket-0123abcd89ef4567.partial", // another directory
            "/d/.other.bin.cryptobucket-0123abcd89ef4567.partial", // another destination
            "/d/.model.bin.cryptobucket-.partial",                 // no nonce
            "/d/.model.bin.cryptobucket-../x.partial",             // not a nonce
            "/d/model.bin",
            "/d/.model.bin.cryptobucket-0123abcd89ef4567.partial.old",
        ] {
            assert!(!is_partial_of(Path::new(other), dest), "{other}");
        }
    }

    #[test]
    fn partial_files_of_long_names_fit_in_a_file_name() {
        let dir = tempfile::tempdir().unwrap();
        // 255 bytes (the longest name); 253 bytes whose cut falls inside a 2-byte character.
        for name in ["n".repeat(255), format!("x{}🦀", "é".repeat(124))] {
            let dest = dir.path().join(&name);
            let partial = PartialFile::create(&dest, 10, None).unwrap();
            let file_name = partial.path().file_name().unwrap().len();
            assert!(file_name <= NAME_MAX, "{file_name}");
            assert!(is_partial_of(partial.path(), &dest));
            assert!(!is_partial_of(partial.path(), &dir.path().join("n")));
            partial.publish(&dest, 10, true).unwrap();
            assert_eq!(std::fs::metadata(&dest).unwrap().len(), 10);
        }
    }
}
