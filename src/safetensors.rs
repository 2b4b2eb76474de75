//! Tensor-level loading of safetensors files in a bucket, in any format an
//! [`ObjectReader`] reads (this crate's objects, veTurboIO files): list the tensors from a
//! ranged read of the header, fetch chosen tensors with parallel ranged GETs of just their
//! bytes, or write them into a new, valid safetensors file.
//!
//! Layout (safetensors): `u64le N ‖ N bytes of JSON header ‖ data`; the header maps tensor
//! names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the data)
//! plus an optional `"__metadata__"` map of strings.
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! use cryptobucket::safetensors::SafetensorsIndex;
//! let reader = bucket.reader().key("ckpt/model.safetensors").open().await?;
//! let index = SafetensorsIndex::read(&reader).await?;
//! let layer0 = index.select(&["model.layers.0.*"])?;
//! for (info, bytes) in layer0.iter().zip(index.fetch(&reader, &layer0).await?) {
//!     println!("{} {} {:?}: {} bytes", info.name, info.dtype, info.shape, bytes.len());
//! }
//! index.write_subset(&reader, &layer0, "layer0.safetensors").await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::error::{Error, ErrorKind, Result};
use crate::reader::ObjectReader;

/// The largest header accepted (the safetensors library's own limit is 100 MB).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Bytes read from the start of the object to find the header (one GET covers most headers;
/// the reader of an envelope object already holds them).
const FIRST_READ: u64 = crate::reader::OPEN_READ;
/// Selected tensors closer than this are fetched in one GET.
const MERGE_GAP: u64 = 64 << 10;
/// Largest run of neighbouring tensors fetched as one range.
const MAX_SPAN: u64 = 8 << 20;
/// Largest piece of a subset file written per GET.
const WRITE_PIECE: u64 = 8 << 20;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorInfo {
    /// Name.
    pub name: String,
    /// Element type as the file names it (`F32`, `BF16`, `I64`, …).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte range of its data in the (plaintext) file: `start .. end`.
    pub range: std::ops::Range<u64>,
}

impl TensorInfo {
    /// Length of its data in bytes.
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// True for a tensor without data (a zero-sized dimension).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parsed header of a safetensors file: its tensors sorted by offset, checked against
/// each other and the file size.
#[derive(Debug, Clone)]
pub struct SafetensorsIndex {
    tensors: Vec<TensorInfo>,
    metadata: Option<BTreeMap<String, String>>,
    data_start: u64,
    file_size: u64,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidFormat,
        format!("invalid safetensors header: {what}"),
    )
}

/// Bits per element of the dtypes whose size is known; others are accepted unchecked.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

impl SafetensorsIndex {
    /// Reads and checks the header of the file `reader` opens: one ranged read of its first
    /// MiB (none for this crate's objects, whose reader brought that MiB along when it
    /// opened), and a second only for headers longer than that.
    pub async fn read(reader: &ObjectReader) -> Result<Self> {
        let size = reader.size();
        if size < 8 {
            return Err(bad(format!(
                "the file is {size} bytes, shorter than its length field"
            )));
        }
        let first = reader.read(0, FIRST_READ.min(size)).await?;
        let n = u64::from_le_bytes(first[..8].try_into().expect("8 bytes"));
        Self::check_header_len(n, size)?;
        let header = if 8 + n <= first.len() as u64 {
            first.slice(8..8 + n as usize)
        } else {
            reader.read(8, n).await?
        };
        Self::parse(&header, size)
    }

    fn check_header_len(n: u64, file_size: u64) -> Result<()> {
        if n > MAX_HEADER_LEN {
            return Err(bad(format!(
                "it claims {n} bytes, over the {MAX_HEADER_LEN}-byte limit"
            )));
        }
        if n.saturating_add(8) > file_size {
            return Err(bad(format!(
                "it claims {n} bytes but the file has {file_size}"
            )));
        }
        Ok(())
    }

    /// Parses the JSON header of a file of `file_size` bytes (`header` is the `N` bytes after
    /// the length field).
    ///
    /// ```
    /// use cryptobucket::safetensors::SafetensorsIndex;
    /// let h = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    /// let index = SafetensorsIndex::parse(h, 8 + h.len() as u64 + 8).unwrap();
    /// assert_eq!(index.tensors()[0].range, 8 + h.len() as u64..16 + h.len() as u64);
    /// // Offsets past the end of the file are refused.
    /// assert!(SafetensorsIndex::parse(h, 8 + h.len() as u64 + 4).is_err());
    /// ```
    pub fn parse(header: &[u8], file_size: u64) -> Result<Self> {
        let n = header.len() as u64;
        Self::check_header_len(n, file_size)?;
        let data_start = 8 + n;
        let data_len = file_size - data_start;
        let text = std::str::from_utf8(header).map_err(|_| bad("not UTF-8"))?;
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text.trim_end())
            .map_err(|e| bad(format!("not a JSON object ({e})")))?;
        let mut metadata = None;
        let mut tensors = Vec::with_capacity(map.len());
        for (name, v) in map {
            if name == "__metadata__" {
                let m: BTreeMap<String, String> = serde_json::from_value(v)
                    .map_err(|e| bad(format!("__metadata__ is not a map of strings ({e})")))?;
                metadata = Some(m);
                continue;
            }
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Raw {
                dtype: String,
                shape: Vec<u64>,
                data_offsets: (u64, u64),
            }
            let raw: Raw =
                serde_json::from_value(v).map_err(|e| bad(format!("tensor {name:?}: {e}")))?;
            let (begin, end) = raw.data_offsets;
            if begin > end || end > data_len {
                return Err(bad(format!(
                    "tensor {name:?} has data_offsets [{begin}, {end}] outside the {data_len} \
                     data bytes"
                )));
            }
            if let Some(bits) = dtype_bits(&raw.dtype) {
                let elements = raw
                    .shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .and_then(|e| e.checked_mul(bits))
                    .map(|b| b.div_ceil(8));
                if elements != Some(end - begin) {
                    return Err(bad(format!(
                        "tensor {name:?}: {} of shape {:?} does not fill its {} bytes",
                        raw.dtype,
                        raw.shape,
                        end - begin
                    )));
                }
            }
            tensors.push(TensorInfo {
                name,
                dtype: raw.dtype,
                shape: raw.shape,
                range: data_start + begin..data_start + end,
            });
        }
        tensors.sort_by_key(|t| (t.range.start, t.range.end));
        for pair in tensors.windows(2) {
            if pair[1].range.start < pair[0].range.end {
                return Err(bad(format!(
                    "tensors {:?} and {:?} overlap",
                    pair[0].name, pair[1].name
                )));
            }
        }
        Ok(Self {
            tensors,
            metadata,
            data_start,
            file_size,
        })
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The header's `__metadata__`, if any.
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()
    }

    /// Where the data area starts (8 + header length).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// One tensor by exact name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensors whose names match any of `patterns` (exact names or globs: `*`, `?`,
    /// `[abc]`), in file order. A pattern that matches nothing is an error (a typo should not
    /// load an empty model).
    pub fn select(&self, patterns: &[&str]) -> Result<Vec<TensorInfo>> {
        let compiled = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p)
                    .map_err(|e| Error::invalid_input(format!("tensor pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        for (p, c) in patterns.iter().zip(&compiled) {
            if !self.tensors.iter().any(|t| c.matches(&t.name)) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no tensor matches {p:?}"),
                ));
            }
        }
        Ok(self
            .tensors
            .iter()
            .filter(|t| compiled.iter().any(|c| c.matches(&t.name)))
            .cloned()
            .collect())
    }

    /// The data of `tensors` (from [`select`](Self::select) or [`tensors`](Self::tensors)),
    /// in their order: neighbours are fetched in one GET, large tensors in parallel pieces, and
    /// every byte decrypted and verified.
    pub async fn fetch(&self, reader: &ObjectReader, tensors: &[TensorInfo]) -> Result<Vec<Bytes>> {
        // Spans: runs of tensors (in file order) with gaps under MERGE_GAP, up to MAX_SPAN
        // bytes (a tensor beyond that is a span of its own, split by the reader).
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].range.start);
        let mut spans: Vec<(u64, u64, Vec<usize>)> = Vec::new();
        for i in order {
            let r = &tensors[i].range;
            match spans.last_mut() {
                Some((start, end, members))
                    if r.start <= end.saturating_add(MERGE_GAP)
                        && r.end.saturating_sub(*start) <= MAX_SPAN =>
                {
                    *end = (*end).max(r.end);
                    members.push(i);
                }
                _ => spans.push((r.start, r.end, vec![i])),
            }
        }
        let ranges: Vec<(u64, u64)> = spans.iter().map(|(s, e, _)| (*s, e - s)).collect();
        let data = reader.read_ranges(&ranges).await?;
        let mut out = vec![Bytes::new(); tensors.len()];
        for ((start, _, members), bytes) in spans.iter().zip(data) {
            for &i in members {
                let r = &tensors[i].range;
                out[i] = bytes.slice((r.start - start) as usize..(r.end - start) as usize);
            }
        }
        Ok(out)
    }

    /// Writes `tensors` as a new safetensors file at `dest` (header with their names, dtypes,
    /// shapes and the original `__metadata__`; data contiguous, in file order): into a
    /// partial file (mode 0600) that is synced and renamed into place only when complete.
    /// Memory stays within the bucket's concurrency × 8 MiB.
    pub async fn write_subset(
        &self,
        reader: &ObjectReader,
        tensors: &[TensorInfo],
        dest: impl AsRef<Path>,
    ) -> Result<u64> {
        let mut chosen: Vec<&TensorInfo> = tensors.iter().collect();
        chosen.sort_by_key(|t| t.range.start);
        chosen.dedup_by_key(|t| t.range.start..t.range.end);
        let header = Self::subset_header(&chosen, self.metadata.as_ref());
        let total = 8 + header.len() as u64 + chosen.iter().map(|t| t.len()).sum::<u64>();
        crate::partial::PartialFile::write_new(dest.as_ref(), total, true, |file| async move {
            let mut head = (header.len() as u64).to_le_bytes().to_vec();
            head.extend_from_slice(&header);
            crate::partial::write_at(&file, &head, 0)
                .map_err(|e| Error::io("cannot write the subset file", e))?;
            // Pieces of at most WRITE_PIECE, each with its position in the new file.
            let mut pieces = Vec::new();
            let mut at = head.len() as u64;
            for t in &chosen {
                let mut from = t.range.start;
                while from < t.range.end {
                    let n = (t.range.end - from).min(WRITE_PIECE);
                    pieces.push((from, n, at));
                    from += n;
                    at += n;
                }
            }
            let file = std::sync::Arc::new(file);
            futures::stream::iter(pieces)
                .map(|(from, n, to)| {
                    let file = file.clone();
                    async move {
                        let bytes = reader.read(from, n).await?;
                        tokio::task::spawn_blocking(move || {
                            crate::partial::write_at(&file, &bytes, to)
                        })
                        .await
                        .map_err(|e| Error::new(ErrorKind::Io, format!("write task failed: {e}")))?
                        .map_err(|e| Error::io("cannot write the subset file", e))
                    }
                })
                .buffer_unordered(reader.concurrency())
                .try_collect::<Vec<()>>()
                .await?;
            Ok(at)
        })
        .await
    }

    /// The JSON header of a file holding `tensors` contiguously, padded with spaces to a
    /// multiple of 8 bytes (as the safetensors library writes it).
    fn subset_header(
        tensors: &[&TensorInfo],
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        if let Some(m) = metadata {
            map.insert("__metadata__".into(), serde_json::json!(m));
        }
        let mut at = 0u64;
        for t in tensors {
            map.insert(
                t.name.clone(),
                serde_json::json!({
                    "dtype": t.dtype,
                    "shape": t.shape,
                    "data_offsets": [at, at + t.len()],
                }),
            );
            at += t.len();
        }
        let mut out = serde_json::to_vec(&map).expect("a JSON map serializes");
        out.resize(out.len().div_ceil(8) * 8, b' ');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Vec<u8> {
        json.as_bytes().to_vec()
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let ok = header(
            r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"F32","shape":[1],"data_offsets":[3,7]}}"#,
        );
        let n = ok.len() as u64;
        let idx = SafetensorsIndex::parse(&ok, 8 + n + 7).unwrap();
        assert_eq!(idx.tensors()[1].range, 8 + n + 3..8 + n + 7);
        let kind = |h: &str, data: u64| {
            SafetensorsIndex::parse(h.as_bytes(), 8 + h.len() as u64 + data)
                .unwrap_err()
                .kind()
        };
        for (h, data) in [
            (
                r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#,
                2,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[5,2]}}"#,
                9,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,3]}}"#,
                9,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"b":{"dtype":"U8","shape":[3],"data_offsets":[2,5]}}"#,
                9,
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[18446744073709551615,18446744073709551615],"data_offsets":[0,3]}}"#,
                9,
            ),
            (r#"{"a":{"dtype":"U8","shape":[3]}}"#, 9),
            (r#"{"a":[1,2]}"#, 9),
            (r#"[1]"#, 9),
            (r#"{"__metadata__":{"x":1}}"#, 9),
            ("{\"a\":", 9),
        ] {
            assert_eq!(kind(h, data), ErrorKind::InvalidFormat, "{h}");
        }
        assert_eq!(
            SafetensorsIndex::check_header_len(MAX_HEADER_LEN + 1, u64::MAX)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidFormat
        );
        assert!(SafetensorsIndex::check_header_len(u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn subset_headers_are_padded_and_contiguous() {
        let t = |name: &str, start: u64, end: u64| TensorInfo {
            name: name.into(),
            dtype: "U8".into(),
            shape: vec![end - start],
            range: start..end,
        };
        let (a, b) = (t("a", 100, 103), t("b", 500, 505));
        let h = SafetensorsIndex::subset_header(&[&a, &b], None);
        assert_eq!(h.len() % 8, 0);
        let back = SafetensorsIndex::parse(&h, 8 + h.len() as u64 + 8).unwrap();
        let names: Vec<_> = back.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(back.tensors()[1].len(), 5);
    }
}
