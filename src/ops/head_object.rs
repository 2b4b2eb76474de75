//! `HeadObject`: size, ETag and the parsed encryption envelope.

use std::collections::HashMap;

use crate::engine::{Reporter, with_retries};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::handle::{SharedHandle, require_key, user_metadata};
use crate::integrity::IntegrityRecord;

/// Builder of a HEAD; see [`CryptoBucket::head_object`](crate::CryptoBucket::head_object).
#[derive(Debug)]
pub struct HeadObjectFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
}

/// What a HEAD returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeadObjectOutput {
    /// Object size (plaintext and ciphertext are the same length).
    pub object_size: u64,
    /// ETag.
    pub e_tag: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// The user's own metadata (encryption entries removed).
    pub metadata: HashMap<String, String>,
    /// The parsed envelope; `None` for a plain object.
    pub envelope: Option<Envelope>,
    /// The integrity record (tags, key commitment, signature), parsed but not verified
    /// (verification needs the key and the body: [`CryptoBucket::get_object`](crate::CryptoBucket::get_object)
    /// or `cryptobucket verify`); `None` when the object has none.
    pub integrity: Option<IntegrityRecord>,
    /// When the object was last written, if the store says.
    pub last_modified: Option<std::time::SystemTime>,
}

impl HeadObjectFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self { bucket, key: None }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends the HEAD. Plain objects give `envelope: None` (whatever the policy); malformed
    /// encryption metadata is an error.
    pub async fn send(self) -> Result<HeadObjectOutput> {
        let key = require_key(self.key)?;
        let inner = &*self.bucket;
        let resp = with_retries(inner.transfer.max_attempts, 0, &Reporter::silent(), || {
            let req = inner
                .client
                .head_object()
                .bucket(&inner.bucket)
                .key(&key)
                .customize()
                .config_override(crate::client::retry_override(false));
            let key = &key;
            async move {
                req.send()
                    .await
                    .map_err(|e| Error::from_sdk("HeadObject", e).with_object(&inner.bucket, key))
            }
        })
        .await?;
        let empty = HashMap::new();
        let envelope = Envelope::from_metadata(resp.metadata().unwrap_or(&empty))?;
        let integrity = IntegrityRecord::from_metadata(resp.metadata().unwrap_or(&empty))
            .map_err(|e| e.with_object(&inner.bucket, &key))?;
        // A HEAD without Content-Length says nothing about the size; taking it as 0 would
        // "download" any object as an empty file.
        let object_size = resp
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid_response("the HEAD response has no valid Content-Length")
                    .with_object(&inner.bucket, &key)
            })?;
        Ok(HeadObjectOutput {
            object_size,
            e_tag: resp.e_tag().map(str::to_owned),
            content_type: resp.content_type().map(str::to_owned),
            metadata: user_metadata(resp.metadata()),
            envelope,
            integrity,
            last_modified: resp
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
        })
    }
}
