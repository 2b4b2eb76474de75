//! The integrity sidecar object (`KEY.cbtags`): written after its object, read by ranges.
//!
//! Layout (see `docs/integrity.md`): a 32-byte header (`CBTAGS01`, object id, chunk size,
//! reserved) and then one 16-byte tag per chunk, tag `i` at byte `32 + 16·i`, so the tags of
//! any byte range of the object are one small ranged GET.

use bytes::Bytes;

use crate::engine::{Reporter, with_retries};
use crate::error::{Error, ErrorKind, Result};
use crate::handle::Handle;
use crate::integrity::{IntegrityRecord, SIDECAR_HEADER_LEN, TAG_LEN, parse_tags, sidecar_key};

/// Writes the sidecar of `key` (header and all tags), retried by the engine.
pub(crate) async fn put(
    handle: &Handle,
    key: &str,
    record: &IntegrityRecord,
    tags: &[[u8; TAG_LEN]],
) -> Result<()> {
    let mut body = Vec::with_capacity(SIDECAR_HEADER_LEN as usize + tags.len() * TAG_LEN);
    body.extend_from_slice(&record.sidecar_header());
    for t in tags {
        body.extend_from_slice(t);
    }
    super::put_stored::put_stored(
        handle,
        &sidecar_key(key),
        Bytes::from(body),
        "PutObject (integrity sidecar)",
    )
    .await
}

/// The tags of chunks `first .. first + count` of `key`, from its sidecar (one ranged GET;
/// from chunk 0 the header comes along and is checked too).
pub(crate) async fn fetch(
    handle: &Handle,
    key: &str,
    record: &IntegrityRecord,
    first: u64,
    count: u64,
) -> Result<Vec<[u8; TAG_LEN]>> {
    let side = sidecar_key(key);
    let tag = TAG_LEN as u64;
    let start = if first == 0 {
        0
    } else {
        SIDECAR_HEADER_LEN + first * tag
    };
    let end = SIDECAR_HEADER_LEN + (first + count) * tag; // exclusive
    let want = end - start;
    let raw = with_retries(handle.transfer.max_attempts, 0, &Reporter::silent(), || {
        let req = handle
            .client
            .get_object()
            .bucket(&handle.bucket)
            .key(&side)
            .range(format!("bytes={start}-{}", end - 1))
            .customize()
            .config_override(crate::client::retry_override(false));
        async {
            let resp = req
                .send()
                .await
                .map_err(|e| Error::from_sdk("GetObject (integrity sidecar)", e))?;
            let data = resp.body.collect().await.map_err(|e| {
                Error::new(
                    ErrorKind::Truncated,
                    format!("the integrity sidecar download broke off: {e}"),
                )
            })?;
            Ok(data.into_bytes())
        }
    })
    .await
    .map_err(|e| {
        match e.kind() {
            ErrorKind::NotFound => Error::new(
                ErrorKind::MissingIntegrity,
                format!(
                    "the object's metadata announces integrity data, but its sidecar {side:?} \
                     is missing"
                ),
            ),
            ErrorKind::RangeNotSatisfiable => too_few(&side),
            _ => e,
        }
        .with_object(&handle.bucket, key)
    })?;
    // A server that ignores Range sends the whole sidecar: cut out what was asked for.
    let raw = if raw.len() as u64 > want && raw.len() as u64 >= end {
        raw.slice(start as usize..end as usize)
    } else {
        raw
    };
    if raw.len() as u64 != want {
        return Err(too_few(&side).with_object(&handle.bucket, key));
    }
    let tags = if first == 0 {
        record
            .check_sidecar_header(&raw)
            .map_err(|e| e.with_object(&handle.bucket, key))?;
        &raw[SIDECAR_HEADER_LEN as usize..]
    } else {
        &raw[..]
    };
    parse_tags(tags)
}

fn too_few(side: &str) -> Error {
    Error::new(
        ErrorKind::TagMismatch,
        format!(
            "the object has more chunks than its integrity sidecar {side:?} has tags: the object \
             was extended, or the sidecar cut short"
        ),
    )
}

/// Deletes the sidecar of `key`, if there is one.
pub(crate) async fn delete(handle: &Handle, key: &str) -> Result<()> {
    let side = sidecar_key(key);
    match handle
        .client
        .delete_object()
        .bucket(&handle.bucket)
        .key(&side)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = Error::from_sdk("DeleteObject (integrity sidecar)", e)
                .with_object(&handle.bucket, &side);
            if e.kind() == ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}
