//! gocryptfs trees against the real gocryptfs (Debian `gocryptfs` 2.3 + `fuse3`, installed by
//! `scripts/test.sh`; these tests fail, never skip, when it is missing): a tree we write
//! mounts with gocryptfs and shows the source's names and bytes; a tree gocryptfs writes
//! (`-init`, mount, copy) decrypts with us to the same bytes. Nested directories, empty
//! files, sizes around 4096-byte multiples, names of 1, 175 and 255 bytes (long names),
//! non-ASCII names, a symlink and a 256 MiB file; tampering with a block, a file id, the
//! config or a `.name` file is detected.

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptobucket::ErrorKind;
use cryptobucket::gocryptfs::{GocryptfsConf, GocryptfsKeys, tree};

const PASSWORD: &str = "pai-eas model password";

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: scripts/test.sh installs gocryptfs and fuse3 (apt); these tests \
         compare against the real gocryptfs and never skip"
    );
}

/// A FUSE mount of `cipher` at `mnt`, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(cipher: &Path, mnt: &Path, passfile: &Path) -> Self {
        require("gocryptfs");
        require("fusermount3");
        std::fs::create_dir_all(mnt).unwrap();
        let out = Command::new("gocryptfs")
            .arg("-passfile")
            .arg(passfile)
            .arg("-q")
            .arg(cipher)
            .arg(mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gocryptfs mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(mnt.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    cryptobucket_testkit::pattern(len, seed)
}

/// The source tree every test uses.
fn make_source(root: &Path, big: usize) {
    make_source_with(root, big, true);
}

/// The source tree; `local_only` adds what a bucket on the in-process server cannot hold
/// (a 175-byte name: its stored name is 235 characters, beyond s3s-fs's key limit; a symlink).
fn make_source_with(root: &Path, big: usize, local_only: bool) {
    let d = root.join("layers/0/attn");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("empty.bin"), b"").unwrap();
    for (i, size) in [1usize, 4095, 4096, 4097, 8192, 12289, 100_000]
        .into_iter()
        .enumerate()
    {
        std::fs::write(d.join(format!("w{size}.bin")), pattern(size, i as u64)).unwrap();
    }
    std::fs::write(root.join("x"), b"one-byte name").unwrap();
    if local_only {
        std::fs::write(root.join("n".repeat(175)), b"175-byte name").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("layers/0/attn/w4096.bin", root.join("link")).unwrap();
    }
    std::fs::write(root.join("l".repeat(255)), b"255-byte name: a long name").unwrap();
    std::fs::write(root.join("模型-ü.safetensors"), pattern(5000, 9)).unwrap();
    std::fs::write(root.join("big.bin"), pattern(big, 77)).unwrap();
}

/// Every entry under `root`: relative path → file bytes, `dir` or `-> target`.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                let target = std::fs::read_link(e.path()).unwrap();
                out.push((rel, format!("-> {}", target.display()).into_bytes()));
            } else if t.is_dir() {
                out.push((rel, b"dir".to_vec()));
                stack.push(e.path());
            } else {
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_same(a: &Path, b: &Path) {
    let (x, y) = (snapshot(a), snapshot(b));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&x), names(&y));
    for ((n, d1), (_, d2)) in x.iter().zip(&y) {
        assert!(d1 == d2, "{n} differs");
    }
}

#[test]
fn trees_we_write_mount_with_gocryptfs() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, enc, mnt) = (
        tmp.path().join("src"),
        tmp.path().join("enc"),
        tmp.path().join("mnt"),
    );
    make_source(&src, 256 << 20);
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, PASSWORD).unwrap();
    let (conf, master) = GocryptfsConf::create(PASSWORD, 10).unwrap();
    let stats = tree::encrypt_dir(&src, &enc, &conf, &GocryptfsKeys::new(&master)).unwrap();
    assert_eq!((stats.files, stats.links), (13, 1));
    // Long names: the 255-byte name is hashed, with its .name file; the 175-byte one is not.
    let entries: Vec<String> = std::fs::read_dir(&enc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries
            .iter()
            .filter(|n| n.starts_with("gocryptfs.longname."))
            .count(),
        2
    );
    // gocryptfs itself agrees on the config...
    let info = Command::new("gocryptfs")
        .arg("-info")
        .arg(&enc)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    // ...and shows the source through FUSE.
    let m = Mount::new(&enc, &mnt, &passfile);
    assert_same(&src, &m.0);
}

#[test]
fn trees_gocryptfs_writes_decrypt_with_us() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, enc, mnt, out) = (
        tmp.path().join("src"),
        tmp.path().join("enc"),
        tmp.path().join("mnt"),
        tmp.path().join("out"),
    );
    make_source(&src, 32 << 20);
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, PASSWORD).unwrap();
    gocryptfs_made_tree(&src, &enc, &mnt, &passfile);
    let conf =
        GocryptfsConf::from_json(&std::fs::read_to_string(enc.join("gocryptfs.conf")).unwrap())
            .unwrap();
    let keys = GocryptfsKeys::new(&conf.unlock(PASSWORD).unwrap());
    let names: Vec<String> = tree::list_dir(&enc, &keys)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"模型-ü.safetensors".to_owned()) && names.contains(&"l".repeat(255)));
    tree::decrypt_dir(&enc, &out, &keys).unwrap();
    assert_same(&src, &out);

    // A wrong password: a key error, nothing decrypted.
    assert_eq!(
        conf.unlock("not it").unwrap_err().kind(),
        ErrorKind::KeyUnwrap
    );
}

/// The tree gocryptfs itself makes of `src`: `-init` into `enc`, mount at `mnt`, `cp -a`, unmount.
fn gocryptfs_made_tree(src: &Path, enc: &Path, mnt: &Path, passfile: &Path) {
    require("gocryptfs");
    std::fs::create_dir_all(enc).unwrap();
    let init = Command::new("gocryptfs")
        .args(["-init", "-q", "-scryptn", "10", "-passfile"])
        .arg(passfile)
        .arg(enc)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    {
        let m = Mount::new(enc, mnt, passfile);
        let cp = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(&m.0)
            .status()
            .unwrap();
        assert!(cp.success());
    }
}

fn find(enc: &Path, keys: &GocryptfsKeys, name: &str) -> PathBuf {
    tree::list_dir(enc, keys)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
}

#[test]
fn tampering_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, enc) = (tmp.path().join("src"), tmp.path().join("enc"));
    make_source(&src, 100_000);
    let (conf, master) = GocryptfsConf::create(PASSWORD, 10).unwrap();
    let keys = GocryptfsKeys::new(&master);
    tree::encrypt_dir(&src, &enc, &conf, &keys).unwrap();
    let big = find(&enc, &keys, "big.bin");
    let original = std::fs::read(&big).unwrap();
    let mut sink = Vec::new();

    // A flipped byte in block 3.
    let mut bad = original.clone();
    bad[18 + 3 * 4128 + 100] ^= 1;
    std::fs::write(&big, &bad).unwrap();
    let e = tree::read_file(&keys, &big, &mut sink).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    assert!(
        e.to_string().contains("block 3") && e.to_string().contains(&*big.to_string_lossy()),
        "{e}"
    );
    // Another file id in the header.
    let mut bad = original.clone();
    bad[5] ^= 1;
    std::fs::write(&big, &bad).unwrap();
    let e = tree::read_file(&keys, &big, &mut Vec::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    // Two blocks swapped.
    let mut bad = original.clone();
    let (a, b) = (18..18 + 4128, 18 + 4128..18 + 2 * 4128);
    let first = bad[a.clone()].to_vec();
    bad.copy_within(b.clone(), a.start);
    bad[b].copy_from_slice(&first);
    std::fs::write(&big, &bad).unwrap();
    assert_eq!(
        tree::read_file(&keys, &big, &mut Vec::new())
            .unwrap_err()
            .kind(),
        ErrorKind::TagMismatch
    );
    // Truncated in the middle of a block.
    std::fs::write(&big, &original[..original.len() - 100]).unwrap();
    assert_eq!(
        tree::read_file(&keys, &big, &mut Vec::new())
            .unwrap_err()
            .kind(),
        ErrorKind::TagMismatch
    );
    std::fs::write(&big, &original).unwrap();
    assert_eq!(
        tree::read_file(&keys, &big, &mut Vec::new()).unwrap(),
        100_000
    );

    // The config: a changed wrapped key is a key error; an unknown flag is refused by name.
    let text = std::fs::read_to_string(enc.join("gocryptfs.conf")).unwrap();
    let mut c = GocryptfsConf::from_json(&text).unwrap();
    let mut raw = base64_decode(&c.encrypted_key);
    raw[20] ^= 1;
    c.encrypted_key = base64_encode(&raw);
    assert_eq!(c.unlock(PASSWORD).unwrap_err().kind(), ErrorKind::KeyUnwrap);
    let e = GocryptfsConf::from_json(&text.replace("\"Raw64\"", "\"Raw64\",\n\t\t\"AESSIV\""))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedAlgorithm);
    assert!(e.to_string().contains("AESSIV"), "{e}");
    let e = GocryptfsConf::from_json(&text.replace("\"N\": 1024", "\"N\": 1073741824")).unwrap();
    assert_eq!(
        e.unlock(PASSWORD).unwrap_err().kind(),
        ErrorKind::InvalidFormat
    );

    // A long name's .name file changed: refused, naming it.
    let dot_name = std::fs::read_dir(&enc)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".name"))
        .unwrap();
    let mut stored = std::fs::read_to_string(&dot_name).unwrap();
    stored.replace_range(0..1, if stored.starts_with('A') { "B" } else { "A" });
    let mut perms = std::fs::metadata(&dot_name).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&dot_name, perms).unwrap();
    std::fs::write(&dot_name, stored).unwrap();
    let e = tree::list_dir(&enc, &keys).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    assert!(e.to_string().contains(".name"), "{e}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A tree gocryptfs wrote, stored in a bucket as plain objects: listed with plaintext names,
/// read by ranges (only the covering blocks), pulled whole, unlocked by password or master key;
/// a changed block is refused.
#[tokio::test]
async fn trees_in_a_bucket_read_without_mounting() {
    use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    let tmp = tempfile::tempdir().unwrap();
    let (src, enc, mnt, out) = (
        tmp.path().join("src"),
        tmp.path().join("enc"),
        tmp.path().join("mnt"),
        tmp.path().join("out"),
    );
    make_source_with(&src, 20 << 20, false);
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, PASSWORD).unwrap();
    gocryptfs_made_tree(&src, &enc, &mnt, &passfile);
    let (_server, cb) = cryptobucket_testkit::bucket_with(
        cryptobucket_testkit::Fault::None,
        cryptobucket_testkit::keyring_a(),
    )
    .await;
    let mut stack = vec![enc.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&enc).unwrap().to_string_lossy().into_owned();
            let key = format!("eas/model/{rel}");
            cryptobucket_testkit::put_raw(
                &cb,
                &key,
                std::fs::read(&p).unwrap(),
                Default::default(),
            )
            .await;
        }
    }
    let tree = GocryptfsRemote::open(&cb, "eas/model", Unlock::password(PASSWORD))
        .await
        .unwrap();
    let root: Vec<(String, bool, u64)> = tree
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.is_dir, e.size))
        .collect();
    assert!(
        root.contains(&("big.bin".to_owned(), false, 20 << 20)),
        "{root:?}"
    );
    assert!(root.contains(&("layers".to_owned(), true, 0)), "{root:?}");
    assert!(
        root.iter().any(|(n, _, _)| *n == "l".repeat(255)),
        "long names resolve"
    );
    let attn = tree.list("layers/0/attn").await.unwrap();
    assert_eq!(attn.len(), 7);
    // Ranges: unaligned, across block boundaries, at the end, past the end.
    let big = std::fs::read(src.join("big.bin")).unwrap();
    for (off, len) in [
        (0u64, 8u64),
        (4090, 20),
        (4096, 4096),
        (1_000_001, 3 << 20),
        ((20 << 20) - 5, 100),
    ] {
        let got = tree.read("big.bin", off, len).await.unwrap();
        let end = (off + len).min(big.len() as u64) as usize;
        assert!(got[..] == big[off as usize..end], "range {off}+{len}");
    }
    assert!(tree.read("big.bin", 30 << 20, 10).await.unwrap().is_empty());
    let w = tree.read("layers/0/attn/w4097.bin", 4095, 2).await.unwrap();
    assert_eq!(
        &w[..],
        &std::fs::read(src.join("layers/0/attn/w4097.bin")).unwrap()[4095..]
    );
    let e = tree.read("layers/missing.bin", 0, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // The whole tree, pulled.
    pull_all(&tree, &out).await;
    assert_same(&src, &out);

    // The raw master key unlocks too; a wrong password does not.
    let conf =
        GocryptfsConf::from_json(&std::fs::read_to_string(enc.join("gocryptfs.conf")).unwrap())
            .unwrap();
    let master = conf.unlock(PASSWORD).unwrap();
    let by_key = GocryptfsRemote::open(&cb, "eas/model/", Unlock::MasterKey(master))
        .await
        .unwrap();
    assert_eq!(
        by_key.read("x", 0, 100).await.unwrap().as_ref(),
        b"one-byte name"
    );
    let e = GocryptfsRemote::open(&cb, "eas/model", Unlock::password("wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnwrap, "{e}");

    // A changed block in the bucket: the read that covers it fails, naming the object.
    let stored = tree
        .list("")
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.name == "big.bin")
        .unwrap()
        .stored;
    let (mut body, meta) = cryptobucket_testkit::raw_object(&cb, &stored).await;
    body[18 + 10 * 4128 + 7] ^= 1;
    cryptobucket_testkit::put_raw(&cb, &stored, body, meta).await;
    let e = tree.read("big.bin", 10 * 4096, 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    assert!(e.to_string().contains(&stored), "{e}");
    assert_eq!(tree.read("big.bin", 0, 10).await.unwrap().len(), 10);
}

/// `push_dir` into a bucket (small files in one PUT, a 40 MiB file as a multipart upload of
/// whole blocks), then the objects fetched raw into a directory mount with the real gocryptfs
/// and show the source; our remote reader pulls the same tree back.
#[tokio::test]
async fn pushed_trees_mount_with_gocryptfs() {
    use cryptobucket::gocryptfs::push::push_dir;
    use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    let tmp = tempfile::tempdir().unwrap();
    let (src, raw, mnt, out) = (
        tmp.path().join("src"),
        tmp.path().join("raw"),
        tmp.path().join("mnt"),
        tmp.path().join("out"),
    );
    make_source_with(&src, 40 << 20, false);
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, PASSWORD).unwrap();
    let (server, cb) = cryptobucket_testkit::bucket_with(
        cryptobucket_testkit::Fault::None,
        cryptobucket_testkit::keyring_a(),
    )
    .await;
    let (conf, master) = GocryptfsConf::create(PASSWORD, 10).unwrap();
    let parts_before = server
        .stats
        .parts_in
        .load(std::sync::atomic::Ordering::Relaxed);
    let stats = push_dir(&cb, &src, "eas/pushed/", &conf, &master)
        .await
        .unwrap();
    assert_eq!(stats.files, 12);
    assert_eq!(
        server
            .stats
            .parts_in
            .load(std::sync::atomic::Ordering::Relaxed)
            - parts_before,
        10240u64.div_ceil(2032),
        "the 40 MiB file (10240 blocks) goes up in parts of 2032 whole blocks"
    );
    // A second push over the same prefix is refused.
    let e = push_dir(&cb, &src, "eas/pushed", &conf, &master)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // Every object, fetched as stored, into a directory that gocryptfs mounts.
    fetch_raw_tree(&cb, "eas/pushed/", &raw).await;
    {
        let m = Mount::new(&raw, &mnt, &passfile);
        assert_same(&src, &m.0);
    }
    let tree = GocryptfsRemote::open(&cb, "eas/pushed", Unlock::password(PASSWORD))
        .await
        .unwrap();
    pull_all(&tree, &out).await;
    assert_same(&src, &out);
}

/// A pull goes through the resumable download path: interrupted (the link breaks inside the
/// large file), it keeps that file's verified ranges and the rerun fetches only the rest; a
/// tampered block fails its file with the error naming it, and leaves nothing of it behind.
#[tokio::test]
async fn interrupted_pulls_resume_and_tampered_blocks_fail_their_file() {
    use cryptobucket::PartSize;
    use cryptobucket::gocryptfs::push::push_dir;
    use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let (src, out, cps) = (
        tmp.path().join("src"),
        tmp.path().join("out"),
        tmp.path().join("cps"),
    );
    make_source_with(&src, 40 << 20, false);
    let (server, cb) = cryptobucket_testkit::bucket_with(
        cryptobucket_testkit::Fault::None,
        cryptobucket_testkit::keyring_a(),
    )
    .await;
    let (conf, master) = GocryptfsConf::create(PASSWORD, 10).unwrap();
    push_dir(&cb, &src, "eas/m/", &conf, &master).await.unwrap();
    let tree = GocryptfsRemote::open(&cb, "eas/m", Unlock::password(PASSWORD))
        .await
        .unwrap();
    let pull = |dst: &Path| {
        tree.pull(dst)
            .checkpoint_dir(&cps)
            .part_size(PartSize::Target(5 << 20))
            .concurrency(1)
            .max_attempts(1)
    };
    let sent = || server.stats.bytes_out.load(Ordering::SeqCst);

    // The link breaks about 15 MiB into the tree: the small files are in, the large one is not.
    server.stats.limit_get_bytes(15 << 20);
    let e = pull(&out).send().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Partial, "{e}");
    assert!(e.to_string().contains("1 of 12 files failed"), "{e}");
    assert!(!out.join("big.bin").exists());
    assert_eq!(cryptobucket_testkit::checkpoints_in(&cps).len(), 1);
    server.stats.limit_get_bytes(i64::MAX);
    let before = sent();
    let stats = pull(&out).send().await.unwrap();
    // make_source_with: the seven weights, "x", the 255-byte name, the non-ASCII one, big.bin.
    let small = 1 + 4095 + 4096 + 4097 + 8192 + 12289 + 100_000 + 13 + 26 + 5000;
    assert_eq!((stats.files, stats.bytes), (12, (40 << 20) + small));
    let again = sent() - before;
    assert!(
        again < 31 << 20,
        "the rerun fetched {again} bytes: the first two 5 MiB ranges were kept"
    );
    assert_same(&src, &out);
    assert!(cryptobucket_testkit::checkpoints_in(&cps).is_empty());
    // A file is learnt from the GET of its header and first range: no HEAD, except for the
    // empty file (no first byte to GET).
    let heads = || server.stats.heads_in.load(Ordering::SeqCst);
    let before = heads();
    pull(&tmp.path().join("out3")).send().await.unwrap();
    assert_eq!(heads() - before, 1);
    assert_same(&src, &tmp.path().join("out3"));

    // One flipped bit in the stored large file: that file fails, by name; the others arrive.
    let big = tree
        .list("")
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.name == "big.bin")
        .unwrap();
    let (mut body, meta) = cryptobucket_testkit::raw_object(&cb, &big.stored).await;
    body[20 << 20] ^= 1;
    cryptobucket_testkit::put_raw(&cb, &big.stored, body, meta).await;
    let tree = GocryptfsRemote::open(&cb, "eas/m", Unlock::password(PASSWORD))
        .await
        .unwrap();
    let out2 = tmp.path().join("out2");
    let e = tree
        .pull(&out2)
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Partial, "{e}");
    let source = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<cryptobucket::Error>())
        .unwrap();
    assert_eq!(source.kind(), ErrorKind::TagMismatch, "{source}");
    assert!(source.to_string().contains(&big.stored), "{source}");
    assert!(!out2.join("big.bin").exists());
    assert!(cryptobucket_testkit::partial_files(&out2).is_empty());
    assert!(cryptobucket_testkit::checkpoints_in(&cps).is_empty());
    assert!(std::fs::read(out2.join("x")).unwrap() == b"one-byte name");
    // A stored file cut to 10 bytes (no size a gocryptfs file can have): the pull refuses the
    // tree when it lists it, naming the file, before anything is fetched.
    let x = tree
        .list("")
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.name == "x")
        .unwrap();
    let (body, meta) = cryptobucket_testkit::raw_object(&cb, &x.stored).await;
    cryptobucket_testkit::put_raw(&cb, &x.stored, body[..10].to_vec(), meta).await;
    let out4 = tmp.path().join("out4");
    let e = tree
        .pull(&out4)
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TagMismatch, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{}: 10 bytes is no gocryptfs file size", x.stored)),
        "{e}"
    );
    assert!(!out4.join("x").exists());
    assert!(cryptobucket_testkit::partial_files(&out4).is_empty());
}

/// A push sends the next large file while the one before completes (a slow
/// CompleteMultipartUpload here), and the tree it writes reads back whole.
#[tokio::test]
async fn a_push_sends_its_next_large_file_while_the_last_one_completes() {
    use cryptobucket::gocryptfs::push::push;
    use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
    use std::sync::atomic::Ordering;
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = (tmp.path().join("src"), tmp.path().join("out"));
    std::fs::create_dir_all(&src).unwrap();
    // Above the single-PUT size (16 MiB): three parts of 2032 blocks each.
    for i in 0..3u64 {
        std::fs::write(
            src.join(format!("shard-{i}.bin")),
            pattern((17 << 20) + 5, 60 + i),
        )
        .unwrap();
    }
    let (server, cb) = cryptobucket_testkit::bucket_with(
        cryptobucket_testkit::Fault::None,
        cryptobucket_testkit::keyring_a(),
    )
    .await;
    server.stats.complete_delay_ms.store(400, Ordering::SeqCst);
    push(&cb, &src, "eas/overlap/")
        .password(PASSWORD)
        .scrypt_log_n(10)
        .concurrency(2)
        .checkpoint_dir(tmp.path().join("cps"))
        .send()
        .await
        .unwrap();
    let overlapped = server.stats.parts_during_complete.load(Ordering::SeqCst);
    assert!(
        overlapped >= 2,
        "{overlapped} parts sent during a completion"
    );
    // A large file that fails before sending any part (its upload cannot start, even after
    // the client's retries) fails the push; the push does not wait for parts that never come.
    server.stats.failing_creates.store(1000, Ordering::SeqCst);
    let failed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        push(&cb, &src, "eas/failing/")
            .password(PASSWORD)
            .scrypt_log_n(10)
            .max_attempts(1)
            .checkpoint_dir(tmp.path().join("cps"))
            .send(),
    )
    .await
    .expect("the push hung after a file failed")
    .unwrap_err();
    assert_eq!(failed.service_code(), Some("SlowDown"), "{failed}");
    let tree = GocryptfsRemote::open(&cb, "eas/overlap", Unlock::password(PASSWORD))
        .await
        .unwrap();
    tree.pull(&out).send().await.unwrap();
    assert_eq!(snapshot(&out), snapshot(&src));
}

/// A push stopped in the middle (its future dropped, as Ctrl-C or a lost connection would) is
/// continued by a rerun with the same password: same config and directory IVs, only the
/// missing parts sent, a file changed in between sent again, and the finished tree mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pushes_resume_and_mount_with_gocryptfs() {
    use cryptobucket::gocryptfs::push::push;
    use cryptobucket::progress::{ProgressEvent, ProgressListener};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let (src, raw, mnt, cps) = (
        tmp.path().join("src"),
        tmp.path().join("raw"),
        tmp.path().join("mnt"),
        tmp.path().join("checkpoints"),
    );
    make_source_with(&src, 64 << 20, false);
    let passfile = tmp.path().join("pass");
    std::fs::write(&passfile, PASSWORD).unwrap();
    let (server, cb) = cryptobucket_testkit::bucket_with(
        cryptobucket_testkit::Fault::None,
        cryptobucket_testkit::keyring_a(),
    )
    .await;
    let parts_in = || server.stats.parts_in.load(Ordering::Relaxed);
    let big_parts = (16384u64).div_ceil(2032); // 64 MiB = 16384 blocks

    // First run: stopped once three parts of the big file are stored.
    let parts_done = Arc::new(AtomicU64::new(0));
    let seen = parts_done.clone();
    let listener = ProgressListener::new(move |p| {
        // Only the big file's parts are this large.
        if let ProgressEvent::PartDone { bytes, .. } = p.event
            && bytes >= 2032 * 4096
        {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let first = push(&cb, &src, "eas/resumed/")
        .password(PASSWORD)
        .scrypt_log_n(10)
        .concurrency(2)
        .checkpoint_dir(&cps)
        .progress(listener)
        .send();
    let before = parts_in();
    tokio::select! {
        r = first => panic!("the push finished before it was stopped: {r:?}"),
        _ = async {
            while parts_done.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        } => {}
    }
    let sent_first = parts_in() - before;
    assert!(sent_first >= 3 && sent_first < big_parts, "{sent_first}");
    // Unfinished: no config in the bucket, checkpoints on disk.
    assert!(
        cb.head_object()
            .key("eas/resumed/gocryptfs.conf")
            .send()
            .await
            .is_err()
    );
    let state_files = || {
        std::fs::read_dir(&cps)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(".json")
            })
            .count()
    };
    assert_eq!(state_files(), 2, "the tree's checkpoint and the big file's");

    // Another password cannot continue it (and changes nothing).
    let e = push(&cb, &src, "eas/resumed/")
        .password("not the password")
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnwrap, "{e}");
    assert!(e.to_string().contains("another password"), "{e}");

    // A small file stored by the first run changes meanwhile: it is sent again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src.join("x"), b"changed after the interruption").unwrap();

    let before = parts_in();
    let out = push(&cb, &src, "eas/resumed/")
        .password(PASSWORD)
        .checkpoint_dir(&cps)
        .send()
        .await
        .unwrap();
    let sent_second = parts_in() - before;
    assert_eq!(out.stats.files, 12);
    // Parts count once the checkpoint holds them (written behind the transfer, so the last
    // one reported may be missing).
    assert!(
        out.resumed_bytes >= 2 * 2032 * 4096,
        "resumed {} bytes",
        out.resumed_bytes
    );
    // Every small file but the changed one was stored before the big file started.
    assert_eq!(out.resumed_files, 10, "{} files resumed", out.resumed_files);
    assert_eq!(
        sent_second,
        big_parts - out.resumed_bytes / (2032 * 4096),
        "the rerun sent {sent_second} parts of {big_parts}"
    );
    assert_eq!(state_files(), 0, "checkpoints removed when done");

    // Exactly one tree: every object belongs to it and it mounts.
    // 12 files, 5 directories (IV each), 1 long name, the config.
    assert_eq!(
        fetch_raw_tree(&cb, "eas/resumed/", &raw).await,
        12 + 5 + 1 + 1
    );
    let m = Mount::new(&raw, &mnt, &passfile);
    assert_same(&src, &m.0);
}

/// Pulls the whole tree into `out` (checkpoints beside it).
async fn pull_all(tree: &cryptobucket::gocryptfs::remote::GocryptfsRemote, out: &Path) {
    tree.pull(out)
        .checkpoint_dir(out.with_file_name("pull-checkpoints"))
        .send()
        .await
        .unwrap();
}

/// Every object under `prefix`, fetched as stored, into `dir` (what a gocryptfs mount of the
/// bucket would see); returns how many there were.
async fn fetch_raw_tree(cb: &cryptobucket::CryptoBucket, prefix: &str, dir: &Path) -> usize {
    let listed = cb
        .client()
        .list_objects_v2()
        .bucket(cb.bucket())
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    for o in listed.contents() {
        let key = o.key().unwrap();
        let (body, _) = cryptobucket_testkit::raw_object(cb, key).await;
        let path = dir.join(&key[prefix.len()..]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    listed.contents().len()
}
