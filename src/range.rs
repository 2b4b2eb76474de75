//! Byte ranges of plaintext, and checking what the server answered.
//!
//! Ciphertext and plaintext have the same length and offsets (CTR, no padding), so a plaintext
//! range is requested as is; the decrypting side seeks its counter to the first byte, aligned or
//! not. The server's `Content-Range` is checked against the request, and a server that ignores
//! `Range` (status 200, whole body) is handled by slicing locally.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A byte range in HTTP `Range` terms (RFC 9110), over the plaintext.
///
/// ```
/// use cryptobucket::ByteRange;
/// assert_eq!("100-199".parse::<ByteRange>().unwrap(), ByteRange::Inclusive { first: 100, last: 199 });
/// assert_eq!("bytes=100-".parse::<ByteRange>().unwrap(), ByteRange::From(100));
/// assert_eq!("-50".parse::<ByteRange>().unwrap(), ByteRange::Suffix(50));
/// assert_eq!(ByteRange::Suffix(50).resolve(1000).unwrap(), (950, 50));
/// assert!("9-3".parse::<ByteRange>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteRange {
    /// `first-last`, both inclusive.
    Inclusive {
        /// First byte offset.
        first: u64,
        /// Last byte offset (inclusive); may lie past the end, which is clamped.
        last: u64,
    },
    /// `first-`: from `first` to the end.
    From(u64),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The `Range` header value.
    pub fn to_header(&self) -> String {
        format!("bytes={self}")
    }

    /// This range grown to whole chunks of `chunk` bytes (a suffix by one chunk more, which
    /// covers the chunk its first byte falls in), so the chunks it touches can be verified.
    pub(crate) fn widened_to(self, chunk: u64) -> Self {
        let c = chunk.max(1);
        match self {
            Self::Inclusive { first, last } => Self::Inclusive {
                first: first / c * c,
                last: (last / c)
                    .saturating_add(1)
                    .saturating_mul(c)
                    .saturating_sub(1)
                    .max(last),
            },
            Self::From(first) => Self::From(first / c * c),
            Self::Suffix(n) => Self::Suffix(n.saturating_add(c)),
        }
    }

    /// The absolute `(start, length)` of this range in an object of `total` bytes, clamped to
    /// the end as HTTP does; [`ErrorKind::RangeNotSatisfiable`] when it selects nothing.
    pub fn resolve(&self, total: u64) -> Result<(u64, u64)> {
        let unsatisfiable = || {
            Error::new(
                ErrorKind::RangeNotSatisfiable,
                format!("range {self} lies outside the object ({total} bytes)"),
            )
        };
        match *self {
            Self::Inclusive { first, last } => {
                if first >= total {
                    return Err(unsatisfiable());
                }
                Ok((first, last.min(total - 1) - first + 1))
            }
            Self::From(first) => {
                if first >= total {
                    return Err(unsatisfiable());
                }
                Ok((first, total - first))
            }
            Self::Suffix(n) => {
                if total == 0 {
                    return Err(unsatisfiable());
                }
                let len = n.min(total);
                Ok((total - len, len))
            }
        }
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inclusive { first, last } => write!(f, "{first}-{last}"),
            Self::From(first) => write!(f, "{first}-"),
            Self::Suffix(n) => write!(f, "-{n}"),
        }
    }
}

impl FromStr for ByteRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_input(format!(
                "invalid range {s:?}: {why}; use FIRST-LAST, FIRST- or -SUFFIX_LENGTH (e.g. 100-199, 100-, -50)"
            ))
        };
        let spec = s.trim();
        let spec = spec.strip_prefix("bytes=").unwrap_or(spec);
        let (a, b) = spec.split_once('-').ok_or_else(|| bad("no '-'"))?;
        let num = |t: &str| -> Result<u64> {
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad("offsets must be decimal numbers"));
            }
            t.parse::<u64>().map_err(|_| bad("offset too large"))
        };
        match (a.is_empty(), b.is_empty()) {
            (true, true) => Err(bad("no offsets")),
            (true, false) => {
                let n = num(b)?;
                if n == 0 {
                    return Err(bad("a suffix range must be at least 1 byte"));
                }
                Ok(Self::Suffix(n))
            }
            (false, true) => Ok(Self::From(num(a)?)),
            (false, false) => {
                let (first, last) = (num(a)?, num(b)?);
                if last < first {
                    return Err(bad("last offset before first"));
                }
                Ok(Self::Inclusive { first, last })
            }
        }
    }
}

/// A parsed `Content-Range: bytes FIRST-LAST/TOTAL` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: Option<u64>,
}

impl ContentRange {
    pub(crate) fn parse(value: &str) -> Result<Self> {
        let bad = || Error::invalid_response(format!("malformed Content-Range {value:?}"));
        let rest = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
        let (range, total) = rest.split_once('/').ok_or_else(bad)?;
        let (first, last) = range.split_once('-').ok_or_else(bad)?;
        let first: u64 = first.trim().parse().map_err(|_| bad())?;
        let last: u64 = last.trim().parse().map_err(|_| bad())?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse::<u64>().map_err(|_| bad())?),
        };
        // `last - first + 1` must fit: `bytes 0-18446744073709551615/*` names 2^64 bytes.
        if last < first || last - first == u64::MAX || total.is_some_and(|t| last >= t) {
            return Err(bad());
        }
        Ok(Self { first, last, total })
    }

    /// Bytes in the range; never overflows ([`Self::parse`] refuses ranges of 2^64 bytes).
    pub(crate) fn len(&self) -> u64 {
        (self.last - self.first).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        for (s, want) in [
            ("0-0", ByteRange::Inclusive { first: 0, last: 0 }),
            (" bytes=5-9 ", ByteRange::Inclusive { first: 5, last: 9 }),
            ("7-", ByteRange::From(7)),
            ("-1", ByteRange::Suffix(1)),
        ] {
            assert_eq!(s.parse::<ByteRange>().unwrap(), want, "{s}");
        }
        for s in [
            "",
            "-",
            "a-b",
            "1-2-3",
            "-0",
            "5-4",
            "+1-2",
            "1 -2",
            "99999999999999999999-",
        ] {
            assert_eq!(
                s.parse::<ByteRange>().unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{s}"
            );
        }
    }

    #[test]
    fn resolve_clamps_and_refuses() {
        assert_eq!(
            ByteRange::Inclusive {
                first: 5,
                last: 1000
            }
            .resolve(10)
            .unwrap(),
            (5, 5)
        );
        assert_eq!(ByteRange::Suffix(100).resolve(10).unwrap(), (0, 10));
        assert_eq!(ByteRange::From(9).resolve(10).unwrap(), (9, 1));
        for r in [
            ByteRange::From(10),
            ByteRange::Inclusive {
                first: 10,
                last: 20,
            },
        ] {
            assert_eq!(
                r.resolve(10).unwrap_err().kind(),
                ErrorKind::RangeNotSatisfiable
            );
        }
        assert_eq!(
            ByteRange::Suffix(1).resolve(0).unwrap_err().kind(),
            ErrorKind::RangeNotSatisfiable
        );
    }

    #[test]
    fn content_range() {
        let c = ContentRange::parse("bytes 10-19/100").unwrap();
        assert_eq!((c.first, c.last, c.total, c.len()), (10, 19, Some(100), 10));
        assert_eq!(ContentRange::parse("bytes 0-0/*").unwrap().total, None);
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes x-1/2",
            "bytes 0-1",
            "bytes 0-18446744073709551615/*",
            "bytes 18446744073709551615-18446744073709551615/18446744073709551615",
            "bytes 0-99999999999999999999/*",
        ] {
            assert_eq!(
                ContentRange::parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidResponse,
                "{bad}"
            );
        }
    }
}
