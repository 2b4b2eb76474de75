//! veTurboIO files written into a bucket: a local plaintext file encrypted as it is uploaded
//! ([`upload_file`]: parallel parts, checkpoint, resume after a kill) and one of this crate's
//! objects converted into a veTurboIO object ([`export_to_object`]: streamed, never on disk).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{HEADER_LEN, MAGIC, VeturboEncryptor, VeturboHeader, VeturboKey, VeturboKeySource};
use crate::cipher::ContentMaterial;
use crate::engine::{Reporter, TransferConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::{SharedHandle, require_key};
use crate::parts::PartSize;
use crate::progress::{ProgressEvent, ProgressListener};
use crate::resumable::TransferOptions;
use crate::resumable::stored::{StoredLayout, StoredUpload};

const HEADER_PARAM: &str = "veturbo-header";

/// Builder of a veTurboIO upload; see [`upload_file`].
pub struct VeturboUploadBuilder {
    handle: SharedHandle,
    path: PathBuf,
    key: Option<String>,
    encryption: Option<(VeturboKey, Option<VeturboHeader>)>,
    resume_keys: Option<Arc<dyn VeturboKeySource>>,
    opts: TransferOptions,
}

impl std::fmt::Debug for VeturboUploadBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VeturboUploadBuilder")
            .field("path", &self.path)
            .field("key", &self.key)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a veTurboIO upload did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VeturboUploadOutput {
    /// Plaintext bytes (the source file's size).
    pub size: u64,
    /// Bytes of the stored object (the header included).
    pub stored_size: u64,
    /// Parts (1 for a single PUT).
    pub parts: u32,
    /// Plaintext bytes taken over from an interrupted earlier run.
    pub resumed_bytes: u64,
    /// Plaintext bytes this run sent.
    pub bytes_sent: u64,
    /// Why an interrupted run was not continued, if one was found and dropped.
    pub restarted: Option<String>,
    /// The header the object carries (an interrupted run's, when one was continued).
    pub header: Option<VeturboHeader>,
}

/// Encrypts the local plaintext file `path` into the veTurboIO object `key` of `bucket`:
/// set [`encryption`](VeturboUploadBuilder::encryption), then
/// [`send`](VeturboUploadBuilder::send). Large files go up as a parallel multipart upload of
/// the transfer engine, with a checkpoint after every part; a rerun after a kill sends only the
/// missing parts.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::veturbo::{VeturboKey, upload_file};
/// let key = VeturboKey::from_env()?;
/// let out = upload_file(&bucket, "model.safetensors")
///     .key("models/model.safetensors")
///     .encryption(key.clone(), None)
///     .key_source(key)
///     .send()
///     .await?;
/// println!("{} bytes stored", out.stored_size);
/// # Ok(()) }
/// ```
pub fn upload_file(bucket: &crate::CryptoBucket, path: impl Into<PathBuf>) -> VeturboUploadBuilder {
    let handle = bucket.inner.clone();
    VeturboUploadBuilder {
        opts: TransferOptions::new(*handle.transfer_config()),
        handle,
        path: path.into(),
        key: None,
        encryption: None,
        resume_keys: None,
    }
}

impl VeturboUploadBuilder {
    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The data key, and the header to write in front (`None`: a headerless file; its mode
    /// and IV must be the key's).
    pub fn encryption(mut self, key: VeturboKey, header: Option<VeturboHeader>) -> Self {
        self.encryption = Some((key, header));
        self
    }

    /// Where the key of an interrupted run comes from, given the header it recorded (a KMS
    /// for headered files, or the same [`VeturboKey`]). Without it, an interrupted run whose
    /// header differs from this one's (a new data key, a new timestamp) starts over.
    pub fn key_source(mut self, source: impl VeturboKeySource + 'static) -> Self {
        self.resume_keys = Some(Arc::new(source));
        self
    }

    crate::resumable::transfer_option_setters!("part");

    /// Uploads (or continues uploading) the file.
    pub async fn send(self) -> Result<VeturboUploadOutput> {
        let (cancel, resumable) = (self.opts.cancel.clone(), self.opts.resumable);
        crate::engine::run_transfer(
            tracing::info_span!(
                "veturbo_upload",
                bucket = %self.handle.bucket(),
                key = self.key.as_deref().unwrap_or_default(),
                path = ?self.path
            ),
            cancel.as_ref(),
            "the veTurboIO upload",
            resumable,
            Box::pin(self.run()),
        )
        .await
    }

    async fn run(self) -> Result<VeturboUploadOutput> {
        let key = require_key(self.key.clone())?;
        let (vkey, header) = self.encryption.clone().ok_or_else(|| {
            Error::invalid_input("a veTurboIO upload needs its key (call .encryption(...))")
        })?;
        if let Some(h) = &header
            && (h.mode != vkey.mode() || h.iv != *vkey.iv())
        {
            return Err(Error::invalid_input(
                "the veTurboIO header's mode and IV must be the key's",
            ));
        }
        self.opts.validate()?;
        let size = std::fs::metadata(&self.path)
            .map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?
            .len();
        let stored = super::body_offset(header.as_ref()) + size;
        let part_size = self.opts.config.part_size.resolve(Some(stored))?;
        let report = Reporter::new(self.opts.progress.clone(), size);
        if stored <= part_size {
            report.emit(ProgressEvent::Started {
                resumed_bytes: 0,
                resumed_parts: 0,
            });
            let layout = Layout::new(vkey, header.as_ref(), size, part_size)?;
            let plain = zeroize::Zeroizing::new(
                tokio::fs::read(&self.path)
                    .await
                    .map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?,
            );
            if plain.len() as u64 != size {
                return Err(Error::new(
                    ErrorKind::Changed,
                    format!("{} changed while it was read", self.path.display()),
                ));
            }
            let body = Bytes::from(layout.encode(1, &plain)?);
            crate::ops::put_stored::put_stored(&self.handle, &key, body, "PutObject (veTurboIO)")
                .await?;
            report.add(size);
            report.emit(ProgressEvent::Finished);
            return Ok(VeturboUploadOutput {
                size,
                stored_size: stored,
                parts: 1,
                resumed_bytes: 0,
                bytes_sent: size,
                restarted: None,
                header,
            });
        }
        // `Started` comes from the upload once it knows what an interrupted run left.
        let mut upload =
            StoredUpload::prepare(&self.handle, &key, &self.path, "upload-veturbo", &self.opts)?
                .announce_start();
        let fresh = Layout::new(vkey.clone(), header.as_ref(), size, part_size)?;
        let layout = match upload.recorded().cloned() {
            Some(recorded) if recorded != fresh.params() => {
                match (recorded_header(&recorded)?, &self.resume_keys) {
                    (Some(h), Some(source)) => {
                        let k = source.key_for(Some(&h)).await?;
                        Layout::new(k, Some(&h), size, part_size)?
                    }
                    (None, Some(source)) if header.is_none() => {
                        Layout::new(source.key_for(None).await?, None, size, part_size)?
                    }
                    _ => {
                        upload
                            .start_over(
                                "the interrupted upload used another veTurboIO header and no key \
                                 source was given to recover its key; starting over"
                                    .to_owned(),
                            )
                            .await?;
                        fresh
                    }
                }
            }
            _ => fresh,
        };
        let used_header = layout.header.clone();
        let parts = layout.part_count();
        let out = upload.run(Arc::new(layout), &report).await?;
        report.emit(ProgressEvent::Finished);
        Ok(VeturboUploadOutput {
            size,
            stored_size: stored,
            parts,
            resumed_bytes: out.resumed_bytes,
            bytes_sent: out.bytes_sent,
            restarted: out.restarted,
            header: used_header,
        })
    }
}

/// The header an interrupted run recorded (`None`: a headerless file).
fn recorded_header(params: &BTreeMap<String, String>) -> Result<Option<VeturboHeader>> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidCheckpoint,
            "a veTurboIO upload checkpoint records no valid header",
        )
    };
    let json = params.get(HEADER_PARAM).ok_or_else(bad)?;
    if json.is_empty() {
        return Ok(None);
    }
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(json.as_bytes());
    if bytes.len() as u64 >= HEADER_LEN {
        return Err(bad());
    }
    bytes.resize(HEADER_LEN as usize, 0);
    VeturboHeader::parse(&bytes).map(Some).map_err(|_| bad())
}

/// A veTurboIO file in parts: part 1 holds the header (when there is one) and the first
/// plaintext bytes, every part is `part_size` stored bytes but the last.
struct Layout {
    key: VeturboKey,
    header: Option<VeturboHeader>,
    header_bytes: Option<Vec<u8>>,
    size: u64,
    part_size: u64,
}

impl Layout {
    fn new(
        key: VeturboKey,
        header: Option<&VeturboHeader>,
        size: u64,
        part_size: u64,
    ) -> Result<Self> {
        Ok(Self {
            header_bytes: header.map(VeturboHeader::to_bytes).transpose()?,
            header: header.cloned(),
            key,
            size,
            part_size,
        })
    }

    fn offset(&self) -> u64 {
        super::body_offset(self.header.as_ref())
    }
}

impl StoredLayout for Layout {
    fn kind(&self) -> &'static str {
        "upload-veturbo"
    }

    fn source_size(&self) -> u64 {
        self.size
    }

    fn stored_size(&self) -> u64 {
        self.offset() + self.size
    }

    fn part_size(&self) -> u64 {
        self.part_size
    }

    fn source_range(&self, n: u32) -> (u64, u64) {
        let start = u64::from(n - 1) * self.part_size;
        let end = (start + self.part_size).min(self.stored_size());
        let h = self.offset();
        let (a, b) = (start.saturating_sub(h), end.saturating_sub(h));
        (a, b - a)
    }

    fn encode(&self, n: u32, source: &[u8]) -> Result<Vec<u8>> {
        let (offset, len) = self.source_range(n);
        if source.len() as u64 != len {
            return Err(Error::invalid_input("a part's source has the wrong length"));
        }
        let mut body = Vec::with_capacity(self.stored_len(n) as usize);
        if n == 1
            && let Some(h) = &self.header_bytes
        {
            body.extend_from_slice(h);
        }
        let at = body.len();
        body.extend_from_slice(source);
        self.key.cipher_at(offset)?.apply(&mut body[at..]);
        Ok(body)
    }

    fn params(&self) -> BTreeMap<String, String> {
        let json = self
            .header_bytes
            .as_ref()
            .map(|b| {
                let body = &b[MAGIC.len()..];
                let end = body.iter().position(|&c| c == 0).unwrap_or(body.len());
                String::from_utf8_lossy(&body[..end]).into_owned()
            })
            .unwrap_or_default();
        BTreeMap::from([(HEADER_PARAM.to_owned(), json)])
    }

    fn binding(&self) -> ContentMaterial {
        self.key.checkpoint_binding()
    }
}

/// Decrypts the object `src_key` of `bucket` (one of this crate's objects, verified as it
/// streams) and stores it as the veTurboIO object `dest_key` of the same bucket: see
/// [`store_stream`]. Returns the bytes stored.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::veturbo::{self, VeturboKey};
/// let key = VeturboKey::from_env()?;
/// veturbo::export_to_object(&bucket, "ckpt/model.safetensors", &key, None, "vt/model.enc").await?;
/// # Ok(()) }
/// ```
pub async fn export_to_object(
    bucket: &crate::CryptoBucket,
    src_key: &str,
    vkey: &VeturboKey,
    header: Option<&VeturboHeader>,
    dest_key: &str,
) -> Result<u64> {
    let got = bucket.get_object().key(src_key).send().await?;
    store_stream(bucket, got.body.into_async_read(), vkey, header, dest_key).await
}

/// Encrypts the plaintext `plain` as a veTurboIO file with `vkey` (behind `header` when
/// given; its mode and IV must be the key's) and stores it as the object `dest_key` of
/// `bucket`. Streamed: parts are encrypted as they are read and sent several at once (memory
/// about the bucket's concurrency × part size; 16 MiB parts by default); nothing touches the
/// disk. A failure aborts the upload. Returns the bytes stored.
///
/// ```no_run
/// # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
/// use cryptobucket::veturbo::{self, VeturboKey};
/// let key = VeturboKey::from_env()?;
/// let plain = tokio::fs::File::open("model.safetensors").await.unwrap();
/// veturbo::store_stream(&bucket, plain, &key, None, "vt/model.enc").await?;
/// # Ok(()) }
/// ```
pub async fn store_stream(
    bucket: &crate::CryptoBucket,
    plain: impl tokio::io::AsyncRead + Unpin + Send,
    vkey: &VeturboKey,
    header: Option<&VeturboHeader>,
    dest_key: &str,
) -> Result<u64> {
    let enc = VeturboEncryptor::new(plain, vkey, header)?;
    let handle = &bucket.inner;
    crate::ops::put_stored::put_stream(
        handle,
        dest_key,
        enc,
        handle.transfer_config(),
        "PutObject (veTurboIO)",
    )
    .await
}
