//! Part sizes: S3's multipart limits and how a part size is chosen for a data size. Shared by
//! multipart uploads, whole-file transfers (where it is also the download range size) and the
//! engine's [`TransferConfig`](crate::TransferConfig).

use crate::cipher::BLOCK_LEN;
use crate::error::{Error, Result};

/// Smallest part S3 accepts, except for the last part (5 MiB).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part S3 accepts (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts one upload may have (S3 and OSS: 10,000).
pub const MAX_PARTS: u64 = 10_000;
/// Part size chosen when the caller gives none and the data fits 10,000 of them (8 MiB, as
/// the AWS transfer manager does): small enough to keep memory low, large enough for speed.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Part size for streams of unknown length (16 MiB: up to ~156 GiB in 10,000 parts).
pub const DEFAULT_UNKNOWN_SIZE_PART_SIZE: u64 = 16 * 1024 * 1024;

/// How to choose the part size.
///
/// ```
/// use cryptobucket::multipart::PartSize;
/// // A 100 GB checkpoint: the automatic size keeps within 10,000 parts.
/// let size = PartSize::Auto.resolve(Some(100_000_000_000)).unwrap();
/// assert!(size % 16 == 0 && 100_000_000_000u64.div_ceil(size) <= 10_000);
/// assert!(PartSize::Target(5 * 1024 * 1024 + 1).resolve(Some(1 << 30)).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartSize {
    /// 8 MiB, or the smallest whole number of MiB that fits the data in 10,000 parts.
    #[default]
    Auto,
    /// Exactly this many bytes: a multiple of 16, 5 MiB..=5 GiB, at most 10,000 parts.
    Target(u64),
}

impl PartSize {
    /// The part size for `data_size` bytes (`None`: unknown length), or a clear
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error explaining which rule a requested size breaks.
    pub fn resolve(self, data_size: Option<u64>) -> Result<u64> {
        let max_data = MAX_PARTS * MAX_PART_SIZE;
        if let Some(size) = data_size
            && size > max_data
        {
            return Err(Error::invalid_input(format!(
                "{size} bytes exceed what one multipart upload can hold \
                 ({MAX_PARTS} parts of 5 GiB = {max_data} bytes)"
            )));
        }
        match self {
            PartSize::Auto => Ok(match data_size {
                None => DEFAULT_UNKNOWN_SIZE_PART_SIZE,
                Some(size) => {
                    const MIB: u64 = 1024 * 1024;
                    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
                    needed.max(DEFAULT_PART_SIZE)
                }
            }),
            PartSize::Target(part) => {
                if part % BLOCK_LEN != 0 {
                    return Err(Error::invalid_input(format!(
                        "part size {part} is not a multiple of 16 (the AES block size); \
                         each part must start on a block boundary, e.g. {}",
                        part.next_multiple_of(BLOCK_LEN)
                    )));
                }
                if part < MIN_PART_SIZE {
                    return Err(Error::invalid_input(format!(
                        "part size {part} is below S3's 5 MiB ({MIN_PART_SIZE} bytes) minimum"
                    )));
                }
                if part > MAX_PART_SIZE {
                    return Err(Error::invalid_input(format!(
                        "part size {part} exceeds S3's 5 GiB ({MAX_PART_SIZE} bytes) maximum"
                    )));
                }
                if let Some(size) = data_size
                    && size.div_ceil(part) > MAX_PARTS
                {
                    return Err(Error::invalid_input(format!(
                        "{size} bytes in parts of {part} make {} parts, more than S3's {MAX_PARTS}; \
                         use a part size of at least {}",
                        size.div_ceil(part),
                        size.div_ceil(MAX_PARTS).next_multiple_of(BLOCK_LEN)
                    )));
                }
                Ok(part)
            }
        }
    }
}
