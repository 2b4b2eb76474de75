//! What the KMS clients written here (Alibaba Cloud, Volcengine) share: an HTTP client with
//! bounded connect and call times, bounded answers read into zeroizing memory, request bodies
//! wiped after sending, and RFC 3986 percent-encoding.

use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// A byte buffer that `Bytes::from_owner` wipes when its last reference goes.
pub(crate) struct ZeroizingBytes(pub(crate) Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The largest KMS answer read (real ones are under 4 KiB).
pub(crate) const MAX_ANSWER: usize = 1 << 20;
/// How long connecting to KMS may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one KMS call may take in all.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The HTTP client for KMS calls: bounded connect and call times.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

pub(crate) fn reqwest_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "the request failed"
    }
}

/// Reads a response body of at most `limit` bytes into zeroizing memory.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        Error::new(
            ErrorKind::Transport,
            format!("the answer broke off: {}", reqwest_reason(&e)),
        )
        .with_retryable(true)
    })? {
        if out.len() + chunk.len() > limit {
            return Err(Error::invalid_response(format!(
                "the answer is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Appends `s` percent-encoded to `out`, with no intermediate allocation.
pub(crate) fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}
