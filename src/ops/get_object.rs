//! `GetObject`: download and decrypt, whole or a range, checked against the request (and, for
//! the engine's reads, against the pinned object version).

use std::collections::HashMap;

use crate::body::DecryptingStream;
use crate::cipher::ContentMaterial;
use crate::engine::{Reporter, with_retries};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{SharedHandle, check_recorded_size, require_key, user_metadata};
use crate::integrity::{ChunkVerifier, DEFAULT_CHUNK_SIZE, IntegrityRecord, IntegrityState};
use crate::ops::head_object::HeadObjectFluentBuilder;
use crate::range::{ByteRange, ContentRange};

/// Builder of a decrypting GET; see [`CryptoBucket::get_object`](crate::CryptoBucket::get_object).
#[derive(Debug)]
pub struct GetObjectFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
    range: Option<ByteRange>,
    if_match: Option<String>,
    /// The object version every response must come from, and its material unwrapped once
    /// (parallel downloads unwrap once, not once per range).
    pin: Option<(Pin, Option<ContentMaterial>)>,
    /// Read the stored bytes as they are (no envelope, no policy, no widening), run through
    /// this cipher when given (a veTurboIO body; positioned at the range's first byte).
    stored: Option<Option<crate::cipher::CtrCipher>>,
    /// All integrity tags of the pinned object, fetched once by a reader (else each ranged
    /// read fetches its own from the sidecar).
    tags: Option<std::sync::Arc<Vec<[u8; crate::integrity::TAG_LEN]>>>,
    /// Attempts of the GET itself, when the caller retries it as part of a larger transfer.
    attempts: Option<u32>,
    /// Fetch every integrity tag of a sidecar object, not only the range's (and return them).
    all_tags: bool,
}

/// What a GET returns: the plaintext stream and what is known about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct GetObjectOutput {
    /// Decrypted body; yields exactly `content_length` bytes or an error.
    pub body: DecryptingStream,
    /// Length of the returned plaintext.
    pub content_length: u64,
    /// Absolute `(first, last)` plaintext offsets returned, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// Size of the whole object (plaintext).
    pub object_size: u64,
    /// ETag of the stored object.
    pub e_tag: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// The user's own metadata (encryption entries removed).
    pub metadata: HashMap<String, String>,
    /// The encryption envelope; `None` for a plain object read under
    /// [`UnencryptedPolicy::PassThrough`](crate::UnencryptedPolicy::PassThrough).
    pub envelope: Option<Envelope>,
    /// Whether the body is verified as it streams ([`IntegrityState::Absent`]: the object has
    /// no integrity data, and strict mode is off).
    pub integrity: IntegrityState,
    /// The unwrapped content key (`None` for a plain object): a download that learns the
    /// object from its first GET reads the other ranges with it, without a second unwrap.
    pub(crate) material: Option<ContentMaterial>,
    /// Every integrity tag of a sidecar object, when asked for with `all_tags`.
    pub(crate) all_tags: Option<std::sync::Arc<Vec<[u8; crate::integrity::TAG_LEN]>>>,
}

impl GetObjectOutput {
    /// Writes the plaintext to the file `dest`: into a partial file of its own beside it (mode
    /// 0600, created exclusively), synced, then renamed into place; on any failure, or if this
    /// future is dropped, the partial file is removed and `dest` is untouched. Returns the
    /// bytes written. For whole objects of any size prefer [`CryptoBucket::download_file`](crate::CryptoBucket::download_file) (parallel, resumable).
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let header = bucket.get_object().key("model.safetensors")
    ///     .range("0-1048575".parse()?).send().await?;
    /// header.save("header.bin").await?;
    /// # Ok(()) }
    /// ```
    pub async fn save(self, dest: impl AsRef<std::path::Path>) -> Result<u64> {
        self.save_to(dest.as_ref(), true).await
    }

    /// [`save`](Self::save) without syncing: the file is renamed into place as soon as its
    /// bytes are written and may sit in the page cache for a while, so a power loss can leave
    /// it incomplete. For scratch copies used right away (what
    /// [`durable(false)`](crate::resumable::DownloadFileFluentBuilder::durable) is to
    /// `download_file`). Failures still leave nothing behind.
    ///
    /// ```no_run
    /// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
    /// let header = bucket.get_object().key("model.safetensors")
    ///     .range("0-1048575".parse()?).send().await?;
    /// header.save_unsynced("/dev/shm/header.bin").await?;
    /// # Ok(()) }
    /// ```
    pub async fn save_unsynced(self, dest: impl AsRef<std::path::Path>) -> Result<u64> {
        self.save_to(dest.as_ref(), false).await
    }

    async fn save_to(self, dest: &std::path::Path, durable: bool) -> Result<u64> {
        let body = self.body;
        crate::partial::PartialFile::write_new(dest, self.content_length, durable, |file| {
            body.write_to_file(file)
        })
        .await
    }
}

impl GetObjectOutput {
    /// The whole body, which must be `content_length` bytes (else a retryable
    /// [`ErrorKind::Truncated`]).
    pub(crate) async fn collect_exact(self) -> Result<bytes::Bytes> {
        let len = self.content_length;
        let bytes = self.body.collect().await?;
        if bytes.len() as u64 != len {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!("received {} of {len} bytes", bytes.len()),
            )
            .with_retryable(true));
        }
        Ok(bytes)
    }
}

impl GetObjectFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            bucket,
            key: None,
            range: None,
            if_match: None,
            pin: None,
            stored: None,
            tags: None,
            attempts: None,
            all_tags: false,
        }
    }

    /// Fetches all of a sidecar object's integrity tags with the range's and returns them in
    /// the output, for a reader that goes on reading the same version.
    pub(crate) fn all_tags(mut self) -> Self {
        self.all_tags = true;
        self
    }

    /// Sends the GET once: the caller's transfer retries it (and reports the retries).
    pub(crate) fn single_attempt(mut self) -> Self {
        self.attempts = Some(1);
        self
    }

    /// Verifies with these tags (every chunk's, of the pinned version) instead of fetching
    /// them from the sidecar.
    pub(crate) fn with_tags(
        mut self,
        tags: Option<std::sync::Arc<Vec<[u8; crate::integrity::TAG_LEN]>>>,
    ) -> Self {
        self.tags = tags;
        self
    }

    /// Reads the stored bytes as they are, decrypted by `cipher` when given (positioned at
    /// the first byte the range returns): the data path of formats without an envelope.
    pub(crate) fn stored(mut self, cipher: Option<crate::cipher::CtrCipher>) -> Self {
        self.stored = Some(cipher);
        self
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A plaintext byte range (any alignment; see [`ByteRange`]).
    pub fn range(mut self, range: ByteRange) -> Self {
        self.range = Some(range);
        self
    }

    /// Sets or clears the range.
    pub fn set_range(mut self, range: Option<ByteRange>) -> Self {
        self.range = range;
        self
    }

    /// Only succeed if the object's ETag still equals `etag`.
    pub fn if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Pins the response to one version of the object: its ETag, size and wrapped key must be
    /// those of `pin` (else [`ErrorKind::Changed`]), and `material`, unwrapped once by the caller,
    /// decrypts it. Parallel downloads use this for every range, so a store that ignores
    /// `If-Match` cannot mix two versions into one file.
    pub(crate) fn pinned(mut self, pin: Pin, material: Option<ContentMaterial>) -> Self {
        self.if_match = Some(pin.e_tag.clone());
        self.pin = Some((pin, material));
        self
    }

    /// Sends the GET; the returned body decrypts as it streams.
    #[tracing::instrument(name = "get_object", skip_all, fields(bucket = %self.bucket.bucket(), key = ?self.key, range = ?self.range))]
    pub async fn send(mut self) -> Result<GetObjectOutput> {
        let key = require_key(self.key)?;
        let cb = &self.bucket;
        let inner = &**cb;
        // The engine's one retry layer: a pinned read is retried by the transfer that pinned
        // it (it knows where to continue); a plain GET here, up to the configured attempts.
        let max = match (self.attempts, &self.pin) {
            (Some(n), _) => n,
            (None, Some(_)) => 1,
            (None, None) => inner.transfer.max_attempts,
        };
        // Ranges are widened to whole integrity chunks (1 MiB; every chunk size this crate
        // writes divides it), so the chunks a range touches can be verified.
        let range = self.range;
        let stored = self.stored.take();
        let wide = match stored {
            Some(_) => range,
            None => range.map(widen),
        };
        let resp = with_retries(max, 0, &Reporter::silent(), || {
            let req = inner
                .client
                .get_object()
                .bucket(&inner.bucket)
                .key(&key)
                .set_range(wide.map(|r| r.to_header()))
                .set_if_match(self.if_match.clone())
                .customize()
                .config_override(crate::client::retry_override(false));
            let key = &key;
            async move {
                req.send().await.map_err(|e| {
                    let e = Error::from_sdk("GetObject", e).with_object(&inner.bucket, key);
                    match (e.kind(), range) {
                        (ErrorKind::RangeNotSatisfiable, Some(r)) => Error::new(
                            ErrorKind::RangeNotSatisfiable,
                            format!("range {r} lies outside object {key:?}"),
                        )
                        .with_object(&inner.bucket, key),
                        _ => e,
                    }
                })
            }
        })
        .await?;
        let envelope = match stored {
            Some(_) => None,
            None => cb.envelope_of(&key, resp.metadata())?,
        };
        let record = match &envelope {
            Some(_) => resp
                .metadata()
                .map(IntegrityRecord::from_metadata)
                .transpose()
                .map_err(|e| e.with_object(&inner.bucket, &key))?
                .flatten(),
            None => None,
        };
        let body_len = u64::try_from(resp.content_length().unwrap_or(-1)).map_err(|_| {
            Error::invalid_response("the GET response has no valid Content-Length")
                .with_object(&inner.bucket, &key)
        })?;
        if let Some((pin, _)) = &self.pin {
            pin.check_e_tag(&inner.bucket, &key, resp.e_tag())?;
        }

        // Where does the body sit in the object, and what slice of it do we return?
        let content_range = resp.content_range().map(ContentRange::parse).transpose()?;
        let (total, body_start) = match &content_range {
            Some(cr) => {
                if cr.len() != body_len {
                    return Err(Error::invalid_response(format!(
                        "Content-Range {}-{} does not match Content-Length {body_len}",
                        cr.first, cr.last
                    )));
                }
                let total = cr.total.ok_or_else(|| {
                    Error::invalid_response(
                        "the server's Content-Range does not give the object size",
                    )
                })?;
                (total, cr.first)
            }
            None => match wide {
                // No range asked for and none announced: the body is the whole object.
                None => (body_len, 0),
                // A ranged GET answered without Content-Range: a 200 with the whole object (a
                // server that ignores Range) or a 206 that left the header out. Only the
                // object's size can tell which; the body length must then prove it.
                Some(r) => {
                    let known = match (&self.pin, envelope.as_ref()) {
                        (Some((pin, _)), _) => Some(pin.size),
                        (None, env) => env.and_then(Envelope::recorded_plaintext_size),
                    };
                    let size = match known {
                        Some(size) => size,
                        None => {
                            let head = HeadObjectFluentBuilder::new(cb.clone())
                                .key(&key)
                                .send()
                                .await?;
                            if head.e_tag.as_deref() != resp.e_tag() {
                                return Err(Error::new(
                                    ErrorKind::Changed,
                                    format!("object {key:?} changed while it was being read"),
                                )
                                .with_object(&inner.bucket, &key)
                                .with_retryable(true));
                            }
                            head.object_size
                        }
                    };
                    if body_len == size {
                        (size, 0)
                    } else {
                        match r.resolve(size) {
                            Ok((s, l)) if l == body_len => (size, s),
                            _ => {
                                return Err(Error::invalid_response(format!(
                                    "asked for bytes {r} of {key:?} ({size} bytes) and got {body_len}                                      bytes without a Content-Range; that is neither the range nor                                      the whole object"
                                ))
                                .with_object(&inner.bucket, &key));
                            }
                        }
                    }
                }
            },
        };
        let (start, len) = match self.range {
            Some(r) => r.resolve(total)?,
            None => (0, total),
        };
        let (wide_start, wide_len) = match wide {
            Some(r) => r.resolve(total)?,
            None => (0, total),
        };
        if (body_start, body_len) != (wide_start, wide_len) && (body_start, body_len) != (0, total)
        {
            return Err(Error::invalid_response(format!(
                "asked for bytes {} of {key:?} but the server returned bytes {body_start}-{} of {total}",
                wide
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "(all)".into()),
                body_start + body_len.saturating_sub(1)
            ))
            .with_object(&inner.bucket, &key));
        }
        if let Some((pin, _)) = &self.pin {
            pin.check_object(&inner.bucket, &key, total, envelope.as_ref())?;
        }
        // Bytes of the body before the first byte we return: the widening, and the whole
        // object when the server ignored the Range header.
        let mut skip = start - body_start;

        let mut verifier = None;
        let mut state = IntegrityState::Absent;
        let mut unwrapped = None;
        let mut every_tag = None;
        let cipher = match &envelope {
            Some(env) => {
                check_recorded_size(&key, env, total)?;
                // Strict mode and signatures are checked before the key is touched.
                state = inner
                    .integrity
                    .check(record.as_ref(), &env.wrap_alg)
                    .map_err(|e| e.with_object(&inner.bucket, &key))?;
                let (material, tag_key) = match (&self.pin, &record) {
                    (Some((_, Some(m))), Some(rec)) => {
                        rec.open(m, env.part_size).map(|k| (m.clone(), Some(k)))
                    }
                    (Some((_, Some(m))), None) => Ok((m.clone(), None)),
                    _ => inner.keyring.unwrap_committed(env, record.as_ref()).await,
                }
                .map_err(|e| e.with_object(&inner.bucket, &key))?;
                if let (Some(rec), Some(tag_key)) = (&record, tag_key) {
                    let c = u64::from(rec.chunk_size);
                    let (first, last) = rec.chunk_span(start, len, total);
                    let covered_end = ((last + 1) * c).min(total);
                    if body_start > first * c || body_start + body_len < covered_end {
                        return Err(Error::invalid_response(format!(
                            "the server returned bytes {body_start}..{} of {key:?}, which do not \
                             cover the integrity chunks {first}..={last} the range needs",
                            body_start + body_len
                        ))
                        .with_object(&inner.bucket, &key));
                    }
                    let tags = match rec.inline_tags.as_ref().or(self.tags.as_deref()) {
                        Some(all) => {
                            if all.len() as u64 != rec.chunk_count(total) {
                                return Err(Error::new(
                                    ErrorKind::TagMismatch,
                                    format!(
                                        "the object has {} integrity tags but {} chunks: it was \
                                         truncated or extended",
                                        all.len(),
                                        rec.chunk_count(total)
                                    ),
                                )
                                .with_object(&inner.bucket, &key));
                            }
                            all[first as usize..=last as usize].to_vec()
                        }
                        None if self.all_tags => {
                            let count = rec.chunk_count(total);
                            let all =
                                crate::ops::sidecar::fetch(inner, &key, rec, 0, count).await?;
                            let range = all
                                .get(first as usize..=last as usize)
                                .map(<[_]>::to_vec)
                                .ok_or_else(|| {
                                    Error::invalid_response(format!(
                                        "the integrity sidecar holds {} tags, not {count}",
                                        all.len()
                                    ))
                                    .with_object(&inner.bucket, &key)
                                })?;
                            every_tag = Some(std::sync::Arc::new(all));
                            range
                        }
                        None => {
                            crate::ops::sidecar::fetch(inner, &key, rec, first, last - first + 1)
                                .await?
                        }
                    };
                    verifier = Some((
                        ChunkVerifier::new(tag_key, rec.length_mode, total, first, tags),
                        first * c - body_start,
                    ));
                    skip = start - first * c;
                    if !matches!(state, IntegrityState::Signed(_)) {
                        state = IntegrityState::Verified;
                    }
                }
                let cipher = material.cipher_at(start)?;
                unwrapped = Some(material);
                Some(cipher)
            }
            None => stored.flatten(),
        };
        Ok(GetObjectOutput {
            content_length: len,
            range: self.range.map(|_| (start, start + len.saturating_sub(1))),
            object_size: total,
            e_tag: resp.e_tag().map(str::to_owned),
            content_type: resp.content_type().map(str::to_owned),
            metadata: user_metadata(resp.metadata()),
            envelope,
            integrity: state,
            material: unwrapped,
            all_tags: every_tag,
            body: {
                let body = DecryptingStream::new(resp.body, cipher, skip, len);
                match verifier {
                    Some((v, lead)) => body.verified(v, lead),
                    None => body,
                }
            },
        })
    }
}

/// `range` grown to whole chunks of [`DEFAULT_CHUNK_SIZE`].
fn widen(range: ByteRange) -> ByteRange {
    range.widened_to(u64::from(DEFAULT_CHUNK_SIZE))
}

/// The version of an object a multi-request read is bound to: every response must show the
/// same ETag, object size and wrapped key, or the read stops with [`ErrorKind::Changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pin {
    pub(crate) e_tag: String,
    pub(crate) size: u64,
    /// The wrapped content key's header text; `None` for a plain object.
    pub(crate) wrapped_key: Option<String>,
}

impl Pin {
    /// Pins `key` for a multi-request read: one HEAD (retried), the unencrypted-object policy,
    /// strict mode and signatures, then the content key unwrapped once (the key commitment
    /// decides, as for a single GET). Returns the pin, the material (`None` for a plain
    /// object) and the HEAD.
    pub(crate) async fn object(
        handle: &SharedHandle,
        key: &str,
    ) -> Result<(
        Self,
        Option<ContentMaterial>,
        crate::ops::head_object::HeadObjectOutput,
    )> {
        let head = HeadObjectFluentBuilder::new(handle.clone())
            .key(key)
            .send()
            .await?;
        handle.check_unencrypted(key, head.envelope.as_ref())?;
        let pin = Self::of_head(handle, key, &head)?;
        let material = match &head.envelope {
            Some(env) => {
                check_recorded_size(key, env, head.object_size)?;
                handle
                    .integrity
                    .check(head.integrity.as_ref(), &env.wrap_alg)
                    .map_err(|e| e.with_object(&handle.bucket, key))?;
                let (m, _) = handle
                    .keyring
                    .unwrap_committed(env, head.integrity.as_ref())
                    .await
                    .map_err(|e| e.with_object(&handle.bucket, key))?;
                Some(m)
            }
            None => None,
        };
        Ok((pin, material, head))
    }

    /// The pin of the version `head` describes (it must carry an ETag).
    pub(crate) fn of_head(
        handle: &SharedHandle,
        key: &str,
        head: &crate::ops::head_object::HeadObjectOutput,
    ) -> Result<Self> {
        Self::new(
            &handle.bucket,
            key,
            head.e_tag.as_deref(),
            head.object_size,
            head.envelope.as_ref(),
        )
    }

    /// The pin of the version a GET response came from (it must carry an ETag): a download
    /// that reads its first range before it knows the object pins the rest to it.
    pub(crate) fn of_response(bucket: &str, key: &str, out: &GetObjectOutput) -> Result<Self> {
        Self::new(
            bucket,
            key,
            out.e_tag.as_deref(),
            out.object_size,
            out.envelope.as_ref(),
        )
    }

    fn new(
        bucket: &str,
        key: &str,
        e_tag: Option<&str>,
        size: u64,
        envelope: Option<&Envelope>,
    ) -> Result<Self> {
        let e_tag = e_tag.filter(|t| !t.is_empty()).ok_or_else(|| {
            Error::invalid_response("the server gave no ETag, which multi-request reads pin")
                .with_object(bucket, key)
        })?;
        Ok(Self {
            e_tag: e_tag.to_owned(),
            size,
            wrapped_key: envelope.map(|e| e.wrapped_key.text.clone()),
        })
    }

    fn changed(bucket: &str, key: &str, what: String) -> Error {
        Error::new(
            ErrorKind::Changed,
            format!("s3://{bucket}/{key} changed during the transfer: {what}"),
        )
        .with_object(bucket, key)
        .with_retryable(true)
    }

    fn check_e_tag(&self, bucket: &str, key: &str, got: Option<&str>) -> Result<()> {
        if got == Some(self.e_tag.as_str()) {
            return Ok(());
        }
        Err(Self::changed(
            bucket,
            key,
            format!(
                "a response carried ETag {} instead of the pinned {} (the store ignored If-Match)",
                got.unwrap_or("(none)"),
                self.e_tag
            ),
        ))
    }

    fn check_object(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        env: Option<&Envelope>,
    ) -> Result<()> {
        if size != self.size {
            return Err(Self::changed(
                bucket,
                key,
                format!(
                    "a response describes an object of {size} bytes instead of {}",
                    self.size
                ),
            ));
        }
        if env.map(|e| e.wrapped_key.text.as_str()) != self.wrapped_key.as_deref() {
            return Err(Self::changed(
                bucket,
                key,
                "a response carries another wrapped content key".to_owned(),
            ));
        }
        Ok(())
    }
}
