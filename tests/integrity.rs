//! Tamper-evident objects: the tamper matrix against the in-process S3 server. Every case is
//! read through a whole GET, ranged GETs and download_file in strict mode; each must end in a
//! typed error, and nothing but verified bytes of the original may come out before it.

use cryptobucket_testkit as support;

use std::collections::HashMap;

use cryptobucket::integrity::{SIDECAR_SUFFIX, SigningKey};
use cryptobucket::{
    ByteRange, CryptoBucket, ErrorKind, IntegrityState, KeyEntry, Keyring, MatDesc, PartSize,
    RsaKeyPair,
};
use support::{Fault, TestServer, pattern, raw_object, rsa};

const PART: u64 = 5 * 1024 * 1024;
const CHUNK: u64 = 1 << 20;

fn signer() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

/// The writer: RSA key "a", signing key; strict.
fn writer_keyring() -> Keyring {
    Keyring::builder()
        .key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "a")))
        .signing_key(signer())
        .strict(true)
        .build()
        .unwrap()
}

/// A reader holding the RSA private key and trusting the writer's signing key.
fn reader_keyring(strict: bool) -> Keyring {
    Keyring::builder()
        .key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "a")))
        .trust_signer(signer().public_key())
        .strict(strict)
        .build()
        .unwrap()
}

struct World {
    server: TestServer,
    writer: CryptoBucket,
    strict: CryptoBucket,
    lax: CryptoBucket,
}

impl World {
    async fn new() -> Self {
        let server = TestServer::start_with(Fault::None);
        server.create_bucket("bkt").await;
        let client = server.client().await;
        let bucket = |k: Keyring| CryptoBucket::new(client.clone(), "bkt", k);
        Self {
            writer: bucket(writer_keyring()),
            strict: bucket(reader_keyring(true)),
            lax: bucket(reader_keyring(false)),
            server,
        }
    }

    async fn put(&self, key: &str, data: &[u8]) {
        self.writer
            .put_object()
            .key(key)
            .body(data.to_vec())
            .part_size(PartSize::Target(PART))
            .multipart_threshold(PART)
            .send()
            .await
            .unwrap();
    }

    async fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .writer
            .client()
            .get_object()
            .bucket("bkt")
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.unwrap().to_vec())
    }

    async fn raw_put(&self, key: &str, body: Vec<u8>, meta: HashMap<String, String>) {
        support::put_raw(&self.writer, key, body, meta).await
    }

    /// Writes a tampered copy of `src` as `dst`: body and metadata after `edit`, and the
    /// sidecar (if `src` has one) after `edit_sidecar`.
    async fn tamper(
        &self,
        src: &str,
        dst: &str,
        edit: impl FnOnce(&mut Vec<u8>, &mut HashMap<String, String>),
        edit_sidecar: impl FnOnce(&mut Vec<u8>),
    ) {
        let (mut body, mut meta) = raw_object(&self.writer, src).await;
        edit(&mut body, &mut meta);
        self.raw_put(dst, body, meta).await;
        if let Some(mut side) = self.raw_get(&format!("{src}{SIDECAR_SUFFIX}")).await {
            edit_sidecar(&mut side);
            self.raw_put(&format!("{dst}{SIDECAR_SUFFIX}"), side, HashMap::new())
                .await;
        }
    }
}

/// Reads `key` every way in strict mode and checks each ends in one of `kinds`, releasing only
/// bytes equal to the original `data` at their offsets (verified chunks before the bad one).
async fn assert_refused(w: &World, key: &str, data: &[u8], kinds: &[ErrorKind], seed: u64) {
    assert_refused_n(w, key, data, kinds, seed, 12).await
}

async fn assert_refused_n(
    w: &World,
    key: &str,
    data: &[u8],
    kinds: &[ErrorKind],
    seed: u64,
    ranges: usize,
) {
    let cb = &w.strict;
    // Whole GET, streamed.
    let mut got = Vec::new();
    let err = match cb.get_object().key(key).send().await {
        Err(e) => e,
        Ok(out) => {
            use futures::StreamExt as _;
            let mut body = out.body;
            loop {
                match body.next().await {
                    Some(Ok(b)) => got.extend_from_slice(&b),
                    Some(Err(e)) => break e,
                    None => panic!("{key}: a tampered object read to the end"),
                }
            }
        }
    };
    assert!(kinds.contains(&err.kind()), "{key} whole GET: {err}");
    assert!(
        got.len() <= data.len() && got[..] == data[..got.len()],
        "{key}: released bytes that are not the original"
    );
    assert_eq!(
        got.len() as u64 % CHUNK,
        0,
        "{key}: a partial chunk was released"
    );

    // Ranged GETs, random ranges: each either fails with a listed kind or returns exactly the
    // original bytes (ranges that miss the tampered chunks).
    let mut x = seed | 1;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let size = data.len() as u64;
    for _ in 0..ranges {
        if size == 0 {
            break;
        }
        let first = rand(size);
        let last = first + rand((size - first).min(3 * CHUNK));
        let r = ByteRange::Inclusive { first, last };
        match cb.get_object().key(key).range(r).send().await {
            Err(e) => {
                assert!(kinds.contains(&e.kind()), "{key} range {r}: {e}");
            }
            Ok(out) => match out.body.collect().await {
                Ok(b) => assert!(
                    b[..] == data[first as usize..=last.min(size - 1) as usize],
                    "{key} range {r}: wrong bytes"
                ),
                Err(e) => {
                    assert!(kinds.contains(&e.kind()), "{key} range {r}: {e}");
                }
            },
        }
    }

    // download_file: a typed error and no file.
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("out");
    let e = cb
        .download_file()
        .key(key)
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(dir.path().join("cp"))
        .resumable(false)
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    assert!(kinds.contains(&e.kind()), "{key} download_file: {e}");
    assert!(!dst.exists(), "{key}: download_file left a file");
}

/// Edits the recorded plaintext size (multipart objects record data-size).
fn set_size(m: &mut HashMap<String, String>, size: usize) {
    for k in [
        "client-side-encryption-data-size",
        "client-side-encryption-unencrypted-content-length",
    ] {
        if m.contains_key(k) {
            m.insert(k.into(), size.to_string());
        }
    }
}

fn flip(body: &mut [u8], at: usize) {
    body[at] ^= 0x20;
}

#[tokio::test]
async fn untampered_objects_verify_every_way() {
    let w = World::new().await;
    for (key, len) in [
        ("empty", 0),
        ("small", 100_000),
        ("exact", 2 * CHUNK as usize),
        ("mid", 5 * CHUNK as usize + 7),
        ("single-sidecar", 4 * CHUNK as usize + 100),
        ("big", (3 * PART + 12_345) as usize),
        ("big-even", (7 * PART) as usize),
    ] {
        let data = pattern(len, len as u64);
        w.put(key, &data).await;
        let head = w.strict.head_object().key(key).send().await.unwrap();
        let rec = head.integrity.expect("integrity data by default");
        assert_eq!(
            rec.signature.as_ref().map(|s| s.signer),
            Some(signer().public_key())
        );
        let out = w.strict.get_object().key(key).send().await.unwrap();
        assert_eq!(
            out.integrity,
            IntegrityState::Signed(signer().public_key()),
            "{key}"
        );
        assert!(out.body.collect().await.unwrap() == data, "{key}");
        if len > 0 {
            for (first, last) in [
                (0, 0),
                (len as u64 - 1, len as u64 - 1),
                (CHUNK - 1, CHUNK),
                (3, 2 * CHUNK + 5),
            ] {
                let r = ByteRange::Inclusive { first, last };
                if first >= len as u64 {
                    continue;
                }
                let got = w
                    .strict
                    .get_object()
                    .key(key)
                    .range(r)
                    .send()
                    .await
                    .unwrap();
                let got = got.body.collect().await.unwrap();
                assert!(
                    got[..] == data[first as usize..=last.min(len as u64 - 1) as usize],
                    "{key} {r}"
                );
            }
            let got = w
                .strict
                .get_object()
                .key(key)
                .range(ByteRange::Suffix(7))
                .send()
                .await
                .unwrap();
            assert!(got.body.collect().await.unwrap()[..] == data[len.saturating_sub(7)..]);
        }
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("o");
        w.strict
            .download_file()
            .key(key)
            .path(&dst)
            .part_size(PartSize::Target(PART))
            .checkpoint_dir(dir.path().join("cp"))
            .send()
            .await
            .unwrap();
        assert!(std::fs::read(&dst).unwrap() == data, "{key}");
    }
    // A verified 1 MiB ranged read costs one small extra request: the tags it needs.
    let before = w
        .server
        .stats
        .gets_in
        .load(std::sync::atomic::Ordering::Relaxed);
    let r = ByteRange::Inclusive {
        first: 2 * PART + 17,
        last: 2 * PART + 17 + CHUNK - 1,
    };
    w.strict
        .get_object()
        .key("big")
        .range(r)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    let after = w
        .server
        .stats
        .gets_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after - before, 2, "one GET for the data, one for its tags");
}

#[tokio::test]
async fn tampered_bodies_are_refused() {
    let w = World::new().await;
    let small = pattern(100_000, 1);
    let big = pattern((3 * PART + 12_345) as usize, 2);
    let twin = pattern((3 * PART + 12_345) as usize, 3);
    w.put("small", &small).await;
    w.put("big", &big).await;
    w.put("twin", &twin).await;
    let tag = [ErrorKind::TagMismatch];
    let len = big.len();
    let offsets = [
        0,
        1,
        CHUNK as usize - 1,
        CHUNK as usize,
        PART as usize + 3,
        len / 2,
        len - 1,
    ];
    for (i, at) in offsets.into_iter().enumerate() {
        let key = format!("flip-{i}");
        w.tamper("big", &key, |b, _| flip(b, at), |_| {}).await;
        assert_refused(&w, &key, &big, &tag, i as u64 + 7).await;
    }
    for at in [0, 99_999] {
        let key = format!("small-flip-{at}");
        w.tamper("small", &key, |b, _| flip(b, at), |_| {}).await;
        assert_refused(&w, &key, &small, &tag, at as u64 + 3).await;
    }
    // Truncation and appended bytes, with the recorded sizes edited to match (otherwise the
    // size check refuses them first: also covered).
    for cut in [1usize, 16, CHUNK as usize, 12_345] {
        let key = format!("cut-{cut}");
        w.tamper(
            "big",
            &key,
            |b, m| {
                b.truncate(len - cut);
                set_size(m, len - cut);
            },
            |_| {},
        )
        .await;
        assert_refused(&w, &key, &big, &tag, cut as u64).await;
        let key = format!("cut-plain-{cut}");
        w.tamper("big", &key, |b, _| b.truncate(len - cut), |_| {})
            .await;
        assert_refused(&w, &key, &big, &[ErrorKind::SizeMismatch], cut as u64).await;
    }
    for extra in [1usize, CHUNK as usize] {
        let key = format!("append-{extra}");
        w.tamper(
            "big",
            &key,
            |b, m| {
                b.extend(std::iter::repeat_n(7u8, extra));
                set_size(m, len + extra);
            },
            |_| {},
        )
        .await;
        assert_refused(&w, &key, &big, &tag, extra as u64).await;
    }
    // Two parts swapped; a part spliced in from another object under the same key.
    let p = PART as usize;
    w.tamper(
        "big",
        "swapped-parts",
        |b, _| {
            let (one, two) = (b[..p].to_vec(), b[p..2 * p].to_vec());
            b[..p].copy_from_slice(&two);
            b[p..2 * p].copy_from_slice(&one);
        },
        |_| {},
    )
    .await;
    assert_refused(&w, "swapped-parts", &big, &tag, 11).await;
    let (twin_ct, _) = raw_object(&w.writer, "twin").await;
    w.tamper(
        "big",
        "spliced",
        |b, _| b[p..2 * p].copy_from_slice(&twin_ct[p..2 * p]),
        |_| {},
    )
    .await;
    assert_refused(&w, "spliced", &big, &tag, 12).await;
}

#[tokio::test]
async fn tampered_integrity_data_and_metadata_are_refused() {
    let w = World::new().await;
    let big = pattern((3 * PART + 12_345) as usize, 4);
    let twin = pattern((3 * PART + 12_345) as usize, 5);
    let small = pattern(3000, 6);
    w.put("big", &big).await;
    w.put("twin", &twin).await;
    w.put("small", &small).await;
    let (_, twin_meta) = raw_object(&w.writer, "twin").await;
    let twin_side = w.raw_get(&format!("twin{SIDECAR_SUFFIX}")).await.unwrap();

    // A flipped bit in the sidecar: header and tags.
    for at in [0usize, 9, 40, twin_side.len() - 1] {
        let key = format!("side-flip-{at}");
        w.tamper("big", &key, |_, _| {}, |s| flip(s, at)).await;
        assert_refused(
            &w,
            &key,
            &big,
            &[
                ErrorKind::TagMismatch,
                ErrorKind::MissingIntegrity,
                ErrorKind::ObjectIdMismatch,
                ErrorKind::InvalidMetadata,
            ],
            at as u64,
        )
        .await;
    }
    // The sidecar of another object (same key, same size).
    w.tamper("big", "side-swapped", |_, _| {}, |s| *s = twin_side.clone())
        .await;
    assert_refused(
        &w,
        "side-swapped",
        &big,
        &[ErrorKind::ObjectIdMismatch, ErrorKind::TagMismatch],
        21,
    )
    .await;
    // The whole integrity record and sidecar of another object.
    w.tamper(
        "big",
        "record-swapped",
        |_, m| {
            for (k, v) in &twin_meta {
                if k.starts_with("cryptobucket-") {
                    m.insert(k.clone(), v.clone());
                }
            }
        },
        |s| *s = twin_side.clone(),
    )
    .await;
    assert_refused(
        &w,
        "record-swapped",
        &big,
        &[ErrorKind::CommitmentMismatch],
        22,
    )
    .await;
    // The sidecar removed; the record removed (strict mode refuses, the lax reader reads).
    w.tamper("big", "no-sidecar", |_, _| {}, |_| {}).await;
    w.writer
        .client()
        .delete_object()
        .bucket("bkt")
        .key(format!("no-sidecar{SIDECAR_SUFFIX}"))
        .send()
        .await
        .unwrap();
    assert_refused(&w, "no-sidecar", &big, &[ErrorKind::MissingIntegrity], 23).await;
    w.tamper(
        "big",
        "stripped",
        |_, m| m.retain(|k, _| !k.starts_with("cryptobucket-")),
        |_| {},
    )
    .await;
    assert_refused(&w, "stripped", &big, &[ErrorKind::MissingIntegrity], 24).await;
    let lax = w.lax.get_object().key("stripped").send().await.unwrap();
    assert_eq!(lax.integrity, IntegrityState::Absent);
    assert!(lax.body.collect().await.unwrap() == big);

    // A flipped bit in each metadata header, of a sidecar object and of an inline one.
    for (src, data) in [("big", &big), ("small", &small)] {
        let (_, meta) = raw_object(&w.writer, src).await;
        for header in meta.keys() {
            let value = &meta[header];
            for at in [0, value.len() / 2, value.len() - 1] {
                let key = format!("{src}-meta-{header}-{at}");
                w.tamper(
                    src,
                    &key,
                    |_, m| {
                        let mut v = m[header].clone().into_bytes();
                        // One character changed, still a valid header value.
                        v[at] = match v[at] {
                            c @ b'0'..=b'9' => b'0' + (c - b'0' + 1) % 10,
                            c if c.is_ascii_alphabetic() => c ^ 0x20,
                            _ => b'A',
                        };
                        m.insert(header.clone(), String::from_utf8_lossy(&v).into_owned());
                    },
                    |_| {},
                )
                .await;
                assert_refused_n(
                    &w,
                    &key,
                    data,
                    &[
                        ErrorKind::CommitmentMismatch,
                        ErrorKind::TagMismatch,
                        ErrorKind::InvalidMetadata,
                        ErrorKind::UnsupportedAlgorithm,
                        ErrorKind::NoMatchingKey,
                        ErrorKind::SizeMismatch,
                        ErrorKind::SignatureInvalid,
                        ErrorKind::UntrustedSigner,
                        ErrorKind::ObjectIdMismatch,
                        ErrorKind::MissingIntegrity,
                    ],
                    at as u64 + 1,
                    2,
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn forged_rsa_objects_need_a_trusted_signature() {
    let w = World::new().await;
    let client = w.server.client().await;
    let (_, public) = support::key_pem("a");
    let public_only = || {
        KeyEntry::new(RsaKeyPair::from_public_pem(&public).unwrap())
            .matdesc(MatDesc::new().with("k", "a"))
    };
    // Anyone with the public key can write a well-formed, consistent object...
    let forger = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::builder().key(public_only()).build().unwrap(),
    );
    let signed_forger = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::builder()
            .key(public_only())
            .signing_key(SigningKey::from_seed(&[7; 32]).unwrap())
            .build()
            .unwrap(),
    );
    let fake = pattern(2 * CHUNK as usize + 5, 9);
    forger
        .put_object()
        .key("forged")
        .body(fake.clone())
        .send()
        .await
        .unwrap();
    signed_forger
        .put_object()
        .key("forged-signed")
        .body(fake.clone())
        .send()
        .await
        .unwrap();
    // ...which strict mode refuses before unwrapping anything,
    assert_refused(&w, "forged", &fake, &[ErrorKind::SignatureInvalid], 1).await;
    assert_refused(&w, "forged-signed", &fake, &[ErrorKind::UntrustedSigner], 2).await;
    // and which outside strict mode is consistent, so it reads (what SECURITY.md says).
    let out = w.lax.get_object().key("forged").send().await.unwrap();
    assert_eq!(out.integrity, IntegrityState::Verified);
    assert!(out.body.collect().await.unwrap() == fake);
    // A signature by a trusted key over another record does not transfer.
    let real = pattern(1000, 10);
    w.put("real", &real).await;
    let (_, real_meta) = raw_object(&w.writer, "real").await;
    w.tamper(
        "forged",
        "forged-borrowed-sig",
        |_, m| {
            m.insert(
                "cryptobucket-signature".into(),
                real_meta["cryptobucket-signature"].clone(),
            );
        },
        |_| {},
    )
    .await;
    assert_refused(
        &w,
        "forged-borrowed-sig",
        &fake,
        &[ErrorKind::SignatureInvalid],
        3,
    )
    .await;
}

#[tokio::test]
async fn strict_mode_refuses_objects_without_integrity_data() {
    let w = World::new().await;
    let client = w.server.client().await;
    let legacy = CryptoBucket::builder()
        .client(client.clone())
        .bucket("bkt")
        .keyring(reader_keyring(false))
        .write_integrity(false)
        .build()
        .unwrap();
    let data = pattern(5000, 12);
    legacy
        .put_object()
        .key("legacy")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert!(
        legacy
            .head_object()
            .key("legacy")
            .send()
            .await
            .unwrap()
            .integrity
            .is_none()
    );
    assert_refused(&w, "legacy", &data, &[ErrorKind::MissingIntegrity], 1).await;
    let out = w.lax.get_object().key("legacy").send().await.unwrap();
    assert_eq!(out.integrity, IntegrityState::Absent);
    assert!(out.body.collect().await.unwrap() == data);
    // Plain objects cannot be verified either: strict mode refuses them even when the bucket
    // passes plain objects through.
    support::put_raw(&w.writer, "plain", b"plain text".to_vec(), HashMap::new()).await;
    let pass = CryptoBucket::builder()
        .client(client.clone())
        .bucket("bkt")
        .keyring(reader_keyring(true))
        .unencrypted_policy(cryptobucket::UnencryptedPolicy::PassThrough)
        .build()
        .unwrap();
    let e = pass.get_object().key("plain").send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingIntegrity, "{e}");
    let lax_pass = CryptoBucket::builder()
        .client(client.clone())
        .bucket("bkt")
        .keyring(reader_keyring(false))
        .unencrypted_policy(cryptobucket::UnencryptedPolicy::PassThrough)
        .build()
        .unwrap();
    let out = lax_pass.get_object().key("plain").send().await.unwrap();
    assert_eq!(out.integrity, IntegrityState::Absent);
    // The bucket's own switch overrides the keyring's.
    let strict = CryptoBucket::builder()
        .client(client)
        .bucket("bkt")
        .keyring(reader_keyring(false))
        .strict(true)
        .build()
        .unwrap();
    assert_eq!(
        strict
            .get_object()
            .key("legacy")
            .send()
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::MissingIntegrity
    );
}

/// The committed test vector (checked against our code by a unit test) is what the independent
/// Python implementation of docs/integrity.md produces.
#[test]
fn committed_vector_is_what_python_cryptography_generates() {
    let root = support::repo_root();
    let stdout = support::run_python("scripts/integrity_vector.py", &[]);
    let committed = std::fs::read(root.join("testdata/integrity/vector.json")).unwrap();
    assert!(
        stdout == committed,
        "testdata/integrity/vector.json is stale"
    );
}

/// Rewrapping (key rotation) keeps the integrity data valid without reading the body: the
/// signature covers the content key's commitment, not its wrapping. Re-encryption writes new
/// integrity data. A rewrap refuses an object whose key does not match its record.
#[tokio::test]
async fn rewrap_keeps_objects_verifiable() {
    let w = World::new().await;
    let client = w.server.client().await;
    let data = pattern(3 * CHUNK as usize + 11, 13);
    w.put("rot", &data).await;
    let before = w
        .strict
        .head_object()
        .key("rot")
        .send()
        .await
        .unwrap()
        .integrity
        .unwrap();
    let b = || KeyEntry::new(rsa("b")).matdesc(MatDesc::new().with("k", "b"));
    let both = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::builder()
            .key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "a")))
            .default_key(b())
            .signing_key(signer())
            .build()
            .unwrap(),
    );
    both.rewrap_object()
        .key("rot")
        .to(b())
        .send()
        .await
        .unwrap();
    let only_b = CryptoBucket::new(
        client.clone(),
        "bkt",
        Keyring::builder()
            .key(b())
            .trust_signer(signer().public_key())
            .strict(true)
            .build()
            .unwrap(),
    );
    let after = only_b
        .head_object()
        .key("rot")
        .send()
        .await
        .unwrap()
        .integrity
        .unwrap();
    assert_eq!(
        after, before,
        "the record (and its signature) is kept as it was"
    );
    let out = only_b.get_object().key("rot").send().await.unwrap();
    assert_eq!(out.integrity, IntegrityState::Signed(signer().public_key()));
    assert!(out.body.collect().await.unwrap() == data);

    both.rewrap_object()
        .key("rot")
        .to(b())
        .reencrypt(true)
        .send()
        .await
        .unwrap();
    let fresh = only_b
        .head_object()
        .key("rot")
        .send()
        .await
        .unwrap()
        .integrity
        .unwrap();
    assert_ne!(fresh.object_id, before.object_id);
    let out = only_b.get_object().key("rot").send().await.unwrap();
    assert_eq!(out.integrity, IntegrityState::Signed(signer().public_key()));
    assert!(out.body.collect().await.unwrap() == data);

    // An object whose wrapped key was swapped for another object's is not rewrapped.
    w.put("victim", &data).await;
    w.put("donor", &pattern(100, 1)).await;
    let (_, donor) = raw_object(&w.writer, "donor").await;
    w.tamper(
        "victim",
        "swapped-key",
        |_, m| {
            m.insert(
                "client-side-encryption-key".into(),
                donor["client-side-encryption-key"].clone(),
            );
            m.insert(
                "client-side-encryption-start".into(),
                donor["client-side-encryption-start"].clone(),
            );
        },
        |_| {},
    )
    .await;
    let e = both
        .rewrap_object()
        .key("swapped-key")
        .to(b())
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommitmentMismatch, "{e}");
}
