//! Objects stored exactly as given, with no envelope: integrity sidecars, gocryptfs files,
//! veTurboIO files: one PUT, the requests of a multipart upload ([`PlainUpload`]), and a stream
//! stored as a multipart upload ([`put_stream`]), every request retried by the engine.

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::AsyncReadExt as _;

use crate::engine::{FailedUploadPolicy, Reporter, TransferConfig, with_retries};
use crate::error::{Error, Result};
use crate::handle::{Handle, SharedHandle};

/// Stores `body` under `key` as it is (no encryption: integrity sidecars, gocryptfs files),
/// retried by the engine; `operation` names it in errors.
pub(crate) async fn put_stored(
    handle: &Handle,
    key: &str,
    body: Bytes,
    operation: &str,
) -> Result<()> {
    with_retries(handle.transfer.max_attempts, 0, &Reporter::silent(), || {
        let req = handle
            .client
            .put_object()
            .bucket(&handle.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .body(body.clone().into())
            .customize()
            .config_override(crate::client::retry_override(false))
            // As for the crate's streamed bodies: no SHA-256 of the whole payload for the
            // signature (it cost ~10% of CPU on both ends for multi-MiB parts); the formats
            // stored here carry their own integrity (GCM tags, sidecar tags) or, as
            // veTurboIO, none at all.
            .disable_payload_signing();
        async {
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| Error::from_sdk(operation, e))
        }
    })
    .await
    .map_err(|e| e.with_object(&handle.bucket, key))
}

/// A multipart upload of bytes stored as given: the requests, each naming object and upload
/// in its errors. The transfers built on it ([`crate::resumable::stored`], [`put_stream`])
/// schedule and checkpoint the parts.
#[derive(Debug, Clone)]
pub(crate) struct PlainUpload {
    handle: SharedHandle,
    key: String,
    upload_id: String,
}

impl PlainUpload {
    /// Starts an upload of `key`.
    pub(crate) async fn create(handle: &SharedHandle, key: &str) -> Result<Self> {
        let out = handle
            .client
            .create_multipart_upload()
            .bucket(&handle.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| {
                Error::from_sdk("CreateMultipartUpload", e).with_object(&handle.bucket, key)
            })?;
        let upload_id = out.upload_id().map(str::to_owned).ok_or_else(|| {
            Error::invalid_response("CreateMultipartUpload returned no upload id")
                .with_object(&handle.bucket, key)
        })?;
        Ok(Self::attach(handle, key, &upload_id))
    }

    /// An upload started earlier (its id from a checkpoint).
    pub(crate) fn attach(handle: &SharedHandle, key: &str, upload_id: &str) -> Self {
        Self {
            handle: handle.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
        }
    }

    pub(crate) fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Sends part `n`, retried by the engine (`max` attempts); returns its ETag.
    #[tracing::instrument(level = "debug", name = "upload_part", skip_all, fields(part = n, bytes = body.len()))]
    pub(crate) async fn upload_part(
        &self,
        n: u32,
        body: Bytes,
        max: u32,
        report: &Reporter,
    ) -> Result<String> {
        let n_i32 = i32::try_from(n).map_err(|_| Error::invalid_input("too many parts"))?;
        with_retries(max, n, report, || {
            let req = self
                .handle
                .client
                .upload_part()
                .bucket(&self.handle.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .part_number(n_i32)
                .content_length(body.len() as i64)
                .body(body.clone().into())
                .customize()
                .config_override(crate::client::retry_override(false))
                .disable_payload_signing();
            async move {
                let out = req.send().await.map_err(|e| self.error("UploadPart", e))?;
                out.e_tag
                    .ok_or_else(|| Error::invalid_response("UploadPart returned no ETag"))
            }
        })
        .await
    }

    /// The parts the store holds.
    pub(crate) async fn list_parts(&self) -> Result<Vec<crate::multipart::ListedPart>> {
        crate::multipart::list_upload_parts(&self.handle, &self.key, &self.upload_id).await
    }

    /// Completes the upload from `(part number, ETag)` pairs in order.
    pub(crate) async fn complete(&self, parts: Vec<(u32, String)>) -> Result<()> {
        let parts = parts
            .into_iter()
            .map(|(n, e_tag)| {
                CompletedPart::builder()
                    .part_number(n as i32)
                    .e_tag(e_tag)
                    .build()
            })
            .collect();
        self.handle
            .client
            .complete_multipart_upload()
            .bucket(&self.handle.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Aborts the upload; the store discards its parts.
    pub(crate) async fn abort(&self) -> Result<()> {
        self.handle
            .client
            .abort_multipart_upload()
            .bucket(&self.handle.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", e))?;
        Ok(())
    }

    /// A guard that aborts this upload in the background if dropped armed (the future that
    /// drove it was cancelled). `armed = false` gives a guard that does nothing.
    pub(crate) fn abort_on_drop(&self, armed: bool) -> crate::engine::AbortOnDrop {
        let upload = self.clone();
        crate::engine::AbortOnDrop::new(armed.then_some(async move { upload.abort().await }))
    }

    fn error<E>(
        &self,
        op: &str,
        err: aws_sdk_s3::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        crate::multipart::upload_error(op, &self.handle.bucket, &self.key, &self.upload_id, err)
    }
}

/// Stores what `reader` yields under `key` as it is: one PUT when it fits in one part,
/// otherwise a multipart upload of `config`'s part size (default 16 MiB for a stream), parts
/// read in order and sent `config.concurrency` at once (memory: about that many parts), each
/// retried by the engine. On failure, or when the future is dropped, the upload is aborted
/// (unless the policy retains it). Returns the bytes stored.
pub(crate) async fn put_stream(
    handle: &SharedHandle,
    key: &str,
    mut reader: impl tokio::io::AsyncRead + Unpin + Send,
    config: &TransferConfig,
    operation: &str,
) -> Result<u64> {
    config.validate()?;
    let part = config.part_size.resolve(None)?;
    let first = read_part(&mut reader, part).await?;
    if (first.len() as u64) < part {
        let n = first.len() as u64;
        put_stored(handle, key, first, operation).await?;
        return Ok(n);
    }
    let upload = PlainUpload::create(handle, key).await?;
    let mut guard = upload.abort_on_drop(config.failed_upload == FailedUploadPolicy::Abort);
    let report = Reporter::silent();
    let max = config.max_attempts;
    let parts = futures::stream::unfold(
        (Some(first), reader, 1u32, false),
        move |(pending, mut reader, n, done)| async move {
            if let Some(body) = pending {
                return Some((Ok((n, body)), (None, reader, n + 1, false)));
            }
            if done {
                return None;
            }
            match read_part(&mut reader, part).await {
                Ok(body) if body.is_empty() => None,
                Ok(body) => {
                    let last = (body.len() as u64) < part;
                    Some((Ok((n, body)), (None, reader, n + 1, last)))
                }
                Err(e) => Some((Err(e), (None, reader, n, true))),
            }
        },
    );
    let (u, r) = (&upload, &report);
    let sent = parts
        .map(|p| async move {
            let (n, body) = p?;
            if n as u64 > crate::multipart::MAX_PARTS {
                return Err(Error::invalid_input(
                    "the stream needs more than 10,000 parts: raise the part size",
                ));
            }
            let len = body.len() as u64;
            let e_tag = u.upload_part(n, body, max, r).await?;
            Ok::<_, Error>((n, e_tag, len))
        })
        .buffered(config.concurrency)
        .try_collect::<Vec<_>>()
        .await;
    let outcome = match sent {
        Ok(parts) => {
            let total = parts.iter().map(|p| p.2).sum::<u64>();
            upload
                .complete(parts.into_iter().map(|(n, e, _)| (n, e)).collect())
                .await
                .map(|()| total)
        }
        Err(e) => Err(e),
    };
    guard.disarm();
    match outcome {
        Ok(total) => Ok(total),
        Err(e) => {
            if config.failed_upload == FailedUploadPolicy::Abort {
                let _ = upload.abort().await;
            }
            Err(e
                .with_object(&handle.bucket, key)
                .with_upload_id(upload.upload_id()))
        }
    }
}

/// Reads up to `part` bytes (fewer only at the end of the stream).
async fn read_part(reader: &mut (impl tokio::io::AsyncRead + Unpin), part: u64) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(part as usize);
    (&mut *reader)
        .take(part)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::io("cannot read the data to store", e))?;
    Ok(Bytes::from(buf))
}
