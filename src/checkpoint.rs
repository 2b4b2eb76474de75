//! Checkpoint files of resumable transfers.
//!
//! A checkpoint is a small JSON file, rewritten atomically (temp file, fsync, rename, fsync of
//! the directory) after every finished part. It holds what is needed to continue: the upload id
//! or pinned ETag, the source or destination file and its size/mtime, the part size, the
//! finished parts and, for uploads, the *wrapped* key material exactly as stored in the
//! object's metadata. It never holds a plaintext content key or IV.
//!
//! Every checkpoint carries a `binding`: HMAC-SHA256 over the rest of its content, keyed by a
//! hash of the object's content key and IV. On resume the key is unwrapped again through the
//! keyring and the binding recomputed, so a checkpoint whose key material or part list was
//! edited, or which was copied from another transfer, is refused
//! ([`crate::ErrorKind::InvalidCheckpoint`]) rather than producing
//! an object that mixes two keys. (Whoever can rewrite the checkpoint *and* knows a key the
//! keyring accepts can still forge one; the checkpoint is local state, trusted like the source
//! file itself.)

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

use crate::cipher::ContentMaterial;
use crate::error::{Error, ErrorKind, Result};
use crate::partial::{create_private_dir, sync_dir};

const FORMAT: &str = "cryptobucket-checkpoint";
const VERSION: u32 = 1;

/// The directory checkpoints go to when none is configured: `$CRYPTOBUCKET_CHECKPOINT_DIR`, else
/// `$XDG_STATE_HOME/cryptobucket/checkpoints`, else `~/.local/state/cryptobucket/checkpoints`,
/// else `cryptobucket-checkpoints` in the temp directory. Chosen to survive reboots (a
/// pre-empted machine resumes after restart), unlike the temp directory.
///
/// ```
/// let dir = cryptobucket::checkpoint::default_dir();
/// assert!(dir.ends_with("checkpoints") || std::env::var_os("CRYPTOBUCKET_CHECKPOINT_DIR").is_some());
/// ```
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CRYPTOBUCKET_CHECKPOINT_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cryptobucket/checkpoints");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/cryptobucket/checkpoints");
    }
    std::env::temp_dir().join("cryptobucket-checkpoints")
}

/// The checkpoint file of a transfer: one name per (direction, bucket, key, local path).
pub(crate) fn path_for(dir: &Path, kind: &str, bucket: &str, key: &str, local: &Path) -> PathBuf {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [
        kind.as_bytes(),
        bucket.as_bytes(),
        key.as_bytes(),
        local.as_os_str().as_encoded_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let name = hex::encode(&ctx.finish().as_ref()[..16]);
    dir.join(format!("{kind}-{name}.json"))
}

/// A finished part as the checkpoint records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DonePart {
    pub(crate) part_number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) e_tag: Option<String>,
    pub(crate) size: u64,
    /// The part's integrity tags, base64 (uploads with integrity data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tags: Option<String>,
}

/// The local file of a transfer and what it looked like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalFile {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// Modification time in nanoseconds since the epoch (uploads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mtime_ns: Option<i128>,
    /// Device number of the source file (uploads, Unix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dev: Option<u64>,
    /// Inode number of the source file (uploads, Unix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ino: Option<u64>,
    /// Status-change time of the source file in nanoseconds (uploads, Unix): any write,
    /// `touch -m` or rename onto it changes it, and it cannot be set back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ctime_ns: Option<i128>,
}

/// The content of a checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checkpoint {
    pub(crate) format: String,
    pub(crate) version: u32,
    /// "upload" or "download".
    pub(crate) kind: String,
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// Multipart upload id (uploads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upload_id: Option<String>,
    /// The object's ETag, pinned with If-Match (downloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) e_tag: Option<String>,
    pub(crate) local: LocalFile,
    /// Where a download writes until it is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) temp_path: Option<PathBuf>,
    /// Who that partial file is (device, inode, nonce): a resume uses it only if it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) temp_identity: Option<crate::partial::FileIdentity>,
    pub(crate) part_size: u64,
    /// The encryption metadata of the object (wrapped key and IV, algorithms, matdesc, sizes).
    pub(crate) envelope: BTreeMap<String, String>,
    pub(crate) parts: Vec<DonePart>,
    /// Hex HMAC-SHA256 over everything above; see the module docs.
    pub(crate) binding: String,
}

impl Checkpoint {
    pub(crate) fn new(kind: &str, bucket: &str, key: &str, local: LocalFile) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            kind: kind.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: None,
            e_tag: None,
            local,
            temp_path: None,
            temp_identity: None,
            part_size: 0,
            envelope: BTreeMap::new(),
            parts: Vec::new(),
            binding: String::new(),
        }
    }

    /// Reads a checkpoint; `Ok(None)` when there is none. An unreadable or foreign file is an
    /// [`ErrorKind::InvalidCheckpoint`] error naming the file.
    pub(crate) fn load(path: &Path) -> Result<Option<Self>> {
        read_if_present(path)?
            .map(|text| Self::parse(&text, path))
            .transpose()
    }

    /// Parses checkpoint bytes (read from `path`, named in errors).
    pub(crate) fn parse(text: &[u8], path: &Path) -> Result<Self> {
        let cp: Self = serde_json::from_slice(text).map_err(|e| {
            invalid(
                path,
                &format!("it is not a valid checkpoint ({e}); delete it to start over"),
            )
        })?;
        if cp.format != FORMAT || cp.version != VERSION {
            return Err(invalid(
                path,
                &format!("unsupported format {} version {}", cp.format, cp.version),
            ));
        }
        Ok(cp)
    }

    /// Checks that this checkpoint belongs to the transfer (`kind`, `bucket`, `key`, `local`).
    pub(crate) fn check_identity(
        &self,
        path: &Path,
        kind: &str,
        bucket: &str,
        key: &str,
        local: &Path,
    ) -> Result<()> {
        if self.kind != kind || self.bucket != bucket || self.key != key || self.local.path != local
        {
            return Err(invalid(
                path,
                &format!(
                    "it belongs to another transfer ({} s3://{}/{} <-> {}), not this {kind} of \
                     s3://{bucket}/{key} <-> {}; refusing to mix them",
                    self.kind,
                    self.bucket,
                    self.key,
                    self.local.path.display(),
                    local.display()
                ),
            ));
        }
        Ok(())
    }

    fn tag(&self, material: &ContentMaterial) -> Result<String> {
        let mut body = self.clone();
        body.binding.clear();
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode checkpoint: {e}")))?;
        let mut seed = Vec::with_capacity(64 + 32);
        seed.extend_from_slice(b"cryptobucket checkpoint binding v1");
        seed.extend_from_slice(material.cek());
        seed.extend_from_slice(material.iv());
        let mut derived = digest::digest(&digest::SHA256, &seed).as_ref().to_vec();
        seed.zeroize();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &derived);
        derived.zeroize();
        Ok(hex::encode(hmac::sign(&key, &bytes).as_ref()))
    }

    /// Sets the binding for `material`.
    pub(crate) fn seal(&mut self, material: &ContentMaterial) -> Result<()> {
        self.binding = self.tag(material)?;
        Ok(())
    }

    /// Checks the binding against `material` (constant-time comparison).
    pub(crate) fn verify(&self, path: &Path, material: &ContentMaterial) -> Result<()> {
        let expect = self.tag(material)?;
        let ok = aws_lc_rs::constant_time::verify_slices_are_equal(
            expect.as_bytes(),
            self.binding.as_bytes(),
        )
        .is_ok();
        if ok {
            Ok(())
        } else {
            Err(invalid(
                path,
                "its content does not match its key material (edited, or copied from another \
                 transfer); refusing it. Delete it to start over",
            ))
        }
    }

    /// Writes the checkpoint atomically: temp file in the same directory, fsync, rename, fsync
    /// of the directory. The directory is created (mode 0700 on Unix) if needed.
    pub(crate) fn store(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode checkpoint: {e}")))?;
        store_atomically(path, &bytes)
    }

    /// Removes the checkpoint file (done, or abandoned).
    pub(crate) fn remove(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => {
                sync_dir(path.parent().unwrap_or(Path::new(".")));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("cannot remove checkpoint {}", path.display()),
                e,
            )),
        }
    }
}

/// The bytes of a state file, `None` when there is none.
pub(crate) fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync
/// of the directory (created, mode 0700 on Unix, if needed). Every checkpoint-like state file
/// goes through here.
pub(crate) fn store_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let io = |e| Error::io(format!("cannot write checkpoint {}", path.display()), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    sync_dir(dir);
    Ok(())
}

pub(crate) fn invalid(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidCheckpoint,
        format!("checkpoint {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut cp = Checkpoint::new(
            "upload",
            "b",
            "k",
            LocalFile {
                path: "/x".into(),
                size: 10,
                mtime_ns: Some(1_795_000_000_123_456_789),
                dev: Some(u64::MAX - 1),
                ino: Some(1 << 40),
                ctime_ns: Some(1_795_000_001_987_654_321),
            },
        );
        cp.upload_id = Some("id".into());
        cp.part_size = 16;
        cp.parts.push(DonePart {
            part_number: 1,
            e_tag: Some("\"e\"".into()),
            size: 16,
            tags: None,
        });
        cp
    }

    #[test]
    fn binding_detects_edits_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cp.json");
        let m = ContentMaterial::from_parts([1; 32], [2; 16]);
        let mut cp = sample();
        cp.seal(&m).unwrap();
        cp.store(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap().unwrap();
        back.verify(&path, &m).unwrap();
        let other = ContentMaterial::from_parts([1; 32], [3; 16]);
        assert_eq!(
            back.verify(&path, &other).unwrap_err().kind(),
            ErrorKind::InvalidCheckpoint
        );
        let mut edited = back.clone();
        edited.parts[0].part_number = 2;
        assert!(edited.verify(&path, &m).is_err());
        // The stored file holds neither the key nor the IV, raw or hex.
        let text = std::fs::read(&path).unwrap();
        let hay = String::from_utf8_lossy(&text);
        assert!(!hay.contains(&hex::encode([1u8; 32])));
        assert!(!hay.contains(&hex::encode([2u8; 16])));
        Checkpoint::remove(&path).unwrap();
        assert!(Checkpoint::load(&path).unwrap().is_none());
    }

    #[test]
    fn garbage_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = Checkpoint::load(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidCheckpoint);
        assert!(e.to_string().contains("delete it"), "{e}");
        let cp = sample();
        let e = cp
            .check_identity(&path, "upload", "b", "other", Path::new("/x"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidCheckpoint);
        cp.check_identity(&path, "upload", "b", "k", Path::new("/x"))
            .unwrap();
    }

    #[test]
    fn names_differ_per_transfer() {
        let d = Path::new("/d");
        let a = path_for(d, "upload", "b", "k", Path::new("/f"));
        assert_ne!(a, path_for(d, "download", "b", "k", Path::new("/f")));
        assert_ne!(a, path_for(d, "upload", "b", "k2", Path::new("/f")));
        assert_eq!(a, path_for(d, "upload", "b", "k", Path::new("/f")));
    }
}
