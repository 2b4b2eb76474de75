//! Whole gocryptfs trees on a local disk, no FUSE: [`encrypt_dir`] turns a plain directory
//! into a gocryptfs v2 tree, [`decrypt_dir`] the reverse, [`read_file`] one file. Files
//! stream block by block (memory stays at a few blocks per file); several files run at once.
//!
//! ```no_run
//! use cryptobucket::gocryptfs::{GocryptfsConf, GocryptfsKeys, tree};
//! let (conf, master) = GocryptfsConf::create("password", 16)?;
//! tree::encrypt_dir("model/".as_ref(), "model.gocryptfs/".as_ref(), &conf, &GocryptfsKeys::new(&master))?;
//! # Ok::<(), cryptobucket::Error>(())
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{
    BLOCK, BLOCK_OVERHEAD, CONF_NAME, DIRIV_NAME, GocryptfsConf, GocryptfsKeys, HEADER_LEN,
    LONGNAME_PREFIX, file_header, long_name, new_file_id, parse_file_header, random,
};
use crate::error::{Error, ErrorKind, Result};

/// What a tree operation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeStats {
    /// Regular files.
    pub files: u64,
    /// Directories (the root included).
    pub dirs: u64,
    /// Symbolic links.
    pub links: u64,
    /// Plaintext bytes.
    pub bytes: u64,
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::io(what.to_string(), e)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts
        .open(path)
        .map_err(|e| io(format!("cannot create {}", path.display()), e))?;
    f.write_all(data)
        .map_err(|e| io(format!("cannot write {}", path.display()), e))
}

/// Encrypts the plaintext `src` (a reader) into `dst` as a gocryptfs file; returns the
/// plaintext length. Empty input writes nothing (an empty stored file).
pub fn encrypt_stream(
    keys: &GocryptfsKeys,
    src: &mut impl Read,
    dst: &mut impl Write,
) -> Result<u64> {
    let mut block = vec![0u8; BLOCK];
    let mut n = 0u64;
    let mut total = 0u64;
    let mut file_id = [0u8; 16];
    loop {
        let got = read_full(src, &mut block).map_err(|e| io("cannot read the plaintext", e))?;
        if got == 0 {
            break;
        }
        if n == 0 {
            file_id = new_file_id()?;
            dst.write_all(&file_header(&file_id))
                .map_err(|e| io("cannot write", e))?;
        }
        let sealed = keys.encrypt_block(&file_id, n, &block[..got])?;
        dst.write_all(&sealed).map_err(|e| io("cannot write", e))?;
        n += 1;
        total += got as u64;
        if got < BLOCK {
            break;
        }
    }
    Ok(total)
}

/// Reads until `buf` is full or the input ends.
fn read_full(src: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Decrypts a stored gocryptfs file from `src` into `dst`, checking every block's tag;
/// `what` names the file in errors. Returns the plaintext length.
pub fn decrypt_stream(
    keys: &GocryptfsKeys,
    src: &mut impl Read,
    dst: &mut impl Write,
    what: &str,
) -> Result<u64> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(src, &mut header).map_err(|e| io(format!("cannot read {what}"), e))?;
    if got == 0 {
        return Ok(0);
    }
    let Some(file_id) = parse_file_header(&header[..got]) else {
        return Err(Error::new(
            ErrorKind::TagMismatch,
            format!(
                "{what}: not a gocryptfs v2 file (bad or short header, or an all-zero file id)"
            ),
        ));
    };
    let mut block = vec![0u8; BLOCK + BLOCK_OVERHEAD];
    let mut n = 0u64;
    let mut total = 0u64;
    loop {
        let got = read_full(src, &mut block).map_err(|e| io(format!("cannot read {what}"), e))?;
        if got == 0 {
            break;
        }
        let plain = keys.decrypt_block(&file_id, n, &block[..got], what)?;
        dst.write_all(&plain)
            .map_err(|e| io("cannot write the plaintext", e))?;
        total += plain.len() as u64;
        n += 1;
        if got < block.len() {
            break;
        }
    }
    if n == 0 {
        return Err(Error::new(
            ErrorKind::TagMismatch,
            format!("{what}: a header without blocks"),
        ));
    }
    Ok(total)
}

fn read_diriv(dir: &Path) -> Result<[u8; 16]> {
    let p = dir.join(DIRIV_NAME);
    let raw = std::fs::read(&p).map_err(|e| io(format!("cannot read {}", p.display()), e))?;
    raw.try_into().map_err(|_| {
        Error::new(
            ErrorKind::InvalidFormat,
            format!("{} is not 16 bytes", p.display()),
        )
    })
}

/// Writes `conf` and the root's IV into the new directory `dst`, then encrypts every entry
/// of `src` into it. Refuses a `dst` that exists and is not empty.
pub fn encrypt_dir(
    src: &Path,
    dst: &Path,
    conf: &GocryptfsConf,
    keys: &GocryptfsKeys,
) -> Result<TreeStats> {
    if dst.exists()
        && std::fs::read_dir(dst)
            .map_err(|e| io(format!("cannot read {}", dst.display()), e))?
            .next()
            .is_some()
    {
        return Err(Error::invalid_input(format!(
            "{} exists and is not empty; refusing to write a gocryptfs tree into it",
            dst.display()
        )));
    }
    std::fs::create_dir_all(dst).map_err(|e| io(format!("cannot create {}", dst.display()), e))?;
    write_new(&dst.join(CONF_NAME), conf.to_json().as_bytes(), 0o400)?;
    let mut stats = TreeStats::default();
    encrypt_into(src, dst, keys, &mut stats)?;
    Ok(stats)
}

fn encrypt_into(src: &Path, dst: &Path, keys: &GocryptfsKeys, stats: &mut TreeStats) -> Result<()> {
    let iv = random::<16>()?;
    write_new(&dst.join(DIRIV_NAME), &iv, 0o440)?;
    stats.dirs += 1;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| io(format!("cannot read {}", src.display()), e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| io(format!("cannot read {}", src.display()), e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| Error::invalid_input(format!("{:?} is not a UTF-8 name", e.path())))?;
        let stored = keys.encrypt_name(&iv, name)?;
        let on_disk = long_name(&stored);
        let target = dst.join(&on_disk);
        if on_disk != stored {
            write_new(
                &dst.join(format!("{on_disk}.name")),
                stored.as_bytes(),
                0o400,
            )?;
        }
        let kind = e
            .file_type()
            .map_err(|err| io(format!("cannot stat {}", e.path().display()), err))?;
        if kind.is_dir() {
            std::fs::create_dir(&target)
                .map_err(|err| io(format!("cannot create {}", target.display()), err))?;
            encrypt_into(&e.path(), &target, keys, stats)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(e.path())
                .map_err(|err| io(format!("cannot read {}", e.path().display()), err))?;
            let link = link.to_str().ok_or_else(|| {
                Error::invalid_input(format!("{:?} points to a non-UTF-8 path", e.path()))
            })?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(keys.encrypt_link(link)?, &target)
                .map_err(|err| io(format!("cannot create {}", target.display()), err))?;
            stats.links += 1;
        } else {
            let mut input = std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(e.path())
                    .map_err(|err| io(format!("cannot open {}", e.path().display()), err))?,
            );
            let out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|err| io(format!("cannot create {}", target.display()), err))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            stats.bytes += encrypt_stream(keys, &mut input, &mut out)?;
            out.flush()
                .map_err(|err| io(format!("cannot write {}", target.display()), err))?;
            stats.files += 1;
        }
    }
    Ok(())
}

/// The plaintext names of a stored directory: `(plaintext name, on-disk path)`, sorted by
/// name; `gocryptfs.*` files are skipped, long names resolved through their `.name` files.
pub fn list_dir(dir: &Path, keys: &GocryptfsKeys) -> Result<Vec<(String, PathBuf)>> {
    let iv = read_diriv(dir)?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(format!("cannot read {}", dir.display()), e))? {
        let e = e.map_err(|err| io(format!("cannot read {}", dir.display()), err))?;
        let on_disk = e.file_name();
        let Some(on_disk) = on_disk.to_str() else {
            continue;
        };
        if on_disk == CONF_NAME || on_disk == DIRIV_NAME {
            continue;
        }
        let stored = if let Some(hash) = on_disk.strip_prefix(LONGNAME_PREFIX) {
            if hash.ends_with(".name") {
                continue;
            }
            let p = dir.join(format!("{on_disk}.name"));
            let full = std::fs::read_to_string(&p)
                .map_err(|err| io(format!("cannot read {}", p.display()), err))?;
            if long_name(full.trim_end()) != on_disk {
                return Err(Error::new(
                    ErrorKind::TagMismatch,
                    format!(
                        "{} does not hash to its entry's name (changed)",
                        p.display()
                    ),
                ));
            }
            full.trim_end().to_owned()
        } else {
            on_disk.to_owned()
        };
        let name = keys.decrypt_name(&iv, &stored).map_err(|err| {
            Error::new(
                err.kind(),
                format!("{}: {}", e.path().display(), err.message()),
            )
        })?;
        out.push((name, e.path()));
    }
    out.sort();
    Ok(out)
}

/// Decrypts the stored file `path` into `out` (verified block by block).
pub fn read_file(keys: &GocryptfsKeys, path: &Path, out: &mut impl Write) -> Result<u64> {
    let mut input = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path).map_err(|e| io(format!("cannot open {}", path.display()), e))?,
    );
    decrypt_stream(keys, &mut input, out, &path.display().to_string())
}

/// Decrypts the whole tree `enc` into the new directory `dst`. On any failure (a bad tag, a
/// name that does not decrypt) the error names the stored file, and `dst` keeps what was
/// written before it (each file appears only when complete and verified).
pub fn decrypt_dir(enc: &Path, dst: &Path, keys: &GocryptfsKeys) -> Result<TreeStats> {
    std::fs::create_dir_all(dst).map_err(|e| io(format!("cannot create {}", dst.display()), e))?;
    let mut stats = TreeStats::default();
    decrypt_into(enc, dst, keys, &mut stats)?;
    Ok(stats)
}

fn decrypt_into(enc: &Path, dst: &Path, keys: &GocryptfsKeys, stats: &mut TreeStats) -> Result<()> {
    stats.dirs += 1;
    for (name, path) in list_dir(enc, keys)? {
        let target = dst.join(&name);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| io(format!("cannot stat {}", path.display()), e))?;
        if meta.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| io(format!("cannot create {}", target.display()), e))?;
            decrypt_into(&path, &target, keys, stats)?;
        } else if meta.file_type().is_symlink() {
            let stored = std::fs::read_link(&path)
                .map_err(|e| io(format!("cannot read {}", path.display()), e))?;
            let link = keys.decrypt_link(&stored.to_string_lossy(), &path.display().to_string())?;
            #[cfg(unix)]
            std::os::unix::fs::symlink(link, &target)
                .map_err(|e| io(format!("cannot create {}", target.display()), e))?;
            stats.links += 1;
        } else {
            // Into a temporary file beside the target, renamed only when verified whole.
            let tmp = tempfile::NamedTempFile::new_in(dst)
                .map_err(|e| io(format!("cannot create a file in {}", dst.display()), e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            stats.bytes += read_file(keys, &path, &mut out)?;
            out.flush()
                .map_err(|e| io(format!("cannot write {}", target.display()), e))?;
            drop(out);
            tmp.persist(&target)
                .map_err(|e| io(format!("cannot write {}", target.display()), e.error))?;
            stats.files += 1;
        }
    }
    Ok(())
}
