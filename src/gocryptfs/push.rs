//! Writing a plain local directory into a bucket prefix as a gocryptfs v2 tree, with no FUSE,
//! no root and no local copy: names and contents are encrypted as they are uploaded, small
//! files several at once, large ones as multipart uploads whose parts hold whole stored blocks
//! (the first part also the file header), parts in parallel. Each object is retried by the
//! engine; a failed multipart upload is aborted.
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! use cryptobucket::gocryptfs::{GocryptfsConf, push::push_dir};
//! let (conf, master) = GocryptfsConf::create("secret", 16)?;
//! let stats = push_dir(&bucket, "model/".as_ref(), "eas/model/", &conf, &master).await?;
//! println!("{} files, {} bytes", stats.files, stats.bytes);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::tree::TreeStats;
use super::{
    BLOCK, BLOCK_OVERHEAD, CONF_NAME, DIRIV_NAME, GocryptfsConf, GocryptfsKeys, HEADER_LEN,
    MasterKey, long_name, random, stored_size,
};
use crate::engine::{Reporter, with_retries};
use crate::error::{Error, Result};
use crate::handle::SharedHandle;

/// Stored blocks per multipart part (8,388,096 bytes: whole blocks, about 8 MiB).
const PART_BLOCKS: u64 = 2032;
/// Files up to this size go up in one PUT.
const SINGLE_MAX: u64 = 16 << 20;

/// A file to upload: local path, object key, plaintext size.
struct Job {
    path: PathBuf,
    key: String,
    size: u64,
}

/// Encrypts `src` into `prefix` of `bucket` as a gocryptfs tree (config, directory IVs, long
/// name files, contents). Refuses a prefix that already holds a `gocryptfs.conf`.
pub async fn push_dir(
    bucket: &crate::CryptoBucket,
    src: &Path,
    prefix: &str,
    conf: &GocryptfsConf,
    master: &MasterKey,
) -> Result<TreeStats> {
    let handle = bucket.inner.clone();
    let mut prefix = prefix.trim_start_matches('/').to_owned();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let conf_key = format!("{prefix}{CONF_NAME}");
    if crate::ops::head_object::HeadObjectFluentBuilder::new(handle.clone())
        .key(&conf_key)
        .send()
        .await
        .is_ok()
    {
        return Err(Error::invalid_input(format!(
            "s3://{}/{conf_key} exists; refusing to write a second gocryptfs tree over it",
            handle.bucket
        )));
    }
    let keys = GocryptfsKeys::new(master);
    let mut stats = TreeStats::default();
    let mut jobs = Vec::new();
    let mut small: Vec<(String, Bytes)> = Vec::new();
    // Directories first (names, IVs, long-name files), collecting the files.
    let mut dirs = vec![(src.to_owned(), prefix.clone())];
    while let Some((dir, stored)) = dirs.pop() {
        let iv = random::<16>()?;
        small.push((format!("{stored}{DIRIV_NAME}"), Bytes::copy_from_slice(&iv)));
        stats.dirs += 1;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                Error::invalid_input(format!("{:?} is not a UTF-8 name", e.path()))
            })?;
            let full = keys.encrypt_name(&iv, name)?;
            let on_disk = long_name(&full);
            if on_disk != full {
                small.push((
                    format!("{stored}{on_disk}.name"),
                    Bytes::from(full.into_bytes()),
                ));
            }
            let meta = std::fs::metadata(e.path())
                .map_err(|err| Error::io(format!("cannot stat {}", e.path().display()), err))?;
            if meta.is_dir() {
                dirs.push((e.path(), format!("{stored}{on_disk}/")));
            } else if meta.is_file() {
                jobs.push(Job {
                    path: e.path(),
                    key: format!("{stored}{on_disk}"),
                    size: meta.len(),
                });
            } else {
                return Err(Error::invalid_input(format!(
                    "{} is neither a file nor a directory (object stores hold no special files)",
                    e.path().display()
                )));
            }
        }
    }
    let concurrency = handle.transfer.concurrency.max(1);
    futures::stream::iter(small)
        .map(|(key, body)| put(&handle, key, body))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    // Small files several at once; large ones one after another, their parts in parallel.
    let (little, large): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| j.size <= SINGLE_MAX);
    let (keys, h) = (&keys, &handle);
    futures::stream::iter(little.iter())
        .map(|j| async move {
            let mut plain = Vec::with_capacity(j.size as usize);
            tokio::fs::File::open(&j.path)
                .await
                .map_err(|e| Error::io(format!("cannot open {}", j.path.display()), e))?
                .read_to_end(&mut plain)
                .await
                .map_err(|e| Error::io(format!("cannot read {}", j.path.display()), e))?;
            let plain = zeroize::Zeroizing::new(plain);
            let mut stored = Vec::with_capacity(stored_size(plain.len() as u64) as usize);
            super::tree::encrypt_stream(keys, &mut &plain[..], &mut stored)?;
            put(h, j.key.clone(), Bytes::from(stored)).await
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    for j in &large {
        put_large(&handle, keys, j, concurrency).await?;
    }
    for j in little.iter().chain(&large) {
        stats.files += 1;
        stats.bytes += j.size;
    }
    // The config last: a tree without it is visibly unfinished.
    put(&handle, conf_key, Bytes::from(conf.to_json().into_bytes())).await?;
    Ok(stats)
}

async fn put(handle: &SharedHandle, key: String, body: Bytes) -> Result<()> {
    crate::ops::sidecar::put_stored(handle, &key, body, "PutObject (gocryptfs)").await
}

/// One large file as a multipart upload of whole stored blocks.
async fn put_large(
    handle: &SharedHandle,
    keys: &GocryptfsKeys,
    job: &Job,
    concurrency: usize,
) -> Result<()> {
    let h = handle;
    let key = &job.key;
    let file_id = loop {
        let id = random::<16>()?;
        if id != [0; 16] {
            break id;
        }
    };
    let created = h
        .client
        .create_multipart_upload()
        .bucket(&h.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| Error::from_sdk("CreateMultipartUpload", e).with_object(&h.bucket, key))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Error::invalid_response("no upload id").with_object(&h.bucket, key))?
        .to_owned();
    let blocks = job.size.div_ceil(BLOCK as u64);
    let parts = blocks.div_ceil(PART_BLOCKS);
    let upload = futures::stream::iter(0..parts)
        .map(|i| {
            let upload_id = upload_id.clone();
            async move {
                let first = i * PART_BLOCKS;
                let last = ((i + 1) * PART_BLOCKS).min(blocks);
                let start = first * BLOCK as u64;
                let len = ((last * BLOCK as u64).min(job.size) - start) as usize;
                let mut plain = zeroize::Zeroizing::new(vec![0u8; len]);
                let mut f = tokio::fs::File::open(&job.path)
                    .await
                    .map_err(|e| Error::io(format!("cannot open {}", job.path.display()), e))?;
                f.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| Error::io(format!("cannot read {}", job.path.display()), e))?;
                f.read_exact(&mut plain).await.map_err(|e| {
                    Error::io(
                        format!("cannot read {} (did it change?)", job.path.display()),
                        e,
                    )
                })?;
                let mut body =
                    Vec::with_capacity(len + (last - first) as usize * BLOCK_OVERHEAD + HEADER_LEN);
                if i == 0 {
                    body.extend_from_slice(&2u16.to_be_bytes());
                    body.extend_from_slice(&file_id);
                }
                for (k, chunk) in plain.chunks(BLOCK).enumerate() {
                    body.extend_from_slice(&keys.encrypt_block(
                        &file_id,
                        first + k as u64,
                        chunk,
                    )?);
                }
                let body = Bytes::from(body);
                let n = i32::try_from(i + 1).map_err(|_| Error::invalid_input("too many parts"))?;
                let e_tag = with_retries(
                    h.transfer.max_attempts,
                    n as u32,
                    &Reporter::silent(),
                    || {
                        let req = h
                            .client
                            .upload_part()
                            .bucket(&h.bucket)
                            .key(key)
                            .upload_id(&upload_id)
                            .part_number(n)
                            .body(body.clone().into())
                            .customize()
                            .config_override(crate::client::retry_override(false));
                        async {
                            req.send()
                                .await
                                .map_err(|e| Error::from_sdk("UploadPart", e))
                                .map(|o| o.e_tag().unwrap_or_default().to_owned())
                        }
                    },
                )
                .await?;
                Ok::<_, Error>(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(n)
                        .e_tag(e_tag)
                        .build(),
                )
            }
        })
        .buffered(concurrency)
        .try_collect::<Vec<_>>()
        .await;
    let done = match upload {
        Ok(parts) => h
            .client
            .complete_multipart_upload()
            .bucket(&h.bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Error::from_sdk("CompleteMultipartUpload", e)),
        Err(e) => Err(e),
    };
    if let Err(e) = done {
        let _ = h
            .client
            .abort_multipart_upload()
            .bucket(&h.bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await;
        return Err(e.with_object(&h.bucket, key).with_upload_id(&upload_id));
    }
    Ok(())
}
