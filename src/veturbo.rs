//! veTurboIO encrypted model files (Volcengine; `docs/other-formats.md`): AES-CTR
//! over the whole plaintext file, no MAC, optionally behind a 256 KiB header that names the
//! mode, the IV and the KMS-wrapped data key.
//!
//! ```text
//! [ header: "Byte3ncryptM0del" ‖ JSON ‖ 0x00 … up to 262,144 bytes ]   (optional)
//! [ AES-CTR(key, counter = IV + ⌊o/16⌋, plaintext) ]                   (offset o from 0)
//! ```
//!
//! The key comes from a [`VeturboKeySource`]: an explicit [`VeturboKey`] (veTurboIO's
//! `VETURBOIO_KEY`/`VETURBOIO_IV`, [`VeturboKey::from_env`]) or a KMS that decrypts the header's
//! `meta_data_key`. Reading goes through this crate's data path ([`crate::reader`] for ranges,
//! [`VeturboDecryptor`] for streams); writing through [`VeturboEncryptor`].
//!
//! **No integrity**: the format has no MAC, so a veTurboIO file decrypts whatever bytes it is
//! given. Strict mode ([`crate::KeyringBuilder::strict`]) refuses to read it from a bucket;
//! convert such files into this crate's objects (which carry integrity data) once, from a
//! source you trust.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use cryptobucket::veturbo::{VeturboDecryptor, VeturboEncryptor, VeturboKey};
//! use tokio::io::AsyncReadExt;
//! let key = VeturboKey::new(b"abcdefgh12345678", *b"1234567887654321").unwrap();
//! let mut enc = VeturboEncryptor::new(&b"tensor bytes"[..], &key, None).unwrap();
//! let mut file = Vec::new();
//! enc.read_to_end(&mut file).await.unwrap();
//! let (mut dec, header) = VeturboDecryptor::open(&file[..], &key).await.unwrap();
//! assert!(header.is_none());
//! let mut plain = Vec::new();
//! dec.read_to_end(&mut plain).await.unwrap();
//! assert_eq!(plain, b"tensor bytes");
//! # });
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zeroize::Zeroizing;

use crate::cipher::{CtrCipher, IV_LEN};
use crate::error::{Error, ErrorKind, Result};

mod upload;

pub use upload::{
    VeturboUploadBuilder, VeturboUploadOutput, export_to_object, store_stream, upload_file,
};

/// Length of the optional header, and so the offset of the ciphertext behind it.
pub const HEADER_LEN: u64 = 262_144;
/// The header's first 16 bytes.
pub const MAGIC: [u8; 16] = *b"Byte3ncryptM0del";

/// The cipher a veTurboIO file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VeturboMode {
    /// `CTR-128`: AES-128-CTR (16-byte key); what veTurboIO writes with a header.
    Ctr128,
    /// `CTR-256`: AES-256-CTR (32-byte key).
    Ctr256,
}

impl VeturboMode {
    /// The header's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ctr128 => "CTR-128",
            Self::Ctr256 => "CTR-256",
        }
    }

    /// The key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Ctr128 => 16,
            Self::Ctr256 => 32,
        }
    }

    fn of_key_len(len: usize) -> Result<Self> {
        match len {
            16 => Ok(Self::Ctr128),
            32 => Ok(Self::Ctr256),
            n => Err(Error::invalid_key(format!(
                "a veTurboIO key is 16 (CTR-128) or 32 (CTR-256) bytes, not {n}"
            ))),
        }
    }
}

impl std::str::FromStr for VeturboMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "CTR-128" => Ok(Self::Ctr128),
            "CTR-256" => Ok(Self::Ctr256),
            other => Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!("unknown veTurboIO mode {other:?} (known: CTR-128, CTR-256)"),
            )),
        }
    }
}

/// The parsed 256 KiB header of a veTurboIO file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VeturboHeader {
    /// Cipher of the body.
    pub mode: VeturboMode,
    /// Initial counter block.
    pub iv: [u8; IV_LEN],
    /// The data key as the KMS encrypted it (`CiphertextBlob`); not secret.
    pub meta_data_key: String,
    /// When the file was written (seconds since the epoch, as veTurboIO records it).
    pub file_timestamp: i64,
}

fn bad_header(what: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidFormat,
        format!("invalid veTurboIO header: {what}"),
    )
}

impl VeturboHeader {
    /// A header for a new file.
    pub fn new(mode: VeturboMode, iv: [u8; IV_LEN], meta_data_key: impl Into<String>) -> Self {
        let file_timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self {
            mode,
            iv,
            meta_data_key: meta_data_key.into(),
            file_timestamp,
        }
    }

    /// Whether `first` (a file's first bytes, at least 16) starts with the header magic.
    pub fn is_present(first: &[u8]) -> bool {
        first.starts_with(&MAGIC)
    }

    /// Parses a header: `bytes` is the file's first [`HEADER_LEN`] bytes (or the whole file
    /// when shorter, which is then an error). The JSON ends at the first zero byte.
    ///
    /// ```
    /// use cryptobucket::veturbo::{VeturboHeader, VeturboMode};
    /// let h = VeturboHeader::new(VeturboMode::Ctr128, [7; 16], "blob");
    /// assert_eq!(VeturboHeader::parse(&h.to_bytes().unwrap()).unwrap(), h);
    /// assert!(VeturboHeader::parse(b"Byte3ncryptM0del{not json").is_err());
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if !Self::is_present(bytes) {
            return Err(Error::new(
                ErrorKind::InvalidFormat,
                "not a headered veTurboIO file (no Byte3ncryptM0del magic)",
            ));
        }
        if (bytes.len() as u64) < HEADER_LEN {
            return Err(bad_header(format!(
                "the file ends after {} bytes, inside its {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        let area = &bytes[MAGIC.len()..HEADER_LEN as usize];
        let json = &area[..area.iter().position(|&b| b == 0).unwrap_or(area.len())];
        #[derive(serde::Deserialize)]
        struct Raw {
            mode: String,
            iv: String,
            #[serde(default)]
            meta_data_key: String,
            #[serde(default)]
            file_timestamp: i64,
        }
        let raw: Raw = serde_json::from_slice(json)
            .map_err(|e| bad_header(format!("not valid JSON ({e})")))?;
        let mode: VeturboMode = raw.mode.parse()?;
        let iv: [u8; IV_LEN] = B64
            .decode(raw.iv.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad_header("iv is not base64 of 16 bytes"))?;
        Ok(Self {
            mode,
            iv,
            meta_data_key: raw.meta_data_key,
            file_timestamp: raw.file_timestamp,
        })
    }

    /// The header's [`HEADER_LEN`] bytes: magic, JSON as Python's `json.dumps` writes it
    /// (`", "` and `": "` separators, keys in veTurboIO's order), zeros. Fails when the JSON
    /// (a huge `meta_data_key`) does not fit.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        let json = format!(
            "{{\"mode\": {}, \"iv\": {}, \"meta_data_key\": {}, \"file_timestamp\": {}}}",
            s(self.mode.as_str()),
            s(&B64.encode(self.iv)),
            s(&self.meta_data_key),
            self.file_timestamp
        );
        if MAGIC.len() + json.len() >= HEADER_LEN as usize {
            return Err(Error::invalid_input(format!(
                "the veTurboIO header's JSON is {} bytes; it must fit in {} with its magic and \
                 a terminating zero",
                json.len(),
                HEADER_LEN
            )));
        }
        let mut out = Vec::with_capacity(HEADER_LEN as usize);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(json.as_bytes());
        out.resize(HEADER_LEN as usize, 0);
        Ok(out)
    }
}

/// A veTurboIO data key and IV (secret; zeroized on drop, hidden from `Debug`).
#[derive(Clone)]
pub struct VeturboKey {
    key: Zeroizing<Vec<u8>>,
    iv: [u8; IV_LEN],
}

impl fmt::Debug for VeturboKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VeturboKey")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl VeturboKey {
    /// A key of 16 (CTR-128) or 32 (CTR-256) bytes and its IV.
    pub fn new(key: &[u8], iv: [u8; IV_LEN]) -> Result<Self> {
        VeturboMode::of_key_len(key.len())?;
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
            iv,
        })
    }

    /// A new random key and IV for `mode` (a new headered file: its key goes to KMS).
    pub fn generate(mode: VeturboMode) -> Result<Self> {
        let mut key = Zeroizing::new(vec![0u8; mode.key_len()]);
        let mut iv = [0u8; IV_LEN];
        aws_lc_rs::rand::fill(&mut key[..])
            .and_then(|_| aws_lc_rs::rand::fill(&mut iv))
            .map_err(|_| Error::invalid_key("the system random number generator failed"))?;
        Self::new(&key, iv)
    }

    /// veTurboIO's environment key: `VETURBOIO_KEY` and `VETURBOIO_IV`, base64.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name).map(Zeroizing::new).map_err(|_| {
                Error::invalid_key(format!("the veTurboIO key variable {name} is not set"))
            })
        };
        let key = Zeroizing::new(
            B64.decode(var("VETURBOIO_KEY")?.trim())
                .map_err(|_| Error::invalid_key("VETURBOIO_KEY is not base64"))?,
        );
        let iv = B64
            .decode(var("VETURBOIO_IV")?.trim())
            .ok()
            .and_then(|v| <[u8; IV_LEN]>::try_from(v).ok())
            .ok_or_else(|| Error::invalid_key("VETURBOIO_IV is not base64 of 16 bytes"))?;
        Self::new(&key, iv)
    }

    /// The mode the key's length implies.
    pub fn mode(&self) -> VeturboMode {
        VeturboMode::of_key_len(self.key.len()).unwrap_or(VeturboMode::Ctr128)
    }

    /// The IV.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// The same key with another IV (a header's).
    pub fn with_iv(&self, iv: [u8; IV_LEN]) -> Self {
        Self {
            key: self.key.clone(),
            iv,
        }
    }

    /// The raw key bytes (for a KMS `Encrypt`).
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The key a checkpoint of a transfer under this key is sealed with (a hash of key and
    /// label; the IV as is), so that a checkpoint made under another key is refused.
    pub(crate) fn checkpoint_binding(&self) -> crate::cipher::ContentMaterial {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"cryptobucket veturbo checkpoint binding v1");
        ctx.update(&self.key);
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(ctx.finish().as_ref());
        crate::cipher::ContentMaterial::from_parts(*seed, self.iv)
    }

    /// The cipher at plaintext offset `offset` (0 = the first byte after any header).
    pub fn cipher_at(&self, offset: u64) -> Result<CtrCipher> {
        CtrCipher::with_key(&self.key, &self.iv, offset)
    }
}

/// Where the key of a veTurboIO file comes from, given its header (if any).
pub trait VeturboKeySource: Send + Sync + fmt::Debug {
    /// The key and IV for a file with `header` (`None`: a headerless file).
    fn key_for<'a>(
        &'a self,
        header: Option<&'a VeturboHeader>,
    ) -> BoxFuture<'a, Result<VeturboKey>>;
}

impl<T: VeturboKeySource + ?Sized> VeturboKeySource for Box<T> {
    fn key_for<'a>(
        &'a self,
        header: Option<&'a VeturboHeader>,
    ) -> BoxFuture<'a, Result<VeturboKey>> {
        (**self).key_for(header)
    }
}

/// An explicit key: headerless files use its IV; headered ones the header's IV (the key
/// length must match the header's mode).
impl VeturboKeySource for VeturboKey {
    fn key_for<'a>(
        &'a self,
        header: Option<&'a VeturboHeader>,
    ) -> BoxFuture<'a, Result<VeturboKey>> {
        Box::pin(async move {
            match header {
                None => Ok(self.clone()),
                Some(h) if h.mode == self.mode() => Ok(self.with_iv(h.iv)),
                Some(h) => Err(Error::invalid_key(format!(
                    "the file's header says {} but the key is for {}",
                    h.mode.as_str(),
                    self.mode().as_str()
                ))),
            }
        })
    }
}

/// Where the body of a file starts: after the header when there is one.
pub fn body_offset(header: Option<&VeturboHeader>) -> u64 {
    if header.is_some() { HEADER_LEN } else { 0 }
}

/// A veTurboIO stream: a prefix served as it is, then the inner reader through AES-CTR. As
/// [`VeturboEncryptor`] the prefix is the header and the inner reader plaintext; as
/// [`VeturboDecryptor`] the inner reader is the file and the output plaintext.
pub struct VeturboStream<R> {
    inner: R,
    prefix: Vec<u8>,
    prefix_pos: usize,
    cipher: CtrCipher,
}

/// Encrypts a plaintext stream into a veTurboIO file as it is read: the header (when given;
/// its mode and IV must be the key's) then the AES-CTR body. See [`VeturboStream::new`].
pub type VeturboEncryptor<R> = VeturboStream<R>;

/// Decrypts a veTurboIO file (headered or not) as it is read. See [`VeturboStream::open`].
pub type VeturboDecryptor<R> = VeturboStream<R>;

impl<R> fmt::Debug for VeturboStream<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VeturboStream")
            .field("position", &self.cipher.position())
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> VeturboStream<R> {
    /// Encrypts `plain` with `key`, behind `header` when given.
    pub fn new(plain: R, key: &VeturboKey, header: Option<&VeturboHeader>) -> Result<Self> {
        if let Some(h) = header
            && (h.mode != key.mode() || h.iv != key.iv)
        {
            return Err(Error::invalid_input(
                "the veTurboIO header's mode and IV must be the key's",
            ));
        }
        Ok(Self {
            inner: plain,
            prefix: header
                .map(VeturboHeader::to_bytes)
                .transpose()?
                .unwrap_or_default(),
            prefix_pos: 0,
            cipher: key.cipher_at(0)?,
        })
    }

    /// Reads the start of `file`, parses its header if it has one, gets the key from `keys`,
    /// and returns a reader of the plaintext and the header.
    pub async fn open(
        mut file: R,
        keys: &dyn VeturboKeySource,
    ) -> Result<(Self, Option<VeturboHeader>)> {
        let io = |e| Error::io("cannot read the veTurboIO file", e);
        let mut lead = Vec::with_capacity(MAGIC.len());
        (&mut file)
            .take(MAGIC.len() as u64)
            .read_to_end(&mut lead)
            .await
            .map_err(io)?;
        let header = if VeturboHeader::is_present(&lead) {
            (&mut file)
                .take(HEADER_LEN - MAGIC.len() as u64)
                .read_to_end(&mut lead)
                .await
                .map_err(io)?;
            let h = VeturboHeader::parse(&lead)?;
            lead.clear();
            Some(h)
        } else {
            None
        };
        let key = keys.key_for(header.as_ref()).await?;
        let mut cipher = key.cipher_at(0)?;
        // Bytes read while looking for a header that turned out to be body.
        cipher.apply(&mut lead);
        Ok((
            Self {
                inner: file,
                prefix: lead,
                prefix_pos: 0,
                cipher,
            },
            header,
        ))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VeturboStream<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix_pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.prefix_pos);
            buf.put_slice(&this.prefix[this.prefix_pos..this.prefix_pos + n]);
            this.prefix_pos += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.cipher.apply(&mut buf.filled_mut()[before..]);
        Poll::Ready(Ok(()))
    }
}

/// Decrypts the object `key` of `bucket` (one of this crate's objects, verified as it
/// streams) and writes it as the veTurboIO file `dest` with `vkey`, behind `header` when given
/// (its mode and IV must be the key's). The file is written into a partial file beside `dest`
/// (mode 0600), synced and renamed into place only when complete; any failure leaves `dest`
/// untouched. Returns the bytes written.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::veturbo::{self, VeturboKey};
/// let key = VeturboKey::from_env()?;
/// veturbo::export_to_file(&bucket, "ckpt/model.safetensors", &key, None, "model.enc").await?;
/// # Ok(()) }
/// ```
pub async fn export_to_file(
    bucket: &crate::CryptoBucket,
    key: &str,
    vkey: &VeturboKey,
    header: Option<&VeturboHeader>,
    dest: impl AsRef<std::path::Path>,
) -> Result<u64> {
    let got = bucket.get_object().key(key).send().await?;
    let total = body_offset(header) + got.content_length;
    let mut enc = VeturboEncryptor::new(got.body.into_async_read(), vkey, header)?;
    let what = format!("cannot export s3://{}/{key}", bucket.bucket());
    crate::partial::PartialFile::write_new(dest.as_ref(), total, true, |file| async move {
        let mut file = tokio::fs::File::from_std(file);
        let n = tokio::io::copy(&mut enc, &mut file)
            .await
            .map_err(|e| Error::io(what, e))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io("cannot write the veTurboIO file", e))?;
        Ok(n)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_errors() {
        let h = VeturboHeader {
            mode: VeturboMode::Ctr128,
            iv: *b"1234567887654321",
            meta_data_key: "a\"b".into(),
            file_timestamp: 1_700_000_000,
        };
        let bytes = h.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64, HEADER_LEN);
        let too_long = VeturboHeader::new(VeturboMode::Ctr128, [0; 16], "\u{1}".repeat(50_000));
        assert_eq!(
            too_long.to_bytes().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!(
            bytes[16..].starts_with(
                b"{\"mode\": \"CTR-128\", \"iv\": \"MTIzNDU2Nzg4NzY1NDMyMQ==\", \"meta_data_key\": \"a\\\"b\", \"file_timestamp\": 1700000000}\0"
            )
        );
        assert_eq!(VeturboHeader::parse(&bytes).unwrap(), h);
        let kind = |b: &[u8]| VeturboHeader::parse(b).unwrap_err().kind();
        assert_eq!(kind(&bytes[..1000]), ErrorKind::InvalidFormat);
        assert_eq!(kind(b"not a header"), ErrorKind::InvalidFormat);
        let mut unknown = bytes.clone();
        unknown[16..16 + 18].copy_from_slice(b"{\"mode\": \"CTR-512\"");
        assert_eq!(kind(&unknown), ErrorKind::UnsupportedAlgorithm);
        let mut broken = bytes.clone();
        broken[17] = b'!';
        assert_eq!(kind(&broken), ErrorKind::InvalidFormat);
        let mut no_zero = bytes;
        no_zero[16..].fill(b' ');
        assert_eq!(kind(&no_zero), ErrorKind::InvalidFormat);
    }

    #[test]
    fn keys_check_lengths_and_hide_secrets() {
        assert!(VeturboKey::new(&[1; 24], [0; 16]).is_err());
        let k = VeturboKey::new(&[0x5a; 32], [0; 16]).unwrap();
        assert_eq!(k.mode(), VeturboMode::Ctr256);
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("90") && !dbg.contains("5a"), "{dbg}");
    }
}
