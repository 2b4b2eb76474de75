//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every crash reproducer
//! (`fuzz/regressions/<target>/`) through the same entry points the fuzz targets use, so a
//! fixed crash stays fixed and the corpus keeps passing without `cargo fuzz` in CI.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 8] = [
    ("envelope", cryptobucket::fuzzing::envelope),
    ("matdesc", cryptobucket::fuzzing::matdesc),
    ("ranges", cryptobucket::fuzzing::ranges),
    ("checkpoint", cryptobucket::fuzzing::checkpoint),
    ("keyring", cryptobucket::fuzzing::keyring),
    ("list_parts", cryptobucket::fuzzing::list_parts_paging),
    ("integrity", cryptobucket::fuzzing::integrity),
    ("model_formats", cryptobucket::fuzzing::model_formats),
];

#[test]
fn fuzz_corpus_and_regressions_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, target) in TARGETS {
        let mut count = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                count += 1;
            }
        }
        assert!(count > 0, "no corpus for fuzz target {name}");
        total += count;
    }
    eprintln!("replayed {total} fuzz inputs");
}

/// Inputs written by hand for what the issue names: a huge `data-size`, huge ranges, deep JSON.
#[test]
fn hostile_sizes_do_not_allocate_or_panic() {
    let huge = u64::MAX.to_string();
    let meta = format!(
        "\u{0}\tAAAA\n\u{1}\tAAAA\n\u{2}\tAES/CTR/NoPadding\n\u{3}\tRSA/NONE/PKCS1Padding\n\u{7}\t{huge}\n\u{8}\t{huge}\n\u{5}\t{huge}\n"
    );
    cryptobucket::fuzzing::envelope(meta.as_bytes());
    let mut r = u64::MAX.to_le_bytes().to_vec();
    r.extend_from_slice(format!("bytes={huge}-{huge}").as_bytes());
    cryptobucket::fuzzing::ranges(&r);
    cryptobucket::fuzzing::ranges(b"\xff\xff\xff\xff\xff\xff\xff\xffbytes=-18446744073709551615");
    cryptobucket::fuzzing::ranges(
        b"bytes 18446744073709551615-18446744073709551615/18446744073709551615",
    );
    // A Content-Range naming 2^64 bytes must be refused, not overflow.
    cryptobucket::fuzzing::ranges(b"bytes 0-18446744073709551615/*");
    // A store that repeats its ListParts marker, or never stops paging.
    cryptobucket::fuzzing::list_parts_paging(b"T\t1");
    cryptobucket::fuzzing::list_parts_paging(b"T\t5\nT\t6\nT\t7");
    let deep = "[".repeat(100_000);
    cryptobucket::fuzzing::matdesc(deep.as_bytes());
    cryptobucket::fuzzing::checkpoint(deep.as_bytes());
    cryptobucket::fuzzing::keyring(deep.as_bytes());
}
