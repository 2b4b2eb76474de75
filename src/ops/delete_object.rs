//! `DeleteObject`.

use crate::error::{Error, Result};
use crate::handle::{SharedHandle, require_key};

/// Builder of a delete; see [`CryptoBucket::delete_object`](crate::CryptoBucket::delete_object).
#[derive(Debug)]
pub struct DeleteObjectFluentBuilder {
    bucket: SharedHandle,
    key: Option<String>,
}

impl DeleteObjectFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self { bucket, key: None }
    }

    /// Object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Deletes the object and its integrity sidecar, if any (succeeds if they do not exist,
    /// as S3 does).
    pub async fn send(self) -> Result<()> {
        let key = require_key(self.key)?;
        let inner = &*self.bucket;
        inner
            .client
            .delete_object()
            .bucket(&inner.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| Error::from_sdk("DeleteObject", e).with_object(&inner.bucket, &key))?;
        crate::ops::sidecar::delete(inner, &key).await
    }
}
