//! Plain (unencrypted) aws-sdk-s3 transfers that the benchmark examples measure our
//! transfers against, written once so every comparison uses the same baseline.

use std::path::Path;

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How [`multipart_upload`] sends a file.
#[derive(Debug, Clone, Copy)]
pub struct Multipart {
    /// Part size in bytes.
    pub part: u64,
    /// Parts in flight.
    pub concurrency: usize,
    /// Send `UNSIGNED-PAYLOAD` (no SHA-256 of each part for SigV4), as our stored-format
    /// uploads do; otherwise the SDK hashes every part, as our envelope uploads let it.
    pub unsigned: bool,
}

/// Uploads the file at `path` to `bucket`/`key` with a plain multipart upload: parts read
/// from the file at their offsets, `m.concurrency` in flight (each a task), completed in
/// part order.
///
/// ```no_run
/// # async fn f(client: aws_sdk_s3::Client) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use cryptobucket_testkit::baseline::{Multipart, multipart_upload};
/// let m = Multipart { part: 8 << 20, concurrency: 8, unsigned: false };
/// multipart_upload(&client, "bench", "plain.bin", std::path::Path::new("model.bin"), m).await?;
/// # Ok(()) }
/// ```
pub async fn multipart_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    path: &Path,
    m: Multipart,
) -> Result<(), BoxError> {
    let size = std::fs::metadata(path)?.len();
    let id = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?
        .upload_id
        .ok_or("no upload id")?;
    let count = size.div_ceil(m.part).max(1);
    // Each part is a task of its own, so reading, signing and sending spread over the cores.
    let mut set = tokio::task::JoinSet::new();
    let mut parts = Vec::new();
    let mut next = 0u64;
    loop {
        while set.len() < m.concurrency && next < count {
            let (client, bucket, key, id, path) = (
                client.clone(),
                bucket.to_owned(),
                key.to_owned(),
                id.clone(),
                path.to_owned(),
            );
            let off = next * m.part;
            let len = (size - off).min(m.part);
            let n = next as i32 + 1;
            set.spawn(async move {
                let body = ByteStream::read_from()
                    .path(&path)
                    .buffer_size(1 << 20)
                    .offset(off)
                    .length(Length::Exact(len))
                    .build()
                    .await?;
                let req = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .content_length(len as i64)
                    .body(body);
                let out = if m.unsigned {
                    req.customize().disable_payload_signing().send().await?
                } else {
                    req.send().await?
                };
                Ok::<_, BoxError>(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag)
                        .build(),
                )
            });
            next += 1;
        }
        match set.join_next().await {
            Some(r) => parts.push(r??),
            None => break,
        }
    }
    parts.sort_by_key(|p| p.part_number);
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}
