//! AWS KMS as master key (`aws-sdk-kms`).
//!
//! Wire format (this crate's own; the OSS SDKs know only Alibaba's KMS):
//! - wrap algorithm `CRYPTOBUCKET/AWS-KMS` ([`WRAP_ALG`]);
//! - `client-side-encryption-key` = base64 of the KMS `CiphertextBlob` of the 32-byte CEK;
//! - `client-side-encryption-start` = base64 of the 16-byte IV itself. A CTR IV is a nonce,
//!   not a secret (AWS's own S3 Encryption Client stores it in clear too); it is
//!   authenticated instead, by the encryption context below;
//! - KMS encryption context `{"cryptobucket:cek-alg": "AES/CTR/NoPadding", "cryptobucket:iv":
//!   base64(IV)}`: KMS refuses to decrypt the CEK if the object's IV header or its content
//!   algorithm was changed, so a downgraded or spliced object fails to unwrap.
//!
//! New objects get their CEK from `GenerateDataKey` (one KMS call per object, or per multipart
//! upload); re-wrapping an existing CEK (key rotation) uses `Encrypt`; reading uses `Decrypt`
//! pinned to the configured key id (one call per object, per multipart upload or per parallel
//! download, never per part).

use std::collections::HashMap;
use std::fmt;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use super::{KeyProvider, WrappedMaterial};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{CEK_ALG_AES_CTR, Envelope, WrapAlgorithm, WrappedValue};
use crate::error::{Error, ErrorKind, Result};

/// The wrap-algorithm string of objects wrapped by [`AwsKmsKey`].
pub const WRAP_ALG: &str = "CRYPTOBUCKET/AWS-KMS";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Where the KMS client comes from.
enum ClientSource {
    Ready(aws_sdk_kms::Client),
    /// Built from the AWS chain on first use (the keyring file is read synchronously).
    Lazy {
        region: Option<String>,
        endpoint_url: Option<String>,
        cell: OnceCell<aws_sdk_kms::Client>,
    },
}

/// A KMS key (id, ARN or alias) used as master key.
///
/// ```no_run
/// # async fn demo() -> cryptobucket::Result<()> {
/// use cryptobucket::{AwsKmsKey, Keyring, MatDesc};
/// let conf = aws_config::load_from_env().await;
/// let kms = AwsKmsKey::new(aws_sdk_kms::Client::new(&conf), "alias/ckpt");
/// let keyring = Keyring::single(kms, MatDesc::new().with("kms", "ckpt"));
/// # let _ = keyring; Ok(()) }
/// ```
pub struct AwsKmsKey {
    key_id: String,
    client: ClientSource,
    /// The key's ARN, resolved once (DescribeKey) to check which key KMS actually used.
    arn: OnceCell<String>,
}

impl fmt::Debug for AwsKmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl AwsKmsKey {
    /// A provider using `client` and the KMS key `key_id` (id, ARN or `alias/...`).
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            client: ClientSource::Ready(client),
            arn: OnceCell::new(),
        }
    }

    /// A provider whose client is built on first use from the standard AWS configuration
    /// chain, with an optional region and endpoint override (private endpoints, tests).
    pub fn from_env(
        key_id: impl Into<String>,
        region: Option<String>,
        endpoint_url: Option<String>,
    ) -> Self {
        Self {
            key_id: key_id.into(),
            client: ClientSource::Lazy {
                region,
                endpoint_url,
                cell: OnceCell::new(),
            },
            arn: OnceCell::new(),
        }
    }

    /// The configured key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn client(&self) -> &aws_sdk_kms::Client {
        match &self.client {
            ClientSource::Ready(c) => c,
            ClientSource::Lazy {
                region,
                endpoint_url,
                cell,
            } => {
                cell.get_or_init(|| async {
                    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                    if let Some(r) = region {
                        loader = loader.region(aws_config::Region::new(r.clone()));
                    }
                    if let Some(e) = endpoint_url {
                        loader = loader.endpoint_url(e);
                    }
                    aws_sdk_kms::Client::new(&loader.load().await)
                })
                .await
            }
        }
    }

    /// The configured key's ARN (DescribeKey on first use; aliases resolve to their key).
    async fn arn(&self) -> Result<&str> {
        self.arn
            .get_or_try_init(|| async {
                let out = self
                    .client()
                    .await
                    .describe_key()
                    .key_id(&self.key_id)
                    .send()
                    .await
                    .map_err(|e| self.kms_error("DescribeKey", e))?;
                out.key_metadata
                    .and_then(|m| m.arn)
                    .ok_or_else(|| Error::invalid_response("DescribeKey returned no key ARN"))
            })
            .await
            .map(String::as_str)
    }

    fn context(iv: &[u8]) -> HashMap<String, String> {
        HashMap::from([
            (
                "cryptobucket:cek-alg".to_owned(),
                CEK_ALG_AES_CTR.to_owned(),
            ),
            ("cryptobucket:iv".to_owned(), B64.encode(iv)),
        ])
    }

    fn kms_error<E>(
        &self,
        op: &str,
        err: aws_sdk_kms::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> Error
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = match &err {
            aws_sdk_kms::error::SdkError::ServiceError(se) => se.err().code().map(str::to_owned),
            _ => None,
        };
        match code.as_deref() {
            // The blob or its context does not match: the uniform unwrap failure.
            Some("InvalidCiphertextException" | "IncorrectKeyException") => {
                Error::key_unwrap().with_operation(format!("KMS {op}"))
            }
            _ => {
                // Status, code, request id and the retry judgement (throttling, 5xx) stay.
                let e = Error::from_sdk(&format!("KMS {op}"), err);
                let unusable = matches!(
                    code.as_deref(),
                    Some(
                        "NotFoundException"
                            | "DisabledException"
                            | "KMSInvalidStateException"
                            | "InvalidKeyUsageException"
                    )
                );
                let message = format!("key {:?}: {}", self.key_id, e.message());
                let kind = match e.kind() {
                    ErrorKind::NotFound => ErrorKind::InvalidKey,
                    _ if unusable => ErrorKind::InvalidKey,
                    k => k,
                };
                let retryable = e.is_retryable();
                let mut out = Error::new(kind, message)
                    .with_operation(format!("KMS {op}"))
                    .with_retryable(retryable);
                if let Some(s) = e.status() {
                    out = out.with_status(s);
                }
                if let Some(c) = e.service_code() {
                    out = out.with_service_code(c);
                }
                if let Some(r) = e.request_id() {
                    out = out.with_request_id(r);
                }
                out.with_source(e)
            }
        }
    }
}

impl KeyProvider for AwsKmsKey {
    fn generate<'a>(&'a self) -> BoxFuture<'a, Result<(ContentMaterial, WrappedMaterial)>> {
        Box::pin(async move {
            let mut iv = ContentMaterial::generate()?.iv().to_owned();
            let out = self
                .client()
                .await
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(Self::context(&iv)))
                .send()
                .await
                .map_err(|e| self.kms_error("GenerateDataKey", e))?;
            let plain = Zeroizing::new(
                out.plaintext
                    .ok_or_else(|| {
                        Error::invalid_response("GenerateDataKey returned no plaintext")
                    })?
                    .into_inner(),
            );
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| Error::invalid_response("GenerateDataKey returned no ciphertext"))?;
            let material = ContentMaterial::from_slices(&plain, &iv).map_err(|_| {
                Error::invalid_response("GenerateDataKey returned a key of the wrong size")
            })?;
            let wrapped = WrappedMaterial {
                wrap_alg: WrapAlgorithm::AwsKms,
                key: WrappedValue::new(B64.encode(blob.as_ref())),
                iv: WrappedValue::new(B64.encode(iv)),
            };
            iv.fill(0);
            Ok((material, wrapped))
        })
    }

    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            let out = self
                .client()
                .await
                .encrypt()
                .key_id(&self.key_id)
                .plaintext(Blob::new(material.cek().to_vec()))
                .set_encryption_context(Some(Self::context(material.iv())))
                .send()
                .await
                .map_err(|e| self.kms_error("Encrypt", e))?;
            let blob = out
                .ciphertext_blob
                .ok_or_else(|| Error::invalid_response("Encrypt returned no ciphertext"))?;
            Ok(WrappedMaterial {
                wrap_alg: WrapAlgorithm::AwsKms,
                key: WrappedValue::new(B64.encode(blob.as_ref())),
                iv: WrappedValue::new(B64.encode(material.iv())),
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move {
            if envelope.wrap_alg != WrapAlgorithm::AwsKms {
                return Err(Error::key_unwrap());
            }
            let blob = B64
                .decode(envelope.wrapped_key.text.trim())
                .map_err(|_| Error::key_unwrap())?;
            let iv = B64
                .decode(envelope.wrapped_iv.text.trim())
                .map_err(|_| Error::key_unwrap())?;
            if iv.len() != IV_LEN || blob.is_empty() {
                return Err(Error::key_unwrap());
            }
            let out = self
                .client()
                .await
                .decrypt()
                .key_id(&self.key_id)
                .ciphertext_blob(Blob::new(blob))
                .set_encryption_context(Some(Self::context(&iv)))
                .send()
                .await
                .map_err(|e| self.kms_error("Decrypt", e))?;
            // KMS honours KeyId; still, never accept a key decrypted under another master key
            // (a server or emulator that ignored KeyId would otherwise let any key in).
            let expected = self.arn().await?;
            if out.key_id.as_deref() != Some(expected) {
                return Err(Error::key_unwrap());
            }
            let plain = Zeroizing::new(
                out.plaintext
                    .ok_or_else(|| Error::invalid_response("Decrypt returned no plaintext"))?
                    .into_inner(),
            );
            if plain.len() != CEK_LEN {
                return Err(Error::key_unwrap());
            }
            ContentMaterial::from_slices(&plain, &iv)
        })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        *alg == WrapAlgorithm::AwsKms
    }

    fn describe(&self) -> String {
        format!("AWS KMS key {}", self.key_id)
    }
}
