//! Property tests: random plaintexts and random ranges (every form) equal the plaintext slice,
//! through a real server, with and without a server that ignores Range.

use cryptobucket_testkit as support;

use cryptobucket::ByteRange;
use proptest::prelude::*;
use support::{Fault, bucket_with, keyring_a, pattern};

fn range_strategy() -> impl Strategy<Value = ByteRange> {
    prop_oneof![
        (0u64..3000, 0u64..3000).prop_map(|(a, l)| ByteRange::Inclusive {
            first: a,
            last: a + l
        }),
        (0u64..3000).prop_map(ByteRange::From),
        (1u64..3500).prop_map(ByteRange::Suffix),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_ranges_equal_the_slice(len in 1usize..3000, seed in any::<u64>(), ranges in prop::collection::vec(range_strategy(), 6), ignore in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let fault = if ignore { Fault::IgnoreRange } else { Fault::None };
            let (_s, cb) = bucket_with(fault, keyring_a()).await;
            let data = pattern(len, seed);
            cb.put_object().key("p").body(data.clone()).send().await.unwrap();
            for r in ranges {
                match r.resolve(len as u64) {
                    Ok((start, n)) => {
                        let got = cb.get_object().key("p").range(r).send().await.unwrap().body.collect().await.unwrap();
                        prop_assert_eq!(&got[..], &data[start as usize..(start + n) as usize], "range {}", r);
                    }
                    Err(_) => {
                        let e = cb.get_object().key("p").range(r).send().await.unwrap_err();
                        prop_assert_eq!(e.kind(), cryptobucket::ErrorKind::RangeNotSatisfiable);
                    }
                }
            }
            Ok(())
        })?;
    }
}
