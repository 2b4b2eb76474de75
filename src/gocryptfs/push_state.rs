//! The checkpoint of a tree push: what a rerun after a kill needs to continue the same tree
//! instead of starting a second one.
//!
//! It holds the tree's `gocryptfs.conf` (the master key wrapped under the password, exactly as
//! the bucket will hold it), the IV of every directory (public: each is also stored as
//! `gocryptfs.diriv`) and the files already stored, each with the identity it had (size,
//! mtime, device, inode, ctime: a file changed since is sent again). Large files keep their
//! own part-level checkpoints beside it. The state is sealed with HMAC-SHA256 under a key
//! derived from the master key, so an edited state, or one from another tree, is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{LocalFile, invalid, read_if_present, store_atomically};
use crate::error::{Error, ErrorKind, Result};

const FORMAT: &str = "cryptobucket-gocryptfs-push";
const VERSION: u32 = 1;

/// See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PushState {
    format: String,
    version: u32,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) src: PathBuf,
    /// The tree's `gocryptfs.conf` text.
    pub(crate) conf: String,
    /// Directory (relative path, `""` for the root) → hex IV.
    pub(crate) dirs: BTreeMap<String, String>,
    /// File (relative path) → how it looked when it was stored.
    pub(crate) done: BTreeMap<String, LocalFile>,
    binding: String,
}

impl PushState {
    pub(crate) fn new(bucket: &str, prefix: &str, src: &Path, conf: String) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            src: src.to_owned(),
            conf,
            dirs: BTreeMap::new(),
            done: BTreeMap::new(),
            binding: String::new(),
        }
    }

    /// Reads the state; `Ok(None)` when there is none.
    pub(crate) fn load(path: &Path) -> Result<Option<Self>> {
        let Some(text) = read_if_present(path)? else {
            return Ok(None);
        };
        let state: Self = serde_json::from_slice(&text).map_err(|e| {
            invalid(
                path,
                &format!("it is not a valid push checkpoint ({e}); delete it to start over"),
            )
        })?;
        if state.format != FORMAT || state.version != VERSION {
            return Err(invalid(
                path,
                &format!(
                    "unsupported format {} version {}",
                    state.format, state.version
                ),
            ));
        }
        Ok(Some(state))
    }

    /// Checks that the state belongs to this push.
    pub(crate) fn check_identity(
        &self,
        path: &Path,
        bucket: &str,
        prefix: &str,
        src: &Path,
    ) -> Result<()> {
        if self.bucket != bucket || self.prefix != prefix || self.src != src {
            return Err(invalid(
                path,
                "it belongs to another push; refusing to mix them",
            ));
        }
        Ok(())
    }

    fn tag(&self, key: &[u8; 32]) -> Result<String> {
        let mut body = self.clone();
        body.binding.clear();
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode checkpoint: {e}")))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        Ok(hex::encode(hmac::sign(&key, &bytes).as_ref()))
    }

    /// Seals with `key` and writes atomically.
    pub(crate) fn store(&mut self, path: &Path, key: &[u8; 32]) -> Result<()> {
        self.binding = self.tag(key)?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot encode checkpoint: {e}")))?;
        store_atomically(path, &bytes)
    }

    /// Checks the seal (constant time).
    pub(crate) fn verify(&self, path: &Path, key: &[u8; 32]) -> Result<()> {
        let expect = self.tag(key)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(
            expect.as_bytes(),
            self.binding.as_bytes(),
        )
        .map_err(|_| {
            invalid(
                path,
                "its content does not match the tree's key (edited, or from another tree); \
                 refusing it. Delete it to start over",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_detects_edits_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push.json");
        let mut s = PushState::new("b", "p/", Path::new("/src"), "{}".into());
        s.dirs.insert(String::new(), "00".repeat(16));
        s.store(&path, &[7; 32]).unwrap();
        let back = PushState::load(&path).unwrap().unwrap();
        back.verify(&path, &[7; 32]).unwrap();
        assert_eq!(
            back.verify(&path, &[8; 32]).unwrap_err().kind(),
            ErrorKind::InvalidCheckpoint
        );
        let mut edited = back.clone();
        edited.dirs.insert("x".into(), "11".repeat(16));
        assert!(edited.verify(&path, &[7; 32]).is_err());
        assert!(
            back.check_identity(&path, "b", "q/", Path::new("/src"))
                .is_err()
        );
        std::fs::write(&path, b"{").unwrap();
        assert_eq!(
            PushState::load(&path).unwrap_err().kind(),
            ErrorKind::InvalidCheckpoint
        );
    }
}
