//! Whole-file transfers: upload_file / download_file, their checkpoints and resume paths,
//! against the in-process S3 server. (The kill -9 crash test is in `crash.rs`.)

use cryptobucket_testkit as support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cryptobucket::{
    CryptoBucket, ErrorKind, Keyring, MatDesc, PartSize, ProgressEvent, ProgressListener,
};
use support::{Fault, bucket_with, checkpoints_in, keyring_a, partial_files, pattern, rsa};

const PART: u64 = 5 * 1024 * 1024;

struct Env {
    server: support::TestServer,
    cb: CryptoBucket,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        Self::with(Fault::None).await
    }

    async fn with(fault: Fault) -> Self {
        let (server, cb) = bucket_with(fault, keyring_a()).await;
        Self {
            server,
            cb,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cp_dir(&self) -> PathBuf {
        self.path("checkpoints")
    }

    fn checkpoints(&self) -> Vec<PathBuf> {
        checkpoints_in(&self.cp_dir())
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn upload(&self, key: &str, file: &Path) -> cryptobucket::resumable::UploadFileFluentBuilder {
        self.cb
            .upload_file()
            .key(key)
            .path(file)
            .part_size(PartSize::Target(PART))
            .concurrency(2)
            .checkpoint_dir(self.cp_dir())
    }

    fn download(
        &self,
        key: &str,
        file: &Path,
    ) -> cryptobucket::resumable::DownloadFileFluentBuilder {
        self.cb
            .download_file()
            .key(key)
            .path(file)
            .part_size(PartSize::Target(PART))
            .concurrency(2)
            .checkpoint_dir(self.cp_dir())
    }

    async fn read(&self, key: &str) -> Vec<u8> {
        let got = self.cb.get_object().key(key).send().await.unwrap();
        got.body.collect().await.unwrap().to_vec()
    }
}

/// The checkpoint files in `dir` (none if it does not exist).
/// Records every progress event.
fn recorder() -> (ProgressListener, Arc<Mutex<Vec<cryptobucket::Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (
        ProgressListener::new(move |p| s.lock().unwrap().push(p.clone())),
        seen,
    )
}

impl Env {
    /// Uploads `file` while the server accepts only `parts` parts (then 503 SlowDown) and no
    /// retries are allowed: the upload stops with `parts` parts done and checkpointed, as an
    /// interrupted run leaves it. (Killing the process is `crash.rs`'s job.)
    async fn upload_interrupted(&self, key: &str, file: &Path, parts: i64) {
        self.server.stats.limit(parts, i64::MAX);
        let err = self
            .upload(key, file)
            .max_attempts(1)
            .send()
            .await
            .unwrap_err();
        self.server.stats.limit(i64::MAX, i64::MAX);
        assert!(err.is_retryable(), "{err}");
    }

    /// The same for a download: the link breaks half a range after `ranges` ranges' worth of
    /// body bytes (one stream, so exactly that many ranges are done and checkpointed; the half
    /// range covers what the server's HTTP stack still had buffered when the link broke).
    async fn download_interrupted(&self, key: &str, file: &Path, ranges: i64) {
        self.interrupt(self.download(key, file), ranges).await;
    }

    /// Runs `download` as [`Env::download_interrupted`] does.
    async fn interrupt(
        &self,
        download: cryptobucket::resumable::DownloadFileFluentBuilder,
        ranges: i64,
    ) {
        self.server
            .stats
            .limit_get_bytes(ranges * PART as i64 + PART as i64 / 2);
        let err = download
            .concurrency(1)
            .max_attempts(1)
            .send()
            .await
            .unwrap_err();
        self.server.stats.limit_get_bytes(i64::MAX);
        assert!(err.is_retryable(), "{err}");
    }
}

#[tokio::test]
async fn upload_and_download_file_round_trip_with_progress() {
    let env = Env::new().await;
    let data = pattern((3 * PART + 17) as usize, 1);
    let src = env.write("src", &data);
    let (listener, seen) = recorder();
    let out = env
        .upload("big", &src)
        .progress(listener)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (out.size, out.parts, out.part_size),
        (data.len() as u64, 4, Some(PART))
    );
    assert_eq!((out.resumed_bytes, out.bytes_sent), (0, data.len() as u64));
    let events = seen.lock().unwrap().clone();
    assert!(matches!(
        events[0].event,
        ProgressEvent::Started {
            resumed_bytes: 0,
            ..
        }
    ));
    let parts: u64 = events
        .iter()
        .filter_map(|p| match p.event {
            ProgressEvent::PartDone { bytes, .. } => Some(bytes),
            _ => None,
        })
        .sum();
    assert_eq!(parts, data.len() as u64);
    let last = events.last().unwrap();
    assert_eq!(
        (last.done, last.total, &last.event),
        (
            data.len() as u64,
            data.len() as u64,
            &ProgressEvent::Finished
        )
    );
    assert!(
        env.checkpoints().is_empty(),
        "checkpoint left after success"
    );
    assert!(env.read("big").await == data);

    let dst = env.path("dst");
    let got = env.download("big", &dst).send().await.unwrap();
    assert_eq!(
        (got.size, got.resumed_bytes, got.bytes_received),
        (data.len() as u64, 0, data.len() as u64)
    );
    assert!(std::fs::read(&dst).unwrap() == data);
    assert!(env.checkpoints().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A download learns the object from a GET of its first range, not a HEAD: an object of one
/// range comes with one request, and the first response of a larger one is its first range
/// (no byte fetched twice).
#[tokio::test]
async fn downloads_learn_the_object_from_their_first_get() {
    let env = Env::new().await;
    let stats = &env.server.stats;
    let count = || {
        (
            stats.heads_in.load(Ordering::SeqCst),
            stats.gets_in.load(Ordering::SeqCst),
            stats.bytes_out.load(Ordering::SeqCst),
        )
    };
    for (name, len, concurrency, gets) in [
        // One GET (the integrity tags of up to 4 MiB sit in the metadata).
        ("small", 1000usize, 4, 1),
        // The object's GET, and one for its tags in the integrity sidecar.
        ("one-range", PART as usize, 4, 2),
        // The first range's GET, then one GET for the other two ranges: each with its tags.
        ("three-ranges", 3 * PART as usize - 5, 1, 4),
    ] {
        let data = pattern(len, 31);
        let src = env.write(name, &data);
        env.upload(name, &src).send().await.unwrap();
        let before = count();
        let dst = env.path(&format!("{name}.out"));
        env.download(name, &dst)
            .concurrency(concurrency)
            .send()
            .await
            .unwrap();
        let after = count();
        assert!(std::fs::read(&dst).unwrap() == data, "{name}");
        assert_eq!(after.0 - before.0, 0, "{name}: no HEAD");
        assert_eq!(after.1 - before.1, gets, "{name}: GETs");
        let sent = after.2 - before.2;
        assert!(
            sent >= len as u64 && sent < len as u64 + 4096,
            "{name}: {sent} bytes sent for {len}"
        );
    }
}

#[tokio::test]
async fn small_and_empty_files() {
    let env = Env::new().await;
    for (name, len) in [("empty", 0usize), ("small", 1000), ("edge", PART as usize)] {
        let data = pattern(len, 2);
        let src = env.write(name, &data);
        let out = env.upload(name, &src).send().await.unwrap();
        assert_eq!(out.size, len as u64);
        assert!(env.read(name).await == data, "{name}");
        let dst = env.path(&format!("{name}.out"));
        env.download(name, &dst).send().await.unwrap();
        assert!(std::fs::read(&dst).unwrap() == data, "{name}");
    }
    // Multipart forced for a small file (threshold 0): still one part, still right.
    let data = pattern(100, 3);
    let src = env.write("tiny", &data);
    let out = env
        .upload("tiny", &src)
        .multipart_threshold(0)
        .send()
        .await
        .unwrap();
    assert_eq!((out.part_size, out.parts), (Some(PART), 1));
    assert!(env.read("tiny").await == data);
    assert!(env.checkpoints().is_empty());
}

/// A download of one range writes no checkpoint (a range is recorded only once whole, and
/// then the file is published, so there is never anything to resume); one of two ranges has
/// its checkpoint from the first recorded range on. Either way nothing stays behind.
#[tokio::test]
async fn only_downloads_of_several_ranges_write_a_checkpoint() {
    let env = Env::new().await;
    for (name, len, checkpointed) in [
        ("one", PART as usize, false),
        ("two", PART as usize + 1, true),
    ] {
        let data = pattern(len, 31);
        env.upload(name, &env.write(name, &data))
            .send()
            .await
            .unwrap();
        // At every recorded range: is there a checkpoint file?
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, dir) = (seen.clone(), env.cp_dir());
        let listener = ProgressListener::new(move |p| {
            if let ProgressEvent::PartDone { .. } = p.event {
                s.lock().unwrap().push(!checkpoints_in(&dir).is_empty());
            }
        });
        let dst = env.path(&format!("{name}.out"));
        env.download(name, &dst)
            .progress(listener)
            .send()
            .await
            .unwrap();
        assert!(std::fs::read(&dst).unwrap() == data, "{name}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), len.div_ceil(PART as usize), "{name}: {seen:?}");
        assert!(seen.iter().all(|&c| c == checkpointed), "{name}: {seen:?}");
        assert!(env.checkpoints().is_empty(), "{name}");
        assert!(partial_files(env.dir.path()).is_empty(), "{name}");
    }
    // A one-range download that breaks off leaves neither a checkpoint nor decrypted bytes.
    let dst = env.path("broken.out");
    env.server.stats.limit_get_bytes(PART as i64 / 2);
    let err = env
        .download("one", &dst)
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    env.server.stats.limit_get_bytes(i64::MAX);
    assert!(err.is_retryable(), "{err}");
    assert!(!dst.exists());
    assert!(env.checkpoints().is_empty());
    assert!(partial_files(env.dir.path()).is_empty());
}

#[tokio::test]
async fn interrupted_upload_resumes_without_resending_and_checkpoint_holds_no_key() {
    let env = Env::new().await;
    let data = pattern((6 * PART + 5) as usize, 4);
    let src = env.write("src", &data);
    env.upload_interrupted("r", &src, 2).await;

    let cps = env.checkpoints();
    assert_eq!(cps.len(), 1, "one checkpoint while unfinished");
    let text = std::fs::read(&cps[0]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(json["key"], "r");
    assert_eq!(json["part_size"], PART);
    assert!(json["parts"].as_array().unwrap().len() >= 2);
    // The checkpoint's envelope unwraps (through the keyring) to the real key; that key and IV
    // appear nowhere in the file, in any common encoding.
    let meta = serde_json::from_value(json["envelope"].clone()).unwrap();
    let envl = cryptobucket::Envelope::from_metadata(&meta)
        .unwrap()
        .unwrap();
    let m = env.cb.keyring().unwrap(&envl).await.unwrap();
    let hay = String::from_utf8_lossy(&text).to_lowercase();
    for secret in [&m.cek()[..], &m.iv()[..]] {
        for enc in [
            hex::encode(secret),
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .to_lowercase(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(secret)
                .to_lowercase(),
        ] {
            assert!(!hay.contains(&enc), "checkpoint contains key material");
        }
        assert!(!text.windows(secret.len()).any(|w| w == secret));
    }

    let before = env
        .server
        .stats
        .part_bytes_in
        .load(std::sync::atomic::Ordering::Relaxed);
    let (listener, seen) = recorder();
    let out = env
        .upload("r", &src)
        .progress(listener)
        .send()
        .await
        .unwrap();
    let after = env
        .server
        .stats
        .part_bytes_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(out.resumed_bytes, 2 * PART, "{out:?}");
    assert_eq!(out.resumed_bytes + out.bytes_sent, data.len() as u64);
    assert_eq!(
        after - before,
        out.bytes_sent,
        "only the missing parts are sent"
    );
    assert!(matches!(
        seen.lock().unwrap()[0].event,
        ProgressEvent::Started { resumed_bytes, .. } if resumed_bytes == out.resumed_bytes
    ));
    assert!(env.read("r").await == data);
    assert!(env.checkpoints().is_empty());
}

#[tokio::test]
async fn changed_source_or_vanished_upload_starts_over() {
    let env = Env::new().await;
    let data = pattern((4 * PART) as usize, 5);
    let src = env.write("src", &data);
    env.upload_interrupted("c", &src, 1).await;
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.checkpoints()[0]).unwrap()).unwrap();
    let old_id = cp["upload_id"].as_str().unwrap().to_owned();

    // The file changes (same size, new content and mtime): never a mixed object.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let data2 = pattern((4 * PART) as usize, 6);
    std::fs::write(&src, &data2).unwrap();
    let out = env.upload("c", &src).send().await.unwrap();
    let why = out.restarted.expect("a restart reason");
    assert!(why.contains("changed") && why.contains(&old_id), "{why}");
    assert_eq!(out.resumed_bytes, 0);
    assert!(env.read("c").await == data2);
    // The stale upload was aborted.
    let listed = env
        .cb
        .client()
        .list_parts()
        .bucket("bkt")
        .key("c")
        .upload_id(&old_id)
        .send()
        .await;
    assert!(listed.is_err(), "stale upload still exists");

    // The upload vanishes from the server (aborted by a lifecycle rule, say).
    env.upload_interrupted("v", &src, 1).await;
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env.checkpoints()[0]).unwrap()).unwrap();
    env.cb
        .client()
        .abort_multipart_upload()
        .bucket("bkt")
        .key("v")
        .upload_id(cp["upload_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let out = env.upload("v", &src).send().await.unwrap();
    assert!(out.restarted.unwrap().contains("no longer exists"));
    assert!(env.read("v").await == data2);
}

#[tokio::test]
async fn finished_upload_with_stale_checkpoint_is_recognised() {
    let env = Env::new().await;
    let data = pattern((3 * PART) as usize, 7);
    let src = env.write("src", &data);
    env.upload_interrupted("f", &src, 1).await;
    let cp_path = env.checkpoints()[0].clone();
    let saved = std::fs::read(&cp_path).unwrap();
    env.upload("f", &src).send().await.unwrap();
    // As if the process died after CompleteMultipartUpload but before removing the checkpoint.
    std::fs::write(&cp_path, saved).unwrap();
    let before = env
        .server
        .stats
        .parts_in
        .load(std::sync::atomic::Ordering::Relaxed);
    let out = env.upload("f", &src).send().await.unwrap();
    assert_eq!((out.resumed_bytes, out.bytes_sent), (data.len() as u64, 0));
    assert_eq!(
        env.server
            .stats
            .parts_in
            .load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    assert!(env.checkpoints().is_empty());
    assert!(env.read("f").await == data);
}

#[tokio::test]
async fn tampered_or_foreign_checkpoints_are_refused() {
    let env = Env::new().await;
    let data = pattern((3 * PART) as usize, 8);
    let src = env.write("src", &data);
    let src2 = env.write("src2", &data);
    env.upload_interrupted("t", &src, 1).await;
    let cp_path = env.checkpoints()[0].clone();
    let original = std::fs::read(&cp_path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&original).unwrap();

    // 1. Key material swapped for another valid wrap under the same key (a different CEK).
    let other = env
        .cb
        .put_object()
        .key("other")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    let mut edited = json.clone();
    let other_meta = other.envelope.to_metadata();
    for h in ["client-side-encryption-key", "client-side-encryption-start"] {
        edited["envelope"][h] = other_meta[h].clone().into();
    }
    std::fs::write(&cp_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = env.upload("t", &src).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCheckpoint, "{err}");

    // 2. Key material corrupted: cannot unwrap.
    let mut edited = json.clone();
    edited["envelope"]["client-side-encryption-key"] = "AAAA".into();
    std::fs::write(&cp_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = env.upload("t", &src).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCheckpoint, "{err}");

    // 3. Part list edited (claims a part that was never sent).
    let mut edited = json.clone();
    edited["parts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"part_number": 3, "e_tag": "\"x\"", "size": PART}));
    std::fs::write(&cp_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = env.upload("t", &src).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCheckpoint, "{err}");

    // 4. A checkpoint of another object, planted where this transfer's would be.
    std::fs::write(&cp_path, &original).unwrap();
    let foreign = env.upload("t2", &src2);
    let out = foreign.send().await.unwrap(); // writes and removes its own checkpoint
    assert_eq!(out.resumed_bytes, 0);
    env.upload_interrupted("t2", &src2, 1).await;
    let t2_cp = env
        .checkpoints()
        .into_iter()
        .find(|p| *p != cp_path)
        .unwrap();
    std::fs::copy(&cp_path, &t2_cp).unwrap();
    let err = env.upload("t2", &src2).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCheckpoint);
    assert!(err.to_string().contains("another transfer"), "{err}");

    // 5. Garbage.
    std::fs::write(&cp_path, b"{\"format\":").unwrap();
    let err = env.upload("t", &src).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidCheckpoint);

    // The untouched checkpoint still resumes.
    std::fs::write(&cp_path, &original).unwrap();
    let out = env.upload("t", &src).send().await.unwrap();
    assert!(out.resumed_bytes > 0);
    assert!(env.read("t").await == data);
}

#[tokio::test]
async fn interrupted_download_resumes_and_appears_only_when_complete() {
    let env = Env::new().await;
    let data = pattern((5 * PART + 3) as usize, 9);
    let src = env.write("src", &data);
    env.upload("d", &src).send().await.unwrap();
    let dst = env.path("dst");
    env.download_interrupted("d", &dst, 2).await;
    assert!(
        !dst.exists(),
        "the destination must not appear before it is complete"
    );
    assert_eq!(env.checkpoints().len(), 1);

    let before = env
        .server
        .stats
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed);
    let out = env.download("d", &dst).send().await.unwrap();
    let after = env
        .server
        .stats
        .bytes_out
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(out.resumed_bytes, 2 * PART, "{out:?}");
    assert_eq!(out.resumed_bytes + out.bytes_received, data.len() as u64);
    // Plus the integrity tags of the chunks fetched (16 bytes per 1 MiB chunk, the final
    // chunk included), read from the sidecar by range.
    let chunk = 1u64 << 20;
    let tag_bytes = ((data.len() as u64) / chunk - 2 * PART / chunk + 1) * 16;
    // The stream with the short span (5 MiB and 3 bytes) takes over the last range of the
    // other (two ranges of 5 MiB), whose GET then stops there: what the server had already
    // sent past that point is wasted, well under a range. A done range fetched again would
    // add a whole one.
    let sent = after - before;
    let needed = out.bytes_received + tag_bytes;
    assert!(
        (needed..needed + PART).contains(&sent),
        "only the missing ranges (and their tags) are fetched: {sent} bytes sent, {needed} needed"
    );
    assert!(std::fs::read(&dst).unwrap() == data);
    assert!(env.checkpoints().is_empty());
}

#[tokio::test]
async fn download_restarts_when_the_object_changed() {
    let env = Env::new().await;
    let data = pattern((4 * PART) as usize, 10);
    let src = env.write("src", &data);
    env.upload("o", &src).send().await.unwrap();
    let dst = env.path("dst");
    env.download_interrupted("o", &dst, 1).await;
    let data2 = pattern((4 * PART) as usize, 11);
    std::fs::write(&src, &data2).unwrap();
    env.upload("o", &src).send().await.unwrap();
    let out = env.download("o", &dst).send().await.unwrap();
    assert!(out.restarted.unwrap().contains("changed"));
    assert_eq!(out.resumed_bytes, 0);
    assert!(std::fs::read(&dst).unwrap() == data2);
}

#[tokio::test]
async fn failed_downloads_leave_no_file() {
    // A server that cuts every body short: retried, then a Truncated error, no output file.
    let env = Env::with(Fault::TruncateBody).await;
    let data = pattern((2 * PART) as usize, 12);
    let src = env.write("src", &data);
    env.upload("x", &src).send().await.unwrap();
    let dst = env.path("dst");
    let err = env
        .download("x", &dst)
        .max_attempts(2)
        .resumable(false)
        .send()
        .await
        .unwrap_err();
    // (The integrity tags are read first, and their cut-off body may surface as a broken
    // connection.)
    assert!(
        matches!(err.kind(), ErrorKind::Truncated | ErrorKind::Transport),
        "{err}"
    );
    assert!(err.is_retryable(), "{err}");
    assert!(!dst.exists());
    // Nor a hidden partial file (the earlier check could not see it).
    assert!(partial_files(env.dir.path()).is_empty());
    // A resumable one that fails before it learns the object (the first GET's integrity tags
    // are cut off too) has nothing to resume from, so it leaves nothing either.
    let err = env
        .download("x", &dst)
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Truncated | ErrorKind::Transport),
        "{err}"
    );
    assert!(partial_files(env.dir.path()).is_empty());
    assert!(env.checkpoints().is_empty());
    // Once whole ranges are in, a failed resumable one keeps its partial file and checkpoint.
    let env = Env::new().await;
    let src = env.write("src", &data);
    env.upload("x", &src).send().await.unwrap();
    let dst = env.path("dst");
    env.server.stats.limit_get_bytes(PART as i64 + 100);
    env.download("x", &dst)
        .concurrency(1)
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(partial_files(env.dir.path()).len(), 1);
    assert_eq!(env.checkpoints().len(), 1);

    // Wrong key: refused before any byte is written.
    let env = Env::new().await;
    let src = env.write("src", &data);
    env.upload("y", &src).send().await.unwrap();
    let wrong = CryptoBucket::new(
        env.server.client().await,
        "bkt",
        Keyring::single(rsa("b"), MatDesc::new().with("k", "a")),
    );
    let dst = env.path("dst");
    let err = wrong
        .download_file()
        .key("y")
        .path(&dst)
        .checkpoint_dir(env.cp_dir())
        .send()
        .await
        .unwrap_err();
    // (Decided by the key commitment: the object has integrity data.)
    assert_eq!(err.kind(), ErrorKind::CommitmentMismatch);
    assert!(!dst.exists());
    assert!(env.checkpoints().is_empty());
}

#[tokio::test]
async fn bad_options_are_refused() {
    let env = Env::new().await;
    let src = env.write("src", &pattern(100, 1));
    let err = env
        .upload("k", &src)
        .concurrency(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let big = env.write("big", &pattern((PART + 1) as usize, 1));
    let err = env
        .upload("k", &big)
        .multipart_threshold(0)
        .part_size(PartSize::Target(PART + 1))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("multiple of 16"));
    let err = env.upload("k", env.dir.path()).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = env
        .download("missing", &env.path("m"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_destination_that_names_a_directory_is_refused_before_any_request() {
    let env = Env::new().await;
    let data = pattern((2 * PART) as usize + 7, 5);
    let src = env.write("src", &data);
    env.upload("k", &src).send().await.unwrap();
    let stats = &env.server.stats;
    let existing = env.dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let slash = format!("{}/", env.path("new").display());
    for dest in [existing.clone(), PathBuf::from(&slash)] {
        let gets = stats.gets_in.load(Ordering::SeqCst);
        let err = env.download("k", &dest).send().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("directory"), "{err}");
        // Refused up front: not after fetching the object and failing the final rename.
        assert_eq!(stats.gets_in.load(Ordering::SeqCst), gets, "{err}");
    }
    // A one-GET save into a directory: refused, nothing left beside it.
    let out = env.cb.get_object().key("k").send().await.unwrap();
    let err = out.save(&existing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(existing.is_dir());
    assert!(partial_files(env.dir.path()).is_empty());
    assert!(env.checkpoints().is_empty());
    // A symlink is a fine destination: the download replaces the link, not its target.
    let target = env.path("target");
    std::fs::write(&target, b"keep").unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    env.download("k", &link).send().await.unwrap();
    assert!(std::fs::read(&link).unwrap() == data);
    assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[tokio::test]
async fn a_single_get_saves_exactly_its_plaintext() {
    let env = Env::new().await;
    let data = pattern((2 * PART) as usize + 7, 17);
    let src = env.write("src", &data);
    env.upload("k", &src).send().await.unwrap();
    // The whole object, and a range that starts and ends off any chunk or write boundary.
    let whole = env.path("whole");
    let out = env.cb.get_object().key("k").send().await.unwrap();
    assert_eq!(out.save(&whole).await.unwrap(), data.len() as u64);
    assert!(
        std::fs::read(&whole).unwrap() == data,
        "the whole object differs"
    );
    let (first, last) = (1_000u64, 3 * (1 << 20) + 5);
    let part = env.path("part");
    let out = env
        .cb
        .get_object()
        .key("k")
        .range(format!("{first}-{last}").parse().unwrap())
        .send()
        .await
        .unwrap();
    out.save_unsynced(&part).await.unwrap();
    assert!(
        std::fs::read(&part).unwrap() == data[first as usize..=last as usize],
        "the range differs"
    );
    assert!(partial_files(env.dir.path()).is_empty());
}

#[tokio::test]
async fn throttled_parts_and_ranges_are_retried_with_the_same_bytes() {
    let env = Env::new().await;
    let data = pattern((3 * PART + 9) as usize, 13);
    let src = env.write("src", &data);
    // The store answers SlowDown after one part; the retry notice lifts the throttle.
    let stats = env.server.stats.clone();
    let retries = Arc::new(Mutex::new(Vec::new()));
    let r = retries.clone();
    let listener = ProgressListener::new(move |p| {
        if let ProgressEvent::Retrying { reason, .. } = &p.event {
            r.lock().unwrap().push(reason.clone());
            stats.limit(i64::MAX, i64::MAX);
        }
    });
    env.server.stats.limit(1, i64::MAX);
    let out = env
        .upload("slow", &src)
        .progress(listener.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.resumed_bytes, 0);
    // SlowDown, or a reset connection when the store answers before reading the body.
    let seen = retries.lock().unwrap().clone();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|m| m.contains("SlowDown") || m.contains("connection")),
        "{seen:?}"
    );
    assert!(env.read("slow").await == data);

    retries.lock().unwrap().clear();
    env.server.stats.limit(i64::MAX, 1);
    let dst = env.path("slow.out");
    env.download("slow", &dst)
        .progress(listener)
        .send()
        .await
        .unwrap();
    assert!(!retries.lock().unwrap().is_empty());
    assert!(std::fs::read(&dst).unwrap() == data);
}

/// A download does not wait for its slowest stream: a stream that has fetched its span takes
/// over the back half of one still running, whose GET stops where the other one starts. Here
/// the connection of the first span is slow (4 MiB/s) and starved (it sends nothing while
/// another GET streams, so what it carries does not depend on the machine's speed): without
/// this it carries its whole span, 35 of the 80 MiB, while the other stream idles; with it,
/// the other stream takes 3 of its 7 ranges, then 2 more, and it keeps 2.
#[tokio::test]
async fn a_slow_stream_hands_the_rest_of_its_span_to_an_idle_one() {
    let env = Env::new().await;
    let data = pattern((16 * PART) as usize, 61);
    env.upload("slow", &env.write("slow", &data))
        .send()
        .await
        .unwrap();
    // 16 ranges, 2 streams: spans 1..=8 and 9..=16. The pinning GET brings range 1, so the
    // first span's own GET starts at range 2: that one is slow.
    let stats = &env.server.stats;
    stats.slow_get_rate.store(4 << 20, Ordering::SeqCst);
    stats.slow_gets_starve.store(true, Ordering::SeqCst);
    stats.slow_gets_at.store(PART, Ordering::SeqCst);
    let dst = env.path("slow.out");
    let (listener, seen) = recorder();
    let out = env
        .download("slow", &dst)
        .progress(listener)
        .send()
        .await
        .unwrap();
    assert!(std::fs::read(&dst).unwrap() == data);
    assert_eq!(out.bytes_received, data.len() as u64, "{out:?}");
    let slow = stats.slow_bytes_out.load(Ordering::SeqCst);
    assert!(slow > 0, "the slow GET was never made");
    assert!(
        slow <= 3 * PART,
        "the slow connection carried {slow} bytes: its span was not shared"
    );
    // Every range was recorded once, by one stream or the other.
    let mut done: Vec<u32> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| match p.event {
            ProgressEvent::PartDone { part_number, .. } => Some(part_number),
            _ => None,
        })
        .collect();
    done.sort_unstable();
    assert_eq!(done, (1..=16).collect::<Vec<u32>>());
}

/// A download without durability (`durable(false)`, CLI `--no-fsync`; its lack of syncs is
/// checked on the system calls in `cli.rs`) keeps no checkpoint, however many ranges it has:
/// an interrupted one leaves nothing behind, and the next run fetches everything.
#[tokio::test]
async fn a_download_without_durability_keeps_no_checkpoint() {
    let env = Env::new().await;
    let data = pattern((5 * PART + 3) as usize, 71);
    env.upload("scratch", &env.write("scratch", &data))
        .send()
        .await
        .unwrap();
    let dst = env.path("scratch.out");
    // `resumable(true)` after it does not bring a checkpoint back.
    env.interrupt(
        env.download("scratch", &dst).durable(false).resumable(true),
        2,
    )
    .await;
    assert!(!dst.exists());
    assert!(env.checkpoints().is_empty(), "{:?}", env.checkpoints());
    assert!(partial_files(env.dir.path()).is_empty());
    let out = env
        .download("scratch", &dst)
        .durable(false)
        .send()
        .await
        .unwrap();
    assert_eq!(out.resumed_bytes, 0, "{out:?}");
    assert_eq!(out.bytes_received, data.len() as u64);
    assert!(std::fs::read(&dst).unwrap() == data);
    assert!(env.checkpoints().is_empty());
}

#[tokio::test]
async fn download_of_a_truncated_object_is_refused_before_writing() {
    let env = Env::new().await;
    env.cb
        .put_object()
        .key("t")
        .body(pattern(50_000, 14))
        .send()
        .await
        .unwrap();
    // Same metadata, shorter body: the object no longer matches its recorded length.
    let (body, meta) = support::raw_object(&env.cb, "t").await;
    env.cb
        .client()
        .put_object()
        .bucket("bkt")
        .key("t")
        .set_metadata(Some(meta))
        .body(body[..40_000].to_vec().into())
        .send()
        .await
        .unwrap();
    let dst = env.path("t.out");
    let err = env.download("t", &dst).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SizeMismatch, "{err}");
    assert!(!dst.exists());
    assert!(
        env.checkpoints().is_empty(),
        "nothing started, nothing to resume"
    );
}

/// Defect: the partial file was named after the destination only and trusted by its size, so
/// two interrupted downloads of different objects to one destination mixed into one file.
#[tokio::test]
async fn interrupted_downloads_of_two_objects_to_one_destination_never_mix() {
    let env = Env::new().await;
    let one = pattern((4 * PART) as usize, 21);
    let two = pattern((4 * PART) as usize, 22);
    env.upload("run1/m.bin", &env.write("one", &one))
        .send()
        .await
        .unwrap();
    env.upload("run2/m.bin", &env.write("two", &two))
        .send()
        .await
        .unwrap();
    let dst = env.path("m.bin");
    env.download_interrupted("run1/m.bin", &dst, 2).await;
    env.download_interrupted("run2/m.bin", &dst, 1).await;
    // Each run has a partial file of its own, private to the user.
    let partials = partial_files(env.dir.path());
    assert_eq!(partials.len(), 2, "{partials:?}");
    #[cfg(unix)]
    for p in &partials {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let out = env.download("run1/m.bin", &dst).send().await.unwrap();
    assert_eq!(out.resumed_bytes, 2 * PART, "run 1 resumes its own ranges");
    assert!(
        std::fs::read(&dst).unwrap() == one,
        "run 1 is object 1 alone"
    );
    let out = env.download("run2/m.bin", &dst).send().await.unwrap();
    assert_eq!(out.resumed_bytes, PART);
    assert!(
        std::fs::read(&dst).unwrap() == two,
        "run 2 is object 2 alone"
    );
    assert!(partial_files(env.dir.path()).is_empty());
    assert!(env.checkpoints().is_empty());
}

/// A partial file that is no longer the one the checkpoint recorded (replaced by another file
/// of the same size, or by a symlink) is never taken over.
#[tokio::test]
async fn a_replaced_partial_file_is_not_resumed() {
    let env = Env::new().await;
    let data = pattern((3 * PART) as usize, 23);
    env.upload("r", &env.write("src", &data))
        .send()
        .await
        .unwrap();
    let dst = env.path("r.out");
    for replacement in ["same-size file", "symlink"] {
        env.download_interrupted("r", &dst, 1).await;
        let partials = partial_files(env.dir.path());
        assert_eq!(partials.len(), 1, "{partials:?}");
        let partial = &partials[0];
        std::fs::remove_file(partial).unwrap();
        let decoy = env.path("decoy");
        std::fs::write(&decoy, vec![0x55; data.len()]).unwrap();
        match replacement {
            "symlink" => std::os::unix::fs::symlink(&decoy, partial).unwrap(),
            _ => std::fs::copy(&decoy, partial).map(|_| ()).unwrap(),
        }
        let out = env.download("r", &dst).send().await.unwrap();
        let why = out
            .restarted
            .unwrap_or_else(|| panic!("{replacement}: a restart reason"));
        assert!(why.contains("partial file"), "{replacement}: {why}");
        assert_eq!(out.resumed_bytes, 0, "{replacement}");
        assert!(std::fs::read(&dst).unwrap() == data, "{replacement}");
        assert!(
            std::fs::read(&decoy).unwrap() == vec![0x55; data.len()],
            "{replacement}: the decoy was written through"
        );
        std::fs::remove_file(&decoy).unwrap();
        // The replacement is not ours: it stays (we delete only files we created).
        let _ = std::fs::remove_file(partial);
    }
}

/// Two runs of the same download at once: the second is refused while the first holds the
/// transfer's lock.
#[tokio::test]
async fn a_second_run_of_the_same_transfer_is_refused_while_one_runs() {
    let env = Env::new().await;
    let data = pattern((2 * PART) as usize, 24);
    env.upload("l", &env.write("src", &data))
        .send()
        .await
        .unwrap();
    let dst = env.path("l.out");
    env.download_interrupted("l", &dst, 1).await;
    // Another process holds the transfer's lock (as a running `cryptobucket get` does).
    let cp = env.checkpoints().pop().unwrap();
    let lock = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(cp.with_extension("lock"))
        .unwrap();
    lock.try_lock().expect("no run holds the lock now");
    let err = env.download("l", &dst).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(!dst.exists());
    lock.unlock().unwrap();
    env.download("l", &dst).send().await.unwrap();
    assert!(std::fs::read(&dst).unwrap() == data);
}

/// Defect: a store that ignores If-Match (s3s-fs does on GET) let an overwrite in the middle
/// of a download produce a file mixing both versions. Every response is now checked against
/// the pinned ETag, size and wrapped key; the download starts over from the new version.
///
/// The link breaks after the first range, the object is overwritten while the download waits
/// to retry, and the retried GET (If-Match ignored) answers with the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_overwritten_mid_download_restarts_and_never_mixes() {
    let env = Env::new().await;
    let old = pattern((3 * PART) as usize, 25);
    let new = pattern((3 * PART) as usize, 26);
    env.upload("o", &env.write("src", &old))
        .send()
        .await
        .unwrap();
    let (endpoint, stats) = (env.server.endpoint.clone(), env.server.stats.clone());
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fired.clone();
    let new2 = new.clone();
    let listener = ProgressListener::new(move |p| {
        if matches!(p.event, ProgressEvent::Retrying { .. })
            && !f.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            support::put_blocking(&endpoint, keyring_a(), "o", new2.clone());
            stats.limit_get_bytes(i64::MAX);
        }
    });
    env.server.stats.limit_get_bytes(PART as i64 + 100);
    let dst = env.path("o.out");
    let out = env
        .download("o", &dst)
        .concurrency(1)
        .progress(listener)
        .send()
        .await
        .unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    let why = out.restarted.expect("the download restarted");
    assert!(why.contains("changed"), "{why}");
    let got = std::fs::read(&dst).unwrap();
    assert!(got == new, "the file is the new version, whole");
    assert!(partial_files(env.dir.path()).is_empty());

    // An object that changes every time: a bounded number of restarts, then a typed error,
    // and nothing on disk.
    let (endpoint, stats) = (env.server.endpoint.clone(), env.server.stats.clone());
    let round = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = round.clone();
    let listener = ProgressListener::new(move |p| {
        if let ProgressEvent::Retrying { .. } = p.event {
            let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            support::put_blocking(
                &endpoint,
                keyring_a(),
                "o",
                pattern((3 * PART) as usize, 100 + n),
            );
            // The next round's first GET breaks after one range again.
            stats.limit_get_bytes(PART as i64 + 100);
        }
    });
    env.server.stats.limit_get_bytes(PART as i64 + 100);
    let dst = env.path("o2.out");
    let err = env
        .download("o", &dst)
        .concurrency(1)
        .progress(listener)
        .send()
        .await
        .unwrap_err();
    env.server.stats.limit_get_bytes(i64::MAX);
    assert_eq!(err.kind(), ErrorKind::Changed, "{err}");
    assert!(err.is_retryable());
    assert_eq!(
        round.load(std::sync::atomic::Ordering::SeqCst),
        u64::from(cryptobucket::resumable::MAX_RESTARTS) + 1
    );
    assert!(!dst.exists());
    assert!(partial_files(env.dir.path()).is_empty());
    assert!(env.checkpoints().is_empty());
}

/// Defect: a HEAD without Content-Length was taken as size 0, so any object "downloaded" as an
/// empty file. (A download learns a non-empty object from its first GET, which carries the
/// length; it asks a HEAD when there is no first byte to GET, or when it resumes.)
#[tokio::test]
async fn a_head_without_content_length_is_an_invalid_response() {
    let env = Env::with(Fault::HeadWithoutLength).await;
    let data = pattern(3 * PART as usize, 27);
    env.cb
        .put_object()
        .key("h")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    env.cb
        .put_object()
        .key("e")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    let err = env.cb.head_object().key("h").send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse);
    // An empty object: its HEAD must not pass for size 0 either.
    let dst = env.path("e.out");
    let err = env.download("e", &dst).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("Content-Length"), "{err}");
    assert!(!dst.exists());
    // A resumed download pins with a HEAD: the interrupted run's file is kept, nothing is
    // published, and the error names the missing length.
    let dst = env.path("h.out");
    env.server.stats.limit_get_bytes(PART as i64 + 100);
    env.download("h", &dst)
        .concurrency(1)
        .max_attempts(1)
        .send()
        .await
        .unwrap_err();
    env.server.stats.limit_get_bytes(i64::MAX);
    assert_eq!(env.checkpoints().len(), 1);
    let err = env.download("h", &dst).send().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("Content-Length"), "{err}");
    assert!(!dst.exists());
    assert_eq!(env.checkpoints().len(), 1);
}

/// A 206 without Content-Range is accepted only when the body length proves what it is.
#[tokio::test]
async fn a_partial_answer_without_content_range_is_checked_by_its_length() {
    let env = Env::with(Fault::RangeWithoutContentRange).await;
    let data = pattern((2 * PART + 100) as usize, 28);
    env.upload("p", &env.write("src", &data))
        .send()
        .await
        .unwrap();
    // Ranged reads: the body is exactly the asked range of the recorded size.
    for (first, last) in [
        (0u64, 99u64),
        (PART - 3, PART + 70),
        (2 * PART, 2 * PART + 99),
    ] {
        let got = env
            .cb
            .get_object()
            .key("p")
            .range(cryptobucket::ByteRange::Inclusive { first, last })
            .send()
            .await
            .unwrap();
        assert_eq!(got.object_size, data.len() as u64);
        let bytes = got.body.collect().await.unwrap();
        assert!(
            bytes[..] == data[first as usize..=last as usize],
            "{first}-{last}"
        );
    }
    // Parallel ranges of a whole-file download.
    let dst = env.path("p.out");
    env.download("p", &dst).send().await.unwrap();
    assert!(std::fs::read(&dst).unwrap() == data);
    // A plain object records no size: the size comes from a HEAD, and still only a body of
    // the range's length is taken as the range.
    let plain = CryptoBucket::builder()
        .client(env.server.client().await)
        .bucket("bkt")
        .keyring(keyring_a())
        .unencrypted_policy(cryptobucket::UnencryptedPolicy::PassThrough)
        .build()
        .unwrap();
    env.cb
        .client()
        .put_object()
        .bucket("bkt")
        .key("plain")
        .body(data[..1000].to_vec().into())
        .send()
        .await
        .unwrap();
    let got = plain
        .get_object()
        .key("plain")
        .range(cryptobucket::ByteRange::Inclusive {
            first: 10,
            last: 19,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(got.object_size, 1000);
    assert!(got.body.collect().await.unwrap()[..] == data[10..20]);
}

/// Defect: a resumed upload identified its source by size and mtime only, so a same-size
/// replacement with a preserved mtime (`cp -p`, `rsync -a`) produced a mixed object.
#[tokio::test]
async fn a_same_size_source_with_preserved_mtime_starts_over() {
    let env = Env::new().await;
    let data = pattern((4 * PART) as usize, 30);
    let src = env.write("src", &data);
    let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
    for (n, how) in ["renamed over (rsync -a)", "rewritten in place (cp -p)"]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{n}");
        env.upload_interrupted(&key, &src, 1).await;
        let new = pattern((4 * PART) as usize, 31 + n as u64);
        if n == 0 {
            let tmp = env.write("incoming", &new);
            std::fs::File::options()
                .write(true)
                .open(&tmp)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
            std::fs::rename(&tmp, &src).unwrap();
        } else {
            std::fs::write(&src, &new).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&src)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        assert_eq!(std::fs::metadata(&src).unwrap().modified().unwrap(), mtime);
        let out = env.upload(&key, &src).send().await.unwrap();
        let why = out.restarted.expect("a restart");
        assert!(why.contains("changed"), "{how}: {why}");
        assert_eq!(out.resumed_bytes, 0, "{how}");
        assert!(
            env.read(&key).await == new,
            "{how}: the object is the new file alone"
        );
    }
}

/// Defect: a store that claims more ListParts pages but repeats its marker made the resume
/// loop forever.
#[tokio::test]
async fn a_list_parts_marker_that_does_not_advance_is_an_error() {
    let env = Env::with(Fault::ListPartsRepeatsMarker).await;
    let data = pattern((3 * PART) as usize, 33);
    let src = env.write("src", &data);
    env.upload_interrupted("lp", &src, 1).await;
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.upload("lp", &src).send(),
    )
    .await
    .expect("the resume must not loop")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{err}");
    assert!(err.to_string().contains("ListParts"), "{err}");
}

/// A listener that cancels `token` once `after` parts or ranges are done.
fn cancel_after(token: &cryptobucket::CancellationToken, after: usize) -> ProgressListener {
    let (token, done) = (token.clone(), Arc::new(Mutex::new(0usize)));
    ProgressListener::new(move |p| {
        if let ProgressEvent::PartDone { .. } = p.event {
            let mut n = done.lock().unwrap();
            *n += 1;
            if *n == after {
                token.cancel();
            }
        }
    })
}

#[tokio::test]
async fn cancelled_transfers_stop_keep_their_checkpoint_and_resume_at_once() {
    let env = Env::new().await;
    let data = pattern((8 * PART + 77) as usize, 31);
    let src = env.write("src", &data);
    let token = cryptobucket::CancellationToken::new();
    let err = env
        .upload("c", &src)
        .progress(cancel_after(&token, 2))
        .cancellation_token(token.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(err.to_string().contains("resumes"), "{err}");
    let open_uploads = || env.server.open_uploads();
    assert_eq!(
        open_uploads(),
        1,
        "a resumable upload keeps its multipart upload"
    );
    assert_eq!(env.checkpoints().len(), 1);
    // No pause: the checkpoint writer finished before the transfer's lock was released.
    let out = env.upload("c", &src).send().await.unwrap();
    assert!(out.resumed_bytes >= 2 * PART, "{out:?}");
    assert!(out.bytes_sent <= 7 * PART, "{out:?}");
    assert!(env.read("c").await == data);

    let dst = env.path("c.out");
    let token = cryptobucket::CancellationToken::new();
    let err = env
        .download("c", &dst)
        .progress(cancel_after(&token, 3))
        .cancellation_token(token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert!(!dst.exists());
    let out = env.download("c", &dst).send().await.unwrap();
    assert!(out.resumed_bytes >= 3 * PART, "{out:?}");
    assert!(std::fs::read(&dst).unwrap() == data);
    assert!(env.checkpoints().is_empty());

    // Not resumable: a cancelled upload aborts its multipart upload and keeps nothing.
    let token = cryptobucket::CancellationToken::new();
    let err = env
        .upload("d", &src)
        .resumable(false)
        .progress(cancel_after(&token, 1))
        .cancellation_token(token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(!err.to_string().contains("resumes"), "{err}");
    assert!(env.checkpoints().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while open_uploads() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled upload was not aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A cancelled download that has nothing to resume from (not resumable, or an object of one
/// range, which gets no checkpoint) leaves no partial file with decrypted bytes behind.
#[tokio::test]
async fn cancelled_downloads_without_a_checkpoint_leave_no_partial_file() {
    let env = Env::new().await;
    let small = pattern(1000, 41);
    let large = pattern((4 * PART) as usize, 42);
    env.upload("small", &env.write("small", &small))
        .send()
        .await
        .unwrap();
    env.upload("large", &env.write("large", &large))
        .send()
        .await
        .unwrap();
    for (key, resumable, after) in [("small", true, None), ("large", false, Some(1))] {
        let token = cryptobucket::CancellationToken::new();
        // Cancel once the download has started (`after` None) or after `after` ranges.
        let listener = match after {
            Some(n) => cancel_after(&token, n),
            None => {
                let t = token.clone();
                ProgressListener::new(move |p| {
                    if let ProgressEvent::Started { .. } = p.event {
                        t.cancel();
                    }
                })
            }
        };
        let dst = env.path(&format!("{key}.out"));
        let err = env
            .download(key, &dst)
            .concurrency(1)
            .resumable(resumable)
            .progress(listener)
            .cancellation_token(token)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{key}: {err}");
        assert!(!dst.exists(), "{key}");
        assert!(env.checkpoints().is_empty(), "{key}");
        assert!(partial_files(env.dir.path()).is_empty(), "{key}");
    }
}

/// A tmpfs of `size` mounted on `dir` for as long as the guard lives (tests run as root, as
/// the FUSE tests do).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs on {} (needs root)", dir.display());
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_download_too_large_for_the_disk_fails_before_writing() {
    let env = Env::new().await;
    let data = pattern(4 << 20, 43);
    env.upload("big", &env.write("big", &data))
        .send()
        .await
        .unwrap();
    // 1 MiB of space for a 4 MiB file: the space is reserved when the partial file is made,
    // so the download fails there, not after writing a MiB of it.
    let disk = SmallDisk::mount(env.path("small"), "1m");
    let dst = disk.0.join("big.out");
    for resumable in [true, false] {
        let err = env
            .download("big", &dst)
            .resumable(resumable)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        let expected = format!(
            "s3://bkt/big: cannot allocate 4194304 bytes for {}",
            dst.display()
        );
        assert!(text.starts_with(&expected), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        let left: Vec<_> = std::fs::read_dir(&disk.0).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(env.checkpoints().is_empty());
    }
}

/// Large files of a tree go one after another, but each starts once the one before has sent
/// its parts: that file's CompleteMultipartUpload (slow here, as a store assembling a large
/// object can be) overlaps the next file's parts instead of stalling the tree. What arrives is
/// the tree, whole.
#[tokio::test]
async fn a_tree_sends_its_next_large_file_while_the_last_one_completes() {
    let env = Env::new().await;
    let src = env.path("tree");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3u64 {
        std::fs::write(
            src.join(format!("shard-{i}.bin")),
            pattern((2 * PART + 1000) as usize, 50 + i),
        )
        .unwrap();
    }
    env.server
        .stats
        .complete_delay_ms
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let out = env
        .cb
        .upload_dir()
        .path(&src)
        .prefix("tree/")
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .checkpoint_dir(env.cp_dir())
        .send()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(out.copied.len(), 3);
    let overlapped = env
        .server
        .stats
        .parts_during_complete
        .load(std::sync::atomic::Ordering::SeqCst);
    // Two of the three completions have a next file whose three parts can overlap them.
    assert!(
        overlapped >= 2,
        "{overlapped} parts sent during a completion"
    );
    // Large files that fail before sending any part (their uploads cannot start) fail each
    // alone, and the tree does not wait for parts that never come.
    env.server
        .stats
        .failing_creates
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let partly = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.cb
            .upload_dir()
            .path(&src)
            .prefix("again/")
            .part_size(PartSize::Target(PART))
            .max_attempts(1)
            .checkpoint_dir(env.cp_dir())
            .send(),
    )
    .await
    .expect("the tree hung after a file failed")
    .unwrap();
    assert_eq!((partly.copied.len(), partly.failed.len()), (0, 3));
    for (_, _, e) in &partly.failed {
        assert_eq!(e.service_code(), Some("SlowDown"), "{e}");
    }
    env.server
        .stats
        .failing_creates
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let back = env.path("back");
    env.cb
        .download_dir()
        .prefix("tree/")
        .path(&back)
        .checkpoint_dir(env.cp_dir())
        .send()
        .await
        .unwrap()
        .into_result()
        .unwrap();
    for i in 0..3 {
        let name = format!("shard-{i}.bin");
        assert_eq!(
            std::fs::read(back.join(&name)).unwrap(),
            std::fs::read(src.join(&name)).unwrap(),
            "{name}"
        );
    }
    assert!(env.checkpoints().is_empty());
}

/// A Hugging Face cache snapshot is all symlinks into its blob store: the upload copies what
/// the links point to, under the links' names, and lists what it cannot copy (a FIFO, a link
/// whose target is gone, a linked directory that contains its link) instead of dropping it
/// silently. With `follow_symlinks(false)` the links are left out, and listed.
#[tokio::test]
async fn a_tree_of_symlinks_uploads_their_targets_and_lists_what_it_leaves_out() {
    use std::os::unix::fs::symlink;
    let env = Env::new().await;
    let root = env.path("hub");
    let snap = root.join("snapshots/rev1");
    std::fs::create_dir_all(snap.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    let weights = pattern((PART + 33) as usize, 61);
    std::fs::write(root.join("blobs/aaa"), &weights).unwrap();
    std::fs::write(root.join("blobs/bbb"), b"{\"layers\": 2}").unwrap();
    symlink("../../blobs/aaa", snap.join("model.safetensors")).unwrap();
    symlink("../../../blobs/bbb", snap.join("sub/config.json")).unwrap();
    symlink("sub", snap.join("linked")).unwrap();
    symlink("..", snap.join("sub/up")).unwrap();
    symlink("gone", snap.join("broken")).unwrap();
    let fifo = snap.join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let upload = |follow: bool, prefix: &str| {
        env.cb
            .upload_dir()
            .path(&snap)
            .prefix(prefix)
            .part_size(PartSize::Target(PART))
            .checkpoint_dir(env.cp_dir())
            .follow_symlinks(follow)
            .send()
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), upload(true, "m/"))
        .await
        .expect("the upload hung (on the FIFO, or walking a symlink loop)")
        .unwrap()
        .into_result()
        .unwrap();
    let mut keys: Vec<&str> = out.copied.iter().map(|c| c.1.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "m/linked/config.json",
            "m/model.safetensors",
            "m/sub/config.json"
        ]
    );
    let relative = |left: &[(PathBuf, String)]| -> Vec<String> {
        left.iter()
            .map(|(p, _)| p.strip_prefix(&snap).unwrap().display().to_string())
            .collect()
    };
    assert_eq!(
        relative(&out.left_out),
        ["broken", "linked/up", "pipe", "sub/up"],
        "{:?}",
        out.left_out
    );
    let why = |name: &str| {
        out.left_out
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap()
            .1
            .clone()
    };
    assert!(why("broken").contains("target cannot be read"));
    assert!(why("sub/up").contains("loop"));
    assert!(why("pipe").contains("FIFO"));
    let got = env
        .cb
        .get_object()
        .key("m/model.safetensors")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap();
    assert!(got == weights);

    let out = upload(false, "n/").await.unwrap();
    assert!(out.copied.is_empty(), "{:?}", out.copied);
    assert_eq!(
        relative(&out.left_out),
        [
            "broken",
            "linked",
            "model.safetensors",
            "pipe",
            "sub/config.json",
            "sub/up"
        ]
    );
    assert!(
        out.left_out[1].1.contains("not followed"),
        "{:?}",
        out.left_out
    );
}
