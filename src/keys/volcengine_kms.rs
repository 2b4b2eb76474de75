//! Volcengine KMS as master key (`CRYPTOBUCKET/VOLCENGINE-KMS`), and as the key source of
//! headered veTurboIO files.
//!
//! Wire format of our objects (this crate's own):
//! - `client-side-encryption-key` = the KMS `CiphertextBlob` of the 32-byte CEK, from
//!   `Encrypt` with encryption context `{"cryptobucket:cek-alg": "AES/CTR/NoPadding",
//!   "cryptobucket:iv": base64(IV)}`;
//! - `client-side-encryption-start` = base64 of the IV itself (a CTR nonce, authenticated by
//!   that context: KMS refuses to decrypt the CEK when the IV header or the content algorithm
//!   was changed).
//!
//! The API: `POST {endpoint}/?Action=Encrypt|Decrypt&Version=2021-02-18&KeyringName=..&KeyName=..`
//! with a JSON body (`Plaintext`, `CiphertextBlob`, `EncryptionContext` as a JSON string),
//! answers `{"ResponseMetadata": {...}, "Result": {...}}`. Requests are signed with
//! Volcengine's HMAC-SHA256 scheme ([`sign_v4`]; checked in the tests against the official
//! `volcengine.auth.SignerV4`): signed headers `content-type;host;x-content-sha256;x-date`
//! (and `x-security-token` for STS credentials).
//!
//! ```no_run
//! use cryptobucket::{Keyring, MatDesc, VolcengineCredentials, VolcengineKmsKey};
//! let key = VolcengineKmsKey::new("ml-keyring", "ckpt-key", "cn-beijing",
//!     VolcengineCredentials::from_env().unwrap());
//! let keyring = Keyring::single(key, MatDesc::new().with("kms", "volc"));
//! # let _ = keyring;
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::kms_http::{
    MAX_ANSWER, ZeroizingBytes, http_client, percent_encode_into, read_bounded, reqwest_reason,
};
use super::{KeyProvider, WrappedMaterial};
use crate::cipher::{CEK_LEN, ContentMaterial, IV_LEN};
use crate::envelope::{CEK_ALG_AES_CTR, Envelope, WrapAlgorithm, WrappedValue};
use crate::error::{Error, ErrorKind, Result};
use crate::veturbo::{VeturboHeader, VeturboKey, VeturboKeySource};

/// The wrap-algorithm string of objects wrapped by [`VolcengineKmsKey`].
pub const WRAP_ALG: &str = "CRYPTOBUCKET/VOLCENGINE-KMS";
/// The KMS API version.
pub const API_VERSION: &str = "2021-02-18";
/// veTurboIO's default KMS endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://open.volcengineapi.com";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SERVICE: &str = "kms";

/// Volcengine credentials: an AccessKey pair, plus a session token for STS credentials.
/// Secrets are zeroized on drop and redacted in `Debug`.
///
/// ```
/// let c = cryptobucket::VolcengineCredentials::new("AKLT-id", "secret").session_token("sts");
/// assert!(!format!("{c:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct VolcengineCredentials {
    access_key: String,
    secret_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl fmt::Debug for VolcengineCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolcengineCredentials")
            .field("access_key", &self.access_key)
            .field("sts", &self.session_token.is_some())
            .finish_non_exhaustive()
    }
}

impl VolcengineCredentials {
    /// An AccessKey pair.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: Zeroizing::new(secret_key.into()),
            session_token: None,
        }
    }

    /// Adds an STS session token.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// From `VOLCENGINE_ACCESS_KEY`, `VOLCENGINE_SECRET_KEY` and, if set,
    /// `VOLCENGINE_SESSION_TOKEN`; else veTurboIO's `VETURBOIO_KMS_ACCESS_KEY`,
    /// `VETURBOIO_KMS_SECRET_KEY`, `VETURBOIO_KMS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self> {
        for prefix in ["VOLCENGINE_", "VETURBOIO_KMS_"] {
            let var = |name: &str| {
                std::env::var(format!("{prefix}{name}"))
                    .ok()
                    .filter(|v| !v.is_empty())
            };
            if let (Some(ak), Some(sk)) = (var("ACCESS_KEY"), var("SECRET_KEY")) {
                let sk = Zeroizing::new(sk);
                let mut c = Self::new(ak, sk.as_str());
                if let Some(t) = var("SESSION_TOKEN") {
                    c = c.session_token(Zeroizing::new(t).as_str());
                }
                return Ok(c);
            }
        }
        Err(Error::invalid_key(
            "no Volcengine credentials: set VOLCENGINE_ACCESS_KEY and VOLCENGINE_SECRET_KEY \
             (or VETURBOIO_KMS_ACCESS_KEY and VETURBOIO_KMS_SECRET_KEY)",
        ))
    }
}

/// What [`sign_v4`] adds to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedHeaders {
    /// `X-Date`, `YYYYMMDDTHHMMSSZ`.
    pub x_date: String,
    /// `X-Content-Sha256`: hex SHA-256 of the body.
    pub x_content_sha256: String,
    /// `Authorization`.
    pub authorization: String,
}

/// Signs a request with Volcengine's HMAC-SHA256 scheme (`volcengine.auth.SignerV4`):
/// the signed headers are `content-type`, `host`, `x-content-sha256`, `x-date` and, with a
/// session token, `x-security-token`; `x_date` is `YYYYMMDDTHHMMSSZ` (UTC).
///
/// ```
/// use std::collections::BTreeMap;
/// use cryptobucket::VolcengineCredentials;
/// use cryptobucket::keys::volcengine_kms::sign_v4;
/// let query = BTreeMap::from([("Action".to_owned(), "Decrypt".to_owned())]);
/// let creds = VolcengineCredentials::new("AK", "SK");
/// let s = sign_v4("POST", "kms.example", "/", &query, "application/json", b"{}", &creds,
///     "cn-beijing", "kms", "20240708T064450Z");
/// assert!(s.authorization.starts_with(
///     "HMAC-SHA256 Credential=AK/20240708/cn-beijing/kms/request, \
///      SignedHeaders=content-type;host;x-content-sha256;x-date, Signature="));
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sign_v4(
    method: &str,
    host: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
    credentials: &VolcengineCredentials,
    region: &str,
    service: &str,
    x_date: &str,
) -> SignedHeaders {
    use aws_lc_rs::digest::{SHA256, digest};
    use aws_lc_rs::hmac;
    let body_hash = hex::encode(digest(&SHA256, body));
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", content_type),
        ("host", host),
        ("x-content-sha256", &body_hash),
        ("x-date", x_date),
    ];
    if let Some(t) = &credentials.session_token {
        headers.push(("x-security-token", t.as_str()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
    let signed = signed.join(";");
    let mut canonical = Zeroizing::new(format!("{method}\n"));
    for seg in path.split('/').enumerate() {
        if seg.0 > 0 {
            canonical.push('/');
        }
        percent_encode_into(&mut canonical, seg.1);
    }
    canonical.push('\n');
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            canonical.push('&');
        }
        percent_encode_into(&mut canonical, k);
        canonical.push('=');
        percent_encode_into(&mut canonical, v);
    }
    canonical.push('\n');
    for (k, v) in &headers {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(&body_hash);
    let date = &x_date[..x_date.len().min(8)];
    let scope = format!("{date}/{region}/{service}/request");
    let to_sign = format!(
        "HMAC-SHA256\n{x_date}\n{scope}\n{}",
        hex::encode(digest(&SHA256, canonical.as_bytes()))
    );
    let step = |key: &[u8], data: &str| {
        Zeroizing::new(
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
                .as_ref()
                .to_vec(),
        )
    };
    let k = step(credentials.secret_key.as_bytes(), date);
    let k = step(&k, region);
    let k = step(&k, service);
    let k = step(&k, "request");
    let signature = hex::encode(&*step(&k, &to_sign));
    SignedHeaders {
        x_date: x_date.to_owned(),
        x_content_sha256: body_hash,
        authorization: format!(
            "HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            credentials.access_key
        ),
    }
}

/// A Volcengine KMS key (keyring name + key name) used as master key, or to decrypt the data
/// keys of headered veTurboIO files.
pub struct VolcengineKmsKey {
    keyring_name: String,
    key_name: String,
    region: String,
    endpoint: String,
    credentials: VolcengineCredentials,
    http: reqwest::Client,
}

impl fmt::Debug for VolcengineKmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolcengineKmsKey")
            .field("keyring_name", &self.keyring_name)
            .field("key_name", &self.key_name)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "ResponseMetadata", default)]
    metadata: Option<AnswerMetadata>,
    #[serde(rename = "Result", default)]
    result: Option<AnswerResult>,
}

#[derive(serde::Deserialize)]
struct AnswerMetadata {
    #[serde(rename = "RequestId", default)]
    request_id: Option<String>,
    #[serde(rename = "Error", default)]
    error: Option<AnswerError>,
}

#[derive(serde::Deserialize)]
struct AnswerError {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

#[derive(serde::Deserialize)]
struct AnswerResult {
    #[serde(rename = "Plaintext", default)]
    plaintext: Option<Zeroizing<String>>,
    #[serde(rename = "CiphertextBlob", default)]
    ciphertext_blob: Option<String>,
}

impl VolcengineKmsKey {
    /// The key `key_name` in keyring `keyring_name` of `region`, at veTurboIO's default
    /// endpoint ([`DEFAULT_ENDPOINT`]).
    pub fn new(
        keyring_name: impl Into<String>,
        key_name: impl Into<String>,
        region: impl Into<String>,
        credentials: VolcengineCredentials,
    ) -> Self {
        Self {
            keyring_name: keyring_name.into(),
            key_name: key_name.into(),
            region: region.into(),
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            credentials,
            http: http_client(),
        }
    }

    /// veTurboIO's settings: `VETURBOIO_KMS_KEYRING_NAME`, `VETURBOIO_KMS_KEY_NAME`,
    /// `VETURBOIO_KMS_REGION` (default `cn-beijing`), `VETURBOIO_KMS_HOST` (default
    /// `open.volcengineapi.com`, HTTPS) and the credentials of
    /// [`VolcengineCredentials::from_env`].
    pub fn from_veturbo_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let need = |name: &str| {
            var(name)
                .ok_or_else(|| Error::invalid_key(format!("{name} is not set (Volcengine KMS)")))
        };
        let mut key = Self::new(
            need("VETURBOIO_KMS_KEYRING_NAME")?,
            need("VETURBOIO_KMS_KEY_NAME")?,
            var("VETURBOIO_KMS_REGION").unwrap_or_else(|| "cn-beijing".to_owned()),
            VolcengineCredentials::from_env()?,
        );
        if let Some(host) = var("VETURBOIO_KMS_HOST") {
            key = key.endpoint_url(if host.contains("://") {
                host
            } else {
                format!("https://{host}")
            });
        }
        Ok(key)
    }

    /// Another endpoint (a region's `https://kms.cn-beijing.volcengineapi.com`, a private
    /// endpoint, a test server).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into().trim_end_matches('/').to_owned();
        self
    }

    async fn call(&self, action: &str, body: &serde_json::Value) -> Result<AnswerResult> {
        let op = format!("Volcengine KMS {action}");
        let url = reqwest::Url::parse(&format!("{}/", self.endpoint)).map_err(|e| {
            Error::invalid_key(format!("endpoint {:?} is not a URL: {e}", self.endpoint))
        })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(Error::invalid_key(format!(
                    "endpoint {:?} has no host",
                    self.endpoint
                )));
            }
        };
        let query = BTreeMap::from([
            ("Action".to_owned(), action.to_owned()),
            ("Version".to_owned(), API_VERSION.to_owned()),
            ("KeyringName".to_owned(), self.keyring_name.clone()),
            ("KeyName".to_owned(), self.key_name.clone()),
        ]);
        let payload = Zeroizing::new(serde_json::to_vec(body).map_err(|_| {
            Error::invalid_input("cannot encode the KMS request").with_operation(&op)
        })?);
        let now = time::OffsetDateTime::now_utc();
        let x_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let content_type = "application/json";
        let signed = sign_v4(
            "POST",
            &host,
            "/",
            &query,
            content_type,
            &payload,
            &self.credentials,
            &self.region,
            SERVICE,
            &x_date,
        );
        // The query exactly as signed (percent-encoded, sorted).
        let mut url_text = format!("{}/?", self.endpoint);
        for (i, (k, v)) in query.iter().enumerate() {
            if i > 0 {
                url_text.push('&');
            }
            percent_encode_into(&mut url_text, k);
            url_text.push('=');
            percent_encode_into(&mut url_text, v);
        }
        let mut req = self
            .http
            .post(url_text)
            .header("content-type", content_type)
            .header("x-date", &signed.x_date)
            .header("x-content-sha256", &signed.x_content_sha256)
            .header("authorization", &signed.authorization);
        if let Some(t) = &self.credentials.session_token {
            req = req.header("x-security-token", t.as_str());
        }
        let body = bytes::Bytes::from_owner(ZeroizingBytes(payload));
        let resp = req.body(body).send().await.map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("cannot reach {}: {}", self.endpoint, reqwest_reason(&e)),
            )
            .with_operation(&op)
            .with_retryable(true)
        })?;
        let status = resp.status();
        let text = read_bounded(resp, MAX_ANSWER)
            .await
            .map_err(|e| e.with_operation(&op))?;
        let answer: Answer = serde_json::from_slice(&text).map_err(|_| {
            Error::invalid_response(format!(
                "answered HTTP {status} with a body that is not a KMS answer"
            ))
            .with_operation(&op)
            .with_status(status.as_u16())
            .with_retryable(status.is_server_error())
        })?;
        let request_id = answer.metadata.as_ref().and_then(|m| m.request_id.clone());
        let error = answer.metadata.and_then(|m| m.error);
        match (status.is_success(), error, answer.result) {
            (true, None, Some(result)) => Ok(result),
            (_, error, _) => {
                let (code, message) = error
                    .map(|e| (e.code, e.message))
                    .unwrap_or_else(|| ("unknown".to_owned(), String::new()));
                let retryable = status.is_server_error()
                    || status.as_u16() == 429
                    || code.contains("Throttling")
                    || code.contains("FlowLimit")
                    || code.contains("ServiceUnavailable")
                    || code.contains("InternalError");
                // A blob or context KMS cannot decrypt: the uniform unwrap failure.
                let unwrap_failure = action == "Decrypt"
                    && !retryable
                    && (code.contains("Ciphertext") || code == "InvalidParameter");
                if unwrap_failure {
                    return Err(Error::key_unwrap().with_operation(&op));
                }
                let kind = if retryable {
                    ErrorKind::Service
                } else if status.as_u16() == 401
                    || status.as_u16() == 403
                    || code.contains("Signature")
                    || code.contains("AccessDenied")
                    || code.contains("InvalidAccessKey")
                    || code.contains("InvalidSecurityToken")
                {
                    ErrorKind::AccessDenied
                } else {
                    ErrorKind::InvalidKey
                };
                let mut err = Error::new(
                    kind,
                    format!("key {}/{}: {message}", self.keyring_name, self.key_name),
                )
                .with_operation(&op)
                .with_status(status.as_u16())
                .with_service_code(code)
                .with_retryable(retryable);
                if let Some(id) = request_id {
                    err = err.with_request_id(id);
                }
                Err(err)
            }
        }
    }

    /// KMS `Encrypt` of `raw` (1 to 4096 bytes) under `context` (a JSON string): the
    /// `CiphertextBlob`. veTurboIO's `meta_data_key` is this, without a context.
    pub async fn encrypt(&self, raw: &[u8], context: Option<&str>) -> Result<String> {
        let plain = Zeroizing::new(B64.encode(raw));
        let mut body = serde_json::json!({ "Plaintext": plain.as_str() });
        if let Some(c) = context {
            body["EncryptionContext"] = c.into();
        }
        let out = self.call("Encrypt", &body).await;
        // The JSON value held a copy of the base64 key.
        if let Some(serde_json::Value::String(s)) = body.get_mut("Plaintext") {
            zeroize::Zeroize::zeroize(s);
        }
        out?.ciphertext_blob
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::invalid_response("KMS Encrypt returned no CiphertextBlob"))
    }

    /// KMS `Decrypt` of `blob` under `context`: the plaintext, checked to be `len` bytes.
    pub async fn decrypt(
        &self,
        blob: &str,
        context: Option<&str>,
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut body = serde_json::json!({ "CiphertextBlob": blob });
        if let Some(c) = context {
            body["EncryptionContext"] = c.into();
        }
        let out = self.call("Decrypt", &body).await?;
        let plain = out
            .plaintext
            .ok_or_else(|| Error::invalid_response("KMS Decrypt returned no Plaintext"))?;
        let raw = Zeroizing::new(
            B64.decode(plain.as_bytes())
                .map_err(|_| Error::key_unwrap())?,
        );
        if raw.len() != len {
            return Err(Error::key_unwrap());
        }
        Ok(raw)
    }

    fn context(iv: &[u8]) -> String {
        serde_json::json!({
            "cryptobucket:cek-alg": CEK_ALG_AES_CTR,
            "cryptobucket:iv": B64.encode(iv),
        })
        .to_string()
    }
}

impl KeyProvider for VolcengineKmsKey {
    fn wrap<'a>(&'a self, material: &'a ContentMaterial) -> BoxFuture<'a, Result<WrappedMaterial>> {
        Box::pin(async move {
            let blob = self
                .encrypt(material.cek(), Some(&Self::context(material.iv())))
                .await?;
            Ok(WrappedMaterial {
                wrap_alg: WrapAlgorithm::VolcengineKms,
                key: WrappedValue::new(blob),
                iv: WrappedValue::new(B64.encode(material.iv())),
            })
        })
    }

    fn unwrap<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<ContentMaterial>> {
        Box::pin(async move {
            if envelope.wrap_alg != WrapAlgorithm::VolcengineKms {
                return Err(Error::key_unwrap());
            }
            let iv = B64
                .decode(envelope.wrapped_iv.text.trim())
                .ok()
                .filter(|iv| iv.len() == IV_LEN)
                .ok_or_else(Error::key_unwrap)?;
            let cek = self
                .decrypt(
                    envelope.wrapped_key.text.trim(),
                    Some(&Self::context(&iv)),
                    CEK_LEN,
                )
                .await?;
            ContentMaterial::from_slices(&cek, &iv)
        })
    }

    fn can_unwrap(&self, alg: &WrapAlgorithm) -> bool {
        *alg == WrapAlgorithm::VolcengineKms
    }

    fn describe(&self) -> String {
        format!(
            "Volcengine KMS key {}/{} ({})",
            self.keyring_name, self.key_name, self.region
        )
    }
}

/// Headered veTurboIO files: the data key is KMS `Decrypt` of the header's `meta_data_key`
/// (no encryption context, as veTurboIO writes it), the IV the header's. Headerless files
/// carry no KMS blob and need a [`VeturboKey`] instead.
impl VeturboKeySource for VolcengineKmsKey {
    fn key_for<'a>(
        &'a self,
        header: Option<&'a VeturboHeader>,
    ) -> BoxFuture<'a, Result<VeturboKey>> {
        Box::pin(async move {
            let h = header.ok_or_else(|| {
                Error::invalid_key(
                    "a headerless veTurboIO file names no KMS key; give its key and IV \
                     (VETURBOIO_KEY, VETURBOIO_IV)",
                )
            })?;
            let key = self
                .decrypt(&h.meta_data_key, None, h.mode.key_len())
                .await?;
            VeturboKey::new(&key, h.iv)
        })
    }
}
