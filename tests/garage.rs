//! The core, multipart and resumable paths against a real distributed store: a 3-node Garage
//! 2.5.0 cluster (replication factor 3) on loopback, and node failures in the middle of a
//! multipart upload and of a parallel download.
//!
//! Run with the cluster up (`./scripts/test.sh` does this):
//! ```text
//! eval "$(scripts/garage-cluster.sh start)" && export $(scripts/garage-cluster.sh env)
//! cargo test --test garage -- --ignored
//! scripts/garage-cluster.sh stop
//! ```
//! The tests are `#[ignore]`d so that a plain `cargo test` does not need Garage; without the
//! cluster's environment they fail (never skip).

use cryptobucket_testkit as support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use cryptobucket::{ByteRange, CryptoBucket, PartSize, ProgressEvent, ProgressListener};
use support::garage::{endpoints, var};
use support::proxy::{FaultProxy, WireFault};
use support::{keyring_a, pattern};

const PART: u64 = 5 * 1024 * 1024;

/// The tests share one cluster and one of them kills nodes: they run one at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn bucket_at(endpoint: &str) -> CryptoBucket {
    let client = support::garage::client(endpoint).await;
    CryptoBucket::new(client, support::garage::bucket(), keyring_a())
}

fn cluster(args: &[&str]) {
    let status = Command::new(var("GARAGE_CLUSTER_SCRIPT"))
        .args(args)
        .status()
        .expect("run garage-cluster.sh");
    assert!(status.success(), "garage-cluster.sh {args:?} failed");
}

fn sha(path: &Path) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &std::fs::read(path).unwrap())
        .as_ref()
        .to_vec()
}

#[tokio::test]
#[ignore = "needs the Garage cluster: scripts/garage-cluster.sh start"]
async fn core_paths_on_garage() {
    let _cluster = CLUSTER.lock().await;
    let ep = endpoints();
    let cb = bucket_at(&ep[0]).await;
    let other = bucket_at(&ep[1]).await;
    let data = pattern(100_003, 1);
    cb.put_object()
        .key("core/small")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    // Written through node 1, read through node 2: whole and every range form.
    let got = other.get_object().key("core/small").send().await.unwrap();
    assert!(got.body.collect().await.unwrap() == data);
    for r in ["0-0", "15-16", "99990-", "-33", "17-65536"] {
        let r: ByteRange = r.parse().unwrap();
        let (s, l) = r.resolve(data.len() as u64).unwrap();
        let got = other
            .get_object()
            .key("core/small")
            .range(r)
            .send()
            .await
            .unwrap();
        assert!(
            got.body.collect().await.unwrap() == data[s as usize..(s + l) as usize],
            "{r}"
        );
    }
    let head = other.head_object().key("core/small").send().await.unwrap();
    assert_eq!(head.object_size, data.len() as u64);
    cb.delete_object().key("core/small").send().await.unwrap();
}

#[tokio::test]
#[ignore = "needs the Garage cluster: scripts/garage-cluster.sh start"]
async fn multipart_and_resumable_on_garage() {
    let _cluster = CLUSTER.lock().await;
    let ep = endpoints();
    let cb = bucket_at(&ep[0]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((4 * PART + 7) as usize, 2);
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let cps = dir.path().join("cp");

    // Interrupted by resets on the wire (a proxy in front of node 1), then resumed.
    let proxy = FaultProxy::start(&ep[0]);
    let via_proxy = bucket_at(&proxy.endpoint).await;
    proxy.push(std::iter::repeat_n(
        WireFault::ResetRequestAfter(2 * 1024 * 1024),
        40,
    ));
    let first = via_proxy
        .upload_file()
        .key("mp/ckpt")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .max_attempts(1)
        .checkpoint_dir(&cps)
        .send()
        .await;
    assert!(first.is_err(), "the first run should fail on the resets");
    let out = cb
        .upload_file()
        .key("mp/ckpt")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap();
    assert_eq!(out.size, data.len() as u64);

    let dst = dir.path().join("dst");
    bucket_at(&ep[2])
        .await
        .download_file()
        .key("mp/ckpt")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap();
    assert!(sha(&dst) == sha(&src));
}

/// A listener that runs `action` once, on a thread, after the first finished part; the handle
/// lets the test wait for it and see that it ran.
fn after_first_part(
    action: impl FnOnce() + Send + 'static,
) -> (
    ProgressListener,
    Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
) {
    let action = Arc::new(Mutex::new(Some(action)));
    let handle = Arc::new(Mutex::new(None));
    let h = handle.clone();
    let listener = ProgressListener::new(move |p| {
        if matches!(p.event, ProgressEvent::PartDone { .. })
            && let Some(a) = action.lock().unwrap().take()
        {
            *h.lock().unwrap() = Some(std::thread::spawn(a));
        }
    });
    (listener, handle)
}

/// A listener that runs `action` once, inline, when the first part finishes: the transfer
/// cannot start another part until the action is done (a node is really down before the next
/// request). The flag says it ran.
fn during_first_part(
    action: impl FnOnce() + Send + 'static,
) -> (ProgressListener, Arc<std::sync::atomic::AtomicBool>) {
    let action = Arc::new(Mutex::new(Some(action)));
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let listener = ProgressListener::new(move |p| {
        if matches!(p.event, ProgressEvent::PartDone { .. })
            && let Some(a) = action.lock().unwrap().take()
        {
            a();
            r.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (listener, ran)
}

/// Waits for the action started by [`after_first_part`]; fails if it never ran or panicked.
fn joined(handle: &Mutex<Option<std::thread::JoinHandle<()>>>) {
    let h = handle
        .lock()
        .unwrap()
        .take()
        .expect("the fault was never injected");
    h.join().expect("injecting the fault failed");
}

#[tokio::test]
#[ignore = "needs the Garage cluster: scripts/garage-cluster.sh start"]
async fn node_failures_during_upload_and_download() {
    let _cluster = CLUSTER.lock().await;
    let ep = endpoints();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern((8 * PART + 3) as usize, 3);
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let cps = dir.path().join("cp");

    // Node 3 dies during the upload through node 1: quorum (2 of 3) carries on.
    let (kill3, killed3) = after_first_part(|| cluster(&["kill", "3"]));
    let out = bucket_at(&ep[0])
        .await
        .upload_file()
        .key("failover/ckpt")
        .path(&src)
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .checkpoint_dir(&cps)
        .progress(kill3)
        .send()
        .await
        .unwrap();
    joined(&killed3);
    assert_eq!(out.size, data.len() as u64);
    cluster(&["revive", "3"]);

    // Node 1 dies during a download through it (before any part after the first starts), so
    // that run must fail; the rerun resumes through node 2.
    let dst = dir.path().join("dst");
    let (kill1, killed1) = during_first_part(|| cluster(&["kill", "1"]));
    let first = bucket_at(&ep[0])
        .await
        .download_file()
        .key("failover/ckpt")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .concurrency(2)
        .max_attempts(2)
        .checkpoint_dir(&cps)
        .progress(kill1)
        .send()
        .await;
    assert!(
        killed1.load(std::sync::atomic::Ordering::SeqCst),
        "node 1 was never killed"
    );
    let resumed = bucket_at(&ep[1])
        .await
        .download_file()
        .key("failover/ckpt")
        .path(&dst)
        .part_size(PartSize::Target(PART))
        .checkpoint_dir(&cps)
        .send()
        .await;
    cluster(&["revive", "1"]);
    let resumed = resumed.unwrap();
    let err = first.expect_err("a download through a node killed mid-way must fail");
    assert!(err.is_retryable(), "{err}");
    assert!(
        resumed.resumed_bytes > 0,
        "the rerun should resume: {resumed:?}"
    );
    assert!(sha(&dst) == sha(&src), "downloaded file differs");
}

/// gocryptfs trees with the names the in-process server cannot hold (its keys stop near 168
/// bytes): 175- and 255-byte plaintext names give stored names of 235 characters and a
/// `gocryptfs.longname.*` file with its `.name`, in a directory that has a long name itself.
/// Pushed, listed and pulled through Garage; the stored objects, fetched as they are, mount
/// with the real gocryptfs (FUSE) and show the source.
#[tokio::test]
#[ignore = "needs the Garage cluster: scripts/garage-cluster.sh start"]
async fn gocryptfs_long_names_on_garage() {
    use cryptobucket::gocryptfs::push::push;
    use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    let _cluster = CLUSTER.lock().await;
    let cb = bucket_at(&endpoints()[0]).await;
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, raw, mnt) = (
        tmp.path().join("src"),
        tmp.path().join("out"),
        tmp.path().join("raw"),
        tmp.path().join("mnt"),
    );
    let long_dir = src.join("d".repeat(200));
    std::fs::create_dir_all(&long_dir).unwrap();
    std::fs::write(src.join("n".repeat(175)), b"175-byte name").unwrap();
    std::fs::write(src.join("l".repeat(255)), pattern(9000, 3)).unwrap();
    std::fs::write(long_dir.join("m".repeat(255)), pattern(5000, 4)).unwrap();
    std::fs::write(long_dir.join("short"), b"short").unwrap();
    let prefix = format!("gocryptfs-long-{}/", std::process::id());
    let password = "garage long names";
    let pushed = push(&cb, &src, &prefix)
        .password(password)
        .scrypt_log_n(10)
        .checkpoint_dir(tmp.path().join("cp"))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.stats.files, 4);

    // The stored keys really are that long.
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = cb
            .client()
            .list_objects_v2()
            .bucket(cb.bucket())
            .prefix(&prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        keys.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    let longest = keys
        .iter()
        .flat_map(|k| k[prefix.len()..].split('/'))
        .map(str::len)
        .max()
        .unwrap();
    assert!(longest >= 235, "longest stored name {longest}: {keys:?}");
    assert!(keys.iter().any(|k| k.ends_with(".name")), "{keys:?}");

    // Read back without mounting.
    let tree = GocryptfsRemote::open(&cb, &prefix, Unlock::password(password))
        .await
        .unwrap();
    let names: Vec<String> = tree
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"n".repeat(175)) && names.contains(&"l".repeat(255)));
    tree.pull(&out)
        .checkpoint_dir(out.with_file_name("pull-checkpoints"))
        .send()
        .await
        .unwrap();
    for rel in [
        "n".repeat(175),
        "l".repeat(255),
        format!("{}/{}", "d".repeat(200), "m".repeat(255)),
        format!("{}/short", "d".repeat(200)),
    ] {
        assert_eq!(
            std::fs::read(out.join(&rel)).unwrap(),
            std::fs::read(src.join(&rel)).unwrap(),
            "{rel}"
        );
    }

    // The objects as stored mount with the real gocryptfs.
    for key in &keys {
        let (body, _) = support::raw_object(&cb, key).await;
        let path = raw.join(&key[prefix.len()..]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, password).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let status = Command::new("gocryptfs")
        .arg("-q")
        .arg("-passfile")
        .arg(&passfile)
        .arg(&raw)
        .arg(&mnt)
        .status()
        .expect("gocryptfs is installed by scripts/test.sh");
    assert!(status.success());
    let seen = std::fs::read(mnt.join("d".repeat(200)).join("m".repeat(255)));
    let listed = std::fs::read_dir(&mnt)
        .map(|d| d.count())
        .unwrap_or_default();
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    assert_eq!(seen.unwrap(), pattern(5000, 4));
    assert_eq!(listed, 3);
}
