//! The crate's single error type.
//!
//! Every fallible function returns [`Error`]; match on [`Error::kind`] to decide what to do.
//! Messages say what went wrong and, where it helps, what to do next. They never contain
//! key material: wrapped keys, content keys and IVs are kept out of every message.

use std::fmt;

/// What went wrong, coarse enough to match on.
///
/// New kinds may be added in minor releases.
///
/// ```
/// use cryptobucket::{Error, ErrorKind};
/// fn should_restart(e: &Error) -> bool {
///     matches!(e.kind(), ErrorKind::Changed | ErrorKind::NotFound)
/// }
/// # let _ = should_restart;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object carries no client-side-encryption metadata and the bucket's
    /// [`UnencryptedPolicy`](crate::UnencryptedPolicy) refuses plain objects.
    NotEncrypted,
    /// Encryption metadata is present but malformed or incomplete (bad base64, bad JSON,
    /// a missing header, an impossible size).
    InvalidMetadata,
    /// The object names a content or wrap algorithm this crate does not implement.
    UnsupportedAlgorithm,
    /// No key in the keyring has the object's material description (`matdesc`).
    NoMatchingKey,
    /// A key matched but unwrapping the content key failed: wrong private key, or the
    /// wrapped key/IV metadata was tampered with or swapped. Deliberately uniform.
    KeyUnwrap,
    /// A key could not be loaded or used (bad PEM, missing private key, bad keyring file).
    InvalidKey,
    /// The caller asked for something invalid (bad range syntax, missing builder field).
    InvalidInput,
    /// The requested range lies outside the object.
    RangeNotSatisfiable,
    /// The server's answer contradicts the request or itself (a Content-Range other than the
    /// one requested, an object whose size differs from its recorded plaintext length).
    InvalidResponse,
    /// The response body ended before the length the server announced.
    Truncated,
    /// The object's size differs from the plaintext length its metadata records
    /// (`unencrypted-content-length` or `data-size`): truncated, appended to or replaced.
    SizeMismatch,
    /// The object or bucket does not exist.
    NotFound,
    /// The object changed while it was being read (its ETag no longer matches the pinned one,
    /// HTTP 412), or a resumed transfer's source file changed.
    Changed,
    /// A checkpoint file of a resumable transfer is unreadable, belongs to another transfer, or
    /// its key material does not match (tampered or swapped); it is refused, never trusted.
    InvalidCheckpoint,
    /// The store refused the request for another reason (see [`Error::service_code`]).
    Service,
    /// The request could not be sent or the connection failed.
    Transport,
    /// A local file could not be read or written.
    Io,
    /// Another run of the same transfer (same direction, object and local file) holds its
    /// lock; wait for it to finish or stop it.
    Busy,
    /// The store or key service refused the credentials or the permission (HTTP 401/403,
    /// `AccessDenied`, `SignatureDoesNotMatch`, an expired token).
    AccessDenied,
    /// An integrity tag does not match the data: the ciphertext of the named chunks was changed,
    /// truncated, extended, reordered or spliced in from another object.
    TagMismatch,
    /// The object carries no integrity data (written by another SDK, or stripped) and strict
    /// mode requires it; or its metadata announces integrity data that is missing.
    MissingIntegrity,
    /// The key commitment in the metadata does not match the unwrapped content key: the
    /// wrapped key, the IV or the integrity header was changed or swapped.
    CommitmentMismatch,
    /// The integrity record belongs to another object (its object id differs).
    ObjectIdMismatch,
    /// The integrity record's signature is invalid, or missing where one is required.
    SignatureInvalid,
    /// The integrity record is signed by a key the keyring does not trust.
    UntrustedSigner,
    /// A file format this crate reads is malformed: a veTurboIO header that is not valid JSON
    /// or lacks its magic, a safetensors header with offsets outside the data, overlapping
    /// tensors or an absurd size.
    InvalidFormat,
    /// Some items of a multi-object operation (a directory transfer) failed while others
    /// succeeded; the first failure is the [`source`](std::error::Error::source).
    Partial,
    /// The caller cancelled the transfer through its
    /// [`CancellationToken`](crate::CancellationToken); what the transfer keeps (checkpoint,
    /// partial file, multipart upload) follows its options, as for any other failure.
    Cancelled,
}

impl ErrorKind {
    /// True for the kinds that say an object failed verification (tampered, truncated,
    /// spliced, forged, or missing the integrity data strict mode requires): never retryable,
    /// and never a reason to keep partial output.
    ///
    /// ```
    /// assert!(cryptobucket::ErrorKind::TagMismatch.is_integrity_failure());
    /// assert!(!cryptobucket::ErrorKind::Transport.is_integrity_failure());
    /// ```
    pub fn is_integrity_failure(self) -> bool {
        matches!(
            self,
            Self::TagMismatch
                | Self::MissingIntegrity
                | Self::CommitmentMismatch
                | Self::ObjectIdMismatch
                | Self::SignatureInvalid
                | Self::UntrustedSigner
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotEncrypted => "object not encrypted",
            Self::InvalidMetadata => "invalid encryption metadata",
            Self::UnsupportedAlgorithm => "unsupported algorithm",
            Self::NoMatchingKey => "no matching key",
            Self::KeyUnwrap => "key unwrap failed",
            Self::InvalidKey => "invalid key",
            Self::InvalidInput => "invalid input",
            Self::RangeNotSatisfiable => "range not satisfiable",
            Self::InvalidResponse => "invalid response",
            Self::Truncated => "truncated body",
            Self::SizeMismatch => "size mismatch",
            Self::NotFound => "not found",
            Self::Changed => "changed during transfer",
            Self::InvalidCheckpoint => "invalid checkpoint",
            Self::Service => "service error",
            Self::Transport => "transport error",
            Self::Io => "local I/O error",
            Self::AccessDenied => "access denied",
            Self::Busy => "transfer in progress elsewhere",
            Self::TagMismatch => "integrity tag mismatch",
            Self::MissingIntegrity => "integrity data missing",
            Self::CommitmentMismatch => "key commitment mismatch",
            Self::ObjectIdMismatch => "integrity record of another object",
            Self::SignatureInvalid => "integrity signature invalid",
            Self::UntrustedSigner => "integrity signer not trusted",
            Self::InvalidFormat => "invalid file format",
            Self::Partial => "partly failed",
            Self::Cancelled => "cancelled",
        })
    }
}

/// The error type of every operation in this crate.
///
/// Besides its [`kind`](Self::kind) and message, an error says where it happened, as far as
/// that is known: the S3 [`operation`](Self::operation), the [`bucket`](Self::bucket) and
/// [`key`](Self::key), the multipart [`upload_id`](Self::upload_id), and what the store
/// answered ([`status`](Self::status), [`service_code`](Self::service_code),
/// [`request_id`](Self::request_id)). [`is_retryable`](Self::is_retryable) says whether trying
/// again can help. `Display` is one line with all of it.
///
/// ```
/// use cryptobucket::{ByteRange, ErrorKind};
/// let err = "abc".parse::<ByteRange>().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert!(!err.is_retryable());
/// ```
///
/// A custom [`KeyProvider`](crate::KeyProvider) builds the kinds it is contracted to return
/// the same way, and says whether its backend asked for a retry:
///
/// ```
/// use cryptobucket::{Error, ErrorKind};
/// let throttled = Error::new(ErrorKind::Service, "rate exceeded")
///     .with_operation("KMS Decrypt")
///     .with_status(429)
///     .with_service_code("ThrottlingException")
///     .with_retryable(true);
/// assert!(throttled.is_retryable());
/// assert_eq!(
///     throttled.to_string(),
///     "KMS Decrypt: rate exceeded (HTTP 429 ThrottlingException; retrying may help)"
/// );
/// ```
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Box<Context>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Set when the cause says whether a retry helps (a 5xx or 429 answer, a KMS throttle, a
    /// provider's own judgement); otherwise the kind decides.
    retryable: Option<bool>,
}

/// Where an error happened and what the store said.
#[derive(Debug, Clone, Default)]
struct Context {
    operation: Option<String>,
    bucket: Option<String>,
    key: Option<String>,
    upload_id: Option<String>,
    status: Option<u16>,
    code: Option<String>,
    request_id: Option<String>,
}

impl Error {
    /// A new error of `kind` with a message for humans.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            context: Box::default(),
            source: None,
            retryable: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Says whether trying again can help, overriding the kind's default (see
    /// [`is_retryable`](Self::is_retryable)).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }

    /// Names the operation (`"GetObject"`, `"KMS Decrypt"`, ...), unless one is set already.
    pub fn with_operation(mut self, operation: impl Into<String>) -> Self {
        self.context
            .operation
            .get_or_insert_with(|| operation.into());
        self
    }

    /// Names the object, unless one is set already.
    pub fn with_object(mut self, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        if self.context.bucket.is_none() && self.context.key.is_none() {
            self.context.bucket = Some(bucket.into());
            self.context.key = Some(key.into());
        }
        self
    }

    /// Names the multipart upload, unless one is set already.
    pub fn with_upload_id(mut self, upload_id: impl Into<String>) -> Self {
        self.context
            .upload_id
            .get_or_insert_with(|| upload_id.into());
        self
    }

    /// The HTTP status the service answered.
    pub fn with_status(mut self, status: u16) -> Self {
        self.context.status = Some(status);
        self
    }

    /// The service's error code (`NoSuchKey`, `ThrottlingException`, ...).
    pub fn with_service_code(mut self, code: impl Into<String>) -> Self {
        self.context.code = Some(code.into());
        self
    }

    /// The service's request id, for support tickets.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.context.request_id = Some(request_id.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without context or source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, when known (`"GetObject"`, `"UploadPart"`, `"KMS Decrypt"`).
    pub fn operation(&self) -> Option<&str> {
        self.context.operation.as_deref()
    }

    /// The bucket involved, when known.
    pub fn bucket(&self) -> Option<&str> {
        self.context.bucket.as_deref()
    }

    /// The object key involved, when known.
    pub fn key(&self) -> Option<&str> {
        self.context.key.as_deref()
    }

    /// The multipart upload id, when one was involved.
    pub fn upload_id(&self) -> Option<&str> {
        self.context.upload_id.as_deref()
    }

    /// The HTTP status of the service's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.context.status
    }

    /// The service's error code, when it sent one.
    pub fn service_code(&self) -> Option<&str> {
        self.context.code.as_deref()
    }

    /// The service's request id, when it sent one.
    pub fn request_id(&self) -> Option<&str> {
        self.context.request_id.as_deref()
    }

    /// True when trying the same request again may succeed: a broken or timed-out connection,
    /// a body cut short, an object that changed under a pinned read, or a service answer that
    /// asks for a retry (HTTP 5xx, 429, `SlowDown`, KMS throttling). Multipart and resumable
    /// transfers retry such failures with backoff.
    ///
    /// ```
    /// use cryptobucket::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Transport, "connection reset").is_retryable());
    /// assert!(!Error::new(ErrorKind::KeyUnwrap, "wrong key").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable.unwrap_or(matches!(
            self.kind,
            ErrorKind::Transport | ErrorKind::Truncated
        ))
    }

    pub(crate) fn invalid_metadata(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidMetadata, message)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidResponse, message)
    }

    pub(crate) fn invalid_key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidKey, message)
    }

    pub(crate) fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        let what = what.into();
        Self::new(ErrorKind::Io, format!("{what}: {err}")).with_source(err)
    }

    /// The one error every unwrap failure maps to, whatever the cause (see [`ErrorKind::KeyUnwrap`]).
    pub(crate) fn key_unwrap() -> Self {
        Self::new(
            ErrorKind::KeyUnwrap,
            "could not unwrap the object's content key: the private key does not belong to the \
             object, or its client-side-encryption-key/-start metadata was tampered with or swapped",
        )
    }

    /// Maps an AWS SDK failure (S3 or KMS) to a kind, keeping the SDK error as source and
    /// recording the operation, HTTP status, error code and request id: for code that calls
    /// aws-sdk-s3 itself and wants this crate's errors.
    ///
    /// ```no_run
    /// # async fn demo(client: aws_sdk_s3::Client) -> cryptobucket::Result<()> {
    /// use cryptobucket::Error;
    /// client.head_bucket().bucket("models").send().await
    ///     .map_err(|e| Error::from_sdk("HeadBucket", e).with_object("models", ""))?;
    /// # Ok(()) }
    /// ```
    pub fn from_sdk<E>(
        op: &str,
        err: aws_sdk_s3::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_sdk_s3::error::SdkError;
        let mut status = None;
        let mut code = None;
        let mut request_id = None;
        let (kind, detail, retryable) = match &err {
            SdkError::ServiceError(se) => {
                let raw = se.raw();
                let st = raw.status().as_u16();
                status = Some(st);
                code = se.err().code().map(str::to_owned);
                request_id = ["x-amz-request-id", "x-amzn-requestid", "x-oss-request-id"]
                    .iter()
                    .find_map(|h| raw.headers().get(*h))
                    .map(str::to_owned);
                let kind = match (st, code.as_deref()) {
                    (404, _)
                    | (_, Some("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload")) => {
                        ErrorKind::NotFound
                    }
                    (416, _) | (_, Some("InvalidRange")) => ErrorKind::RangeNotSatisfiable,
                    (412, _) | (_, Some("PreconditionFailed")) => ErrorKind::Changed,
                    (401 | 403, _)
                    | (
                        _,
                        Some(
                            "AccessDenied"
                            | "AccessDeniedException"
                            | "InvalidAccessKeyId"
                            | "SignatureDoesNotMatch"
                            | "ExpiredToken"
                            | "InvalidToken",
                        ),
                    ) => ErrorKind::AccessDenied,
                    _ => ErrorKind::Service,
                };
                let retryable = st >= 500
                    || st == 429
                    || matches!(
                        code.as_deref(),
                        Some(
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestTimeout"
                                | "InternalError"
                                | "ServiceUnavailable"
                                | "KMSInternalException"
                                | "DependencyTimeoutException"
                        )
                    );
                let detail = match (kind, se.err().message()) {
                    (ErrorKind::NotFound, _) => "no such object, bucket or upload".to_owned(),
                    (_, Some(m)) if !m.is_empty() => m.to_owned(),
                    _ => "the service refused the request".to_owned(),
                };
                (kind, detail, retryable)
            }
            SdkError::ResponseError(_) => (
                ErrorKind::InvalidResponse,
                "the response could not be parsed".to_owned(),
                true,
            ),
            SdkError::TimeoutError(_) => (ErrorKind::Transport, "timed out".to_owned(), true),
            SdkError::DispatchFailure(d) if mentions_credentials(&err) => {
                let _ = d;
                (
                    ErrorKind::AccessDenied,
                    "no usable credentials for the store (set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, choose a profile, or configure ~/.aws/credentials)"
                        .to_owned(),
                    false,
                )
            }
            SdkError::DispatchFailure(d) => {
                let what = if d.is_timeout() {
                    "timed out connecting to the store"
                } else if d.is_io() {
                    "the connection to the store failed"
                } else {
                    "could not reach the store"
                };
                (ErrorKind::Transport, what.to_owned(), !d.is_user())
            }
            SdkError::ConstructionFailure(_) => (
                ErrorKind::InvalidInput,
                "the request could not be built (check the bucket name, key and options)"
                    .to_owned(),
                false,
            ),
            _ => (ErrorKind::Service, "request failed".to_owned(), false),
        };
        let mut out = Self::new(kind, detail)
            .with_operation(op)
            .with_source(err)
            .with_retryable(retryable);
        out.context.status = status;
        out.context.code = code;
        out.context.request_id = request_id;
        out
    }
}

/// True when `err` or one of its sources is about missing or unloadable credentials (the
/// SDK reports those as a dispatch failure, which would otherwise read as a network error).
fn mentions_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("credentials") || text.contains("identity") {
            return true;
        }
        next = e.source();
    }
    false
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("message", &self.message)
            .field("context", &self.context)
            .field("retryable", &self.is_retryable());
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

/// One line: `OPERATION s3://BUCKET/KEY (upload ID): MESSAGE (HTTP STATUS CODE, request id ID;
/// retrying may help)`, each part only when known.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.context;
        let mut prefix = Vec::new();
        if let Some(op) = &c.operation {
            prefix.push(op.clone());
        }
        match (&c.bucket, &c.key) {
            (Some(b), Some(k)) => prefix.push(format!("s3://{b}/{k}")),
            (Some(b), None) => prefix.push(format!("s3://{b}")),
            _ => {}
        }
        if let Some(u) = &c.upload_id {
            prefix.push(format!("(upload {u})"));
        }
        if !prefix.is_empty() {
            write!(f, "{}: ", prefix.join(" "))?;
        }
        f.write_str(&self.message)?;
        let mut suffix = Vec::new();
        match (c.status, &c.code) {
            (Some(s), Some(code)) => suffix.push(format!("HTTP {s} {code}")),
            (Some(s), None) => suffix.push(format!("HTTP {s}")),
            (None, Some(code)) => suffix.push(code.clone()),
            _ => {}
        }
        if let Some(r) = &c.request_id {
            suffix.push(format!("request id {r}"));
        }
        let retry = self.is_retryable();
        if !suffix.is_empty() || retry {
            f.write_str(" (")?;
            f.write_str(&suffix.join(", "))?;
            if retry {
                f.write_str(if suffix.is_empty() {
                    "retrying may help"
                } else {
                    "; retrying may help"
                })?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Shorthand for `Result<T, cryptobucket::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
