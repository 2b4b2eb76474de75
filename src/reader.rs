//! Random access to one version of an object's plaintext: parallel ranged reads, decrypted and
//! verified, of this crate's objects (OSS format) or of veTurboIO files in a bucket. The
//! building block of tensor-level loading ([`crate::safetensors`]).
//!
//! [`ErrorKind::Changed`]: crate::ErrorKind::Changed
//!
//! An [`ObjectReader`] pins the object when it opens (ETag, size, wrapped key) and unwraps its
//! key once; every read must come from that version, or fails with
//! [`ErrorKind::Changed`] (even on stores that ignore `If-Match`).
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! let reader = bucket.reader().key("ckpt/model.safetensors").open().await?;
//! let header_len = reader.read(0, 8).await?;
//! let pieces = reader.read_ranges(&[(1_000, 64), (5_000_000, 4 << 20)]).await?;
//! # let _ = (header_len, pieces); Ok(()) }
//! ```

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::cipher::ContentMaterial;
use crate::engine::{Reporter, with_retries};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{SharedHandle, require_key};
use crate::integrity::TAG_LEN;
use crate::ops::get_object::{GetObjectFluentBuilder, Pin};
use crate::range::ByteRange;
use crate::veturbo::{self, VeturboHeader, VeturboKey, VeturboKeySource};

/// Largest single GET a reader issues; longer ranges are split and fetched in parallel.
const MAX_PIECE: u64 = 8 << 20;

/// Plaintext bytes the GET that opens a reader brings along from the start of the object (one
/// integrity chunk; a safetensors header usually fits).
pub(crate) const OPEN_READ: u64 = 1 << 20;

/// Builder of an [`ObjectReader`]; see [`CryptoBucket::reader`](crate::CryptoBucket::reader).
#[derive(Debug)]
pub struct ObjectReaderBuilder {
    handle: SharedHandle,
    key: Option<String>,
    veturbo: Option<Arc<dyn VeturboKeySource>>,
}

/// Which format the reader decodes.
#[derive(Debug, Clone)]
pub(crate) enum Format {
    /// This crate's objects (and oss2's): the envelope in the metadata; `None` for a plain
    /// object the bucket's policy lets through.
    Envelope(Option<ContentMaterial>),
    /// A veTurboIO file: body at `offset` in the object, AES-CTR with `key`.
    Veturbo { offset: u64, key: VeturboKey },
}

/// Ranged plaintext reads of one pinned object version; cheap to clone and share between
/// tasks.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    handle: SharedHandle,
    key: String,
    pin: Pin,
    format: Format,
    size: u64,
    veturbo_header: Option<VeturboHeader>,
    /// Every integrity tag of the object (sidecar objects), fetched once at open.
    tags: Option<Arc<Vec<[u8; TAG_LEN]>>>,
    /// The object's first plaintext bytes (up to [`OPEN_READ`]), verified, from the GET that
    /// opened the reader; reads within them need no request.
    prefix: Bytes,
}

impl ObjectReaderBuilder {
    pub(crate) fn new(handle: SharedHandle) -> Self {
        Self {
            handle,
            key: None,
            veturbo: None,
        }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Read the object as a veTurboIO file (headered or not) with keys from `source` (a
    /// [`VeturboKey`], or a KMS for headered files) instead of as an envelope object.
    pub fn veturbo(mut self, source: impl VeturboKeySource + 'static) -> Self {
        self.veturbo = Some(Arc::new(source));
        self
    }

    /// [`veturbo`](Self::veturbo) with a shared source.
    pub(crate) fn veturbo_shared(mut self, source: Arc<dyn VeturboKeySource>) -> Self {
        self.veturbo = Some(source);
        self
    }

    /// Pins the object and gets its key: one GET of its first MiB (kept: reads within it need
    /// no request), with one GET of all its integrity tags when they live in a sidecar; a
    /// HEAD for an empty object. For veTurboIO, a HEAD and one read of its header.
    pub async fn open(self) -> Result<ObjectReader> {
        let key = require_key(self.key)?;
        let handle = self.handle;
        match self.veturbo {
            None => {
                let max = handle.transfer.max_attempts;
                let first = with_retries(max, 0, &Reporter::silent(), || async {
                    let out = GetObjectFluentBuilder::new(handle.clone())
                        .key(&key)
                        .range(ByteRange::Inclusive {
                            first: 0,
                            last: OPEN_READ - 1,
                        })
                        .single_attempt()
                        .all_tags()
                        .send()
                        .await?;
                    let pin = Pin::of_response(&handle.bucket, &key, &out)?;
                    let (material, tags) = (out.material.clone(), out.all_tags.clone());
                    Ok((pin, material, tags, out.collect_exact().await?))
                })
                .await;
                let (pin, material, tags, prefix) = match first {
                    Ok(opened) => opened,
                    // An empty object has no first byte: learn it from a HEAD.
                    Err(e) if e.kind() == ErrorKind::RangeNotSatisfiable => {
                        let (pin, material, _) = Pin::object(&handle, &key).await?;
                        (pin, material, None, Bytes::new())
                    }
                    Err(e) => return Err(e),
                };
                Ok(ObjectReader {
                    tags,
                    size: pin.size,
                    handle,
                    key,
                    pin,
                    format: Format::Envelope(material),
                    veturbo_header: None,
                    prefix,
                })
            }
            Some(source) => {
                if handle.integrity.strict {
                    return Err(Error::new(
                        ErrorKind::MissingIntegrity,
                        "veTurboIO files carry no integrity data; strict mode refuses them",
                    )
                    .with_object(&handle.bucket, &key));
                }
                let head = crate::ops::head_object::HeadObjectFluentBuilder::new(handle.clone())
                    .key(&key)
                    .send()
                    .await?;
                let pin = Pin::of_head(&handle, &key, &head)?;
                let mut reader = ObjectReader {
                    tags: None,
                    size: pin.size,
                    handle,
                    key,
                    pin,
                    format: Format::Envelope(None),
                    veturbo_header: None,
                    prefix: Bytes::new(),
                };
                let first = match reader.pin.size {
                    0 => Bytes::new(),
                    n => reader.fetch(0, n.min(veturbo::HEADER_LEN)).await?,
                };
                let header = if VeturboHeader::is_present(&first) {
                    Some(VeturboHeader::parse(&first).map_err(|e| reader.about(e))?)
                } else {
                    None
                };
                let offset = veturbo::body_offset(header.as_ref());
                let vkey = source
                    .key_for(header.as_ref())
                    .await
                    .map_err(|e| reader.about(e))?;
                reader.size = reader.pin.size - offset;
                reader.format = Format::Veturbo { offset, key: vkey };
                reader.veturbo_header = header;
                Ok(reader)
            }
        }
    }
}

impl ObjectReader {
    /// The pinned version (for transfers that continue from this reader).
    pub(crate) fn pin(&self) -> &Pin {
        &self.pin
    }

    /// How the object decodes.
    pub(crate) fn format(&self) -> &Format {
        &self.format
    }

    /// Plaintext size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The ETag of the pinned version.
    pub fn e_tag(&self) -> &str {
        &self.pin.e_tag
    }

    /// The header of a veTurboIO file that has one.
    pub fn veturbo_header(&self) -> Option<&VeturboHeader> {
        self.veturbo_header.as_ref()
    }

    /// How many reads run at once (the bucket's transfer concurrency).
    pub(crate) fn concurrency(&self) -> usize {
        self.handle.transfer.concurrency.max(1)
    }

    fn about(&self, e: Error) -> Error {
        e.with_object(&self.handle.bucket, &self.key)
    }

    /// `len` plaintext bytes from `offset` (fewer only at the end of the object), in one GET
    /// (retried by the engine), decrypted and verified.
    pub async fn read(&self, offset: u64, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        if offset >= self.size {
            return Err(self.about(Error::new(
                ErrorKind::RangeNotSatisfiable,
                format!(
                    "offset {offset} lies outside the object ({} bytes)",
                    self.size
                ),
            )));
        }
        let len = len.min(self.size - offset);
        if offset + len <= self.prefix.len() as u64 {
            return Ok(self.prefix.slice(offset as usize..(offset + len) as usize));
        }
        let max = self.handle.transfer.max_attempts;
        with_retries(max, 0, &Reporter::silent(), || {
            self.fetch_plain(offset, len)
        })
        .await
    }

    /// Several ranges `(offset, len)`, fetched in parallel (up to the bucket's transfer
    /// concurrency, ranges over 8 MiB split) and returned in the order asked.
    pub async fn read_ranges(&self, ranges: &[(u64, u64)]) -> Result<Vec<Bytes>> {
        let mut pieces = Vec::new();
        for (i, &(offset, len)) in ranges.iter().enumerate() {
            let end = offset
                .checked_add(len)
                .ok_or_else(|| Error::invalid_input(format!("range {offset}+{len} overflows")))?;
            // Pieces end on multiples of MAX_PIECE (absolute offsets, so whole integrity
            // chunks): neighbouring pieces never fetch the same chunk twice.
            let mut at = offset;
            while at < end {
                let boundary = (at / MAX_PIECE + 1) * MAX_PIECE;
                let n = boundary.min(end) - at;
                pieces.push((i, at, n));
                at += n;
            }
        }
        let concurrency = self.concurrency();
        let got: Vec<(usize, Bytes)> = futures::stream::iter(pieces)
            .map(|(i, at, n)| async move { self.read(at, n).await.map(|b| (i, b)) })
            .buffered(concurrency)
            .try_collect()
            .await?;
        let mut out: Vec<BytesMut> = ranges.iter().map(|_| BytesMut::new()).collect();
        let mut single: Vec<Option<Bytes>> = vec![None; ranges.len()];
        for (i, b) in got {
            // The common case, one piece per range, stays zero-copy; several pieces are
            // copied once into a buffer of the range's size.
            match (&single[i], out[i].is_empty()) {
                (None, true) => single[i] = Some(b),
                _ => {
                    if let Some(first) = single[i].take() {
                        out[i].reserve(ranges[i].1 as usize);
                        out[i].extend_from_slice(&first);
                    }
                    out[i].extend_from_slice(&b);
                }
            }
        }
        Ok(out
            .into_iter()
            .zip(single)
            .map(|(many, one)| one.unwrap_or_else(|| many.freeze()))
            .collect())
    }

    /// The whole plaintext as a stream of pieces, in order: up to the bucket's concurrency of
    /// 8 MiB ranged reads run ahead, so memory stays within concurrency × 8 MiB.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// use futures::TryStreamExt as _;
    /// let reader = bucket.reader().key("ckpt/model.bin").open().await?;
    /// let mut pieces = reader.stream();
    /// while let Some(bytes) = pieces.try_next().await? {
    ///     let _ = bytes; // hand each piece on, in order
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> impl futures::Stream<Item = Result<Bytes>> + Send + '_ {
        let size = self.size;
        // The bytes read at open first, then pieces ending on multiples of MAX_PIECE.
        let held = self.prefix.len() as u64;
        let starts = (held > 0)
            .then_some(0)
            .into_iter()
            .chain((0..size.div_ceil(MAX_PIECE)).map(move |i| (i * MAX_PIECE).max(held)))
            .filter(move |&at| at < size)
            .collect::<Vec<_>>();
        let ends: Vec<u64> = starts.iter().skip(1).copied().chain([size]).collect();
        futures::stream::iter(starts.into_iter().zip(ends))
            .map(move |(at, end)| self.read(at, end - at))
            .buffered(self.concurrency())
    }

    /// Writes the whole plaintext into `writer` in order (parallel ranged reads, as
    /// [`stream`](Self::stream)), then flushes it; returns the bytes written. Nothing is
    /// written that was not verified first.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let reader = bucket.reader().key("ckpt/model.bin").open().await?;
    /// reader.write_to(&mut tokio::io::stdout()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_to(&self, writer: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        let io = |e| Error::io("cannot write the object's plaintext", e);
        let mut pieces = std::pin::pin!(self.stream());
        let mut n = 0u64;
        while let Some(bytes) = pieces.try_next().await? {
            writer.write_all(&bytes).await.map_err(io)?;
            n += bytes.len() as u64;
        }
        writer.flush().await.map_err(io)?;
        Ok(n)
    }

    /// One attempt at plaintext bytes `offset .. offset + len` (within the object).
    async fn fetch_plain(&self, offset: u64, len: u64) -> Result<Bytes> {
        match &self.format {
            Format::Envelope(material) => {
                let get = GetObjectFluentBuilder::new(self.handle.clone())
                    .key(&self.key)
                    .range(ByteRange::Inclusive {
                        first: offset,
                        last: offset + len - 1,
                    })
                    .pinned(self.pin.clone(), material.clone())
                    .with_tags(self.tags.clone());
                collect(get, len).await
            }
            Format::Veturbo { offset: body, key } => {
                let get = GetObjectFluentBuilder::new(self.handle.clone())
                    .key(&self.key)
                    .range(ByteRange::Inclusive {
                        first: body + offset,
                        last: body + offset + len - 1,
                    })
                    .pinned(self.pin.clone(), None)
                    .stored(Some(key.cipher_at(offset)?));
                collect(get, len).await
            }
        }
    }

    /// Stored bytes `offset .. offset + len`, as they are (the veTurboIO header).
    async fn fetch(&self, offset: u64, len: u64) -> Result<Bytes> {
        let max = self.handle.transfer.max_attempts;
        with_retries(max, 0, &Reporter::silent(), || {
            let get = GetObjectFluentBuilder::new(self.handle.clone())
                .key(&self.key)
                .range(ByteRange::Inclusive {
                    first: offset,
                    last: offset + len - 1,
                })
                .pinned(self.pin.clone(), None)
                .stored(None);
            collect(get, len)
        })
        .await
    }
}

async fn collect(get: GetObjectFluentBuilder, len: u64) -> Result<Bytes> {
    let out = get.send().await?;
    if out.content_length != len {
        return Err(Error::invalid_response(format!(
            "asked for {len} bytes, the response has {}",
            out.content_length
        )));
    }
    out.collect_exact().await
}
