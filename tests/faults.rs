//! Faults on the wire (a TCP proxy between the SDK and the server): resets mid-body in both
//! directions, truncated responses, stalls, 503/500 answers. Transfers either complete with
//! the right bytes (retries) or fail with a clear error; a download never yields wrong bytes
//! and a cut-off body is never decrypted as if whole.

use cryptobucket_testkit as support;

use cryptobucket::{CryptoBucket, ErrorKind, PartSize};
use support::proxy::{FaultProxy, WireFault};
use support::{TestServer, keyring_a, pattern};

const PART: u64 = 5 * 1024 * 1024;

struct Rig {
    server: TestServer,
    proxy: FaultProxy,
    /// Through the proxy.
    cb: CryptoBucket,
    /// Straight to the server (to set up and check).
    direct: CryptoBucket,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Self {
        let server = TestServer::start();
        server.create_bucket("bkt").await;
        let proxy = FaultProxy::start(&server.endpoint);
        let cb = CryptoBucket::new(server.client_via(&proxy.endpoint).await, "bkt", keyring_a());
        let direct = CryptoBucket::new(server.client().await, "bkt", keyring_a());
        Self {
            server,
            proxy,
            cb,
            direct,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn uploads_survive_resets_and_throttling() {
    let rig = Rig::new().await;
    let data = pattern((3 * PART + 77) as usize, 1);
    let src = rig.file("src", &data);
    rig.proxy.push([
        WireFault::Status(503),
        WireFault::ResetRequestAfter(1024 * 1024),
        WireFault::Status(500),
        WireFault::ResetRequestAfter(3 * 1024 * 1024),
        WireFault::ResetResponseAfter(10),
    ]);
    rig.cb
        .upload_file()
        .key("up")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .checkpoint_dir(rig.dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    assert!(
        rig.proxy.injected() >= 4,
        "faults injected: {}",
        rig.proxy.injected()
    );
    let got = rig.direct.get_object().key("up").send().await.unwrap();
    assert!(sha(&got.body.collect().await.unwrap()) == sha(&data));

    // A single PUT through a reset: the engine retries the replayable body. (A fresh client, so
    // the PUT opens a new connection, which is where the proxy injects faults; a pooled
    // connection from the upload would slip past it.)
    let before = rig.proxy.injected();
    rig.proxy.push([WireFault::ResetRequestAfter(50_000)]);
    let small = pattern(200_000, 2);
    let fresh = CryptoBucket::new(
        rig.server.client_via(&rig.proxy.endpoint).await,
        "bkt",
        keyring_a(),
    );
    fresh
        .put_object()
        .key("small")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        rig.proxy.injected(),
        before + 1,
        "the reset was injected (and so the PUT really was retried)"
    );
    assert_eq!(rig.proxy.pending(), 0);
    let got = rig.direct.get_object().key("small").send().await.unwrap();
    assert!(got.body.collect().await.unwrap() == small);
}

#[tokio::test]
async fn downloads_survive_resets_truncation_stalls_and_errors() {
    let rig = Rig::new().await;
    let data = pattern((4 * PART + 5) as usize, 3);
    let src = rig.file("src", &data);
    rig.direct
        .upload_file()
        .key("down")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(rig.dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    rig.proxy.push([
        WireFault::ResetResponseAfter(1024 * 1024),
        WireFault::CloseResponseAfter(2 * 1024 * 1024),
        WireFault::Status(503),
        WireFault::Stall {
            after: 512 * 1024,
            millis: 1500,
        },
        WireFault::ResetResponseAfter(100),
        WireFault::Status(500),
    ]);
    let dst = rig.dir.path().join("dst");
    let out = rig
        .cb
        .download_file()
        .key("down")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .checkpoint_dir(rig.dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.size, data.len() as u64);
    assert!(
        rig.proxy.injected() >= 5,
        "faults injected: {}",
        rig.proxy.injected()
    );
    assert!(sha(&std::fs::read(&dst).unwrap()) == sha(&data));
}

#[tokio::test]
async fn a_cut_off_stream_is_an_error_never_short_plaintext() {
    let rig = Rig::new().await;
    let data = pattern(3 * 1024 * 1024, 4);
    rig.direct
        .put_object()
        .key("s")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    for fault in [
        WireFault::CloseResponseAfter(1_000_000),
        WireFault::ResetResponseAfter(1_000_000),
    ] {
        rig.proxy.push([fault]);
        let got = rig.cb.get_object().key("s").send().await.unwrap();
        let err = match got.body.collect().await {
            Ok(b) => panic!(
                "{fault:?}: got {} bytes, injected {}",
                b.len(),
                rig.proxy.injected()
            ),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::Truncated, "{fault:?}: {err}");
    }
    // Ranged reads too (cut inside the body: a cut inside the headers is retried by the SDK).
    rig.proxy.push([WireFault::CloseResponseAfter(50_000)]);
    let got = rig
        .cb
        .get_object()
        .key("s")
        .range("100-200099".parse().unwrap())
        .send()
        .await
        .unwrap();
    match got.body.collect().await {
        Ok(b) => panic!("ranged: got {} bytes", b.len()),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Truncated),
    }
}

#[tokio::test]
async fn a_download_that_keeps_failing_fails_cleanly() {
    let rig = Rig::new().await;
    let data = pattern((2 * PART) as usize, 5);
    let src = rig.file("src", &data);
    rig.direct
        .upload_file()
        .key("x")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(rig.dir.path().join("cp"))
        .send()
        .await
        .unwrap();
    // The HEAD goes through, then every connection is cut mid-body.
    rig.proxy
        .push(std::iter::repeat_n(WireFault::CloseResponseAfter(700), 200));
    let dst = rig.dir.path().join("dst");
    let err = rig
        .cb
        .download_file()
        .key("x")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .max_attempts(3)
        .resumable(false)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Truncated | ErrorKind::Transport | ErrorKind::InvalidResponse
        ),
        "{err}"
    );
    assert!(!dst.exists(), "no output file after a failed download");
    let _ = &rig.server;
}
