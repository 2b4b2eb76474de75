//! Integrity data: authenticated chunks, key commitment and writer signatures.
//!
//! The OSS format is AES-CTR without a MAC. Objects this crate writes additionally carry an
//! *integrity record* in their metadata and one 16-byte tag per chunk of ciphertext; the body
//! and the OSS headers stay exactly as every OSS SDK writes and reads them. The bytes are
//! specified in `docs/integrity.md`; in short:
//!
//! * keys: `PRK = HKDF-Extract(salt = object id, IKM = CEK ‖ IV)` (SHA-256);
//!   `tag key = HKDF-Expand(PRK, "cryptobucket/v1 tag key", 32)`;
//!   `commitment = HKDF-Expand(PRK, "cryptobucket/v1 commitment" ‖ chunk size ‖ length mode, 32)`.
//! * chunk `i` is ciphertext bytes `[i·C, min((i+1)·C, size))`; an object has `⌊size/C⌋ + 1`
//!   chunks, the last one shorter than `C` (possibly empty) and flagged final.
//! * `tag_i = AES-256-GCM(tag key, nonce = 0⁴ ‖ be64(i), plaintext = ∅,
//!   AAD = object id ‖ be32(C) ‖ be64(i) ‖ be64(size or 2⁶⁴−1) ‖ final ‖ chunk)`, i.e. GMAC.
//! * tags of up to [`INLINE_MAX_TAGS`] chunks sit in the metadata; larger objects keep them in a
//!   sidecar object `KEY` + [`SIDECAR_SUFFIX`] at offset `32 + 16·i`, so a ranged read fetches
//!   only the tags it needs.
//! * optionally an Ed25519 signature by a writer key over the record (object id, chunk size,
//!   length mode, commitment): what makes RSA-wrapped objects authentic, since anyone holding
//!   the RSA public key can wrap a content key.

mod signing;

use std::collections::HashMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use bytes::{Bytes, BytesMut};

use crate::cipher::ContentMaterial;
use crate::envelope::lookup;
use crate::error::{Error, ErrorKind, Result};

pub use self::signing::{SignerPublicKey, SigningKey};

/// User-metadata key of the integrity record.
pub const META_INTEGRITY: &str = "cryptobucket-integrity";
/// User-metadata key of inline tags (small objects).
pub const META_TAGS: &str = "cryptobucket-tags";
/// User-metadata key of the writer signature.
pub const META_SIGNATURE: &str = "cryptobucket-signature";
/// Suffix of the sidecar object that holds the tags of larger objects.
pub const SIDECAR_SUFFIX: &str = ".cbtags";
/// Chunk size this crate writes (1 MiB), unless the part size forces a smaller power of two.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Smallest chunk size written or accepted.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Length of one tag.
pub const TAG_LEN: usize = 16;
/// Objects of at most this many chunks keep their tags in the metadata.
pub const INLINE_MAX_TAGS: u64 = 4;
/// Size of the sidecar header (`CBTAGS01`, object id, chunk size, reserved).
pub const SIDECAR_HEADER_LEN: u64 = 32;
const SIDECAR_MAGIC: &[u8; 8] = b"CBTAGS01";
const OBJECT_ID_LEN: usize = 16;
const COMMITMENT_LEN: usize = 32;
/// Length field of the tags of an object whose size was unknown when its parts were sent.
const UNBOUND_LENGTH: u64 = u64::MAX;
const INFO_TAG_KEY: &[u8] = b"cryptobucket/v1 tag key";
const INFO_COMMITMENT: &[u8] = b"cryptobucket/v1 commitment";
const SIGNATURE_CONTEXT: &[u8] = b"cryptobucket/v1 integrity signature\0";

/// Whether every tag binds the object's total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LengthMode {
    /// The size was known when the object was written: every tag binds it, so a ranged read
    /// detects truncation or extension anywhere in the object.
    Bound,
    /// A stream of unknown length: tags bind the chunk index and the final flag only; a whole
    /// read detects truncation, a ranged read detects it only where it touches the final chunk.
    Unbound,
}

impl LengthMode {
    fn byte(self) -> u8 {
        match self {
            Self::Bound => 0,
            Self::Unbound => 1,
        }
    }
}

/// A writer signature: the signer's Ed25519 public key and its signature over the record.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordSignature {
    /// The signer's public key.
    pub signer: SignerPublicKey,
    /// The 64-byte Ed25519 signature.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for RecordSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSignature")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// The integrity record of one object, as stored in its metadata.
///
/// ```
/// use std::collections::HashMap;
/// use cryptobucket::integrity::IntegrityRecord;
/// assert!(IntegrityRecord::from_metadata(&HashMap::new()).unwrap().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityRecord {
    /// Random id of this object (binds tags and sidecar to it).
    pub object_id: [u8; OBJECT_ID_LEN],
    /// Chunk size in bytes.
    pub chunk_size: u32,
    /// Whether tags bind the total length.
    pub length_mode: LengthMode,
    /// The key commitment.
    pub commitment: [u8; COMMITMENT_LEN],
    /// Tags kept in the metadata (small objects); `None`: they are in the sidecar.
    pub inline_tags: Option<Vec<[u8; TAG_LEN]>>,
    /// The writer signature, if the writer had a signing key.
    pub signature: Option<RecordSignature>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidMetadata,
        format!("the integrity metadata is malformed: {what}"),
    )
}

fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N]> {
    let bytes = B64URL
        .decode(text.trim())
        .map_err(|_| bad(format!("{what} is not base64url")))?;
    bytes
        .try_into()
        .map_err(|_| bad(format!("{what} is not {N} bytes")))
}

impl IntegrityRecord {
    /// A new record for an object about to be written: fresh random object id, the commitment
    /// of `material`; no tags or signature yet.
    ///
    /// The commitment also covers the object's recorded part size (`part_size`, from the
    /// envelope; `None` for a single PUT), the one OSS header a reader does not otherwise check.
    pub(crate) fn new(
        material: &ContentMaterial,
        chunk_size: u32,
        length_mode: LengthMode,
        part_size: Option<u64>,
    ) -> Result<(Self, TagKey)> {
        let mut object_id = [0u8; OBJECT_ID_LEN];
        aws_lc_rs::rand::fill(&mut object_id)
            .map_err(|_| Error::new(ErrorKind::Io, "the system random number generator failed"))?;
        Self::with_id(object_id, material, chunk_size, length_mode, part_size)
    }

    /// [`new`](Self::new) with a given object id (test vectors).
    fn with_id(
        object_id: [u8; OBJECT_ID_LEN],
        material: &ContentMaterial,
        chunk_size: u32,
        length_mode: LengthMode,
        part_size: Option<u64>,
    ) -> Result<(Self, TagKey)> {
        let mut record = Self {
            object_id,
            chunk_size,
            length_mode,
            commitment: [0; COMMITMENT_LEN],
            inline_tags: None,
            signature: None,
        };
        let (key, commitment) = record.derive(material, part_size)?;
        record.commitment = commitment;
        Ok((record, key))
    }

    fn derive(
        &self,
        material: &ContentMaterial,
        part_size: Option<u64>,
    ) -> Result<(TagKey, [u8; COMMITMENT_LEN])> {
        let fail = || Error::new(ErrorKind::Io, "HKDF failed");
        let mut ikm = zeroize::Zeroizing::new([0u8; 48]);
        ikm[..32].copy_from_slice(material.cek());
        ikm[32..].copy_from_slice(material.iv());
        let prk = Salt::new(HKDF_SHA256, &self.object_id).extract(&ikm[..]);
        let mut tag_key = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&[INFO_TAG_KEY], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut tag_key[..]))
            .map_err(|_| fail())?;
        let chunk = self.chunk_size.to_be_bytes();
        let mode = [self.length_mode.byte()];
        let part = part_size.unwrap_or(0).to_be_bytes();
        let mut commitment = [0u8; COMMITMENT_LEN];
        prk.expand(&[INFO_COMMITMENT, &chunk, &mode, &part], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut commitment))
            .map_err(|_| fail())?;
        let key = UnboundKey::new(&AES_256_GCM, &tag_key[..]).map_err(|_| fail())?;
        Ok((
            TagKey {
                key: LessSafeKey::new(key),
                object_id: self.object_id,
                chunk_size: self.chunk_size,
            },
            commitment,
        ))
    }

    /// Checks the commitment against unwrapped `material` and returns the tag key. A wrapped
    /// key or IV that unwraps to other material than the writer's fails here, before any
    /// byte of the body is used.
    pub(crate) fn open(
        &self,
        material: &ContentMaterial,
        part_size: Option<u64>,
    ) -> Result<TagKey> {
        let (key, commitment) = self.derive(material, part_size)?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&commitment, &self.commitment).is_err()
        {
            return Err(Error::new(
                ErrorKind::CommitmentMismatch,
                "the content key does not match the object's key commitment (the wrapped key, \
                 the IV or the integrity record was changed)",
            ));
        }
        Ok(key)
    }

    /// The bytes a writer signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 53);
        m.extend_from_slice(SIGNATURE_CONTEXT);
        m.extend_from_slice(&self.object_id);
        m.extend_from_slice(&self.chunk_size.to_be_bytes());
        m.push(self.length_mode.byte());
        m.extend_from_slice(&self.commitment);
        m
    }

    /// Parses the record from user metadata; `Ok(None)` when the object has none.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<Self>> {
        let Some(text) = lookup(meta, META_INTEGRITY) else {
            if lookup(meta, META_TAGS).is_some() || lookup(meta, META_SIGNATURE).is_some() {
                return Err(bad(format!(
                    "{META_TAGS}/{META_SIGNATURE} without {META_INTEGRITY}"
                )));
            }
            return Ok(None);
        };
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in text.split(';') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| bad(format!("field {part:?} is not name=value")))?;
            if fields.insert(k, v).is_some() {
                return Err(bad(format!("field {k} appears twice")));
            }
        }
        let field = |k: &str| {
            fields
                .get(k)
                .copied()
                .ok_or_else(|| bad(format!("no {k} field")))
        };
        if field("v")? != "1" {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!("unsupported integrity version {:?}", field("v")?),
            ));
        }
        let chunk_size: u32 = field("chunk")?
            .parse()
            .map_err(|_| bad("chunk is not a number"))?;
        if !(MIN_CHUNK_SIZE..=DEFAULT_CHUNK_SIZE).contains(&chunk_size)
            || !chunk_size.is_power_of_two()
        {
            return Err(bad(format!("chunk size {chunk_size} is not allowed")));
        }
        let length_mode = match field("length")? {
            "bound" => LengthMode::Bound,
            "unbound" => LengthMode::Unbound,
            other => return Err(bad(format!("length mode {other:?}"))),
        };
        if fields.len() != 5 {
            return Err(bad("unknown fields"));
        }
        let inline_tags = match lookup(meta, META_TAGS) {
            None => None,
            Some(t) => {
                let raw = B64
                    .decode(t.trim())
                    .map_err(|_| bad(format!("{META_TAGS} is not base64")))?;
                if raw.is_empty()
                    || raw.len() % TAG_LEN != 0
                    || (raw.len() / TAG_LEN) as u64 > INLINE_MAX_TAGS
                {
                    return Err(bad(format!("{META_TAGS} has {} bytes", raw.len())));
                }
                Some(
                    raw.chunks_exact(TAG_LEN)
                        .map(|c| c.try_into().expect("exact chunks"))
                        .collect(),
                )
            }
        };
        let signature = match lookup(meta, META_SIGNATURE) {
            None => None,
            Some(s) => {
                let (k, sig) = s
                    .trim()
                    .split_once('.')
                    .ok_or_else(|| bad(format!("{META_SIGNATURE} is not KEY.SIGNATURE")))?;
                Some(RecordSignature {
                    signer: SignerPublicKey::from_bytes(decode_fixed::<32>(k, "signer key")?),
                    signature: decode_fixed::<64>(sig, "signature")?,
                })
            }
        };
        Ok(Some(Self {
            object_id: decode_fixed(field("id")?, "object id")?,
            chunk_size,
            length_mode,
            commitment: decode_fixed(field("commit")?, "commitment")?,
            inline_tags,
            signature,
        }))
    }

    /// Renders the record as user metadata entries.
    pub fn to_metadata(&self, meta: &mut HashMap<String, String>) {
        let mode = match self.length_mode {
            LengthMode::Bound => "bound",
            LengthMode::Unbound => "unbound",
        };
        meta.insert(
            META_INTEGRITY.to_owned(),
            format!(
                "v=1;id={};chunk={};length={mode};commit={}",
                B64URL.encode(self.object_id),
                self.chunk_size,
                B64URL.encode(self.commitment)
            ),
        );
        if let Some(tags) = &self.inline_tags {
            meta.insert(META_TAGS.to_owned(), B64.encode(tags.concat()));
        }
        if let Some(s) = &self.signature {
            meta.insert(
                META_SIGNATURE.to_owned(),
                format!(
                    "{}.{}",
                    B64URL.encode(s.signer.as_bytes()),
                    B64URL.encode(s.signature)
                ),
            );
        }
    }

    /// Number of chunks (and tags) of an object of `size` bytes: `⌊size / C⌋ + 1`.
    pub fn chunk_count(&self, size: u64) -> u64 {
        size / u64::from(self.chunk_size) + 1
    }

    /// The chunks (first, last; inclusive) that the plaintext bytes `start..start + len` of an
    /// object of `size` bytes touch. A range that reaches the end includes the final chunk,
    /// which is empty when the size is a multiple of the chunk size.
    pub(crate) fn chunk_span(&self, start: u64, len: u64, size: u64) -> (u64, u64) {
        let c = u64::from(self.chunk_size);
        let last = if start + len == size {
            size / c
        } else {
            (start + len - 1) / c
        };
        (start / c, last)
    }

    /// The object id, base64url (as in the metadata and in messages).
    pub fn object_id_text(&self) -> String {
        B64URL.encode(self.object_id)
    }

    /// The sidecar object's header.
    pub(crate) fn sidecar_header(&self) -> [u8; SIDECAR_HEADER_LEN as usize] {
        let mut h = [0u8; SIDECAR_HEADER_LEN as usize];
        h[..8].copy_from_slice(SIDECAR_MAGIC);
        h[8..24].copy_from_slice(&self.object_id);
        h[24..28].copy_from_slice(&self.chunk_size.to_be_bytes());
        h
    }

    /// Checks a sidecar header read back from the store.
    pub(crate) fn check_sidecar_header(&self, header: &[u8]) -> Result<()> {
        if header.len() < SIDECAR_HEADER_LEN as usize || &header[..8] != SIDECAR_MAGIC {
            return Err(Error::new(
                ErrorKind::MissingIntegrity,
                "the integrity sidecar object is not a tag file",
            ));
        }
        if header[8..24] != self.object_id {
            return Err(Error::new(
                ErrorKind::ObjectIdMismatch,
                format!(
                    "the integrity sidecar belongs to object id {}, not {}",
                    B64URL.encode(&header[8..24]),
                    self.object_id_text()
                ),
            ));
        }
        if header[24..28] != self.chunk_size.to_be_bytes() {
            return Err(bad("the sidecar's chunk size differs from the record's"));
        }
        Ok(())
    }
}

/// How a keyring treats integrity data: strict mode, the writer's signing key, trusted signers.
///
/// ```
/// let p = cryptobucket::integrity::IntegrityPolicy::default();
/// assert!(!p.is_strict());
/// ```
#[derive(Clone, Debug, Default)]
pub struct IntegrityPolicy {
    pub(crate) strict: bool,
    pub(crate) signing_key: Option<std::sync::Arc<SigningKey>>,
    pub(crate) trusted: Vec<SignerPublicKey>,
}

impl IntegrityPolicy {
    /// True in strict mode.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The public key of the signing key, if there is one.
    pub fn signer(&self) -> Option<SignerPublicKey> {
        self.signing_key.as_ref().map(|k| k.public_key())
    }

    /// The signing key, if there is one.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.signing_key.as_deref()
    }

    /// The trusted signers.
    pub fn trusted_signers(&self) -> &[SignerPublicKey] {
        &self.trusted
    }

    /// Signs `record` when there is a signing key.
    pub(crate) fn sign(&self, record: &mut IntegrityRecord) {
        record.signature = self.signing_key.as_ref().map(|k| k.sign(record));
    }

    /// What reading an object requires, checked before its key is unwrapped: in strict mode
    /// integrity data must exist, and RSA-wrapped objects must be signed by a trusted signer;
    /// a signature by a trusted signer must verify in any mode.
    pub(crate) fn check(
        &self,
        record: Option<&IntegrityRecord>,
        wrap: &crate::envelope::WrapAlgorithm,
    ) -> Result<IntegrityState> {
        use crate::envelope::WrapAlgorithm;
        let Some(record) = record else {
            if self.strict {
                return Err(Error::new(
                    ErrorKind::MissingIntegrity,
                    "the object carries no integrity data (written by another SDK, or stripped); \
                     strict mode refuses it",
                ));
            }
            return Ok(IntegrityState::Absent);
        };
        let public_key_wrap = matches!(wrap, WrapAlgorithm::RsaPkcs1 | WrapAlgorithm::RsaOaepSha1);
        match &record.signature {
            Some(sig) if self.trusted.contains(&sig.signer) => {
                sig.signer.verify(record, &sig.signature)?;
                Ok(IntegrityState::Signed(sig.signer))
            }
            Some(sig) if self.strict && public_key_wrap => Err(Error::new(
                ErrorKind::UntrustedSigner,
                format!(
                    "the object is signed by {}, which the keyring does not trust; with RSA \
                     wrapping anyone holding the public key can write an object, so strict mode \
                     requires a trusted signer",
                    sig.signer
                ),
            )),
            None if self.strict && public_key_wrap => Err(Error::new(
                ErrorKind::SignatureInvalid,
                "the object's integrity record is not signed; with RSA wrapping anyone holding \
                 the public key can write an object, so strict mode requires a trusted signature",
            )),
            _ => Ok(IntegrityState::Verified),
        }
    }
}

/// What is known about an object's integrity after reading its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntegrityState {
    /// No integrity data: the bytes are decrypted but cannot be verified.
    Absent,
    /// Tags and key commitment are checked (unsigned, or signed by an unknown key).
    Verified,
    /// As `Verified`, and the record is signed by this trusted writer.
    Signed(SignerPublicKey),
}

/// The sidecar object key of `key`.
pub fn sidecar_key(key: &str) -> String {
    format!("{key}{SIDECAR_SUFFIX}")
}

/// Drops from a listing the sidecar objects of objects that are listed too (`K.cbtags` when
/// `K` is present); what remains are the user's objects.
///
/// ```
/// let keys = vec!["a".to_owned(), "a.cbtags".to_owned(), "b.cbtags".to_owned()];
/// assert_eq!(cryptobucket::integrity::without_sidecars(keys), ["a", "b.cbtags"]);
/// ```
pub fn without_sidecars(keys: Vec<String>) -> Vec<String> {
    let all: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
    let keep: Vec<bool> = keys
        .iter()
        .map(|k| {
            k.strip_suffix(SIDECAR_SUFFIX)
                .is_none_or(|base| !all.contains(base))
        })
        .collect();
    keys.into_iter()
        .zip(keep)
        .filter_map(|(k, keep)| keep.then_some(k))
        .collect()
}

/// The key that computes and checks an object's chunk tags.
pub(crate) struct TagKey {
    key: LessSafeKey,
    object_id: [u8; OBJECT_ID_LEN],
    chunk_size: u32,
}

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TagKey(..)")
    }
}

/// AAD prefix before the chunk bytes: object id, chunk size, index, length, final flag.
const PREFIX_LEN: usize = OBJECT_ID_LEN + 4 + 8 + 8 + 1;

impl TagKey {
    pub(crate) fn chunk_size(&self) -> u64 {
        u64::from(self.chunk_size)
    }

    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Writes the AAD prefix into `buf[..PREFIX_LEN]`.
    fn prefix(&self, buf: &mut [u8], index: u64, length: u64, fin: bool) {
        buf[..16].copy_from_slice(&self.object_id);
        buf[16..20].copy_from_slice(&self.chunk_size.to_be_bytes());
        buf[20..28].copy_from_slice(&index.to_be_bytes());
        buf[28..36].copy_from_slice(&length.to_be_bytes());
        buf[36] = u8::from(fin);
    }

    /// Tag of chunk `index` held in `buf[PREFIX_LEN..]` (the prefix is filled in here).
    fn tag_buf(&self, buf: &mut [u8], index: u64, length: u64) -> [u8; TAG_LEN] {
        let fin = ((buf.len() - PREFIX_LEN) as u64) < self.chunk_size();
        self.prefix(buf, index, length, fin);
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(index), Aad::from(&buf[..]), &mut [])
            .expect("GCM sealing of an empty plaintext cannot fail");
        tag.as_ref().try_into().expect("GCM tags are 16 bytes")
    }

    /// Tag of one chunk of ciphertext (the final one when shorter than the chunk size).
    pub(crate) fn tag(&self, index: u64, length: u64, chunk: &[u8]) -> [u8; TAG_LEN] {
        let mut buf = Vec::with_capacity(PREFIX_LEN + chunk.len());
        buf.resize(PREFIX_LEN, 0);
        buf.extend_from_slice(chunk);
        self.tag_buf(&mut buf, index, length)
    }

    fn verify_buf(&self, buf: &mut [u8], index: u64, length: u64, tag: &[u8; TAG_LEN]) -> bool {
        let fin = ((buf.len() - PREFIX_LEN) as u64) < self.chunk_size();
        self.prefix(buf, index, length, fin);
        self.key
            .open_in_place_separate_tag(Self::nonce(index), Aad::from(&buf[..]), tag, &mut [])
            .is_ok()
    }
}

/// The length field of an object's tags.
pub(crate) fn length_field(mode: LengthMode, size: u64) -> u64 {
    match mode {
        LengthMode::Bound => size,
        LengthMode::Unbound => UNBOUND_LENGTH,
    }
}

/// Computes the tags of consecutive chunks of ciphertext as it streams by (the write side).
pub(crate) struct ChunkTagger {
    key: std::sync::Arc<TagKey>,
    length: u64,
    next_index: u64,
    buf: BytesMut,
    tags: Vec<[u8; TAG_LEN]>,
}

impl ChunkTagger {
    /// A tagger for ciphertext starting at byte `offset` (a multiple of the chunk size).
    pub(crate) fn new(key: std::sync::Arc<TagKey>, offset: u64, length: u64) -> Self {
        let c = key.chunk_size();
        debug_assert_eq!(offset % c, 0);
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + c as usize);
        buf.resize(PREFIX_LEN, 0);
        Self {
            next_index: offset / c,
            key,
            length,
            buf,
            tags: Vec::new(),
        }
    }

    /// Feeds ciphertext.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        let c = self.key.chunk_size() as usize;
        while !data.is_empty() {
            let room = PREFIX_LEN + c - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == PREFIX_LEN + c {
                let tag = self
                    .key
                    .tag_buf(&mut self.buf, self.next_index, self.length);
                self.tags.push(tag);
                self.next_index += 1;
                self.buf.truncate(PREFIX_LEN);
            }
        }
    }

    /// The tags; a trailing partial chunk is the object's final chunk. (An object whose size
    /// is a multiple of the chunk size ends with an empty final chunk: see
    /// [`empty_final_tag`], added by whoever assembles the whole object's tags.)
    pub(crate) fn finish(mut self) -> Vec<[u8; TAG_LEN]> {
        if self.buf.len() > PREFIX_LEN {
            let tag = self
                .key
                .tag_buf(&mut self.buf, self.next_index, self.length);
            self.tags.push(tag);
        }
        self.tags
    }
}

/// The tag of the empty final chunk of an object whose size is a multiple of the chunk size.
pub(crate) fn empty_final_tag(key: &TagKey, size: u64, length: u64) -> [u8; TAG_LEN] {
    key.tag(size / key.chunk_size(), length, &[])
}

/// Checks chunks of ciphertext against their tags as they stream by (the read side) and hands
/// out each chunk only once it is verified.
pub(crate) struct ChunkVerifier {
    key: TagKey,
    length: u64,
    size: u64,
    first_index: u64,
    next_index: u64,
    tags: Vec<[u8; TAG_LEN]>,
    buf: BytesMut,
}

impl std::fmt::Debug for ChunkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

impl ChunkVerifier {
    /// Verifies chunks `first_index ..` of an object of `size` bytes, `tags[k]` being the tag
    /// of chunk `first_index + k`.
    pub(crate) fn new(
        key: TagKey,
        mode: LengthMode,
        size: u64,
        first_index: u64,
        tags: Vec<[u8; TAG_LEN]>,
    ) -> Self {
        let c = key.chunk_size() as usize;
        let mut buf =
            BytesMut::with_capacity(PREFIX_LEN + (c as u64).min(size.saturating_add(1)) as usize);
        buf.resize(PREFIX_LEN, 0);
        Self {
            length: length_field(mode, size),
            key,
            size,
            first_index,
            next_index: first_index,
            tags,
            buf,
        }
    }

    fn current_len(&self) -> u64 {
        let c = self.key.chunk_size();
        let start = self.next_index * c;
        self.size.saturating_sub(start).min(c)
    }

    /// True when every chunk with a tag has been verified and handed out.
    pub(crate) fn is_done(&self) -> bool {
        self.next_index >= self.first_index + self.tags.len() as u64
    }

    /// Feeds ciphertext; returns the chunks completed and verified by it, in order. An empty
    /// final chunk is verified as soon as the chunk before it is.
    pub(crate) fn update(&mut self, mut data: Bytes) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        while !self.is_done() {
            let want = self.current_len() as usize;
            let have = self.buf.len() - PREFIX_LEN;
            let take = (want - have).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = data.slice(take..);
            if self.buf.len() - PREFIX_LEN < want {
                break;
            }
            out.push(self.verify_current()?);
        }
        Ok(out)
    }

    fn verify_current(&mut self) -> Result<Bytes> {
        let k = (self.next_index - self.first_index) as usize;
        let index = self.next_index;
        if !self
            .key
            .verify_buf(&mut self.buf, index, self.length, &self.tags[k])
        {
            let c = self.key.chunk_size();
            let start = index * c;
            let end = start + (self.buf.len() - PREFIX_LEN) as u64;
            return Err(Error::new(
                ErrorKind::TagMismatch,
                format!(
                    "chunk {index} (bytes {start}..{end} of {}) does not match its integrity tag",
                    self.size
                ),
            ));
        }
        self.next_index += 1;
        let chunk = self.buf.split_off(PREFIX_LEN).freeze();
        self.buf
            .reserve(PREFIX_LEN + self.key.chunk_size() as usize);
        Ok(chunk)
    }
}

/// The chunk size for parts of `part_size` bytes: 1 MiB when it divides the part size, else
/// the largest power of two that does (at least [`MIN_CHUNK_SIZE`]).
pub(crate) fn chunk_size_for(part_size: Option<u64>) -> Result<u32> {
    let Some(p) = part_size else {
        return Ok(DEFAULT_CHUNK_SIZE);
    };
    let mut c = DEFAULT_CHUNK_SIZE;
    while c >= MIN_CHUNK_SIZE {
        if p % u64::from(c) == 0 {
            return Ok(c);
        }
        c /= 2;
    }
    Err(Error::invalid_input(format!(
        "with integrity data on, the part size must be a multiple of {MIN_CHUNK_SIZE} bytes \
         (got {p}); pick a multiple of 1 MiB"
    )))
}

/// Splits sidecar bytes (after the header) into tags.
pub(crate) fn parse_tags(raw: &[u8]) -> Result<Vec<[u8; TAG_LEN]>> {
    if !raw.len().is_multiple_of(TAG_LEN) {
        return Err(Error::new(
            ErrorKind::MissingIntegrity,
            "the integrity sidecar is cut off in the middle of a tag",
        ));
    }
    Ok(raw
        .chunks_exact(TAG_LEN)
        .map(|c| c.try_into().expect("exact chunks"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> ContentMaterial {
        ContentMaterial::from_parts([7; 32], [9; 16])
    }

    #[test]
    fn metadata_round_trip_and_commitment() {
        let m = material();
        let (mut rec, _) = IntegrityRecord::new(&m, 1 << 20, LengthMode::Bound, None).unwrap();
        rec.inline_tags = Some(vec![[1; 16], [2; 16]]);
        let mut meta = HashMap::new();
        rec.to_metadata(&mut meta);
        let back = IntegrityRecord::from_metadata(&meta).unwrap().unwrap();
        assert_eq!(back, rec);
        assert!(back.open(&m, None).is_ok());
        let other = ContentMaterial::from_parts([7; 32], [8; 16]);
        assert_eq!(
            back.open(&other, None).unwrap_err().kind(),
            ErrorKind::CommitmentMismatch
        );
        assert_eq!(
            back.open(&m, Some(8 << 20)).unwrap_err().kind(),
            ErrorKind::CommitmentMismatch
        );
        let mut unbound = back.clone();
        unbound.length_mode = LengthMode::Unbound;
        assert_eq!(
            unbound.open(&m, None).unwrap_err().kind(),
            ErrorKind::CommitmentMismatch
        );
    }

    #[test]
    fn malformed_records_are_typed() {
        for bad in [
            "v=1",
            "v=2;id=AAAAAAAAAAAAAAAAAAAAAA;chunk=1048576;length=bound;commit=AA",
            "v=1;id=AA;chunk=1048576;length=bound;commit=AA",
            "v=1;id=AAAAAAAAAAAAAAAAAAAAAA;chunk=10;length=bound;commit=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "garbage",
        ] {
            let meta = HashMap::from([(META_INTEGRITY.to_owned(), bad.to_owned())]);
            let e = IntegrityRecord::from_metadata(&meta).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidMetadata | ErrorKind::UnsupportedAlgorithm
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn tagger_and_verifier_agree_and_catch_changes() {
        let m = material();
        let (rec, key) = IntegrityRecord::new(&m, 4096, LengthMode::Bound, None).unwrap();
        let key = std::sync::Arc::new(key);
        for size in [0usize, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5] {
            let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut t = ChunkTagger::new(key.clone(), 0, size as u64);
            for piece in data.chunks(1000) {
                t.update(piece);
            }
            let mut tags = t.finish();
            if size % 4096 == 0 {
                tags.push(empty_final_tag(&key, size as u64, size as u64));
            }
            assert_eq!(tags.len() as u64, rec.chunk_count(size as u64), "{size}");
            let verify = |bytes: Vec<u8>, tags: Vec<[u8; 16]>| -> Result<Vec<u8>> {
                let (k, _) = rec.derive(&m, None)?;
                let mut v = ChunkVerifier::new(k, LengthMode::Bound, size as u64, 0, tags);
                let mut out = Vec::new();
                for piece in bytes.chunks(777) {
                    for c in v.update(Bytes::copy_from_slice(piece))? {
                        out.extend_from_slice(&c);
                    }
                }
                if !v.is_done() {
                    for c in v.update(Bytes::new())? {
                        out.extend_from_slice(&c);
                    }
                }
                assert!(v.is_done());
                Ok(out)
            };
            assert_eq!(verify(data.clone(), tags.clone()).unwrap(), data);
            if size > 0 {
                let mut bad = data.clone();
                bad[size - 1] ^= 1;
                assert_eq!(
                    verify(bad, tags.clone()).unwrap_err().kind(),
                    ErrorKind::TagMismatch
                );
            }
        }
    }

    #[test]
    fn chunk_sizes_follow_the_part_size() {
        assert_eq!(chunk_size_for(Some(8 << 20)).unwrap(), 1 << 20);
        assert_eq!(chunk_size_for(Some(5 << 20)).unwrap(), 1 << 20);
        assert_eq!(chunk_size_for(Some((5 << 20) + 65536)).unwrap(), 65536);
        assert!(chunk_size_for(Some(5_000_000 + 16)).is_err());
        assert_eq!(chunk_size_for(None).unwrap(), 1 << 20);
    }

    /// The vector made by `scripts/integrity_vector.py` with Python `cryptography` alone.
    #[test]
    fn matches_the_independent_python_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/integrity/vector.json")).unwrap();
        let hexa = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
        for c in v["cases"].as_array().unwrap() {
            let cek: [u8; 32] = hexa(&c["cek"]).try_into().unwrap();
            let iv: [u8; 16] = hexa(&c["iv"]).try_into().unwrap();
            let id: [u8; 16] = hexa(&c["object_id"]).try_into().unwrap();
            let size = c["size"].as_u64().unwrap();
            let chunk = c["chunk_size"].as_u64().unwrap() as u32;
            let mode = match c["length_mode"].as_str().unwrap() {
                "bound" => LengthMode::Bound,
                _ => LengthMode::Unbound,
            };
            let part = Some(c["part_size"].as_u64().unwrap()).filter(|p| *p > 0);
            let m = ContentMaterial::from_parts(cek, iv);
            let (mut rec, key) = IntegrityRecord::with_id(id, &m, chunk, mode, part).unwrap();
            assert_eq!(
                hex::encode(rec.commitment),
                c["commitment"].as_str().unwrap()
            );
            let mut ct: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            m.cipher_at(0).unwrap().apply(&mut ct);
            let key = std::sync::Arc::new(key);
            let length = length_field(mode, size);
            let mut t = ChunkTagger::new(key.clone(), 0, length);
            t.update(&ct);
            let mut tags = t.finish();
            if size % u64::from(chunk) == 0 {
                tags.push(empty_final_tag(&key, size, length));
            }
            let want: Vec<String> = c["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(tags.iter().map(hex::encode).collect::<Vec<_>>(), want);
            let seed: [u8; 32] = hexa(&c["signing_seed"]).try_into().unwrap();
            let signer = SigningKey::from_seed(&seed).unwrap();
            assert_eq!(
                hex::encode(signer.public_key().as_bytes()),
                c["signer"].as_str().unwrap()
            );
            if tags.len() as u64 <= INLINE_MAX_TAGS {
                rec.inline_tags = Some(tags.clone());
            }
            rec.signature = Some(signer.sign(&rec));
            assert_eq!(
                hex::encode(rec.signature.as_ref().unwrap().signature),
                c["signature"].as_str().unwrap()
            );
            let mut meta = HashMap::new();
            rec.to_metadata(&mut meta);
            let want: HashMap<String, String> =
                serde_json::from_value(c["metadata"].clone()).unwrap();
            assert_eq!(meta, want);
            let mut side = rec.sidecar_header().to_vec();
            side.extend(tags.concat());
            assert_eq!(hex::encode(side), c["sidecar"].as_str().unwrap());
            // And the reader accepts what Python wrote.
            let back = IntegrityRecord::from_metadata(&want).unwrap().unwrap();
            let k = back.open(&m, part).unwrap();
            let mut ver = ChunkVerifier::new(k, mode, size, 0, tags);
            let got: usize = ver
                .update(Bytes::from(ct))
                .unwrap()
                .iter()
                .map(Bytes::len)
                .sum();
            assert_eq!(got as u64, size);
            assert!(ver.is_done());
        }
    }
}
