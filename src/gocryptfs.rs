//! gocryptfs v2 directory trees without FUSE (`docs/other-formats.md`): what
//! Alibaba PAI-EAS mounts for encrypted models. Reads and writes the default feature set
//! (`HKDF`, `GCMIV128`, `DirIV`, `EMENames`, `LongNames`, `Raw64`) and refuses any other flag
//! by name.
//!
//! - `gocryptfs.conf`: scrypt of the password → HKDF → AES-256-GCM key that wraps the 32-byte
//!   master key ([`GocryptfsConf`], [`MasterKey`]).
//! - Names: EME-AES-256 under the directory's `gocryptfs.diriv`, PKCS#7 padded, base64url;
//!   over 255 characters a `gocryptfs.longname.*` entry plus its `.name` file.
//! - Contents: `u16be(2) ‖ file id(16)`, then 4 KiB blocks, each `nonce(16) ‖ AES-256-GCM ‖
//!   tag(16)` with AAD `u64be(block) ‖ file id`. Every tag is checked; a bad one is
//!   [`ErrorKind::TagMismatch`] naming the file.
//!
//! [`ErrorKind::TagMismatch`]: crate::ErrorKind::TagMismatch
//!
//! ```
//! use cryptobucket::gocryptfs::{GocryptfsConf, GocryptfsKeys};
//! let (conf, master) = GocryptfsConf::create("correct horse", 10).unwrap();
//! let again = GocryptfsConf::from_json(&conf.to_json()).unwrap();
//! assert!(again.unlock("correct horse").unwrap() == master);
//! let keys = GocryptfsKeys::new(&master);
//! let stored = keys.encrypt_name(&[7; 16], "model.safetensors").unwrap();
//! assert_eq!(keys.decrypt_name(&[7; 16], &stored).unwrap(), "model.safetensors");
//! ```

pub(crate) mod blocks;
mod eme;
mod gcm;
pub mod push;
mod push_state;
pub mod remote;
pub mod tree;

use std::fmt;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};
use gcm::Gcm16;

/// The config file's name.
pub const CONF_NAME: &str = "gocryptfs.conf";
/// Each directory's IV file.
pub const DIRIV_NAME: &str = "gocryptfs.diriv";
/// Prefix of hashed long names.
pub const LONGNAME_PREFIX: &str = "gocryptfs.longname.";
/// Plaintext bytes per content block.
pub const BLOCK: usize = 4096;
/// Stored overhead per block: nonce and tag.
pub const BLOCK_OVERHEAD: usize = 32;
/// File header length: version and file id.
pub const HEADER_LEN: usize = 18;
/// The feature flags this module implements (gocryptfs's defaults).
pub const FEATURE_FLAGS: [&str; 6] = [
    "HKDF",
    "GCMIV128",
    "DirIV",
    "EMENames",
    "LongNames",
    "Raw64",
];
/// The largest scrypt cost accepted when reading (2^20: 1 GiB of memory with R = 8), so a
/// hostile config cannot exhaust the reader.
pub const MAX_SCRYPT_LOG_N: u8 = 20;

const INFO_CONTENT: &[u8] = b"AES-GCM file content encryption";
const INFO_NAMES: &[u8] = b"EME filename encryption";
/// Ours, not gocryptfs's: the key that seals push checkpoints (never used on stored data).
const INFO_CHECKPOINT: &[u8] = b"cryptobucket gocryptfs push checkpoint";

fn hkdf(ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    struct Len;
    impl aws_lc_rs::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let mut out = Zeroizing::new([0u8; 32]);
    aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[])
        .extract(ikm)
        .expand(&[info], Len)
        .and_then(|okm| okm.fill(&mut out[..]))
        .expect("HKDF-SHA256 of 32 bytes cannot fail");
    out
}

/// The header of a stored file: the format version (2, big-endian) and the file id.
fn file_header(file_id: &[u8; 16]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..2].copy_from_slice(&2u16.to_be_bytes());
    h[2..].copy_from_slice(file_id);
    h
}

/// The file id in a stored file's header; `None` unless `header` is a whole version-2 header
/// with a non-zero id.
pub(crate) fn parse_file_header(header: &[u8]) -> Option<[u8; 16]> {
    let id: [u8; 16] = header.get(2..HEADER_LEN)?.try_into().ok()?;
    (header.len() == HEADER_LEN && header[..2] == 2u16.to_be_bytes() && id != [0; 16]).then_some(id)
}

/// A random file id (never all zeros: gocryptfs reads that as a hole).
fn new_file_id() -> Result<[u8; 16]> {
    loop {
        let id = random::<16>()?;
        if id != [0; 16] {
            return Ok(id);
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| Error::invalid_key("the system random number generator failed"))?;
    Ok(b)
}

fn gcm(key: &[u8; 32]) -> Gcm16 {
    Gcm16::new(key)
}

/// The first 16 bytes of `b` as a nonce (callers check the length first).
fn nonce_of(b: &[u8]) -> &[u8; 16] {
    b[..16].try_into().expect("at least 16 bytes")
}

/// A gocryptfs master key (32 bytes; zeroized on drop, never shown by `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random master key.
    pub fn generate() -> Result<Self> {
        Ok(Self(Zeroizing::new(random::<32>()?)))
    }

    /// The raw key as `gocryptfs -masterkey` takes it: 64 hex digits, dashes allowed
    /// (`6f717d8b-6b5f8e8d-...`).
    ///
    /// ```
    /// let k = cryptobucket::gocryptfs::MasterKey::from_hex(&"00112233-".repeat(8)[..71]).unwrap();
    /// # let _ = k;
    /// ```
    pub fn from_hex(text: &str) -> Result<Self> {
        let digits = Zeroizing::new(text.trim().replace('-', ""));
        let raw = Zeroizing::new(
            hex::decode(digits.as_bytes())
                .map_err(|_| Error::invalid_key("a gocryptfs master key is 64 hex digits"))?,
        );
        let key: [u8; 32] = raw[..]
            .try_into()
            .map_err(|_| Error::invalid_key("a gocryptfs master key is 64 hex digits"))?;
        Ok(Self(Zeroizing::new(key)))
    }
}

/// `gocryptfs.conf`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GocryptfsConf {
    /// Who wrote it.
    pub creator: String,
    /// `nonce(16) ‖ AES-256-GCM(kek, master key) ‖ tag(16)`, base64.
    pub encrypted_key: String,
    /// The password's scrypt parameters.
    pub scrypt_object: ScryptObject,
    /// On-disk format version (2).
    pub version: u16,
    /// Feature flags.
    pub feature_flags: Vec<String>,
}

/// scrypt parameters of `gocryptfs.conf`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScryptObject {
    /// Salt, base64 (32 bytes).
    #[serde(rename = "Salt")]
    pub salt: String,
    /// Cost (a power of two).
    #[serde(rename = "N")]
    pub n: u64,
    /// Block size.
    #[serde(rename = "R")]
    pub r: u32,
    /// Parallelism.
    #[serde(rename = "P")]
    pub p: u32,
    /// Derived key length.
    #[serde(rename = "KeyLen")]
    pub key_len: u32,
}

impl ScryptObject {
    fn kek(&self, password: &str) -> Result<Zeroizing<[u8; 32]>> {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("gocryptfs.conf: scrypt {what}"),
            )
        };
        if !self.n.is_power_of_two() {
            return Err(bad("N is not a power of two"));
        }
        let log_n = self.n.trailing_zeros() as u8;
        if !(10..=MAX_SCRYPT_LOG_N).contains(&log_n) {
            return Err(bad(&format!(
                "N = 2^{log_n} is outside 2^10 ..= 2^{MAX_SCRYPT_LOG_N}"
            )));
        }
        if !(8..=32).contains(&self.r) || !(1..=16).contains(&self.p) || self.key_len != 32 {
            return Err(bad(
                "R, P or KeyLen is out of range (R 8..=32, P 1..=16, KeyLen 32)",
            ));
        }
        let salt = B64
            .decode(&self.salt)
            .ok()
            .filter(|s| s.len() >= 32)
            .ok_or_else(|| bad("salt is not base64 of 32 or more bytes"))?;
        let params = scrypt::Params::new(log_n, self.r, self.p, 32)
            .map_err(|e| bad(&format!("parameters ({e})")))?;
        let mut s = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(password.as_bytes(), &salt, &params, &mut s[..])
            .map_err(|e| bad(&format!("failed ({e})")))?;
        Ok(hkdf(&s[..], INFO_CONTENT))
    }
}

impl GocryptfsConf {
    /// A new tree's config with a new random master key, for `password` at scrypt cost
    /// 2^`log_n` (gocryptfs's default is 16; at least 10).
    pub fn create(password: &str, log_n: u8) -> Result<(Self, MasterKey)> {
        if password.is_empty() {
            return Err(Error::invalid_key("the gocryptfs password is empty"));
        }
        let master = MasterKey::generate()?;
        let scrypt_object = ScryptObject {
            salt: B64.encode(random::<32>()?),
            n: 1u64
                .checked_shl(u32::from(log_n))
                .ok_or_else(|| Error::invalid_input("scrypt cost too large"))?,
            r: 8,
            p: 1,
            key_len: 32,
        };
        let kek = scrypt_object.kek(password)?;
        let nonce = random::<16>()?;
        let sealed = gcm(&kek)
            .encrypt(&nonce, &0u64.to_be_bytes(), &master.0[..])
            .map_err(|_| Error::invalid_key("cannot wrap the master key"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok((
            Self {
                creator: format!("cryptobucket {}", env!("CARGO_PKG_VERSION")),
                encrypted_key: B64.encode(blob),
                scrypt_object,
                version: 2,
                feature_flags: FEATURE_FLAGS.iter().map(|f| (*f).to_owned()).collect(),
            },
            master,
        ))
    }

    /// Parses `gocryptfs.conf`, refusing versions and feature flags this module does not
    /// implement (by name).
    pub fn from_json(text: &str) -> Result<Self> {
        let conf: Self = serde_json::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("gocryptfs.conf is not valid ({e})"),
            )
        })?;
        if conf.version != 2 {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!(
                    "gocryptfs.conf version {} (only 2 is supported)",
                    conf.version
                ),
            ));
        }
        let unknown: Vec<&str> = conf
            .feature_flags
            .iter()
            .map(String::as_str)
            .filter(|f| !FEATURE_FLAGS.contains(f))
            .collect();
        let missing: Vec<&str> = FEATURE_FLAGS
            .iter()
            .copied()
            .filter(|f| !conf.feature_flags.iter().any(|g| g == f))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!(
                    "gocryptfs feature flags not supported: {} (missing: {}); this reader \
                     implements {}",
                    if unknown.is_empty() {
                        "none".into()
                    } else {
                        unknown.join(", ")
                    },
                    if missing.is_empty() {
                        "none".into()
                    } else {
                        missing.join(", ")
                    },
                    FEATURE_FLAGS.join(", ")
                ),
            ));
        }
        Ok(conf)
    }

    /// The config as gocryptfs writes it (Go's `MarshalIndent` with tabs, a final newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        serde::Serialize::serialize(self, &mut ser).expect("the config serializes");
        out.push(b'\n');
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// The master key, with `password`. A wrong password (or a changed config) is
    /// [`ErrorKind::KeyUnwrap`].
    pub fn unlock(&self, password: &str) -> Result<MasterKey> {
        let kek = self.scrypt_object.kek(password)?;
        let blob = B64.decode(&self.encrypted_key).map_err(|_| {
            Error::new(
                ErrorKind::InvalidFormat,
                "gocryptfs.conf: EncryptedKey is not base64",
            )
        })?;
        if blob.len() != 16 + 32 + 16 {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "gocryptfs.conf: EncryptedKey is not 64 bytes",
            ));
        }
        let plain = Zeroizing::new(
            gcm(&kek)
                .decrypt(nonce_of(&blob), &0u64.to_be_bytes(), &blob[16..])
                .map_err(|_| {
                    Error::new(
                        ErrorKind::KeyUnwrap,
                        "wrong gocryptfs password (or gocryptfs.conf was changed)",
                    )
                })?,
        );
        let key: [u8; 32] = plain[..].try_into().map_err(|_| {
            Error::new(
                ErrorKind::InvalidFormat,
                "gocryptfs master key is not 32 bytes",
            )
        })?;
        Ok(MasterKey(Zeroizing::new(key)))
    }
}

/// The content and name keys derived from a master key.
pub struct GocryptfsKeys {
    content: Gcm16,
    names: Aes256,
    checkpoint: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for GocryptfsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GocryptfsKeys(..)")
    }
}

fn tag_mismatch(what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::TagMismatch, what.to_string())
}

impl GocryptfsKeys {
    /// The keys of `master` (HKDF-SHA256, as the `HKDF` flag says).
    pub fn new(master: &MasterKey) -> Self {
        Self {
            content: gcm(&hkdf(&master.0[..], INFO_CONTENT)),
            names: eme::cipher(&hkdf(&master.0[..], INFO_NAMES)),
            checkpoint: hkdf(&master.0[..], INFO_CHECKPOINT),
        }
    }

    /// The full stored name of `name` in a directory with IV `dir_iv`: base64url of EME. Its
    /// on-disk name is [`long_name`] of it (the stored name itself up to 255 characters).
    pub fn encrypt_name(&self, dir_iv: &[u8; 16], name: &str) -> Result<String> {
        check_plain_name(name)?;
        let mut padded = name.as_bytes().to_vec();
        let pad = 16 - padded.len() % 16;
        padded.resize(padded.len() + pad, pad as u8);
        let e = eme::transform(&self.names, dir_iv, &padded, eme::Direction::Encrypt)?;
        Ok(B64URL.encode(e))
    }

    /// The plaintext of a stored (full, not hashed) name.
    pub fn decrypt_name(&self, dir_iv: &[u8; 16], stored: &str) -> Result<String> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidFormat,
                format!("stored name {stored:?} does not decrypt to a valid name"),
            )
        };
        let raw = B64URL.decode(stored).map_err(|_| bad())?;
        let mut p = eme::transform(&self.names, dir_iv, &raw, eme::Direction::Decrypt)
            .map_err(|_| bad())?;
        let pad = usize::from(*p.last().ok_or_else(bad)?);
        if pad == 0
            || pad > 16
            || pad > p.len()
            || p[p.len() - pad..].iter().any(|&b| usize::from(b) != pad)
        {
            return Err(bad());
        }
        p.truncate(p.len() - pad);
        let name = String::from_utf8(p).map_err(|_| bad())?;
        check_plain_name(&name).map_err(|_| bad())?;
        Ok(name)
    }

    /// Encrypts block `n` of a file with id `file_id` (`plain` at most 4096 bytes).
    pub fn encrypt_block(&self, file_id: &[u8; 16], n: u64, plain: &[u8]) -> Result<Vec<u8>> {
        if plain.is_empty() || plain.len() > BLOCK {
            return Err(Error::invalid_input(
                "a gocryptfs block holds 1 to 4096 bytes",
            ));
        }
        let mut out = Vec::with_capacity(plain.len() + BLOCK_OVERHEAD);
        self.encrypt_blocks_into(file_id, n, plain, &mut out)?;
        Ok(out)
    }

    /// Appends the stored blocks of `plain` (whole 4096-byte blocks, the last one may be
    /// shorter) to `out`, numbering them from `first`: what [`encrypt_block`](Self::encrypt_block)
    /// gives block by block, without an allocation per block (nonces drawn in one call).
    pub fn encrypt_blocks_into(
        &self,
        file_id: &[u8; 16],
        first: u64,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let blocks = plain.len().div_ceil(BLOCK);
        let mut nonces = vec![0u8; blocks * 16];
        aws_lc_rs::rand::fill(&mut nonces)
            .map_err(|_| Error::invalid_key("the system random number generator failed"))?;
        out.reserve(plain.len() + blocks * BLOCK_OVERHEAD);
        let mut aad = [0u8; 24];
        aad[8..].copy_from_slice(file_id);
        for (k, (chunk, nonce)) in plain.chunks(BLOCK).zip(nonces.chunks(16)).enumerate() {
            aad[..8].copy_from_slice(&(first + k as u64).to_be_bytes());
            out.extend_from_slice(nonce);
            let at = out.len();
            out.extend_from_slice(chunk);
            let tag = self
                .content
                .seal_in_place(nonce_of(nonce), &aad, &mut out[at..])
                .map_err(|_| Error::invalid_input("block too large"))?;
            out.extend_from_slice(&tag);
        }
        Ok(())
    }

    /// Encrypts in place what [`encrypt_blocks_into`](Self::encrypt_blocks_into) appends:
    /// `buf` holds `plain_len` plaintext bytes at its end and is exactly as long as
    /// `out_at` + the stored blocks; the stored blocks are written from `out_at` on (each block
    /// moved forward to its place, then sealed there), so no second buffer is needed and no
    /// plaintext is left in `buf`.
    pub(crate) fn encrypt_blocks_in_place(
        &self,
        file_id: &[u8; 16],
        first: u64,
        buf: &mut [u8],
        out_at: usize,
        plain_len: usize,
    ) -> Result<()> {
        let blocks = plain_len.div_ceil(BLOCK);
        if buf.len() != out_at + plain_len + blocks * BLOCK_OVERHEAD {
            return Err(Error::invalid_input(
                "the buffer does not have room for exactly the stored blocks",
            ));
        }
        let tail = buf.len() - plain_len;
        let mut nonces = vec![0u8; blocks * 16];
        aws_lc_rs::rand::fill(&mut nonces)
            .map_err(|_| Error::invalid_key("the system random number generator failed"))?;
        let mut aad = [0u8; 24];
        aad[8..].copy_from_slice(file_id);
        for (k, nonce) in nonces.chunks(16).enumerate() {
            let src = tail + k * BLOCK;
            let len = BLOCK.min(plain_len - k * BLOCK);
            // Block k's stored form ends where block k+1's plaintext begins, at the latest.
            let dst = out_at + k * (BLOCK + BLOCK_OVERHEAD);
            buf.copy_within(src..src + len, dst + 16);
            buf[dst..dst + 16].copy_from_slice(nonce);
            aad[..8].copy_from_slice(&(first + k as u64).to_be_bytes());
            let tag = self
                .content
                .seal_in_place(nonce_of(nonce), &aad, &mut buf[dst + 16..dst + 16 + len])
                .map_err(|_| Error::invalid_input("block too large"))?;
            buf[dst + 16 + len..dst + 32 + len].copy_from_slice(&tag);
        }
        Ok(())
    }

    /// The key that seals push checkpoints (derived from the master key with our own HKDF
    /// label; gocryptfs never sees it).
    pub(crate) fn checkpoint_key(&self) -> &[u8; 32] {
        &self.checkpoint
    }

    /// Decrypts stored block `n` of the file with id `file_id`; an all-zero full block is a
    /// hole (zeros). A bad tag names `what` (the file).
    pub fn decrypt_block(
        &self,
        file_id: &[u8; 16],
        n: u64,
        stored: &[u8],
        what: &str,
    ) -> Result<Zeroizing<Vec<u8>>> {
        // One block, not none or several (the run decoder below checks the rest).
        if stored.is_empty() || stored.len() > BLOCK + BLOCK_OVERHEAD {
            return Err(tag_mismatch(format!(
                "{what}: block {n} is {} bytes, not a gocryptfs block",
                stored.len()
            )));
        }
        let mut buf = bytes::BytesMut::from(stored);
        self.open_blocks_in_place(file_id, n, &mut buf, what)?;
        Ok(Zeroizing::new(Vec::from(buf)))
    }

    /// Decrypts a run of stored blocks (block `first` on; the last may be short) in place:
    /// afterwards `buf` holds their plaintext, each block's after the one before (no copy
    /// beyond moving each block down over its nonce and the tags before it). A bad tag names
    /// `what` (the file); then `buf` holds no plaintext of that block.
    pub(crate) fn open_blocks_in_place(
        &self,
        file_id: &[u8; 16],
        first: u64,
        buf: &mut bytes::BytesMut,
        what: &str,
    ) -> Result<()> {
        let full = BLOCK + BLOCK_OVERHEAD;
        let mut aad = [0u8; 24];
        aad[8..].copy_from_slice(file_id);
        let mut plain_len = 0;
        for i in 0..buf.len().div_ceil(full) {
            let at = i * full;
            let stored_len = full.min(buf.len() - at);
            let n = first + i as u64;
            if stored_len <= BLOCK_OVERHEAD {
                return Err(tag_mismatch(format!(
                    "{what}: block {n} is {stored_len} bytes, not a gocryptfs block"
                )));
            }
            let len = stored_len - BLOCK_OVERHEAD;
            let block = &mut buf[at..at + stored_len];
            if stored_len == full && block.iter().all(|&b| b == 0) {
                // A hole: zeros, which the block's bytes already are.
            } else {
                let (nonce, rest) = block.split_at_mut(16);
                let (body, tag) = rest.split_at_mut(len);
                let tag: &[u8; 16] = (&*tag).try_into().expect("16-byte tag");
                aad[..8].copy_from_slice(&n.to_be_bytes());
                self.content
                    .open_in_place(nonce_of(nonce), &aad, body, tag)
                    .map_err(|_| {
                        tag_mismatch(format!(
                            "{what}: block {n} fails its GCM tag (changed, moved or from \
                             another file)"
                        ))
                    })?;
            }
            // Block i's plaintext starts at i·BLOCK, never after where it sits now.
            buf.copy_within(at + 16..at + 16 + len, plain_len);
            plain_len += len;
        }
        buf.truncate(plain_len);
        Ok(())
    }

    /// A symlink target as gocryptfs stores it: one block with number 0 and no file id.
    pub fn encrypt_link(&self, target: &str) -> Result<String> {
        let nonce = random::<16>()?;
        let sealed = self
            .content
            .encrypt(&nonce, &0u64.to_be_bytes(), target.as_bytes())
            .map_err(|_| Error::invalid_input("symlink target too long"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64URL.encode(out))
    }

    /// The plaintext target of a stored symlink.
    pub fn decrypt_link(&self, stored: &str, what: &str) -> Result<String> {
        let raw = B64URL
            .decode(stored.trim())
            .map_err(|_| tag_mismatch(format!("{what}: symlink target is not base64url")))?;
        if raw.len() < BLOCK_OVERHEAD {
            return Err(tag_mismatch(format!("{what}: symlink target too short")));
        }
        let plain = self
            .content
            .decrypt(nonce_of(&raw), &0u64.to_be_bytes(), &raw[16..])
            .map_err(|_| tag_mismatch(format!("{what}: symlink target fails its GCM tag")))?;
        String::from_utf8(plain)
            .map_err(|_| tag_mismatch(format!("{what}: symlink target is not UTF-8")))
    }
}

/// A name gocryptfs can store: 1 to 255 bytes, no `/` or NUL, not `.` or `..`.
fn check_plain_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains(['/', '\0'])
    {
        return Err(Error::invalid_input(format!(
            "{name:?} is not a valid file name"
        )));
    }
    Ok(())
}

/// The on-disk name of a stored name: itself when at most 255 characters, else
/// `gocryptfs.longname.` + base64url(SHA-256(stored)) (its `.name` file holds the stored name).
pub fn long_name(stored: &str) -> String {
    if stored.len() <= 255 {
        return stored.to_owned();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, stored.as_bytes());
    format!("{LONGNAME_PREFIX}{}", B64URL.encode(digest.as_ref()))
}

/// Size of the stored file for a plaintext of `size` bytes.
pub fn stored_size(size: u64) -> u64 {
    if size == 0 {
        return 0;
    }
    let blocks = size.div_ceil(BLOCK as u64);
    HEADER_LEN as u64 + size + blocks * BLOCK_OVERHEAD as u64
}

/// The plaintext size of a stored file of `stored` bytes, or `None` if no plaintext size maps
/// to it.
pub fn plain_size(stored: u64) -> Option<u64> {
    if stored == 0 {
        return Some(0);
    }
    let body = stored.checked_sub(HEADER_LEN as u64)?;
    let full = (BLOCK + BLOCK_OVERHEAD) as u64;
    let (n, rest) = (body / full, body % full);
    match rest {
        0 if n > 0 => Some(n * BLOCK as u64),
        r if r > BLOCK_OVERHEAD as u64 => Some(n * BLOCK as u64 + r - BLOCK_OVERHEAD as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_headers_round_trip_and_bad_ones_are_refused() {
        let id = [7u8; 16];
        let h = file_header(&id);
        assert_eq!(h[..2], [0, 2]);
        assert_eq!(parse_file_header(&h), Some(id));
        assert_eq!(parse_file_header(&h[..17]), None, "short");
        let mut v1 = h;
        v1[1] = 1;
        assert_eq!(parse_file_header(&v1), None, "version 1");
        assert_eq!(
            parse_file_header(&file_header(&[0; 16])),
            None,
            "all-zero id"
        );
        let mut long = h.to_vec();
        long.push(0);
        assert_eq!(parse_file_header(&long), None, "not a header alone");
    }

    #[test]
    fn blocks_encrypted_in_bulk_read_back_block_by_block() {
        let keys = GocryptfsKeys::new(&MasterKey::from_hex(&"ab".repeat(32)).unwrap());
        let id = [5u8; 16];
        let plain: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        keys.encrypt_blocks_into(&id, 7, &plain, &mut out).unwrap();
        assert_eq!(out.len(), plain.len() + 4 * BLOCK_OVERHEAD);
        for (k, (stored, chunk)) in out
            .chunks(BLOCK + BLOCK_OVERHEAD)
            .zip(plain.chunks(BLOCK))
            .enumerate()
        {
            let back = keys.decrypt_block(&id, 7 + k as u64, stored, "f").unwrap();
            assert_eq!(&back[..], chunk);
            // Numbered as given: the same block under another number fails.
            assert!(keys.decrypt_block(&id, k as u64, stored, "f").is_err());
        }
        // Fresh nonces per block.
        assert_ne!(out[..16], out[BLOCK + BLOCK_OVERHEAD..][..16]);
        // One block is the same operation; an empty or oversized one is refused.
        let one = keys.encrypt_block(&id, 3, &plain[..100]).unwrap();
        assert_eq!(
            &keys.decrypt_block(&id, 3, &one, "f").unwrap()[..],
            &plain[..100]
        );
        for bad in [&plain[..0], &plain[..BLOCK + 1]] {
            let e = keys.encrypt_block(&id, 0, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn blocks_encrypted_in_place_read_back_and_leave_no_plaintext() {
        let keys = GocryptfsKeys::new(&MasterKey::from_hex(&"cd".repeat(32)).unwrap());
        let id = [9u8; 16];
        for (out_at, len) in [
            (0usize, 1usize),
            (18, BLOCK),
            (0, 5 * BLOCK),
            (18, 3 * BLOCK + 7),
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8 | 1).collect();
            let blocks = len.div_ceil(BLOCK);
            let mut buf = vec![0u8; out_at + len + blocks * BLOCK_OVERHEAD];
            let at = buf.len() - len;
            buf[at..].copy_from_slice(&plain);
            keys.encrypt_blocks_in_place(&id, 4, &mut buf, out_at, len)
                .unwrap();
            for (k, (stored, chunk)) in buf[out_at..]
                .chunks(BLOCK + BLOCK_OVERHEAD)
                .zip(plain.chunks(BLOCK))
                .enumerate()
            {
                let back = keys.decrypt_block(&id, 4 + k as u64, stored, "f").unwrap();
                assert_eq!(&back[..], chunk, "{out_at} {len} block {k}");
            }
            // No 16-byte run of the plaintext survives anywhere in the buffer.
            for w in plain.chunks(16).filter(|w| w.len() == 16) {
                assert!(
                    !buf.windows(16).any(|b| b == w),
                    "plaintext left in the buffer"
                );
            }
            // A buffer of the wrong size is refused.
            let mut short = vec![0u8; buf.len() - 1];
            assert!(
                keys.encrypt_blocks_in_place(&id, 0, &mut short, out_at, len)
                    .is_err()
            );
        }
    }
}
