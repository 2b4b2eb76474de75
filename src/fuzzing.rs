//! Entry points for the fuzz targets in `fuzz/` and for replaying their corpus in the tests
//! (`tests/fuzz_corpus.rs`). Not part of the API: hidden, and free to change.
//!
//! Each function feeds untrusted bytes to one parser and checks the invariants that must hold
//! for every input: no panic, and what parses re-encodes to something that parses the same.

use std::collections::HashMap;
use std::path::Path;

use crate::envelope::{Envelope, MatDesc};
use crate::range::{ByteRange, ContentRange};

/// Metadata from `key\tvalue` lines; a key whose first byte is below `names.len()` stands for
/// `names[byte]`.
fn metadata_lines(data: &[u8], names: &[&str]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(data);
    let mut meta = HashMap::new();
    for line in text.split('\n') {
        let (k, v) = line.split_once('\t').unwrap_or((line, ""));
        let k = match k.as_bytes().first() {
            Some(&b) if (b as usize) < names.len() => names[b as usize].to_owned(),
            _ => k.to_owned(),
        };
        meta.insert(k, v.to_owned());
    }
    meta
}

/// Object metadata, as `key\tvalue` lines; a line's first byte below 16 picks a real header
/// name (so the fuzzer reaches deep into the parser quickly).
pub fn envelope(data: &[u8]) {
    const NAMES: [&str; 16] = [
        "client-side-encryption-key",
        "client-side-encryption-start",
        "client-side-encryption-cek-alg",
        "client-side-encryption-wrap-alg",
        "client-side-encryption-matdesc",
        "client-side-encryption-unencrypted-content-length",
        "client-side-encryption-unencrypted-content-md5",
        "client-side-encryption-data-size",
        "client-side-encryption-part-size",
        "x-oss-meta-oss-crypto-key",
        "oss-crypto-key",
        "oss-crypto-start",
        "oss-cek-alg",
        "oss-wrap-alg",
        "oss-crypto-matdesc",
        "unencrypted-content-length",
    ];
    let meta = metadata_lines(data, &NAMES);
    if let Ok(Some(env)) = Envelope::from_metadata(&meta) {
        let _ = env.recorded_plaintext_size();
        let _ = env.wrapped_key.decode("key");
        let again = Envelope::from_metadata(&env.to_metadata())
            .expect("a parsed envelope re-encodes")
            .expect("and is still an envelope");
        assert_eq!(again.matdesc, env.matdesc);
        assert_eq!(again.data_size, env.data_size);
        assert_eq!(again.part_size, env.part_size);
    }
}

/// A matdesc JSON document.
pub fn matdesc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = MatDesc::from_json(text) {
        let again = MatDesc::from_json(&m.to_json()).expect("a parsed matdesc re-encodes");
        assert_eq!(again, m);
    }
}

/// A Range header value, resolved against a size from the first 8 bytes, and a Content-Range.
pub fn ranges(data: &[u8]) {
    let (size, rest) = if data.len() >= 8 {
        let (a, b) = data.split_at(8);
        (u64::from_le_bytes(a.try_into().unwrap_or([0; 8])), b)
    } else {
        (0, data)
    };
    let text = String::from_utf8_lossy(rest);
    if let Ok(r) = text.parse::<ByteRange>() {
        if let Ok((start, len)) = r.resolve(size) {
            assert!(len > 0 && start.checked_add(len).is_some_and(|end| end <= size));
        }
        let again: ByteRange = r.to_string().parse().expect("a parsed range re-encodes");
        assert_eq!(again, r);
    }
    if let Ok(cr) = ContentRange::parse(&text) {
        assert!(cr.first <= cr.last);
        let _ = cr.len();
    }
}

/// A checkpoint file.
pub fn checkpoint(data: &[u8]) {
    let _ = crate::checkpoint::Checkpoint::parse(data, Path::new("fuzz.json"));
}

/// A keyring file (key paths resolve under a directory that does not exist).
pub fn keyring(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::KeyringFile::from_toml_str(text, Path::new("/nonexistent-fuzz-base"));
}

/// ListParts paging: a sequence of (is_truncated, next marker) answers, one per line as
/// `T|F<TAB>marker`; following them must end (error or done) within the page bound, never loop.
pub fn list_parts_paging(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut marker: Option<String> = None;
    let mut pages = 0u32;
    // The answers repeat cyclically, as a misbehaving store would repeat them.
    let answers: Vec<(Option<bool>, Option<String>)> = text
        .split('\n')
        .map(|line| {
            let (t, m) = line.split_once('\t').unwrap_or((line, ""));
            let truncated = match t {
                "T" => Some(true),
                "F" => Some(false),
                _ => None,
            };
            (truncated, (!m.is_empty()).then(|| m.to_owned()))
        })
        .collect();
    loop {
        pages += 1;
        assert!(pages <= 10_002, "ListParts paging did not end");
        let (t, m) = &answers[(pages as usize - 1) % answers.len()];
        match crate::multipart::next_list_parts_page(marker.as_deref(), *t, m.as_deref(), pages) {
            Ok(Some(next)) => marker = Some(next),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Integrity metadata, as `key\tvalue` lines; a line's first byte below 3 picks one of the
/// three integrity header names. What parses must re-encode to the same record.
pub fn integrity(data: &[u8]) {
    use crate::integrity::{IntegrityRecord, META_INTEGRITY, META_SIGNATURE, META_TAGS};
    const NAMES: [&str; 3] = [META_INTEGRITY, META_TAGS, META_SIGNATURE];
    let meta = metadata_lines(data, &NAMES);
    if let Ok(Some(record)) = IntegrityRecord::from_metadata(&meta) {
        for size in [0, 1, u64::MAX / 2, u64::MAX] {
            let _ = record.chunk_count(size);
        }
        let _ = record.check_sidecar_header(data);
        let mut again = HashMap::new();
        record.to_metadata(&mut again);
        let back = IntegrityRecord::from_metadata(&again)
            .expect("a parsed record re-encodes")
            .expect("and is still a record");
        assert_eq!(back, record);
    }
}

/// Model-file headers; the first byte picks the parser. Even: a safetensors file (`u64le N ‖
/// header ‖ data`), whose index must then be self-consistent. Odd: the JSON of a veTurboIO
/// header (magic prepended, zero-padded like a file), which must re-encode to itself.
pub fn model_formats(data: &[u8]) {
    use crate::safetensors::SafetensorsIndex;
    use crate::veturbo::{HEADER_LEN, MAGIC, VeturboHeader};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let Some(len) = rest.get(..8) else { return };
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let Some(header) = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(8))
            .and_then(|end| rest.get(8..end))
        else {
            return;
        };
        if let Ok(index) = SafetensorsIndex::parse(header, rest.len() as u64) {
            let mut end = index.data_start();
            for t in index.tensors() {
                assert!(t.range.start >= end && t.range.end <= index.file_size());
                end = t.range.end;
            }
            let all = index.select(&["*"]).map(|v| v.len()).unwrap_or(0);
            assert_eq!(all, index.tensors().len());
        }
    } else {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&rest[..rest.len().min(HEADER_LEN as usize - MAGIC.len())]);
        file.resize(HEADER_LEN as usize, 0);
        if let Ok(h) = VeturboHeader::parse(&file)
            && let Ok(again) = h.to_bytes()
        {
            assert_eq!(
                VeturboHeader::parse(&again).expect("re-encoded header parses"),
                h
            );
        }
    }
}
