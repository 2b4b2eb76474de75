//! The transport-neutral codec: objects it writes read through `CryptoBucket` (and oss2, in
//! tests/oss2_interop.rs), objects `CryptoBucket` writes (with integrity tags inline or in the
//! sidecar) read and verify through it, and every bad input is a typed error.

use cryptobucket_testkit as support;

use bytes::Bytes;
use cryptobucket::codec::{Decryptor, Encryptor};
use cryptobucket::integrity::sidecar_key;
use cryptobucket::{ByteRange, ErrorKind, IntegrityState, Keyring, MatDesc};
use futures::TryStreamExt as _;
use support::{Fault, bucket_with, keyring_a, pattern, raw_object, rsa};

/// `data` as a stream of `piece`-byte chunks, as a transport would deliver it.
fn chunks(
    data: &[u8],
    piece: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let v: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(v)
}

async fn encrypt(
    keyring: &Keyring,
    data: &[u8],
) -> (Vec<u8>, std::collections::HashMap<String, String>) {
    let enc = Encryptor::new(keyring)
        .await
        .unwrap()
        .content_length(data.len() as u64);
    let out: Vec<Bytes> = enc
        .encrypt_stream(0, chunks(data, 65_537))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    (out.concat(), enc.metadata())
}

#[tokio::test]
async fn codec_objects_read_through_the_bucket_and_back() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let data = pattern(3 << 20 | 77, 1);
    let (ct, meta) = encrypt(cb.keyring(), &data).await;
    assert_ne!(&ct[..64], &data[..64]);
    assert_eq!(ct.len(), data.len());
    // Stored as is by a plain client: CryptoBucket reads it like any OSS SDK object.
    support::put_raw(&cb, "codec/a.bin", ct.clone(), meta.clone()).await;
    let got = cb.get_object().key("codec/a.bin").send().await.unwrap();
    assert_eq!(got.integrity, IntegrityState::Absent);
    assert_eq!(got.body.collect().await.unwrap(), data);
    // And the codec reads it back, whole and by ranges, from bodies chunked any way.
    let dec = Decryptor::new(cb.keyring(), &meta).await.unwrap();
    assert_eq!(dec.integrity(), IntegrityState::Absent);
    let whole = dec
        .decrypt_stream(chunks(&ct, 1000), 0, ct.len() as u64, None)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(whole, data);
    for r in [
        ByteRange::Inclusive { first: 5, last: 5 },
        ByteRange::Inclusive {
            first: 17,
            last: 1 << 20,
        },
        ByteRange::From(3 << 20),
        ByteRange::Suffix(33),
    ] {
        let fetch = dec.fetch_range(Some(r)).unwrap();
        assert_eq!(fetch, r, "no integrity data: nothing to widen");
        let (s, l) = fetch.resolve(ct.len() as u64).unwrap();
        let body = &ct[s as usize..(s + l) as usize];
        let got = dec
            .decrypt_stream(chunks(body, 4096), s, ct.len() as u64, Some(r))
            .unwrap()
            .collect()
            .await
            .unwrap();
        let (ps, pl) = r.resolve(data.len() as u64).unwrap();
        assert_eq!(got, data[ps as usize..(ps + pl) as usize], "range {r}");
    }
    // The recorded length is enforced; a short body is a truncation, not a short success.
    let err = dec
        .decrypt_stream(chunks(&ct, 1000), 0, ct.len() as u64 - 1, None)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SizeMismatch);
    let err = dec
        .decrypt_stream(chunks(&ct[..ct.len() - 5], 1000), 0, ct.len() as u64, None)
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated);
    // A body that starts after the range is refused up front.
    let err = dec
        .decrypt_stream(
            chunks(&ct[10..], 1000),
            10,
            ct.len() as u64,
            Some(ByteRange::From(4)),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Another key cannot read it; metadata without an envelope is not encrypted.
    let other = Keyring::single(rsa("b"), MatDesc::new().with("k", "a"));
    let err = Decryptor::new(&other, &meta).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnwrap);
    // A strict keyring refuses it: the OSS format carries no integrity data.
    let err = Decryptor::new(&keyring_a().with_strict(true), &meta)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingIntegrity);
}

#[tokio::test]
async fn codec_multipart_parts_encrypted_in_place_read_as_one_object() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    let part = 5 << 20;
    let data = pattern(2 * part + 12_345, 2);
    let enc = Encryptor::new(cb.keyring())
        .await
        .unwrap()
        .multipart(data.len() as u64, part as u64)
        .unwrap();
    assert_eq!(
        Encryptor::new(cb.keyring())
            .await
            .unwrap()
            .multipart(10, 1000)
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    let s3 = cb.client();
    let up = s3
        .create_multipart_upload()
        .bucket("bkt")
        .key("codec/mp.bin")
        .set_metadata(Some(enc.metadata()))
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut done = Vec::new();
    for (i, chunk) in data.chunks(part).enumerate() {
        let mut buf = chunk.to_vec();
        enc.encrypt_in_place((i * part) as u64, &mut buf).unwrap();
        let r = s3
            .upload_part()
            .bucket("bkt")
            .key("codec/mp.bin")
            .upload_id(id)
            .part_number(i as i32 + 1)
            .body(buf.into())
            .send()
            .await
            .unwrap();
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(i as i32 + 1)
                .set_e_tag(r.e_tag().map(str::to_owned))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket("bkt")
        .key("codec/mp.bin")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = cb.get_object().key("codec/mp.bin").send().await.unwrap();
    assert_eq!(got.envelope.unwrap().part_size, Some(part as u64));
    assert_eq!(got.body.collect().await.unwrap(), data);
}

#[tokio::test]
async fn codec_verifies_objects_the_bucket_wrote_with_integrity_data() {
    let (_s, cb) = bucket_with(Fault::None, keyring_a()).await;
    // Small: tags inline in the metadata. Large: tags in the sidecar object.
    for (key, size) in [("small.bin", 1_500_000usize), ("large.bin", 9 << 20 | 5)] {
        let data = pattern(size, 3);
        cb.put_object()
            .key(key)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let (ct, meta) = raw_object(&cb, key).await;
        let total = ct.len() as u64;
        let mut dec = Decryptor::new(cb.keyring(), &meta).await.unwrap();
        assert_eq!(dec.integrity(), IntegrityState::Verified);
        if dec.needs_sidecar() {
            assert_eq!(key, "large.bin");
            let err = dec
                .decrypt_stream(chunks(&ct, 7777), 0, total, None)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingIntegrity, "{err}");
            // Bytes that are no tag file, and another object's sidecar, are refused.
            let (small_ct, _) = raw_object(&cb, "small.bin").await;
            let fresh = || Decryptor::new(cb.keyring(), &meta);
            let err = fresh().await.unwrap().with_sidecar(&small_ct).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingIntegrity, "{err}");
            cb.put_object()
                .key("other.bin")
                .body(pattern(size, 4))
                .send()
                .await
                .unwrap();
            let (other_side, _) = raw_object(&cb, &sidecar_key("other.bin")).await;
            let err = fresh()
                .await
                .unwrap()
                .with_sidecar(&other_side)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ObjectIdMismatch, "{err}");
            let (side, _) = raw_object(&cb, &sidecar_key(key)).await;
            dec = dec.with_sidecar(&side).unwrap();
        } else {
            assert_eq!(key, "small.bin");
        }
        let whole = dec
            .decrypt_stream(chunks(&ct, 7777), 0, total, None)
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(whole, data);
        // A range is widened to whole chunks and verified.
        let r = ByteRange::Inclusive {
            first: 1_000_000,
            last: 1_100_000,
        };
        let fetch = dec.fetch_range(Some(r)).unwrap();
        let (fs, fl) = fetch.resolve(total).unwrap();
        assert!(fs <= 1_000_000 && fs + fl > 1_100_000 && fetch != r);
        let body = &ct[fs as usize..(fs + fl) as usize];
        let got = dec
            .decrypt_stream(chunks(body, 5000), fs, total, Some(r))
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(got, data[1_000_000..=1_100_000]);
        // Asking for the unwidened range gives a body the verifier cannot use.
        let narrow = &ct[1_000_000..=1_100_000];
        let err = dec
            .decrypt_stream(chunks(narrow, 5000), 1_000_000, total, Some(r))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        // One flipped bit in the body: a tag mismatch, and none of that chunk is returned.
        let mut bad = ct.clone();
        bad[size / 2] ^= 0x10;
        let mut stream = dec
            .decrypt_stream(chunks(&bad, 7777), 0, total, None)
            .unwrap();
        let mut returned = 0usize;
        let err = loop {
            match stream.try_next().await {
                Ok(Some(c)) => returned += c.len(),
                Ok(None) => panic!("a tampered body decrypted"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::TagMismatch);
        assert!(
            returned <= size / 2,
            "plaintext of the tampered chunk was returned"
        );
        // A changed wrapped key fails the key commitment.
        let mut meta2 = meta.clone();
        let k = "client-side-encryption-start";
        let iv = meta2[k].clone();
        let other = meta2["client-side-encryption-key"].clone();
        meta2.insert(k.to_owned(), other);
        meta2.insert("client-side-encryption-key".to_owned(), iv);
        let err = Decryptor::new(cb.keyring(), &meta2).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CommitmentMismatch, "{err}");
    }
}
