//! Round trips with the reference SDK, oss2 2.19.1, in both directions, over a real S3 server.
//! Requires the Python venv made by `scripts/test.sh` (or CRYPTOBUCKET_PYTHON): these tests
//! fail, never skip, when it is missing.

use cryptobucket_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptobucket::{ByteRange, CryptoBucket, KeyEntry, Keyring, MatDesc, RsaPadding};
use serde_json::{Value, json};
use support::{TestServer, key_pem, pattern, rsa, testdata};

use support::python;

struct Peer {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Peer {
    async fn new() -> Self {
        let server = TestServer::start();
        server.create_bucket("interop").await;
        let dir = tempfile::tempdir().unwrap();
        // oss2's LocalRsaProvider reads k.private_key.pem / k.public_key.pem from a directory.
        let (private, public) = key_pem("a");
        std::fs::write(dir.path().join("k.private_key.pem"), private).unwrap();
        std::fs::write(dir.path().join("k.public_key.pem"), public).unwrap();
        Self { server, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs oss2 over `jobs`; returns its per-job JSON lines.
    fn run(&self, jobs: Vec<Value>) -> Vec<Value> {
        let keys = testdata().join("keys/a");
        let cfg = json!({
            "endpoint": self.server.endpoint,
            "access_key": support::server::ACCESS_KEY,
            "secret_key": support::server::SECRET_KEY,
            "bucket": "interop",
            "public_key": keys.join("public.pem"),
            "private_key": keys.join("private.pem"),
            "oaep_dir": self.dir.path(),
            "jobs": jobs,
        });
        let cfg_path = self.path("jobs.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oss2_peer.py");
        let out = Command::new(python())
            .arg(script)
            .arg(&cfg_path)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "oss2 peer failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn bucket(&self, keyring: Keyring) -> CryptoBucket {
        CryptoBucket::new(self.server.client().await, "interop", keyring)
    }
}

const SIZES: [usize; 8] = [
    0,
    1,
    15,
    16,
    17,
    100_000,
    3 * 1024 * 1024 + 7,
    5 * 1024 * 1024 + 3,
];

#[tokio::test]
async fn oss2_reads_what_cryptobucket_writes() {
    let peer = Peer::new().await;
    let descs = [
        MatDesc::new(),
        MatDesc::new().with("k", "a"),
        MatDesc::new().with("team", "x").with("v", "1"),
    ];
    let mut jobs = Vec::new();
    let mut expect = Vec::new();
    for (i, len) in SIZES.iter().enumerate() {
        let desc = descs[i % descs.len()].clone();
        let cb = peer.bucket(Keyring::single(rsa("a"), desc.clone())).await;
        let data = pattern(*len, i as u64);
        let key = format!("ours-{len}");
        cb.put_object()
            .key(&key)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        // Written with integrity data (the default): metadata record, tags inline or in the
        // sidecar; oss2 must read the object all the same.
        let head = cb.head_object().key(&key).send().await.unwrap();
        let record = head
            .integrity
            .expect("integrity data is written by default");
        assert_eq!(
            record.inline_tags.is_none(),
            record.chunk_count(*len as u64) > 4
        );
        let out = peer.path(&format!("{key}.out"));
        jobs.push(json!({"op": "decrypt", "key": key, "out": out}));
        expect.push((out, data.clone(), desc.clone()));
        if *len > 40 {
            // oss2 ranged read of an unaligned slice of our object.
            let out = peer.path(&format!("{key}.range"));
            jobs.push(json!({"op": "decrypt", "key": key, "out": out, "range": [5, 37]}));
            expect.push((out, data[5..=37].to_vec(), desc));
        }
    }
    // OAEP written by us, read by oss2's LocalRsaProvider.
    let cb = peer
        .bucket(Keyring::single(
            rsa("a").with_padding(RsaPadding::OaepSha1),
            MatDesc::new(),
        ))
        .await;
    let data = pattern(5000, 99);
    cb.put_object()
        .key("ours-oaep")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let out = peer.path("oaep.out");
    jobs.push(json!({"op": "decrypt", "key": "ours-oaep", "out": out, "oaep": true}));
    expect.push((out, data, MatDesc::new()));

    let seen = peer.run(jobs);
    assert_eq!(seen.len(), expect.len());
    for ((out, data, desc), seen) in expect.iter().zip(&seen) {
        assert_eq!(&std::fs::read(out).unwrap(), data, "{}", out.display());
        let seen_desc: std::collections::BTreeMap<String, String> =
            serde_json::from_value(seen["matdesc"].clone()).unwrap();
        assert_eq!(&MatDesc::from(seen_desc), desc);
    }
}

#[tokio::test]
async fn cryptobucket_reads_what_oss2_writes() {
    let peer = Peer::new().await;
    let descs = [json!({}), json!({"k": "a"}), json!({"team": "x", "v": "1"})];
    let mut jobs = Vec::new();
    let mut expect = Vec::new();
    for (i, len) in SIZES.iter().enumerate() {
        let data = pattern(*len, 1000 + i as u64);
        let input = peer.path(&format!("in-{len}"));
        std::fs::write(&input, &data).unwrap();
        let key = format!("theirs-{len}");
        jobs.push(json!({"op": "encrypt", "key": key, "in": input, "matdesc": descs[i % 3]}));
        expect.push((key, data));
    }
    let oaep_data = pattern(4321, 5);
    std::fs::write(peer.path("in-oaep"), &oaep_data).unwrap();
    jobs.push(
        json!({"op": "encrypt", "key": "theirs-oaep", "in": peer.path("in-oaep"), "oaep": true}),
    );
    let seen = peer.run(jobs);
    assert_eq!(
        seen[seen.len() - 1]["wrap_alg"],
        "RSA/NONE/OAEPWithSHA-1AndMGF1Padding"
    );
    assert_eq!(seen[0]["wrap_alg"], "RSA/NONE/PKCS1Padding");

    // One keyring holding the same key under each matdesc oss2 wrote (oss2 formats the JSON
    // with spaces; matching is on parsed maps).
    let keyring = Keyring::builder()
        .default_key(KeyEntry::new(rsa("a")))
        .key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("k", "a")))
        .key(KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("v", "1").with("team", "x")))
        .build()
        .unwrap();
    let cb = peer.bucket(keyring).await;
    for (key, data) in &expect {
        let got = cb
            .get_object()
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap();
        assert_eq!(&got[..], &data[..], "{key}");
        if data.len() > 40 {
            for r in ["5-37", "17-", "-23"] {
                let r: ByteRange = r.parse().unwrap();
                let (s, l) = r.resolve(data.len() as u64).unwrap();
                let got = cb
                    .get_object()
                    .key(key)
                    .range(r)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(&got[..], &data[s as usize..(s + l) as usize], "{key} {r}");
            }
        }
    }
    let got = cb
        .get_object()
        .key("theirs-oaep")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(&got[..], &oaep_data[..]);
    // The raw metadata oss2 wrote uses its own JSON formatting; make sure we saw that form.
    let head = cb
        .client()
        .head_object()
        .bucket("interop")
        .key(format!("theirs-{}", SIZES[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.metadata().unwrap()["client-side-encryption-matdesc"],
        r#"{"team": "x", "v": "1"}"#
    );
}

#[tokio::test]
async fn oss2_style_multipart_object_reads_as_one_stream() {
    let peer = Peer::new().await;
    // S3 (and s3s) require parts of at least 5 MiB except the last.
    const PART: usize = 5 * 1024 * 1024;
    let data = pattern(2 * PART + 12_345, 77);
    std::fs::write(peer.path("mp"), &data).unwrap();
    peer.run(vec![
        json!({"op": "encrypt", "key": "mp", "in": peer.path("mp"), "multipart_part_size": PART}),
    ]);
    let cb = peer.bucket(Keyring::single(rsa("a"), MatDesc::new())).await;
    let out = cb.get_object().key("mp").send().await.unwrap();
    let env = out.envelope.clone().unwrap();
    assert_eq!(env.data_size, Some(data.len() as u64));
    assert_eq!(env.part_size, Some(PART as u64));
    assert_eq!(&out.body.collect().await.unwrap()[..], &data[..]);
    // A range straddling the part boundary.
    let r = ByteRange::Inclusive {
        first: PART as u64 - 10,
        last: PART as u64 + 20,
    };
    let got = cb
        .get_object()
        .key("mp")
        .range(r)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert_eq!(&got[..], &data[PART - 10..=PART + 20]);
}

/// The codec example (`examples/presigned.rs`: plain reqwest with presigned URLs, only
/// `cryptobucket::codec` for the crypto) run as users run it; oss2 decrypts what it stored.
#[tokio::test]
async fn oss2_reads_what_the_presigned_codec_example_writes() {
    let peer = Peer::new().await;
    let data = pattern(2_500_011, 91);
    let input = peer.path("codec.in");
    std::fs::write(&input, &data).unwrap();
    // `cargo test` builds the examples next to the test binaries.
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(format!("presigned{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: build the examples (`cargo test` does, or `cargo build --examples`)",
        exe.display()
    );
    let out = Command::new(&exe)
        .args([
            "--endpoint-url",
            &peer.server.endpoint,
            "--bucket",
            "interop",
        ])
        .args(["--key", "codec/example.bin", "--in"])
        .arg(&input)
        .arg("--private-key")
        .arg(testdata().join("keys/a/private.pem"))
        .env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("through a presigned PUT"), "{stdout}");
    let whole = peer.path("codec.out");
    let slice = peer.path("codec.range");
    let seen = peer.run(vec![
        json!({"op": "decrypt", "key": "codec/example.bin", "out": whole}),
        json!({"op": "decrypt", "key": "codec/example.bin", "out": slice, "range": [1001, 70_000]}),
    ]);
    assert_eq!(seen[0]["wrap_alg"], "RSA/NONE/PKCS1Padding");
    assert!(std::fs::read(&whole).unwrap() == data);
    assert!(std::fs::read(&slice).unwrap() == data[1001..=70_000]);
}

#[tokio::test]
async fn oss2_reads_our_multipart_object() {
    let peer = Peer::new().await;
    const PART: u64 = 5 * 1024 * 1024;
    let data = pattern((2 * PART + 4321) as usize, 78);
    let cb = peer
        .bucket(Keyring::single(rsa("a"), MatDesc::new().with("k", "a")))
        .await;
    let upload = cb
        .create_multipart_upload()
        .key("our-mp")
        .data_size(data.len() as u64)
        .part_size(cryptobucket::multipart::PartSize::Target(PART))
        .send()
        .await
        .unwrap();
    let mut parts = Vec::new();
    for n in [3, 1, 2] {
        let (off, len) = upload.part_range(n).unwrap();
        let body = data[off as usize..(off + len) as usize].to_vec();
        parts.push(upload.upload_part(n, body).await.unwrap());
    }
    upload.complete(parts).await.unwrap();
    let head = cb.head_object().key("our-mp").send().await.unwrap();
    assert!(head.integrity.is_some_and(|r| r.inline_tags.is_none()));
    assert!(
        cb.get_object()
            .key("our-mp")
            .send()
            .await
            .unwrap()
            .integrity
            == cryptobucket::IntegrityState::Verified
    );
    let whole = peer.path("our-mp.out");
    let slice = peer.path("our-mp.range");
    let (first, last) = (PART - 7, 2 * PART + 9);
    let seen = peer.run(vec![
        json!({"op": "decrypt", "key": "our-mp", "out": whole}),
        json!({"op": "decrypt", "key": "our-mp", "out": slice, "range": [first, last]}),
    ]);
    assert_eq!(seen[0]["data_size"], data.len().to_string());
    assert_eq!(seen[0]["part_size"], PART.to_string());
    assert!(std::fs::read(&whole).unwrap() == data);
    assert!(std::fs::read(&slice).unwrap() == data[first as usize..=last as usize]);
}

#[tokio::test]
async fn rewrapped_oss2_objects_are_read_by_oss2_with_the_new_key() {
    let peer = Peer::new().await;
    let data = pattern(300_000, 79);
    std::fs::write(peer.path("rw"), &data).unwrap();
    peer.run(vec![
        json!({"op": "encrypt", "key": "rw", "in": peer.path("rw"), "matdesc": {"key": "old"}}),
    ]);
    let old = KeyEntry::new(rsa("a")).matdesc(MatDesc::new().with("key", "old"));
    let new = KeyEntry::new(rsa("b")).matdesc(MatDesc::new().with("key", "new"));
    let cb = peer
        .bucket(
            Keyring::builder()
                .default_key(old)
                .key(new.clone())
                .build()
                .unwrap(),
        )
        .await;
    let out = cb.rewrap_object().key("rw").to(new).send().await.unwrap();
    assert!(!out.skipped);
    let keys = testdata().join("keys/b");
    let whole = peer.path("rw.out");
    let seen = peer.run(vec![json!({
        "op": "decrypt", "key": "rw", "out": whole,
        "public_key": keys.join("public.pem"), "private_key": keys.join("private.pem"),
    })]);
    assert!(std::fs::read(&whole).unwrap() == data);
    assert_eq!(seen[0]["matdesc"], json!({"key": "new"}));
}

/// Our Alibaba RPC signer gives the same string-to-sign and signature as
/// aliyun-python-sdk-core's (the official Python signer), on fixed inputs.
#[tokio::test]
async fn aliyun_rpc_signature_matches_the_official_python_signer() {
    use std::collections::BTreeMap;
    let peer = Peer::new().await;
    let cases = [
        json!({"Action": "Decrypt", "Version": "2016-01-20", "RegionId": "cn-hangzhou",
               "CiphertextBlob": "NzA3ZDk5YmQtYmI3NS00ZDhjLWE2YzAtZTg5Y2M0YWZmNmQ3Kw+/=="}),
        json!({"Action": "GenerateDataKey", "Version": "2016-01-20", "KeyId": "key-hzz62f1cb66fa42qo4lmm",
               "KeySpec": "AES_256", "NumberOfBytes": "32",
               "EncryptionContext": "{\"x-passphrase\":\"a b*c~d/é\"}", "SecurityToken": "STS token+/="}),
        json!({"Action": "Encrypt", "Version": "2016-01-20", "KeyId": "alias/ckpt",
               "Plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}),
    ];
    let jobs: Vec<_> = cases
        .iter()
        .map(|params| {
            json!({"op": "sign", "params": params, "ak": "LTAI5tTestKey", "secret": "s3cr3t/+=",
                   "timestamp": "2026-11-23T16:00:00Z", "nonce": "9a5b5c5d-fixed-nonce"})
        })
        .collect();
    let seen = peer.run(jobs);
    for (params, seen) in cases.iter().zip(&seen) {
        // The full parameter set the Python SDK signed (its own additions included).
        let url = seen["url"].as_str().unwrap();
        let mut all = BTreeMap::new();
        for pair in url.trim_start_matches("/?").split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            let decode = |s: &str| {
                let mut out = Vec::new();
                let b = s.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'%' {
                        out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            };
            all.insert(decode(k), decode(v));
        }
        let python_signature = all.remove("Signature").unwrap();
        for (k, v) in params.as_object().unwrap() {
            assert_eq!(all[k], v.as_str().unwrap(), "{k}");
        }
        let (string_to_sign, signature) =
            cryptobucket::keys::aliyun_kms::sign_rpc("POST", &all, "s3cr3t/+=");
        assert_eq!(
            string_to_sign.as_str(),
            seen["string_to_sign"].as_str().unwrap()
        );
        assert_eq!(signature, python_signature);
    }
}

/// oss2's own AliKMSProvider (its KMS calls answered by the local KMS) and cryptobucket read
/// each other's `KMS/ALICLOUD` objects (oss2's encoding), with and without a passphrase.
#[tokio::test]
async fn oss2_ali_kms_provider_objects_both_ways() {
    use cryptobucket::{AliyunCredentials, AliyunKmsEncoding, AliyunKmsKey};
    let peer = Peer::new().await;
    let fake = support::aliyun_kms::FakeKms::start("LTAI-oss2", "oss2-secret", None);
    let key_id = fake.create_key();
    let port = fake
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let kms = json!({"host": "http://127.0.0.1", "port": port, "ak": "LTAI-oss2",
                     "secret": "oss2-secret", "region": "cn-hangzhou", "key_id": key_id});
    let ours = |passphrase: Option<&str>| {
        let mut k = AliyunKmsKey::new(
            &key_id,
            "cn-hangzhou",
            AliyunCredentials::new("LTAI-oss2", "oss2-secret"),
        )
        .endpoint_url(&fake.endpoint)
        .write_encoding(AliyunKmsEncoding::Oss2);
        if let Some(p) = passphrase {
            k = k.passphrase(p);
        }
        k
    };
    for passphrase in [None, Some("correct horse")] {
        let tag = passphrase.map_or("plain", |_| "pass");
        // oss2 writes, we read.
        let data = pattern(123_457, 80);
        let input = peer.path(&format!("kms-in-{tag}"));
        std::fs::write(&input, &data).unwrap();
        let mut job =
            json!({"op": "encrypt", "key": format!("theirs-kms-{tag}"), "in": input, "kms": kms});
        if let Some(p) = passphrase {
            job["passphrase"] = p.into();
        }
        let seen = peer.run(vec![job]);
        assert_eq!(seen[0]["wrap_alg"], "KMS/ALICLOUD");
        let cb = peer
            .bucket(Keyring::single(ours(passphrase), MatDesc::new()))
            .await;
        let got = cb
            .get_object()
            .key(format!("theirs-kms-{tag}"))
            .send()
            .await
            .unwrap();
        assert!(got.body.collect().await.unwrap() == data, "{tag}");

        // We write (oss2 encoding), oss2 reads.
        let data = pattern(77_777, 81);
        cb.put_object()
            .key(format!("ours-kms-{tag}"))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        let out = peer.path(&format!("ours-kms-{tag}.out"));
        let mut job =
            json!({"op": "decrypt", "key": format!("ours-kms-{tag}"), "out": out, "kms": kms});
        if let Some(p) = passphrase {
            job["passphrase"] = p.into();
        }
        peer.run(vec![job]);
        assert!(std::fs::read(&out).unwrap() == data, "{tag}");
    }
    // oss2's object with a passphrase, read without it: KMS refuses (context mismatch).
    let cb = peer
        .bucket(Keyring::single(ours(None), MatDesc::new()))
        .await;
    let err = cb
        .get_object()
        .key("theirs-kms-pass")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cryptobucket::ErrorKind::KeyUnwrap);
}

/// Files made exactly as seed 004's script makes them (pycryptodome), several sizes including 0
/// and multiples of 16, migrate by streaming into objects that oss2 decrypts to the original;
/// a wrong password and a damaged file write nothing.
#[tokio::test]
async fn password_cbc_files_migrate_to_objects_oss2_reads() {
    use cryptobucket::PutBody;
    use cryptobucket::migrate::PasswordCbcReader;
    let peer = Peer::new().await;
    let cb = peer
        .bucket(Keyring::single(rsa("a"), MatDesc::new().with("k", "a")))
        .await;
    let iv = "000102030405060708090a0b0c0d0e0f";
    let mut jobs = Vec::new();
    let mut expect = Vec::new();
    for len in [0usize, 1, 15, 16, 17, 4096, 100_003, 17 * 1024 * 1024 + 5] {
        let plain = peer.path(&format!("m{len}.plain"));
        let enc = peer.path(&format!("m{len}.enc"));
        let data = pattern(len, len as u64 + 1);
        std::fs::write(&plain, &data).unwrap();
        support::run_python(
            "tests/interop/password_cbc.py",
            &[
                plain.to_str().unwrap(),
                enc.to_str().unwrap(),
                "hunter2",
                iv,
            ],
        );
        let reader = PasswordCbcReader::new(tokio::fs::File::open(&enc).await.unwrap(), "hunter2");
        let key = format!("migrated-{len}");
        cb.put_object()
            .key(&key)
            .body(PutBody::from_stream(reader))
            .send()
            .await
            .unwrap();
        let got = peer.path(&format!("{key}.out"));
        jobs.push(json!({"op": "decrypt", "key": key, "out": got}));
        expect.push((got, data));
        if len == 100_003 {
            // A wrong password: bad padding (for this IV and data; 1 in 256 wrong passwords
            // would pass the padding check, which the format cannot prevent), nothing written.
            let wrong =
                PasswordCbcReader::new(tokio::fs::File::open(&enc).await.unwrap(), "hunter3");
            let e = cb
                .put_object()
                .key("wrong")
                .body(PutBody::from_stream(wrong))
                .send()
                .await
                .unwrap_err();
            assert!(e.to_string().contains("bad padding"), "{e}");
            assert!(cb.head_object().key("wrong").send().await.is_err());
            // A truncated file (not a whole number of blocks).
            let bytes = std::fs::read(&enc).unwrap();
            let cut = PasswordCbcReader::new(
                std::io::Cursor::new(bytes[..bytes.len() - 5].to_vec()),
                "hunter2",
            );
            let e = cb
                .put_object()
                .key("cut")
                .body(PutBody::from_stream(cut))
                .send()
                .await
                .unwrap_err();
            assert!(e.to_string().contains("bad padding"), "{e}");
            assert!(cb.head_object().key("cut").send().await.is_err());
        }
    }
    // Large and wrong: a multipart upload that fails at the last block is aborted, no object.
    let big = std::fs::read(peer.path(&format!("m{}.enc", 17 * 1024 * 1024 + 5))).unwrap();
    let wrong = PasswordCbcReader::new(std::io::Cursor::new(big), "not it");
    let e = cb
        .put_object()
        .key("big-wrong")
        .body(PutBody::from_stream(wrong))
        .send()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad padding"), "{e}");
    assert!(cb.head_object().key("big-wrong").send().await.is_err());
    peer.run(jobs);
    for (got, data) in expect {
        assert!(std::fs::read(&got).unwrap() == data, "{}", got.display());
    }
}
