//! The object format without a transport: encrypt or decrypt bytes given the object's metadata,
//! so any S3 client (object_store, OpenDAL, reqwest with presigned URLs, another SDK) can
//! produce and consume cryptobucket / OSS client-side-encryption objects.
//!
//! Writing: [`Encryptor::new`] makes a fresh content key, wrapped by the keyring's default key;
//! store [`Encryptor::metadata`] as the object's user metadata (`x-amz-meta-*` on S3,
//! `x-oss-meta-*` on OSS) and [`Encryptor::encrypt_stream`] (or
//! [`encrypt_in_place`](Encryptor::encrypt_in_place) per part) as its body. The result is the
//! OSS SDKs' format (no integrity data, as oss2 and the Go SDK write it): oss2, the other OSS
//! SDKs and [`CryptoBucket`](crate::CryptoBucket) read it.
//!
//! Reading: [`Decryptor::new`] takes the object's metadata (or the response headers, see
//! [`metadata_from_headers`]), applies the keyring's integrity policy and unwraps the key;
//! [`Decryptor::fetch_range`] says which bytes to ask the store for, and
//! [`Decryptor::decrypt_stream`] turns the response body into verified plaintext. Objects that
//! [`CryptoBucket`](crate::CryptoBucket) wrote with integrity data are verified chunk by chunk
//! (tags inline in the metadata, or from the sidecar object given to
//! [`Decryptor::with_sidecar`]); a tampered body is an error, never plaintext.
//!
//! ```
//! use cryptobucket::codec::{Decryptor, Encryptor};
//! use cryptobucket::{AesMasterKey, Keyring, MatDesc};
//! use futures::TryStreamExt as _;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
//! let plaintext = bytes::Bytes::from_static(b"model weights, 24 bytes.");
//!
//! // Upload side: metadata + ciphertext go to the store by whatever client the caller uses.
//! let enc = Encryptor::new(&keyring).await?.content_length(plaintext.len() as u64);
//! let metadata = enc.metadata();
//! let body = futures::stream::iter([Ok::<_, std::io::Error>(plaintext.clone())]);
//! let stored: Vec<bytes::Bytes> = enc.encrypt_stream(0, body)?.try_collect().await.unwrap();
//!
//! // Download side: the metadata and the body (or a range of it) from the store.
//! let dec = Decryptor::new(&keyring, &metadata).await?;
//! let size = plaintext.len() as u64;
//! let body = futures::stream::iter(stored.into_iter().map(Ok::<_, std::io::Error>));
//! let plain = dec.decrypt_stream(body, 0, size, None)?.collect().await?;
//! assert_eq!(plain, plaintext);
//! # Ok::<(), cryptobucket::Error>(()) }).unwrap();
//! ```

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _};

use crate::body::{BoxError, DecryptingStream};
use crate::cipher::{BLOCK_LEN, ContentMaterial};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::integrity::{
    ChunkVerifier, IntegrityRecord, IntegrityState, SIDECAR_HEADER_LEN, TAG_LEN,
};
use crate::keys::Keyring;
use crate::range::ByteRange;

/// Encrypts one object for any transport; see the [module docs](self).
pub struct Encryptor {
    material: ContentMaterial,
    envelope: Envelope,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// A fresh content key and IV, wrapped by the keyring's default key (one call to the key
    /// provider, e.g. one KMS request).
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
    /// let enc = cryptobucket::codec::Encryptor::new(&keyring).await?;
    /// assert!(enc.metadata().contains_key("client-side-encryption-key"));
    /// # Ok::<(), cryptobucket::Error>(()) }).unwrap();
    /// ```
    pub async fn new(keyring: &Keyring) -> Result<Self> {
        let (material, envelope) = keyring.seal().await?;
        Ok(Self { material, envelope })
    }

    /// Records the plaintext length (`client-side-encryption-unencrypted-content-length`, as
    /// oss2 writes for a single PUT); readers refuse a body of another length.
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
    /// let enc = cryptobucket::codec::Encryptor::new(&keyring).await?.content_length(42);
    /// assert_eq!(enc.metadata()["client-side-encryption-unencrypted-content-length"], "42");
    /// # Ok::<(), cryptobucket::Error>(()) }).unwrap();
    /// ```
    pub fn content_length(mut self, len: u64) -> Self {
        self.envelope.unencrypted_content_length = Some(len);
        self
    }

    /// Records a multipart upload's total plaintext size and part size
    /// (`client-side-encryption-data-size` / `-part-size`, as the OSS SDKs write them). The part
    /// size must be a multiple of 16 (each part's keystream continues where the last ended).
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
    /// let enc = cryptobucket::codec::Encryptor::new(&keyring).await?;
    /// let enc = enc.multipart(100 << 20, 8 << 20)?;
    /// assert_eq!(enc.metadata()["client-side-encryption-part-size"], "8388608");
    /// # Ok::<(), cryptobucket::Error>(()) }).unwrap();
    /// ```
    pub fn multipart(mut self, data_size: u64, part_size: u64) -> Result<Self> {
        if part_size == 0 || !part_size.is_multiple_of(BLOCK_LEN) {
            return Err(Error::invalid_input(format!(
                "the part size of an encrypted multipart upload must be a non-zero multiple of \
                 16 bytes, not {part_size}"
            )));
        }
        self.envelope.data_size = Some(data_size);
        self.envelope.part_size = Some(part_size);
        Ok(self)
    }

    /// The object's user metadata (names without the `x-amz-meta-` / `x-oss-meta-` prefix):
    /// the wrapped key and IV, algorithms and material description. Nothing secret.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.envelope.to_metadata()
    }

    /// The envelope the metadata encodes.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Encrypts `data` in place as the bytes at `offset` of the object's plaintext (any offset:
    /// a part of a multipart upload is encrypted at its own offset).
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
    /// let enc = cryptobucket::codec::Encryptor::new(&keyring).await?;
    /// let mut part = vec![0u8; 32];
    /// enc.encrypt_in_place(16, &mut part)?;
    /// assert_ne!(part, vec![0u8; 32]);
    /// # Ok::<(), cryptobucket::Error>(()) }).unwrap();
    /// ```
    pub fn encrypt_in_place(&self, offset: u64, data: &mut [u8]) -> Result<()> {
        self.material.cipher_at(offset)?.apply(data);
        Ok(())
    }

    /// Encrypts a plaintext stream that starts at `offset` of the object (0 for a whole body,
    /// a part's offset for a part). Chunks keep their sizes; errors pass through. Fails up
    /// front only if the cipher cannot be set up (the crypto library refused the key).
    pub fn encrypt_stream<S, E>(
        &self,
        offset: u64,
        plaintext: S,
    ) -> Result<impl Stream<Item = std::result::Result<Bytes, E>> + Send + 'static + use<S, E>>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Send + 'static,
    {
        let mut cipher = self.material.cipher_at(offset)?;
        Ok(plaintext.map(move |item| {
            let chunk = item?;
            let mut buf = chunk
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            cipher.apply(&mut buf);
            Ok(buf.freeze())
        }))
    }
}

/// Decrypts (and, when the object carries integrity data, verifies) one object for any
/// transport; see the [module docs](self).
pub struct Decryptor {
    material: ContentMaterial,
    envelope: Envelope,
    record: Option<IntegrityRecord>,
    tags: Option<Vec<[u8; TAG_LEN]>>,
    state: IntegrityState,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("envelope", &self.envelope)
            .field("integrity", &self.state)
            .finish_non_exhaustive()
    }
}

/// The object's user metadata from HTTP response headers: `x-amz-meta-*` and `x-oss-meta-*`
/// entries with the prefix removed (names lower-cased, as HTTP treats them).
///
/// ```
/// let mut h = http::HeaderMap::new();
/// h.insert("x-amz-meta-client-side-encryption-key", "AAAA".parse().unwrap());
/// h.insert("content-type", "text/plain".parse().unwrap());
/// let meta = cryptobucket::codec::metadata_from_headers(&h);
/// assert_eq!(meta.len(), 1);
/// assert_eq!(meta["client-side-encryption-key"], "AAAA");
/// ```
pub fn metadata_from_headers(headers: &http::HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str();
            let rest = name
                .strip_prefix("x-amz-meta-")
                .or_else(|| name.strip_prefix("x-oss-meta-"))?;
            Some((rest.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

impl Decryptor {
    /// Reads the envelope (and integrity record) from `metadata`, applies the keyring's
    /// integrity policy (strict mode, trusted signers) and unwraps the content key.
    ///
    /// Errors: [`ErrorKind::NotEncrypted`] for metadata without an envelope, the key errors of
    /// the keyring ([`ErrorKind::NoMatchingKey`], [`ErrorKind::KeyUnwrap`],
    /// [`ErrorKind::CommitmentMismatch`]) and the integrity policy's.
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, ErrorKind, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32]).unwrap(), MatDesc::new());
    /// let plain = std::collections::HashMap::new();
    /// let err = cryptobucket::codec::Decryptor::new(&keyring, &plain).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotEncrypted);
    /// # });
    /// ```
    pub async fn new(keyring: &Keyring, metadata: &HashMap<String, String>) -> Result<Self> {
        let envelope = Envelope::from_metadata(metadata)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotEncrypted,
                "the metadata has no client-side-encryption envelope: the object is not encrypted",
            )
        })?;
        let record = IntegrityRecord::from_metadata(metadata)?;
        let mut state = keyring
            .integrity()
            .check(record.as_ref(), &envelope.wrap_alg)?;
        let (material, _tag_key) = keyring.unwrap_committed(&envelope, record.as_ref()).await?;
        let tags = record.as_ref().and_then(|r| r.inline_tags.clone());
        if record.is_some() && state == IntegrityState::Absent {
            state = IntegrityState::Verified;
        }
        Ok(Self {
            material,
            envelope,
            record,
            tags,
            state,
        })
    }

    /// What is verified when reading: [`IntegrityState::Absent`] for objects without integrity
    /// data (the OSS SDKs' objects; strict keyrings refuse them in [`new`](Self::new)).
    pub fn integrity(&self) -> IntegrityState {
        self.state
    }

    /// The envelope read from the metadata.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// True when the object's integrity tags are in its sidecar object
    /// ([`integrity::sidecar_key`](crate::integrity::sidecar_key) of the object key), which
    /// must be given to [`with_sidecar`](Self::with_sidecar) before decrypting.
    pub fn needs_sidecar(&self) -> bool {
        self.record.is_some() && self.tags.is_none()
    }

    /// Takes the tags from the object's sidecar object (its whole body).
    ///
    /// Errors: [`ErrorKind::MissingIntegrity`] when the bytes are not a tag file,
    /// [`ErrorKind::ObjectIdMismatch`] when they belong to another object.
    pub fn with_sidecar(mut self, sidecar: &[u8]) -> Result<Self> {
        let Some(record) = &self.record else {
            return Err(Error::invalid_input(
                "the object has no integrity record, so no sidecar belongs to it",
            ));
        };
        record.check_sidecar_header(sidecar)?;
        self.tags = Some(crate::integrity::parse_tags(
            &sidecar[SIDECAR_HEADER_LEN as usize..],
        )?);
        Ok(self)
    }

    /// The bytes to ask the store for to read `range` of the plaintext (`None`: all): the
    /// range itself, widened to whole integrity chunks when the object is verified. Send it as
    /// the `Range` header and pass where the body starts to
    /// [`decrypt_stream`](Self::decrypt_stream).
    ///
    /// ```
    /// # use cryptobucket::{AesMasterKey, ByteRange, Keyring, MatDesc};
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// # let keyring = Keyring::single(AesMasterKey::from_bytes(&[7u8; 32])?, MatDesc::new());
    /// # let enc = cryptobucket::codec::Encryptor::new(&keyring).await?;
    /// let dec = cryptobucket::codec::Decryptor::new(&keyring, &enc.metadata()).await?;
    /// let r = ByteRange::Inclusive { first: 10, last: 19 };
    /// assert_eq!(dec.fetch_range(Some(r)), Some(r)); // no integrity data: no widening
    /// # Ok::<(), cryptobucket::Error>(()) }).unwrap();
    /// ```
    pub fn fetch_range(&self, range: Option<ByteRange>) -> Option<ByteRange> {
        let range = range?;
        let Some(record) = &self.record else {
            return Some(range);
        };
        Some(range.widened_to(u64::from(record.chunk_size)))
    }

    /// Decrypts a response body: `body` holds the object's bytes from `body_start` on (0 for
    /// a whole object; the first byte of the `Content-Range` for a ranged GET), the object
    /// is `object_size` bytes (from `Content-Length` or `Content-Range`), and `range` (`None`:
    /// all) is what to return. With integrity data every chunk is checked before any of its
    /// plaintext is returned; a body that ends early is [`ErrorKind::Truncated`].
    ///
    /// Errors up front: [`ErrorKind::SizeMismatch`] when the size differs from the recorded
    /// one, [`ErrorKind::MissingIntegrity`] when the tags are in a sidecar not given,
    /// [`ErrorKind::TagMismatch`] when the tag count does not fit the size,
    /// [`ErrorKind::InvalidInput`] when the body does not start where the range needs.
    pub fn decrypt_stream<S, E>(
        &self,
        body: S,
        body_start: u64,
        object_size: u64,
        range: Option<ByteRange>,
    ) -> Result<DecryptingStream>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<BoxError> + 'static,
    {
        if let Some(recorded) = self.envelope.recorded_plaintext_size()
            && recorded != object_size
        {
            return Err(Error::new(
                ErrorKind::SizeMismatch,
                format!(
                    "the object is {object_size} bytes but its metadata records {recorded} \
                     plaintext bytes; it was truncated, extended or replaced"
                ),
            ));
        }
        let (start, len) = match range {
            Some(r) => r.resolve(object_size)?,
            None => (0, object_size),
        };
        let body: crate::body::BodyStream = Box::pin(body.map(|r| r.map_err(Into::into)));
        let cipher = Some(self.material.cipher_at(start)?);
        let Some(record) = &self.record else {
            if body_start > start {
                return Err(body_after(body_start, start));
            }
            return Ok(DecryptingStream::from_stream(
                body,
                cipher,
                start - body_start,
                len,
            ));
        };
        let all = self.tags.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::MissingIntegrity,
                "the object's integrity tags are in its sidecar object; fetch it and pass it to \
                 Decryptor::with_sidecar",
            )
        })?;
        if all.len() as u64 != record.chunk_count(object_size) {
            return Err(Error::new(
                ErrorKind::TagMismatch,
                format!(
                    "the object has {} integrity tags but {} chunks: it was truncated or extended",
                    all.len(),
                    record.chunk_count(object_size)
                ),
            ));
        }
        let c = u64::from(record.chunk_size);
        let (first, last) = record.chunk_span(start, len, object_size);
        if body_start > first * c {
            return Err(body_after(body_start, first * c));
        }
        // The key commitment was checked in `new`; this derives the same tag key again.
        let tag_key = record.open(&self.material, self.envelope.part_size)?;
        let verifier = ChunkVerifier::new(
            tag_key,
            record.length_mode,
            object_size,
            first,
            all[first as usize..=last as usize].to_vec(),
        );
        Ok(
            DecryptingStream::from_stream(body, cipher, start - first * c, len)
                .verified(verifier, first * c - body_start),
        )
    }
}

fn body_after(body_start: u64, needed: u64) -> Error {
    Error::invalid_input(format!(
        "the body starts at byte {body_start} but decrypting the range needs it from byte \
         {needed}; ask the store for Decryptor::fetch_range"
    ))
}
