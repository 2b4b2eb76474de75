//! `CopyObject`: a same-store copy that keeps the encryption metadata.

use aws_sdk_s3::types::MetadataDirective;

use crate::error::{Error, Result};
use crate::handle::{SharedHandle, percent_encode_key, require_key};

/// Builder of a same-store copy; see [`CryptoBucket::copy_object`](crate::CryptoBucket::copy_object).
#[derive(Debug)]
pub struct CopyObjectFluentBuilder {
    bucket: SharedHandle,
    source_bucket: Option<String>,
    source_key: Option<String>,
    key: Option<String>,
}

impl CopyObjectFluentBuilder {
    pub(crate) fn new(bucket: SharedHandle) -> Self {
        Self {
            bucket,
            source_bucket: None,
            source_key: None,
            key: None,
        }
    }

    /// Source key (required).
    pub fn source_key(mut self, key: impl Into<String>) -> Self {
        self.source_key = Some(key.into());
        self
    }

    /// Source bucket in the same store (default: this bucket).
    pub fn source_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.source_bucket = Some(bucket.into());
        self
    }

    /// Destination key in this bucket (required).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Copies ciphertext, metadata and integrity sidecar server-side. The source is checked first: it must carry
    /// valid encryption metadata (or the policy must allow plain objects).
    pub async fn send(self) -> Result<Option<String>> {
        let key = require_key(self.key)?;
        let source_key = self.source_key.ok_or_else(|| {
            Error::invalid_input("the source key is required (call .source_key(...))")
        })?;
        let inner = &*self.bucket;
        let source_bucket = self.source_bucket.unwrap_or_else(|| inner.bucket.clone());
        let head = inner
            .client
            .head_object()
            .bucket(&source_bucket)
            .key(&source_key)
            .send()
            .await
            .map_err(|e| {
                Error::from_sdk("HeadObject", e).with_object(&source_bucket, &source_key)
            })?;
        self.bucket.envelope_of(&source_key, head.metadata())?;
        let record = head
            .metadata()
            .map(crate::integrity::IntegrityRecord::from_metadata)
            .transpose()?
            .flatten();
        let out = inner
            .client
            .copy_object()
            .copy_source(format!(
                "{source_bucket}/{}",
                percent_encode_key(&source_key)
            ))
            .bucket(&inner.bucket)
            .key(&key)
            .metadata_directive(MetadataDirective::Copy)
            .send()
            .await
            .map_err(|e| Error::from_sdk("CopyObject", e).with_object(&inner.bucket, &key))?;
        // The tags are bound to the object id, not the key: the sidecar copies as it is.
        if record.is_some_and(|r| r.inline_tags.is_none()) {
            let side = crate::integrity::sidecar_key(&source_key);
            inner
                .client
                .copy_object()
                .copy_source(format!("{source_bucket}/{}", percent_encode_key(&side)))
                .bucket(&inner.bucket)
                .key(crate::integrity::sidecar_key(&key))
                .metadata_directive(MetadataDirective::Copy)
                .send()
                .await
                .map_err(|e| {
                    Error::from_sdk("CopyObject (integrity sidecar)", e)
                        .with_object(&inner.bucket, &key)
                })?;
        }
        Ok(out.copy_object_result.and_then(|r| r.e_tag))
    }
}
