//! The data path: plaintext source → encrypting request body, and response body → decrypting
//! stream. Both stream in fixed-size chunks; neither ever holds a whole object.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::body::SdkBody;
use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use std::sync::Arc;

use crate::cipher::{ContentMaterial, CtrCipher};
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::{ChunkTagger, ChunkVerifier, TAG_LEN, TagKey};

/// Chunk size used when reading plaintext sources.
pub(crate) const CHUNK: usize = 1 << 20;

type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// The error type of a response body stream from any transport.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A response body from any transport: the S3 SDK's, reqwest's, object_store's.
pub(crate) type BodyStream =
    Pin<Box<dyn Stream<Item = std::result::Result<Bytes, BoxError>> + Send + Sync>>;

enum Source {
    Bytes(Bytes),
    /// A file, from a byte offset.
    File(PathBuf, u64),
    Reader(Mutex<Option<Reader>>),
}

/// The plaintext of an upload: bytes, a file, or any reader of known length.
///
/// Byte and file bodies can be replayed, so the SDK may retry them (they are re-encrypted with
/// the same key and IV, giving identical ciphertext); reader bodies are sent once.
///
/// ```
/// use cryptobucket::PutBody;
/// let b = PutBody::from(b"hello".to_vec());
/// assert_eq!(b.len(), Some(5));
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let r = PutBody::from_reader(tokio::io::empty(), 0);
/// assert!(r.is_empty());
/// # });
/// ```
pub struct PutBody {
    source: Source,
    len: u64,
    /// False for [`PutBody::from_stream`]: the length is found by reading.
    known_len: bool,
}

impl std::fmt::Debug for PutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.source {
            Source::Bytes(_) => "bytes".to_owned(),
            Source::File(p, 0) => format!("file {}", p.display()),
            Source::File(p, at) => format!("file {} from byte {at}", p.display()),
            Source::Reader(_) => "reader".to_owned(),
        };
        f.debug_struct("PutBody")
            .field("source", &kind)
            .field("len", &self.known_len.then_some(self.len))
            .finish()
    }
}

impl PutBody {
    /// A body from bytes in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            len: bytes.len() as u64,
            source: Source::Bytes(bytes),
            known_len: true,
        }
    }

    /// A body that streams the file at `path` (its current length).
    pub async fn from_path(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(Error::invalid_input(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(Self {
            len: meta.len(),
            source: Source::File(path, 0),
            known_len: true,
        })
    }

    /// Another body with the same bytes, if this one can be read again (bytes and files can; a
    /// reader cannot): what lets the engine retry a single PUT.
    pub(crate) fn replay(&self) -> Option<Self> {
        let source = match &self.source {
            Source::Bytes(b) => Source::Bytes(b.clone()),
            Source::File(p, at) => Source::File(p.clone(), *at),
            Source::Reader(_) => return None,
        };
        Some(Self {
            source,
            len: self.len,
            known_len: self.known_len,
        })
    }

    /// A body of `len` bytes of the file at `path`, starting at byte `offset`: one part of a
    /// multipart upload. Replayable, like [`from_path`](Self::from_path).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let f = tempfile::NamedTempFile::new().unwrap();
    /// std::fs::write(f.path(), vec![0u8; 100]).unwrap();
    /// let part = cryptobucket::PutBody::from_file_range(f.path(), 32, 64).await.unwrap();
    /// assert_eq!(part.len(), Some(64));
    /// assert!(cryptobucket::PutBody::from_file_range(f.path(), 64, 64).await.is_err());
    /// # });
    /// ```
    pub async fn from_file_range(path: impl Into<PathBuf>, offset: u64, len: u64) -> Result<Self> {
        let whole = Self::from_path(path).await?;
        let Source::File(path, _) = whole.source else {
            unreachable!("from_path builds a file source")
        };
        match offset.checked_add(len) {
            Some(end) if end <= whole.len => Ok(Self {
                len,
                source: Source::File(path, offset),
                known_len: true,
            }),
            _ => Err(Error::invalid_input(format!(
                "bytes {offset}..+{len} lie outside {} ({} bytes)",
                path.display(),
                whole.len
            ))),
        }
    }

    /// A body read once from `reader`, which must yield exactly `len` bytes.
    pub fn from_reader(reader: impl AsyncRead + Send + 'static, len: u64) -> Self {
        Self {
            len,
            source: Source::Reader(Mutex::new(Some(Box::pin(reader)))),
            known_len: true,
        }
    }

    /// A body read once from `reader` until it ends, length unknown in advance (a pipe, a
    /// generator, a network stream). [`put_object`](crate::CryptoBucket::put_object) sends it
    /// as one PUT if it ends within one part, otherwise as a multipart upload, holding at most
    /// `concurrency × part size` bytes in memory.
    ///
    /// Such objects carry `part-size` but no `data-size` metadata (the size is not known when
    /// the upload starts). S3-compatible stores accept that; OSS's server-side checks of
    /// client-side-encrypted multipart uploads require `data-size`, so give the length (use
    /// [`from_reader`](Self::from_reader)) when writing to OSS.
    ///
    /// ```
    /// let b = cryptobucket::PutBody::from_stream(tokio::io::empty());
    /// assert_eq!(b.len(), None);
    /// ```
    pub fn from_stream(reader: impl AsyncRead + Send + 'static) -> Self {
        Self {
            len: 0,
            source: Source::Reader(Mutex::new(Some(Box::pin(reader)))),
            known_len: false,
        }
    }

    /// Plaintext length; `None` for a [stream](Self::from_stream) of unknown length.
    pub fn len(&self) -> Option<u64> {
        self.known_len.then_some(self.len)
    }

    /// True for a body known to be empty.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Reads the whole body into memory (for small bodies whose tags go into the metadata).
    pub(crate) async fn into_bytes(self) -> Result<Bytes> {
        let len = self.len;
        let mut reader: Reader = match self.source {
            Source::Bytes(b) => return Ok(b),
            Source::File(path, start) => Box::pin(tokio::fs::File::from_std(
                open_at(&path, start)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?,
            )),
            Source::Reader(r) => r
                .into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| Error::invalid_input("reader body already used"))?,
        };
        let mut buf = Vec::with_capacity(len.min(64 << 20) as usize);
        (&mut reader)
            .take(len)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io("cannot read the upload source", e))?;
        if self.known_len && buf.len() as u64 != len {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "the upload source ended after {} of {len} bytes (did the file shrink?)",
                    buf.len()
                ),
            ));
        }
        Ok(buf.into())
    }

    /// Splits the body into what the multipart path reads parts from.
    pub(crate) fn into_part_source(self) -> Result<PartSource> {
        Ok(match self.source {
            Source::Bytes(b) => PartSource::Bytes(b),
            Source::File(path, start) => PartSource::File(path, start),
            Source::Reader(r) => PartSource::Reader(
                r.into_inner()
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::invalid_input("reader body already used"))?,
            ),
        })
    }

    /// The encrypted request body: the plaintext encrypted as the bytes at plaintext offset
    /// `offset` of the object (0 for a whole object, the part's start for a part).
    ///
    /// With `tags`, the body also computes the integrity tags of its ciphertext as it streams
    /// and leaves them in the sink once the last byte is produced (every attempt of a retried
    /// request recomputes them; they are identical, as the bytes are).
    pub(crate) fn into_encrypted(
        self,
        material: &ContentMaterial,
        offset: u64,
        tags: Option<&TagSink>,
    ) -> Result<ByteStream> {
        if !self.known_len {
            return Err(Error::invalid_input(
                "a body of unknown length cannot be one request; use put_object",
            ));
        }
        let len = self.len;
        // Set the cipher up once here so a key problem is an error now, not mid-body.
        CtrCipher::new(material, offset)?;
        if let Some(sink) = tags
            && len == 0
        {
            // An empty body is never polled: its (empty) region has no full chunk to tag.
            sink.store(sink.tagger(offset).finish());
        }
        let tags = tags.cloned();
        let body = match self.source {
            Source::Bytes(bytes) => {
                let material = material.clone();
                SdkBody::retryable(move || {
                    let reader: Reader = Box::pin(io::Cursor::new(bytes.clone()));
                    EncryptingBody::sdk_body(reader, &material, offset, len, tags.clone())
                })
            }
            Source::File(path, start) => {
                let material = material.clone();
                SdkBody::retryable(move || {
                    let reader: Reader = match open_at(&path, start) {
                        Ok(f) => Box::pin(tokio::fs::File::from_std(f)),
                        Err(e) => Box::pin(FailingReader(Some(e))),
                    };
                    EncryptingBody::sdk_body(reader, &material, offset, len, tags.clone())
                })
            }
            Source::Reader(reader) => {
                let reader = reader
                    .into_inner()
                    .ok()
                    .flatten()
                    .ok_or_else(|| Error::invalid_input("reader body already used"))?;
                EncryptingBody::sdk_body(reader, material, offset, len, tags)
            }
        };
        Ok(ByteStream::new(body))
    }
}

impl From<Bytes> for PutBody {
    fn from(b: Bytes) -> Self {
        Self::from_bytes(b)
    }
}

impl From<Vec<u8>> for PutBody {
    fn from(b: Vec<u8>) -> Self {
        Self::from_bytes(b)
    }
}

impl From<&'static [u8]> for PutBody {
    fn from(b: &'static [u8]) -> Self {
        Self::from_bytes(Bytes::from_static(b))
    }
}

impl From<String> for PutBody {
    fn from(s: String) -> Self {
        Self::from_bytes(s)
    }
}

fn open_at(path: &std::path::Path, start: u64) -> io::Result<std::fs::File> {
    use std::io::Seek as _;
    let mut f = std::fs::File::open(path)?;
    if start > 0 {
        f.seek(io::SeekFrom::Start(start))?;
    }
    Ok(f)
}

/// Where the parts of a multipart upload come from.
pub(crate) enum PartSource {
    Bytes(Bytes),
    /// A file, from a byte offset.
    File(PathBuf, u64),
    Reader(Pin<Box<dyn AsyncRead + Send>>),
}

struct FailingReader(Option<io::Error>);

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("source unavailable"))))
    }
}

/// An HTTP body that reads plaintext and yields ciphertext, exactly `remaining` bytes.
struct EncryptingBody {
    reader: Mutex<Reader>,
    /// `None` only if the key failed to set up, which `into_encrypted` has already ruled out;
    /// the body then fails rather than sending anything.
    cipher: Option<CtrCipher>,
    remaining: u64,
    total: u64,
    tags: Option<(ChunkTagger, TagSink)>,
}

impl EncryptingBody {
    fn sdk_body(
        reader: Reader,
        material: &ContentMaterial,
        offset: u64,
        len: u64,
        tags: Option<TagSink>,
    ) -> SdkBody {
        SdkBody::from_body_1_x(Self {
            reader: Mutex::new(reader),
            cipher: CtrCipher::new(material, offset).ok(),
            remaining: len,
            total: len,
            tags: tags.map(|sink| (sink.tagger(offset), sink)),
        })
    }
}

/// Where an encrypting body leaves the integrity tags of its ciphertext.
#[derive(Clone)]
pub(crate) struct TagSink {
    key: Arc<TagKey>,
    length: u64,
    out: Arc<Mutex<Option<Vec<[u8; TAG_LEN]>>>>,
}

impl TagSink {
    /// A sink for tags under `key`, whose length field is `length`.
    pub(crate) fn new(key: Arc<TagKey>, length: u64) -> Self {
        Self {
            key,
            length,
            out: Arc::default(),
        }
    }

    fn tagger(&self, offset: u64) -> ChunkTagger {
        ChunkTagger::new(self.key.clone(), offset, self.length)
    }

    fn store(&self, tags: Vec<[u8; TAG_LEN]>) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(tags);
    }

    /// The tags of the last body that ran to its end.
    pub(crate) fn take(&self) -> Option<Vec<[u8; TAG_LEN]>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The complete tags of a whole object of `size` bytes sent as one body (the empty final
    /// chunk's tag added when the size is a multiple of the chunk size).
    pub(crate) fn finished_tags(&self, size: u64) -> Result<Vec<[u8; TAG_LEN]>> {
        let mut tags = self.take().ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                "the upload body ended without its integrity tags",
            )
        })?;
        self.complete(&mut tags, size);
        Ok(tags)
    }

    /// Adds the empty final chunk's tag where an object of `size` bytes has one.
    pub(crate) fn complete(&self, tags: &mut Vec<[u8; TAG_LEN]>, size: u64) {
        if size.is_multiple_of(self.key.chunk_size()) {
            tags.push(crate::integrity::empty_final_tag(
                &self.key,
                size,
                self.length,
            ));
        }
    }

    /// The complete tags of a whole object whose ciphertext is `ct`.
    pub(crate) fn tags_of(&self, ct: &[u8], size: u64) -> Vec<[u8; TAG_LEN]> {
        let mut t = self.tagger(0);
        t.update(ct);
        let mut tags = t.finish();
        self.complete(&mut tags, size);
        tags
    }
}

impl http_body::Body for EncryptingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<http_body::Frame<Bytes>>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let Some(cipher) = this.cipher.as_mut() else {
            return Poll::Ready(Some(Err(io::Error::other("AES-256 key setup failed"))));
        };
        let want = this.remaining.min(CHUNK as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let n = {
            let mut reader = this.reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut limited = (&mut *reader).take(want as u64);
            ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut limited),
                cx,
                &mut buf
            ))?
        };
        if n == 0 {
            let done = this.total - this.remaining;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the upload source ended after {done} of {} bytes (did the file shrink?)",
                    this.total
                ),
            ))));
        }
        cipher.apply(&mut buf);
        this.remaining -= n as u64;
        if let Some((tagger, _)) = &mut this.tags {
            tagger.update(&buf);
        }
        if this.remaining == 0
            && let Some((tagger, sink)) = this.tags.take()
        {
            sink.store(tagger.finish());
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

use tokio::io::AsyncReadExt as _;

/// A decrypting stream of plaintext [`Bytes`], returned by
/// [`GetObject`](crate::bucket::GetObjectFluentBuilder::send).
///
/// It checks the length: a body that ends before the announced length is an
/// [`ErrorKind::Truncated`] error, never a short success.
pub struct DecryptingStream {
    inner: BodyStream,
    /// Checks the ciphertext chunk by chunk before anything of it is decrypted or returned.
    verifier: Option<ChunkVerifier>,
    /// Verified chunks not yet consumed.
    verified: std::collections::VecDeque<Bytes>,
    /// Bytes of the response body before the first chunk the verifier checks.
    lead: u64,
    cipher: Option<CtrCipher>,
    /// Bytes of the response body to drop before the first output byte.
    skip: u64,
    /// Plaintext bytes still to emit.
    remaining: u64,
    emitted: u64,
    done: bool,
}

impl std::fmt::Debug for DecryptingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptingStream")
            .field("encrypted", &self.cipher.is_some())
            .field("verified", &self.verifier.is_some())
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl DecryptingStream {
    pub(crate) fn new(inner: ByteStream, cipher: Option<CtrCipher>, skip: u64, len: u64) -> Self {
        let stream = futures::stream::unfold(inner, |mut body| async move {
            let item = body.next().await?;
            Some((item.map_err(BoxError::from), body))
        });
        Self::from_stream(Box::pin(stream), cipher, skip, len)
    }

    /// As [`new`](Self::new), over any stream of response bytes (the codec's entry point).
    pub(crate) fn from_stream(
        inner: BodyStream,
        cipher: Option<CtrCipher>,
        skip: u64,
        len: u64,
    ) -> Self {
        Self {
            inner,
            verifier: None,
            verified: Default::default(),
            lead: 0,
            cipher,
            skip,
            remaining: len,
            emitted: 0,
            done: false,
        }
    }

    /// Verifies the body before decrypting it: the first `lead` bytes of the response are
    /// dropped, the rest is checked chunk by chunk by `verifier`, and `skip` then counts from
    /// the first verified chunk.
    pub(crate) fn verified(mut self, verifier: ChunkVerifier, lead: u64) -> Self {
        self.verifier = Some(verifier);
        self.lead = lead;
        self
    }

    /// The next piece of (verified, when there is a verifier) ciphertext.
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        loop {
            if let Some(chunk) = self.verified.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if self.verifier.as_ref().is_some_and(ChunkVerifier::is_done) {
                return Poll::Ready(None);
            }
            let mut raw = match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(raw)) => raw,
                Some(Err(e)) => {
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::Truncated,
                        format!(
                            "the download broke off after {} bytes ({} still expected): {e}",
                            self.emitted, self.remaining
                        ),
                    )
                    .with_source(io::Error::other(e)))));
                }
                None => return Poll::Ready(None),
            };
            let Some(verifier) = self.verifier.as_mut() else {
                return Poll::Ready(Some(Ok(raw)));
            };
            if self.lead > 0 {
                let drop = self.lead.min(raw.len() as u64) as usize;
                self.lead -= drop as u64;
                raw = raw.slice(drop..);
            }
            self.verified.extend(verifier.update(raw)?);
        }
    }

    /// Reads the whole stream into memory. Only for objects known to be small.
    pub async fn collect(mut self) -> Result<Bytes> {
        use futures::StreamExt as _;
        let mut out = BytesMut::with_capacity(self.remaining.min(64 << 20) as usize);
        while let Some(chunk) = self.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// Streams the plaintext into `writer`; returns the number of bytes written.
    pub async fn write_to(mut self, writer: &mut (impl AsyncWrite + Unpin)) -> Result<u64> {
        use futures::StreamExt as _;
        let mut n = 0u64;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io("cannot write the downloaded data", e))?;
            n += chunk.len() as u64;
        }
        writer
            .flush()
            .await
            .map_err(|e| Error::io("cannot write the downloaded data", e))?;
        Ok(n)
    }

    /// Writes the plaintext into a new std file from byte 0 and returns its length: chunks
    /// gathered to about 1 MiB, each batch written on the blocking pool with positioned writes
    /// of at most 32 KiB (see `partial::write_at`).
    pub(crate) async fn write_to_file(mut self, file: std::fs::File) -> Result<u64> {
        use futures::StreamExt as _;
        const BATCH: usize = 1 << 20;
        let file = std::sync::Arc::new(file);
        let (mut n, mut batch, mut len) = (0u64, Vec::<Bytes>::new(), 0usize);
        loop {
            let next = self.next().await.transpose()?;
            let end = next.is_none();
            if let Some(chunk) = next {
                len += chunk.len();
                batch.push(chunk);
            }
            if len >= BATCH || (end && len > 0) {
                let (f, at, chunks) = (file.clone(), n, std::mem::take(&mut batch));
                tokio::task::spawn_blocking(move || {
                    crate::partial::write_chunks_at(&f, &chunks, at)
                })
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("writer task failed: {e}")))?
                .map_err(|e| Error::io("cannot write the downloaded data", e))?;
                n += len as u64;
                len = 0;
            }
            if end {
                return Ok(n);
            }
        }
    }

    /// Adapts the stream into an [`AsyncRead`]; errors become `io::Error`s wrapping [`Error`].
    pub fn into_async_read(self) -> impl AsyncRead + Send {
        use futures::TryStreamExt as _;
        tokio_util::io::StreamReader::new(self.map_err(io::Error::other))
    }
}

impl Stream for DecryptingStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.remaining == 0 {
                this.done = true;
                return Poll::Ready(None);
            }
            let chunk = match ready!(this.poll_source(cx)) {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::Truncated,
                        format!(
                            "the response body ended after {} bytes but {} more were expected",
                            this.emitted, this.remaining
                        ),
                    ))));
                }
            };
            let mut chunk = chunk;
            if this.skip > 0 {
                let drop = this.skip.min(chunk.len() as u64) as usize;
                this.skip -= drop as u64;
                chunk = chunk.slice(drop..);
            }
            if chunk.is_empty() {
                continue;
            }
            if chunk.len() as u64 > this.remaining {
                chunk.truncate(this.remaining as usize);
            }
            this.remaining -= chunk.len() as u64;
            this.emitted += chunk.len() as u64;
            let out = match &mut this.cipher {
                None => chunk,
                Some(cipher) => {
                    let mut buf = chunk
                        .try_into_mut()
                        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                    cipher.apply(&mut buf);
                    buf.freeze()
                }
            };
            return Poll::Ready(Some(Ok(out)));
        }
    }
}
