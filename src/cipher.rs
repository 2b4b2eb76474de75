//! AES-256-CTR content encryption, seekable to any byte offset.
//!
//! The counter is the object's 16-byte IV treated as one big-endian 128-bit integer; the block
//! holding plaintext byte `off` uses counter `IV + off / 16` (full 128-bit addition, so offsets
//! beyond 64 GiB are right, unlike Java's 32-bit arithmetic). The cipher is AWS-LC's, chosen by
//! measurement (see BENCHMARKS.md): it uses AES-NI/VAES with runtime CPU detection.
//!
//! Because the keystream byte at offset `off` is a pure function of (key, IV, off), a
//! [`CtrCipher`] can start anywhere, even in the middle of a block; ranged reads and parallel
//! parts need no alignment on the decrypting side.

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, ErrorKind, Result};

/// Length of the content encryption key (AES-256).
pub const CEK_LEN: usize = 32;
/// Length of the IV / initial counter block.
pub const IV_LEN: usize = 16;
/// AES block size; multipart part sizes and part offsets must be multiples of it.
pub const BLOCK_LEN: u64 = 16;

/// A content encryption key and IV: the secret that protects one object.
///
/// Zeroized on drop; its `Debug` output is redacted.
///
/// ```
/// use cryptobucket::ContentMaterial;
/// let m = ContentMaterial::generate().unwrap();
/// assert_eq!(&m.iv()[8..12], &[0, 0, 0, 0]); // the layout every OSS SDK writes
/// assert!(!format!("{m:?}").contains(&format!("{:?}", m.iv())));
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContentMaterial {
    cek: [u8; CEK_LEN],
    iv: [u8; IV_LEN],
}

impl ContentMaterial {
    /// A fresh random CEK and IV from the OS CSPRNG. IV bytes 8..12 are zero, as the OSS SDKs
    /// write them, so adding a block offset never carries into bytes 0..8.
    pub fn generate() -> Result<Self> {
        let mut m = Self {
            cek: [0; CEK_LEN],
            iv: [0; IV_LEN],
        };
        aws_lc_rs::rand::fill(&mut m.cek)
            .and_then(|()| aws_lc_rs::rand::fill(&mut m.iv))
            .map_err(|_| Error::new(ErrorKind::Io, "the system random number generator failed"))?;
        m.iv[8..12].fill(0);
        Ok(m)
    }

    /// Builds material from raw bytes (for unwrapping and for tests).
    pub fn from_parts(cek: [u8; CEK_LEN], iv: [u8; IV_LEN]) -> Self {
        Self { cek, iv }
    }

    /// Builds material from slices, checking their lengths.
    pub fn from_slices(cek: &[u8], iv: &[u8]) -> Result<Self> {
        let cek: [u8; CEK_LEN] = cek.try_into().map_err(|_| Error::key_unwrap())?;
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| Error::key_unwrap())?;
        Ok(Self { cek, iv })
    }

    /// The raw content key. Handle with care: never log or persist it.
    pub fn cek(&self) -> &[u8; CEK_LEN] {
        &self.cek
    }

    /// The raw IV (initial counter block).
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// A cipher positioned at plaintext byte `offset`.
    pub fn cipher_at(&self, offset: u64) -> Result<CtrCipher> {
        CtrCipher::new(self, offset)
    }
}

impl std::fmt::Debug for ContentMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentMaterial { <redacted> }")
    }
}

/// The counter block for the block containing plaintext byte `offset`:
/// `iv + offset / 16` as a 128-bit big-endian addition (wrapping, like OpenSSL).
///
/// ```
/// let iv = [0u8, 1, 2, 3, 4, 5, 6, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
/// let c = cryptobucket::cipher::counter_at(&iv, 16);
/// assert_eq!(c, [0, 1, 2, 3, 4, 5, 6, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
/// ```
pub fn counter_at(iv: &[u8; IV_LEN], offset: u64) -> [u8; IV_LEN] {
    let base = u128::from_be_bytes(*iv);
    base.wrapping_add(u128::from(offset / BLOCK_LEN))
        .to_be_bytes()
}

/// A streaming AES-CTR cipher (AES-256 for this crate's objects) at a byte position. Encryption and decryption are the same
/// operation ([`CtrCipher::apply`]).
///
/// ```
/// use cryptobucket::ContentMaterial;
/// let m = ContentMaterial::from_parts([7; 32], [1; 16]);
/// let mut whole = b"hello, counter mode".to_vec();
/// m.cipher_at(0).unwrap().apply(&mut whole);
/// // Decrypt only bytes 5.. by seeking: no need to start at a block boundary.
/// let mut tail = whole[5..].to_vec();
/// m.cipher_at(5).unwrap().apply(&mut tail);
/// assert_eq!(tail, b", counter mode");
/// ```
pub struct CtrCipher {
    key: EncryptingKey,
    iv: [u8; IV_LEN],
    pos: u64,
}

impl CtrCipher {
    /// A cipher for `material`, positioned at plaintext byte `offset`.
    pub fn new(material: &ContentMaterial, offset: u64) -> Result<Self> {
        Self::with_key(material.cek(), material.iv(), offset)
    }

    /// A cipher from a raw AES key of 16 bytes (AES-128-CTR, as veTurboIO's `CTR-128`) or 32
    /// bytes (AES-256-CTR) and a 16-byte initial counter block, at plaintext byte `offset`.
    ///
    /// ```
    /// let mut c = cryptobucket::cipher::CtrCipher::with_key(&[1; 16], &[2; 16], 0).unwrap();
    /// let mut data = [0u8; 4];
    /// c.apply(&mut data);
    /// assert_ne!(data, [0; 4]);
    /// assert!(cryptobucket::cipher::CtrCipher::with_key(&[1; 24], &[2; 16], 0).is_err());
    /// ```
    pub fn with_key(key: &[u8], iv: &[u8; IV_LEN], offset: u64) -> Result<Self> {
        let alg = match key.len() {
            16 => &AES_128,
            32 => &AES_256,
            n => {
                return Err(Error::new(
                    ErrorKind::InvalidKey,
                    format!("an AES-CTR key is 16 or 32 bytes, not {n}"),
                ));
            }
        };
        let key = UnboundCipherKey::new(alg, key)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| Error::new(ErrorKind::InvalidKey, "AES key setup failed"))?;
        Ok(Self {
            key,
            iv: *iv,
            pos: offset,
        })
    }

    /// The plaintext offset of the next byte [`apply`](Self::apply) will process.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves to plaintext byte `offset`.
    pub fn seek(&mut self, offset: u64) {
        self.pos = offset;
    }

    /// XORs the keystream into `data` in place and advances the position.
    pub fn apply(&mut self, mut data: &mut [u8]) {
        // A leading partial block: produce that block's keystream and use its tail.
        let within = (self.pos % BLOCK_LEN) as usize;
        if within != 0 && !data.is_empty() {
            let mut block = [0u8; BLOCK_LEN as usize];
            self.keystream_into(&mut block, self.pos);
            let n = (BLOCK_LEN as usize - within).min(data.len());
            for (d, k) in data[..n].iter_mut().zip(&block[within..within + n]) {
                *d ^= k;
            }
            block.zeroize();
            self.pos += n as u64;
            data = &mut data[n..];
        }
        if !data.is_empty() {
            // Block-aligned from here; a trailing partial block is handled by AWS-LC.
            self.keystream_into(data, self.pos);
            self.pos += data.len() as u64;
        }
    }

    fn keystream_into(&self, data: &mut [u8], aligned_from: u64) {
        let counter = counter_at(&self.iv, aligned_from);
        let ctx = EncryptionContext::Iv128(FixedLength::from(counter));
        // CTR accepts any length and a 16-byte IV; AWS-LC reports no other failure mode.
        self.key
            .less_safe_encrypt(data, ctx)
            .expect("AES-CTR with a 16-byte counter block cannot fail");
    }
}

impl Drop for CtrCipher {
    fn drop(&mut self) {
        // The AES key schedule is zeroized by aws-lc-rs; clear our copy of the IV too.
        self.iv.zeroize();
    }
}

impl std::fmt::Debug for CtrCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtrCipher")
            .field("position", &self.pos)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_material() -> ContentMaterial {
        let mut cek = [0u8; 32];
        for (i, b) in cek.iter_mut().enumerate() {
            *b = i as u8;
        }
        let iv = hex::decode("0001020304050607000000000c0d0e0f").unwrap();
        ContentMaterial::from_parts(cek, iv.try_into().unwrap())
    }

    // Test vectors from the spec, section 8 (from oss2, confirmed with OpenSSL).
    const FULL_CT: &str = "20f8a7666b8d7ee50521a9b22157ecb32235a9e086b724c3c576ddd1aa31aab7b5e74caa5b75c7ff6037b0a903a465d760ade2ad178334ff1bb82d7128da106869c1ed6bcf0b53447a1490d286eaab78dea23626c87d653b849cc829e2dc26acc6d277b9";

    #[test]
    fn spec_full_object_vector() {
        let mut data: Vec<u8> = (0u8..100).collect();
        spec_material().cipher_at(0).unwrap().apply(&mut data);
        assert_eq!(hex::encode(&data), FULL_CT);
    }

    #[test]
    fn spec_range_and_unaligned_vectors() {
        let ct = hex::decode(FULL_CT).unwrap();
        let m = spec_material();
        assert_eq!(
            hex::encode(counter_at(m.iv(), 32)),
            "0001020304050607000000000c0d0e11"
        );
        let mut r = ct[32..80].to_vec();
        m.cipher_at(32).unwrap().apply(&mut r);
        assert_eq!(r, (32u8..80).collect::<Vec<_>>());
        let mut u = ct[37..=56].to_vec();
        m.cipher_at(37).unwrap().apply(&mut u);
        assert_eq!(u, (37u8..=56).collect::<Vec<_>>());
    }

    #[test]
    fn spec_128_bit_carry_vector() {
        let mut cek = [0u8; 32];
        for (i, b) in cek.iter_mut().enumerate() {
            *b = i as u8;
        }
        let iv = hex::decode("0001020304050607ffffffffffffffff").unwrap();
        let m = ContentMaterial::from_parts(cek, iv.try_into().unwrap());
        let mut data: Vec<u8> = (0u8..32).collect();
        m.cipher_at(0).unwrap().apply(&mut data);
        assert_eq!(
            hex::encode(&data),
            "22718279102d0c1154766325fea65c9d6b603a2bf77d7b21c928ab81b377e6a0"
        );
    }

    /// The multipart vector of docs/oss-cse-format.md: three parts, each encrypted at its own
    /// offset, equal to what oss2 produced.
    #[test]
    fn spec_multipart_vector() {
        use sha2::Digest as _;
        let m = spec_material();
        let plain: Vec<u8> = (0..256_005u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&plain)),
            "d469c503ce2b72494beab9b2ba56006ac2b4eb1afc6430578d4f95f72cbe5eac"
        );
        let mut ct = plain.clone();
        for (n, part) in ct.chunks_mut(102_400).enumerate() {
            m.cipher_at(n as u64 * 102_400).unwrap().apply(part);
        }
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&ct)),
            "9ec86daae8d98dd821148382f21b6b9a7001e75f84e95ed0b074a0226dc841f9"
        );
        assert_eq!(
            hex::encode(&ct[102_400..102_416]),
            "39a19f4a5f2886a9e0b27099d02133b4"
        );
    }

    #[test]
    fn chunking_never_changes_the_output() {
        let m = spec_material();
        let mut whole: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let orig = whole.clone();
        m.cipher_at(0).unwrap().apply(&mut whole);
        for chunk in [1usize, 3, 15, 16, 17, 31, 100] {
            let mut c = m.cipher_at(0).unwrap();
            let mut parts = orig.clone();
            for piece in parts.chunks_mut(chunk) {
                c.apply(piece);
            }
            assert_eq!(parts, whole, "chunk size {chunk}");
        }
    }

    #[test]
    fn generated_iv_has_zero_headroom_and_fresh_values() {
        let a = ContentMaterial::generate().unwrap();
        let b = ContentMaterial::generate().unwrap();
        assert_eq!(&a.iv()[8..12], &[0; 4]);
        assert_ne!(a.cek(), b.cek());
        assert_ne!(a.iv(), b.iv());
    }
}
