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
    /// The store refused the request (access denied, ...).
    Service,
    /// The request could not be sent or the connection failed.
    Transport,
    /// A local file could not be read or written.
    Io,
}

/// The error type of every operation in this crate.
///
/// ```
/// use cryptobucket::{ByteRange, ErrorKind};
/// let err = "abc".parse::<ByteRange>().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// ```
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Set for service answers that say "try again" (5xx, 429, SlowDown).
    transient: bool,
}

impl Error {
    /// A new error of `kind` with a message for humans.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
            transient: false,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when trying the same request again may succeed: a broken or timed-out connection,
    /// a body cut short, or a service answer that asks for a retry (HTTP 5xx, 429, `SlowDown`).
    /// Multipart and resumable transfers retry such failures with backoff.
    ///
    /// ```
    /// use cryptobucket::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Transport, "connection reset").is_retryable());
    /// assert!(!Error::new(ErrorKind::KeyUnwrap, "wrong key").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.transient || matches!(self.kind, ErrorKind::Transport | ErrorKind::Truncated)
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

    /// Maps an aws-sdk-s3 failure to a kind, keeping the SDK error as source.
    pub(crate) fn from_sdk<E>(
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
        let (kind, detail) = match &err {
            SdkError::ServiceError(se) => {
                let e = se.err();
                let code = e.code().unwrap_or("unknown");
                let kind = match code {
                    "NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload" => {
                        ErrorKind::NotFound
                    }
                    "InvalidRange" => ErrorKind::RangeNotSatisfiable,
                    "PreconditionFailed" => ErrorKind::Changed,
                    _ => ErrorKind::Service,
                };
                let msg = e.message().unwrap_or("");
                (kind, format!("{code}: {msg}"))
            }
            SdkError::ResponseError(_) => (
                ErrorKind::InvalidResponse,
                "the response could not be parsed".to_owned(),
            ),
            SdkError::TimeoutError(_) => (ErrorKind::Transport, "timed out".to_owned()),
            SdkError::DispatchFailure(_) => {
                (ErrorKind::Transport, "could not reach the store".to_owned())
            }
            SdkError::ConstructionFailure(_) => {
                (ErrorKind::InvalidInput, "invalid request".to_owned())
            }
            _ => (ErrorKind::Service, "request failed".to_owned()),
        };
        // HEAD has no body, so a missing key arrives as a bare 404.
        let kind = match &err {
            SdkError::ServiceError(se) if se.raw().status().as_u16() == 404 => ErrorKind::NotFound,
            SdkError::ServiceError(se) if se.raw().status().as_u16() == 416 => {
                ErrorKind::RangeNotSatisfiable
            }
            SdkError::ServiceError(se) if se.raw().status().as_u16() == 412 => ErrorKind::Changed,
            _ => kind,
        };
        let transient = match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                status >= 500
                    || status == 429
                    || matches!(
                        se.err().code(),
                        Some("SlowDown" | "Throttling" | "RequestTimeout" | "InternalError")
                    )
            }
            SdkError::ResponseError(_) => true,
            _ => false,
        };
        let detail = if kind == ErrorKind::NotFound {
            "no such object or bucket".to_owned()
        } else {
            detail
        };
        let mut out = Self::new(kind, format!("{op} failed: {detail}")).with_source(err);
        out.transient = transient;
        out
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Shorthand for `Result<T, cryptobucket::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
