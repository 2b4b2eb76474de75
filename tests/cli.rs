//! The `cryptobucket` binary, scripted as users script it, against a real S3 server.

use cryptobucket_testkit as support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Fault, TestServer, pattern, testdata};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn server(fault: Fault) -> TestServer {
    let s = TestServer::start_with(fault);
    rt().block_on(s.create_bucket("cli"));
    s
}

fn cli(server: &TestServer, args: &[&str]) -> Output {
    cli_with_env(server, args, &[])
}

/// Checkpoints of CLI runs go under the target directory, never into the user's home.
fn checkpoint_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-checkpoints")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failed command: non-zero exit, one error line on stderr (after, at most, notices of
/// retries); returns that line.
fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "command unexpectedly succeeded");
    let all = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = all.trim_end().lines().collect();
    let (err, notices) = lines.split_last().expect("an error line");
    assert!(err.starts_with("cryptobucket: error: "), "{all}");
    assert!(
        notices.iter().all(|l| l.contains(": retrying part ")),
        "stderr must be one error line (after retry notices): {all}"
    );
    err.to_string()
}

fn no_leftovers(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains(".cryptobucket-")),
        "temp or partial files left: {names:?}"
    );
}

#[test]
fn keygen_put_get_ranges_inspect() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    ok(&cli(&s, &["keygen", "--out-dir", k]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("private.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Refuses to overwrite an existing key.
    fails(&cli(&s, &["keygen", "--out-dir", k]));

    let data = pattern(70_000, 1);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let public = keys.join("public.pem");
    let private = keys.join("private.pem");
    let (pubs, privs) = (public.to_str().unwrap(), private.to_str().unwrap());
    // Common options before the subcommand...
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--rsa-public-key",
            pubs,
            "put",
            input.to_str().unwrap(),
            "s3://cli/obj",
            "--matdesc",
            r#"{"team":"ml"}"#,
        ],
    ));
    // ...and after it.
    let out = dir.path().join("out.bin");
    ok(&cli(
        &s,
        &[
            "get",
            "s3://cli/obj",
            out.to_str().unwrap(),
            "--force-path-style",
            "--rsa-private-key",
            privs,
            "--matdesc",
            r#"{"team": "ml"}"#,
        ],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), data);

    for (r, range) in [
        ("100-199", 100..200),
        ("100-", 100..data.len()),
        ("-50", data.len() - 50..data.len()),
        ("5-1000000", 5..data.len()),
    ] {
        let p = dir.path().join("range.bin");
        ok(&cli(
            &s,
            &[
                "--force-path-style",
                "--rsa-private-key",
                privs,
                "--matdesc",
                r#"{"team":"ml"}"#,
                "get",
                "s3://cli/obj",
                p.to_str().unwrap(),
                "--range",
                r,
            ],
        ));
        assert_eq!(std::fs::read(&p).unwrap(), &data[range], "{r}");
    }

    let info = ok(&cli(&s, &["--force-path-style", "inspect", "s3://cli/obj"]));
    assert!(
        info.contains("wrap algorithm: RSA/NONE/PKCS1Padding"),
        "{info}"
    );
    assert!(info.contains(r#"matdesc: {"team":"ml"}"#), "{info}");
    assert!(info.contains("unencrypted content length: 70000"), "{info}");
    assert!(info.contains("size: 70000 bytes"), "{info}");
    no_leftovers(dir.path());
}

#[test]
fn keyring_file_with_two_keys() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let kd = testdata().join("keys");
    let ring = dir.path().join("keyring.toml");
    std::fs::write(
        &ring,
        format!(
            r#"
[[keys]]
kind = "rsa"
public_key = "{a}/public.pem"
private_key = "{a}/private.pem"
matdesc = {{ team = "a", v = "1" }}
default = true

[[keys]]
kind = "rsa"
name = "b"
public_key = "{b}/public.pem"
private_key = "{b}/private.pem"
matdesc = {{ team = "b" }}
"#,
            a = kd.join("a").display(),
            b = kd.join("b").display()
        ),
    )
    .unwrap();
    let r = ring.to_str().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, b"keyring data").unwrap();
    let i = input.to_str().unwrap();
    ok(&cli(
        &s,
        &["--force-path-style", "--keyring", r, "put", i, "s3://cli/a"],
    ));
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            r,
            "--matdesc",
            r#"{"team":"b"}"#,
            "put",
            i,
            "s3://cli/b",
        ],
    ));
    assert!(
        ok(&cli(&s, &["--force-path-style", "inspect", "s3://cli/b"])).contains(r#"{"team":"b"}"#)
    );
    for obj in ["a", "b"] {
        let out = dir.path().join(format!("{obj}.out"));
        ok(&cli(
            &s,
            &[
                "--force-path-style",
                "--keyring",
                r,
                "get",
                &format!("s3://cli/{obj}"),
                out.to_str().unwrap(),
            ],
        ));
        assert_eq!(std::fs::read(&out).unwrap(), b"keyring data");
    }
    // Relative key paths are relative to the keyring file.
    std::fs::create_dir(dir.path().join("k")).unwrap();
    std::fs::copy(kd.join("a/private.pem"), dir.path().join("k/private.pem")).unwrap();
    let rel = dir.path().join("rel.toml");
    std::fs::write(&rel, "[[keys]]\nkind = \"rsa\"\nprivate_key = \"k/private.pem\"\nmatdesc = { team = \"a\", v = \"1\" }\n").unwrap();
    let out = dir.path().join("rel.out");
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            rel.to_str().unwrap(),
            "get",
            "s3://cli/a",
            out.to_str().unwrap(),
        ],
    ));
    // An unknown kind is a clear error.
    std::fs::write(&rel, "[[keys]]\nkind = \"vault\"\n").unwrap();
    let err = fails(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            rel.to_str().unwrap(),
            "get",
            "s3://cli/a",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("unknown key kind"), "{err}");
}

#[test]
fn failures_leave_no_output_file() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let kd = testdata().join("keys");
    let (a_pub, a_priv, b_priv) = (
        kd.join("a/public.pem"),
        kd.join("a/private.pem"),
        kd.join("b/private.pem"),
    );
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(1000, 2)).unwrap();
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--rsa-public-key",
            a_pub.to_str().unwrap(),
            "put",
            input.to_str().unwrap(),
            "s3://cli/o",
        ],
    ));
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let b = b_priv.to_str().unwrap();
    let a = a_priv.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--rsa-private-key", b, "get", "s3://cli/o", o],
            "key commitment",
        ),
        (
            vec![
                "--rsa-private-key",
                a,
                "--matdesc",
                r#"{"x":"y"}"#,
                "get",
                "s3://cli/o",
                o,
            ],
            "no key in the keyring",
        ),
        (
            vec!["--rsa-private-key", a, "get", "s3://cli/missing", o],
            "no such object, bucket or upload",
        ),
        (
            vec![
                "--rsa-private-key",
                a,
                "get",
                "s3://cli/o",
                o,
                "--range",
                "5000-",
            ],
            "outside",
        ),
        (
            vec![
                "--rsa-private-key",
                a,
                "get",
                "s3://cli/o",
                o,
                "--range",
                "abc",
            ],
            "invalid range",
        ),
        (vec!["--rsa-private-key", a, "get", "cli/o", o], "s3://"),
        (vec!["get", "s3://cli/o", o], "no key given"),
    ];
    for (args, want) in cases {
        let mut full = vec!["--force-path-style"];
        full.extend(args);
        let err = fails(&cli(&s, &full));
        assert!(err.contains(want), "{full:?}: {err}");
        assert!(!out.exists(), "{full:?} left an output file");
        no_leftovers(dir.path());
    }
}

#[test]
fn truncated_download_leaves_no_file() {
    let s = server(Fault::TruncateBody);
    let dir = tempfile::tempdir().unwrap();
    let kd = testdata().join("keys");
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(500_000, 3)).unwrap();
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--rsa-public-key",
            kd.join("a/public.pem").to_str().unwrap(),
            "put",
            input.to_str().unwrap(),
            "s3://cli/t",
        ],
    ));
    let out = dir.path().join("out");
    let err = fails(&cli(
        &s,
        &[
            "--force-path-style",
            "--rsa-private-key",
            kd.join("a/private.pem").to_str().unwrap(),
            "get",
            "s3://cli/t",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("broke off") || err.contains("ended"), "{err}");
    assert!(!out.exists());
    // What stays is the hidden partial file a rerun resumes from, never the destination.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "in"
            || n == "checkpoints"
            || (n.starts_with(".out.cryptobucket-") && n.ends_with(".partial"))),
        "{names:?}"
    );
}

/// `--force-path-style --rsa-private-key a` plus the public key: both directions work.
fn keyed(args: &[&str]) -> Vec<String> {
    let kd = testdata().join("keys/a");
    let mut v: Vec<String> = vec![
        "--force-path-style".into(),
        "--rsa-public-key".into(),
        kd.join("public.pem").to_string_lossy().into_owned(),
        "--rsa-private-key".into(),
        kd.join("private.pem").to_string_lossy().into_owned(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn run(s: &TestServer, args: &[&str]) -> Output {
    let v = keyed(args);
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    cli(s, &refs)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn large_put_and_get_with_transfer_options() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let cps = dir.path().join("checkpoints");
    let cp = cps.to_str().unwrap();
    let data = pattern(2 * 5 * 1024 * 1024 + 3, 40);
    let input = dir.path().join("big.bin");
    std::fs::write(&input, &data).unwrap();
    let i = input.to_str().unwrap();
    let out = run(
        &s,
        &[
            "put",
            i,
            "s3://cli/big",
            "--part-size",
            "5MiB",
            "--concurrency",
            "3",
            "--checkpoint-dir",
            cp,
        ],
    );
    ok(&out);
    assert!(
        stderr(&out).contains("3 parts of 5242880"),
        "{}",
        stderr(&out)
    );
    let dest = dir.path().join("big.out");
    let d = dest.to_str().unwrap();
    let out = run(
        &s,
        &[
            "get",
            "s3://cli/big",
            d,
            "--part-size",
            "5242880",
            "--checkpoint-dir",
            cp,
        ],
    );
    ok(&out);
    assert!(std::fs::read(&dest).unwrap() == data);
    assert_eq!(
        std::fs::read_dir(&cps).unwrap().count(),
        0,
        "checkpoints must be removed"
    );

    // Bad transfer options: clear one-line errors.
    let e = fails(&run(&s, &["put", i, "s3://cli/x", "--part-size", "1024"]));
    assert!(e.contains("5 MiB"), "{e}");
    let e = fails(&run(
        &s,
        &["put", i, "s3://cli/x", "--part-size", "5242881"],
    ));
    assert!(e.contains("multiple of 16"), "{e}");
    let e = fails(&run(&s, &["put", i, "s3://cli/x", "--concurrency", "0"]));
    assert!(e.contains("concurrency"), "{e}");
    let out = run(&s, &["put", i, "s3://cli/x", "--part-size", "8 parsecs"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown unit"), "{}", stderr(&out));
}

fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `cp -r` of a Hugging Face cache snapshot (symlinks into its blob store) copies the files
/// the links point to; what it cannot copy is listed, never dropped in silence.
#[test]
fn cp_recursive_follows_symlinks_and_lists_what_it_leaves_out() {
    use std::os::unix::fs::symlink;
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snap = hub.join("snapshots/rev1");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(hub.join("blobs")).unwrap();
    std::fs::write(hub.join("blobs/aaa"), pattern(6 * 1024 * 1024 + 1, 46)).unwrap();
    std::fs::write(hub.join("blobs/bbb"), b"{}").unwrap();
    symlink("../../blobs/aaa", snap.join("model.safetensors")).unwrap();
    symlink("../../blobs/bbb", snap.join("config.json")).unwrap();
    symlink("gone", snap.join("broken")).unwrap();
    let sn = snap.to_str().unwrap();
    let out = run(&s, &["cp", "-r", sn, "s3://cli/hf/", "--part-size", "5MiB"]);
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("copied 2 files"), "{err}");
    assert!(
        err.contains("left out: ") && err.contains("broken: a symlink whose target"),
        "{err}"
    );
    let back = dir.path().join("back");
    ok(&run(
        &s,
        &["cp", "-r", "s3://cli/hf/", back.to_str().unwrap()],
    ));
    assert_eq!(
        tree(&back),
        [
            ("config.json".to_owned(), b"{}".to_vec()),
            (
                "model.safetensors".to_owned(),
                std::fs::read(hub.join("blobs/aaa")).unwrap()
            ),
        ]
    );
    let out = run(&s, &["sync", "--no-follow-symlinks", sn, "s3://cli/hf2/"]);
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("copied 0 files") && err.contains("left out 3"),
        "{err}"
    );
    assert!(
        err.contains("model.safetensors: a symlink (symlinks are not followed)"),
        "{err}"
    );
    let e = fails(&run(
        &s,
        &["cp", "-r", "--no-follow-symlinks", "s3://cli/hf/", sn],
    ));
    assert!(e.contains("applies to uploads only"), "{e}");
}

#[test]
fn cp_recursive_copies_and_sync_skips_identical() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(model.join("shards/deep")).unwrap();
    std::fs::write(model.join("config.json"), b"{\"layers\": 2}").unwrap();
    std::fs::write(model.join("empty"), b"").unwrap();
    std::fs::write(model.join("shards/0.bin"), pattern(6 * 1024 * 1024 + 5, 41)).unwrap();
    std::fs::write(model.join("shards/deep/1.bin"), pattern(4321, 42)).unwrap();
    let m = model.to_str().unwrap();
    let with_part = |a: &[&str]| -> Vec<String> {
        a.iter()
            .chain(&["--part-size", "5MiB"])
            .map(|x| x.to_string())
            .collect()
    };
    let go = |a: &[&str]| {
        let v = with_part(a);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        let out = run(&s, &v);
        ok(&out);
        stderr(&out)
    };
    // cp -r always copies; sync skips what is identical.
    let up = ["cp", "-r", m, "s3://cli/ckpt/step-1/"];
    assert!(go(&up).contains("copied 4 files"));
    assert!(go(&up).contains("copied 4 files"), "cp copies again");
    let sync_up = ["sync", m, "s3://cli/ckpt/step-1/"];
    let err = go(&sync_up);
    assert!(
        err.contains("copied 0 files") && err.contains("skipped 4 identical"),
        "{err}"
    );

    let back = dir.path().join("back");
    let b = back.to_str().unwrap();
    let err = go(&["cp", "-r", "s3://cli/ckpt/step-1", b]);
    assert!(err.contains("copied 4 files"), "{err}");
    assert_eq!(tree(&back), tree(&model));
    let err = go(&["sync", "s3://cli/ckpt/step-1/", b]);
    assert!(err.contains("skipped 4 identical"), "{err}");

    // A changed shard: --dryrun names it and changes nothing; sync then sends only it.
    std::fs::write(model.join("shards/deep/1.bin"), pattern(999, 43)).unwrap();
    let v = with_part(&["sync", "--dryrun", m, "s3://cli/ckpt/step-1/"]);
    let v: Vec<&str> = v.iter().map(String::as_str).collect();
    let out = run(&s, &v);
    ok(&out);
    let planned = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(planned.lines().count(), 1, "{planned}");
    assert!(planned.contains("(dryrun) copy") && planned.contains("shards/deep/1.bin"));
    assert!(
        stderr(&out).contains("would copy 1 files"),
        "{}",
        stderr(&out)
    );
    let err = go(&sync_up);
    assert!(
        err.contains("copied 1 files") && err.contains("skipped 3"),
        "{err}"
    );
    let err = go(&sync_up);
    assert!(err.contains("copied 0 files"), "{err}");

    // Many small files and two large ones in one tree, both ways.
    let many = dir.path().join("many");
    for i in 0..200 {
        let sub = many.join(format!("part-{}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}.bin")), pattern(10_000 + i, i as u64)).unwrap();
    }
    std::fs::write(many.join("large-a.bin"), pattern(12 << 20, 1)).unwrap();
    std::fs::write(many.join("large-b.bin"), pattern((11 << 20) + 3, 2)).unwrap();
    let err = go(&[
        "cp",
        "-r",
        many.to_str().unwrap(),
        "s3://cli/many/",
        "--concurrency",
        "16",
    ]);
    assert!(err.contains("copied 202 files"), "{err}");
    let many_back = dir.path().join("many-back");
    let err = go(&[
        "cp",
        "-r",
        "s3://cli/many/",
        many_back.to_str().unwrap(),
        "--concurrency",
        "16",
    ]);
    assert!(err.contains("copied 202 files"), "{err}");
    assert_eq!(tree(&many_back), tree(&many));

    // Single-object cp, both ways, with a directory-style destination.
    let out = run(
        &s,
        &[
            "cp",
            model.join("config.json").to_str().unwrap(),
            "s3://cli/single/",
        ],
    );
    ok(&out);
    let out = run(
        &s,
        &[
            "cp",
            "s3://cli/single/config.json",
            &format!("{}/", dir.path().display()),
        ],
    );
    ok(&out);
    assert_eq!(
        std::fs::read(dir.path().join("config.json")).unwrap(),
        b"{\"layers\": 2}"
    );
    // Both sides local, or both remote: refused.
    fails(&run(&s, &["cp", m, b]));
    fails(&run(&s, &["cp", "s3://cli/a", "s3://cli/b"]));
}

#[test]
fn rewrap_a_prefix_to_a_named_key_then_drop_the_old_key() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let kd = testdata().join("keys");
    let entry = |name: &str, k: &str, default: bool| {
        format!(
            "[[keys]]\nname = \"{name}\"\nkind = \"rsa\"\npublic_key = \"{p}/public.pem\"\n\
             private_key = \"{p}/private.pem\"\nmatdesc = {{ key = \"{name}\" }}\ndefault = {default}\n\n",
            p = kd.join(k).display()
        )
    };
    let both = dir.path().join("both.toml");
    std::fs::write(&both, entry("old", "a", true) + &entry("new", "b", false)).unwrap();
    let only_new = dir.path().join("new.toml");
    std::fs::write(&only_new, entry("new", "b", true)).unwrap();
    let b = both.to_str().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(5000, 9)).unwrap();
    let i = input.to_str().unwrap();
    for k in [
        "s3://cli/ckpt/1",
        "s3://cli/ckpt/2",
        "s3://cli/ckpt/sub/3",
        "s3://cli/other",
    ] {
        ok(&cli(
            &s,
            &["--force-path-style", "--keyring", b, "put", i, k],
        ));
    }
    let rewrap = |ring: &str, to: &str| {
        cli(
            &s,
            &[
                "--force-path-style",
                "--keyring",
                ring,
                "rewrap",
                "s3://cli/ckpt/",
                "--to",
                to,
            ],
        )
    };
    // A dry run lists the plan on stdout, writes nothing, and fails on what would fail.
    let dry = |ring: &str, to: &str| {
        cli(
            &s,
            &[
                "--force-path-style",
                "--keyring",
                ring,
                "rewrap",
                "s3://cli/ckpt/",
                "--to",
                to,
                "--dryrun",
            ],
        )
    };
    // The wrapped key as stored (a copy onto itself keeps the ETag, so that cannot tell).
    let etag = |k: &str| {
        rt().block_on(async {
            let c = s.client().await;
            let h = c.head_object().bucket("cli").key(k).send().await.unwrap();
            h.metadata().unwrap()["client-side-encryption-key"].clone()
        })
    };
    let before = etag("ckpt/1");
    let out = dry(b, "new");
    let plan = ok(&out);
    assert_eq!(plan.lines().count(), 3, "{plan}");
    assert!(
        plan.lines()
            .all(|l| l.starts_with("(dryrun) rewrap s3://cli/ckpt/") && l.contains("-> ")),
        "{plan}"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("(dryrun) would rewrap 3 objects"), "{err}");
    assert_eq!(etag("ckpt/1"), before, "a dry run wrote");
    // Without the current key the plan fails for every object, and says so.
    let n = only_new.to_str().unwrap();
    let out = dry(n, "new");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert_eq!(etag("ckpt/1"), before);

    let out = rewrap(b, "new");
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("rewrapped 3 objects") && err.contains("0 already"),
        "{err}"
    );
    assert_ne!(etag("ckpt/1"), before);
    let out = rewrap(b, "new");
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("rewrapped 0 objects") && err.contains("3 already under new"),
        "{err}"
    );

    // The old key is no longer needed under the prefix; outside it, it still is.
    let out_file = dir.path().join("out");
    let o = out_file.to_str().unwrap();
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            n,
            "get",
            "s3://cli/ckpt/sub/3",
            o,
        ],
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&input).unwrap()
    );
    let e = fails(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            n,
            "get",
            "s3://cli/other",
            o,
        ],
    ));
    assert!(e.contains("matdesc"), "{e}");

    // --reencrypt: new content keys, bodies encrypted anew; the new key alone still reads them.
    let raw = |key: &str| {
        rt().block_on(async {
            let client = s.client().await;
            let out = client
                .get_object()
                .bucket("cli")
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().to_vec()
        })
    };
    let before = raw("ckpt/1");
    let out = cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            b,
            "rewrap",
            "s3://cli/ckpt/",
            "--to",
            "new",
            "--reencrypt",
        ],
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("rewrapped 3 objects"), "{err}");
    assert_ne!(
        raw("ckpt/1"),
        before,
        "the body is encrypted under a new content key"
    );
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            n,
            "get",
            "s3://cli/ckpt/1",
            o,
        ],
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&input).unwrap()
    );

    // Unknown target name, and no keyring: clear errors.
    let e = fails(&rewrap(b, "nope"));
    assert!(e.contains("old, new"), "{e}");
    let e = fails(&run(&s, &["rewrap", "s3://cli/ckpt/", "--to", "new"]));
    assert!(e.contains("--keyring"), "{e}");
}

#[test]
fn aws_kms_keyring_entry_and_rewrap_to_it() {
    let s = server(Fault::None);
    let moto = support::moto::Moto::start();
    rt().block_on(moto.create_key(Some("alias/ckpt")));
    let dir = tempfile::tempdir().unwrap();
    let kd = testdata().join("keys/a");
    let kms_entry = |default: bool| {
        format!(
            "[[keys]]\nname = \"prod-aws\"\nkind = \"aws-kms\"\nkey_id = \"alias/ckpt\"\n\
             region = \"us-east-1\"\nendpoint_url = \"{}\"\nmatdesc = {{ env = \"prod\" }}\n\
             default = {default}\n\n",
            moto.endpoint
        )
    };
    let rsa_entry = format!(
        "[[keys]]\nname = \"old\"\nkind = \"rsa\"\npublic_key = \"{p}/public.pem\"\n\
         private_key = \"{p}/private.pem\"\ndefault = true\n\n",
        p = kd.display()
    );
    let both = dir.path().join("both.toml");
    std::fs::write(&both, rsa_entry + &kms_entry(false)).unwrap();
    let kms_only = dir.path().join("kms.toml");
    std::fs::write(&kms_only, kms_entry(true)).unwrap();
    let (b, k) = (both.to_str().unwrap(), kms_only.to_str().unwrap());
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(12_345, 3)).unwrap();
    let i = input.to_str().unwrap();
    let out_file = dir.path().join("out");
    let o = out_file.to_str().unwrap();

    // Written directly under KMS, read back.
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            k,
            "put",
            i,
            "s3://cli/kms",
        ],
    ));
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            k,
            "get",
            "s3://cli/kms",
            o,
        ],
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&input).unwrap()
    );
    let meta = ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            k,
            "inspect",
            "s3://cli/kms",
        ],
    ));
    assert!(
        meta.contains("CRYPTOBUCKET/AWS-KMS") && meta.contains("AWS KMS key alias/ckpt"),
        "{meta}"
    );

    // Written under RSA, rotated to KMS, then read with the KMS key alone.
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            b,
            "put",
            i,
            "s3://cli/r/x",
        ],
    ));
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            b,
            "rewrap",
            "s3://cli/r/",
            "--to",
            "prod-aws",
        ],
    ));
    std::fs::remove_file(&out_file).unwrap();
    ok(&cli(
        &s,
        &[
            "--force-path-style",
            "--keyring",
            k,
            "get",
            "s3://cli/r/x",
            o,
        ],
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn aliyun_kms_keyring_entry_with_env_credentials() {
    let s = server(Fault::None);
    let fake = support::aliyun_kms::FakeKms::start("LTAI-cli", "cli-secret", Some("cli-sts"));
    let key = fake.create_key();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ali.toml");
    std::fs::write(
        &ring,
        format!(
            "[[keys]]\nname = \"prod-ali\"\nkind = \"aliyun-kms\"\nkey_id = \"{key}\"\n\
             region = \"cn-hangzhou\"\nendpoint_url = \"{}\"\nwrite_encoding = \"oss2\"\n\
             passphrase_env = \"CKPT_PASSPHRASE\"\nmatdesc = {{ env = \"prod\" }}\n",
            fake.endpoint
        ),
    )
    .unwrap();
    let r = ring.to_str().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, pattern(4321, 5)).unwrap();
    let out_file = dir.path().join("out");
    let with_env = |args: &[&str], passphrase: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cryptobucket"));
        c.args(args)
            .env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_ENDPOINT_URL", &s.endpoint)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-cli")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "cli-secret")
            .env("ALIBABA_CLOUD_SECURITY_TOKEN", "cli-sts")
            .env("CKPT_PASSPHRASE", passphrase);
        c.output().unwrap()
    };
    let (i, o) = (input.to_str().unwrap(), out_file.to_str().unwrap());
    ok(&with_env(
        &[
            "--force-path-style",
            "--keyring",
            r,
            "put",
            i,
            "s3://cli/ali",
        ],
        "pp",
    ));
    ok(&with_env(
        &[
            "--force-path-style",
            "--keyring",
            r,
            "get",
            "s3://cli/ali",
            o,
        ],
        "pp",
    ));
    assert_eq!(
        std::fs::read(&out_file).unwrap(),
        std::fs::read(&input).unwrap()
    );
    assert!(fake.calls("GenerateDataKey") >= 1);
    // Another passphrase: KMS refuses the key; one uniform error, no secrets in it.
    let e = fails(&with_env(
        &[
            "--force-path-style",
            "--keyring",
            r,
            "get",
            "s3://cli/ali",
            o,
        ],
        "other",
    ));
    assert!(e.contains("key commitment"), "{e}");
    assert!(!e.contains("cli-secret") && !e.contains("cli-sts"), "{e}");
}

/// An S3 error on the command line is one readable line: no SDK debug dump.
#[test]
fn service_errors_print_one_readable_line() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o");
    let out = run(&s, &["get", "s3://ab/x", o.to_str().unwrap()]);
    let err = fails(&out);
    for dump in [
        "Error {",
        "raw:",
        "Response {",
        "SdkError",
        "ServiceError {",
    ] {
        assert!(!err.contains(dump), "{err}");
    }
    assert!(err.contains("s3://ab/x"), "{err}");
    assert!(err.contains("HTTP "), "{err}");
}

#[test]
fn signing_keys_verify_inspect_and_strict_mode() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    ok(&cli(&s, &["keygen", "--out-dir", k]));
    let out = cli(&s, &["keygen", "--signing", "--out-dir", k]);
    ok(&out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("signing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(keys.join("signing.pub")).unwrap();
    let public = public.trim();
    // The secret seed is not printed.
    let seed = std::fs::read_to_string(keys.join("signing.key")).unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(seed.trim()));
    // Writer: signs. Reader: trusts the writer, strict.
    let writer = dir.path().join("writer.toml");
    std::fs::write(
        &writer,
        format!(
            "[integrity]\nsigning_key_file = \"{k}/signing.key\"\n\n[[keys]]\nkind = \"rsa\"\npublic_key = \"{k}/public.pem\"\nprivate_key = \"{k}/private.pem\"\n"
        ),
    )
    .unwrap();
    let reader = dir.path().join("reader.toml");
    std::fs::write(
        &reader,
        format!(
            "[integrity]\nstrict = true\ntrusted_signers = [\"{public}\"]\n\n[[keys]]\nkind = \"rsa\"\nprivate_key = \"{k}/private.pem\"\n"
        ),
    )
    .unwrap();
    let (w, r) = (writer.to_str().unwrap(), reader.to_str().unwrap());
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("a.bin"), pattern(3000, 1)).unwrap();
    std::fs::write(model.join("b.bin"), pattern(6 * 1024 * 1024 + 1, 2)).unwrap();
    ok(&cli(
        &s,
        &[
            "--keyring",
            w,
            "cp",
            "-r",
            model.to_str().unwrap(),
            "s3://cli/m/",
        ],
    ));
    // A public-key-only forger writes c.bin; a legacy (integrity-less) object is planted too.
    let forged = dir.path().join("forged.bin");
    std::fs::write(&forged, pattern(100, 3)).unwrap();
    ok(&cli(
        &s,
        &[
            "--rsa-public-key",
            &format!("{k}/public.pem"),
            "put",
            forged.to_str().unwrap(),
            "s3://cli/m/c.bin",
        ],
    ));

    let out = cli(&s, &["--keyring", r, "verify", "s3://cli/m/"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("ok            m/a.bin  (signed by {public})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok            m/b.bin  (signed by {public})")),
        "{text}"
    );
    assert!(
        text.contains("FAILED        m/c.bin  integrity signature invalid"),
        "{text}"
    );
    assert!(!text.contains(".cbtags"), "sidecars are not listed: {text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "3 objects under s3://cli/m/: 2 verified, 0 without integrity data, 1 failed"
        )
    );
    // Outside strict mode the forgery is consistent (SECURITY.md says why that is no proof).
    let lax = dir.path().join("lax.toml");
    std::fs::write(
        &lax,
        std::fs::read_to_string(&reader)
            .unwrap()
            .replace("strict = true", "strict = false"),
    )
    .unwrap();
    let text = ok(&cli(
        &s,
        &[
            "--keyring",
            lax.to_str().unwrap(),
            "verify",
            "s3://cli/m/c.bin",
        ],
    ));
    assert!(text.contains("ok            m/c.bin"), "{text}");
    // ... and --strict turns strict mode on from the command line.
    let err = fails(&cli(
        &s,
        &[
            "--keyring",
            lax.to_str().unwrap(),
            "--strict",
            "get",
            "s3://cli/m/c.bin",
            dir.path().join("c.out").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("not signed"), "{err}");
    assert!(!dir.path().join("c.out").exists());

    // inspect shows the integrity state and whether the signer is trusted.
    let info = ok(&cli(&s, &["--keyring", r, "inspect", "s3://cli/m/b.bin"]));
    assert!(info.contains("integrity: v1, object id "), "{info}");
    assert!(
        info.contains("7 chunks of 1048576 bytes, length bound, tags in m/b.bin.cbtags"),
        "{info}"
    );
    assert!(
        info.contains(&format!("signature: by {public} (trusted by this keyring)")),
        "{info}"
    );

    // A flipped byte in b.bin: verify names the chunk; get refuses and leaves no file.
    rt().block_on(async {
        let client = s.client().await;
        let got = client
            .get_object()
            .bucket("cli")
            .key("m/b.bin")
            .send()
            .await
            .unwrap();
        let meta = got.metadata().cloned();
        let mut body = got.body.collect().await.unwrap().to_vec();
        body[3 * 1024 * 1024 + 5] ^= 1;
        client
            .put_object()
            .bucket("cli")
            .key("m/b.bin")
            .set_metadata(meta)
            .body(body.into())
            .send()
            .await
            .unwrap();
    });
    let out = cli(&s, &["--keyring", r, "verify", "s3://cli/m/b.bin"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(
            "FAILED        m/b.bin  integrity tag mismatch: chunk 3 (bytes 3145728..4194304"
        ),
        "{text}"
    );
    let dest = dir.path().join("b.out");
    let err = fails(&cli(
        &s,
        &[
            "--keyring",
            r,
            "get",
            "s3://cli/m/b.bin",
            dest.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("does not match its integrity tag"), "{err}");
    assert!(!dest.exists());
    no_leftovers(dir.path());
}

#[test]
fn migrate_password_cbc_from_a_file_and_from_an_object() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let keys = testdata().join("keys/a");
    let (pubk, privk) = (keys.join("public.pem"), keys.join("private.pem"));
    let k = [
        "--rsa-public-key",
        pubk.to_str().unwrap(),
        "--rsa-private-key",
        privk.to_str().unwrap(),
    ];
    let data = pattern(70_001, 5);
    let plain = dir.path().join("model.plain");
    let enc = dir.path().join("model.enc");
    std::fs::write(&plain, &data).unwrap();
    support::run_python(
        "tests/interop/password_cbc.py",
        &[
            plain.to_str().unwrap(),
            enc.to_str().unwrap(),
            "hunter2",
            "0f0e0d0c0b0a09080706050403020100",
        ],
    );
    let pw = dir.path().join("pw.txt");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let mut args = k.to_vec();
    args.extend([
        "migrate-password-cbc",
        enc.to_str().unwrap(),
        "s3://cli/model.bin",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    ok(&cli(&s, &args));
    let back = dir.path().join("back.bin");
    let mut args = k.to_vec();
    args.extend(["get", "s3://cli/model.bin", back.to_str().unwrap()]);
    ok(&cli(&s, &args));
    assert!(std::fs::read(&back).unwrap() == data);
    // From an object holding the old file; a wrong password writes nothing.
    rt().block_on(async {
        let client = s.client().await;
        let body = std::fs::read(&enc).unwrap();
        client
            .put_object()
            .bucket("cli")
            .key("legacy/model.enc")
            .body(body.into())
            .send()
            .await
            .unwrap();
    });
    let mut args = k.to_vec();
    args.extend([
        "migrate-password-cbc",
        "s3://cli/legacy/model.enc",
        "s3://cli/model2.bin",
        "--password-env",
        "OLD_PW",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_cryptobucket"))
        .args(&args)
        .env("OLD_PW", "hunter2")
        .env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", &s.endpoint)
        .output()
        .unwrap();
    ok(&out);
    std::fs::write(&pw, "hunter3\n").unwrap();
    let mut args = k.to_vec();
    args.extend([
        "migrate-password-cbc",
        enc.to_str().unwrap(),
        "s3://cli/model3.bin",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let err = fails(&cli(&s, &args));
    assert!(err.contains("bad padding"), "{err}");
    assert!(!err.contains("hunter"), "{err}");
    let mut args = k.to_vec();
    args.extend(["inspect", "s3://cli/model3.bin"]);
    assert!(!cli(&s, &args).status.success(), "nothing was written");
}

/// Runs the CLI on a pseudo-terminal (`tests/interop/pty_run.py`), typing `answers` at its
/// passphrase prompts.
fn on_terminal(server: &TestServer, args: &[&str], answers: &[&str]) -> serde_json::Value {
    on_terminal_with(server, args, answers, false)
}

/// [`on_terminal`], with standard output going to a pipe instead when `stdout_pipe`.
fn on_terminal_with(
    server: &TestServer,
    args: &[&str],
    answers: &[&str],
    stdout_pipe: bool,
) -> serde_json::Value {
    let mut argv = vec![env!("CARGO_BIN_EXE_cryptobucket")];
    argv.extend_from_slice(args);
    support::python_peer(
        "tests/interop/pty_run.py",
        &serde_json::json!({
            "argv": argv,
            "answers": answers,
            "stdout": if stdout_pipe { "pipe" } else { "terminal" },
            "env": {
                "AWS_ACCESS_KEY_ID": support::server::ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": support::server::SECRET_KEY,
                "AWS_CONFIG_FILE": "/nonexistent",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_ENDPOINT_URL": server.endpoint,
                "CRYPTOBUCKET_CHECKPOINT_DIR": checkpoint_dir(),
            },
        }),
    )
}

#[test]
fn passphrase_prompt_on_a_terminal_without_echo() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    std::fs::write(
        &keyring,
        "[[keys]]\nname = \"team\"\nkind = \"passphrase\"\n",
    )
    .unwrap();
    let kr = keyring.to_str().unwrap();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, pattern(300_000, 11)).unwrap();
    let out = dir.path().join("out.bin");
    let (src_s, out_s) = (src.to_str().unwrap(), out.to_str().unwrap());
    let secret = "tr0ub4dor & 3";

    // Writing asks twice, with echo off, and never shows the passphrase.
    let r = on_terminal(
        &s,
        &["--keyring", kr, "put", src_s, "s3://cli/prompted"],
        &[secret, secret],
    );
    let shown = r["output"].as_str().unwrap();
    assert_eq!(r["status"], 0, "{shown}");
    assert_eq!(r["answered"], 2, "{shown}");
    assert_eq!(r["echo_off"], true, "{shown}");
    assert!(shown.contains("passphrase for keyring team: "), "{shown}");
    assert!(shown.contains("(again)"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");

    // Reading asks once; the right passphrase reads, a wrong one is a key error.
    let r = on_terminal(
        &s,
        &["--keyring", kr, "get", "s3://cli/prompted", out_s],
        &[secret],
    );
    assert_eq!(r["status"], 0, "{}", r["output"]);
    assert_eq!(r["answered"], 1, "{}", r["output"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    std::fs::remove_file(&out).unwrap();
    let r = on_terminal(
        &s,
        &["--keyring", kr, "get", "s3://cli/prompted", out_s],
        &["not it"],
    );
    assert_ne!(r["status"], 0, "{}", r["output"]);
    assert!(
        r["output"]
            .as_str()
            .unwrap()
            .contains("is not the one that wrote it"),
        "the error names the cause: {}",
        r["output"]
    );
    assert!(!out.exists());

    // Two different answers on write: refused, nothing uploaded.
    let r = on_terminal(
        &s,
        &["--keyring", kr, "put", src_s, "s3://cli/typo"],
        &[secret, "tr0ub4dor & 4"],
    );
    assert_ne!(r["status"], 0, "{}", r["output"]);
    assert!(
        r["output"].as_str().unwrap().contains("differ"),
        "{}",
        r["output"]
    );
    let err = fails(&cli(&s, &["inspect", "s3://cli/typo"]));
    assert!(err.contains("typo"), "{err}");

    // Without a terminal there is nobody to ask: a clear error, not a hang.
    let err = fails(&cli(
        &s,
        &["--keyring", kr, "get", "s3://cli/prompted", out_s],
    ));
    assert!(err.contains("not a terminal"), "{err}");
}

#[test]
fn keygen_ecies_recipient_writes_and_its_private_key_reads() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    let out = cli(
        &s,
        &[
            "keygen",
            "--ecies-p256",
            "--subject",
            "tee-7",
            "--days",
            "10",
            "--out-dir",
            k,
        ],
    );
    ok(&out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("recipient.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(keys.join("recipient.key")).unwrap();
    assert!(
        secret.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 expected"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret.lines().nth(1).unwrap()));
    // A second keygen into the same directory refuses to overwrite.
    fails(&cli(&s, &["keygen", "--ecies-p256", "--out-dir", k]));
    assert_eq!(
        std::fs::read_to_string(keys.join("recipient.key")).unwrap(),
        secret
    );

    let writer = dir.path().join("writer.toml");
    std::fs::write(
        &writer,
        format!("[[keys]]\nkind = \"ecies-p256\"\nrecipient = \"{k}/recipient.crt\"\n"),
    )
    .unwrap();
    let reader = dir.path().join("reader.toml");
    std::fs::write(
        &reader,
        format!("[[keys]]\nkind = \"ecies-p256\"\nprivate_key = \"{k}/recipient.key\"\n"),
    )
    .unwrap();
    let (w, r) = (writer.to_str().unwrap(), reader.to_str().unwrap());
    let src = dir.path().join("m.bin");
    std::fs::write(&src, pattern(2_000_000, 5)).unwrap();
    let got = dir.path().join("got.bin");
    ok(&cli(
        &s,
        &["--keyring", w, "put", src.to_str().unwrap(), "s3://cli/tee"],
    ));
    // The certificate alone cannot read.
    fails(&cli(
        &s,
        &["--keyring", w, "get", "s3://cli/tee", got.to_str().unwrap()],
    ));
    assert!(!got.exists());
    ok(&cli(
        &s,
        &["--keyring", r, "get", "s3://cli/tee", got.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&src).unwrap());
}

fn cli_with_env(server: &TestServer, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cryptobucket"));
    c.args(args);
    let mut c = hermetic(c, server);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The environment every CLI run of these tests gets: the server's endpoint and credentials,
/// checkpoints under the target directory, no keyring or AWS config of the user's.
fn hermetic(mut c: Command, server: &TestServer) -> Command {
    c.env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
        .env_remove("AWS_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("CRYPTOBUCKET_CHECKPOINT_DIR", checkpoint_dir())
        // Hermetic: no default keyring from the environment or the user's config.
        .env_remove("CRYPTOBUCKET_KEYRING")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    c
}

/// A downloaded file takes the mode any new file gets under the caller's umask (as from `cp`
/// or `aws s3 cp`), not its partial file's private 0600: a model fetched for a server that
/// runs under another account must be readable by it.
#[test]
fn downloaded_files_take_the_umask_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, pattern(2 * 5 * 1024 * 1024 + 1, 47)).unwrap();
    ok(&run(
        &s,
        &["put", input.to_str().unwrap(), "s3://cli/modes/m.bin"],
    ));
    for (umask, want) in [("027", 0o640), ("002", 0o664)] {
        let out = dir.path().join(format!("u{umask}"));
        let file = out.join("m.bin");
        let ranged = out.join("r.bin");
        let tree = out.join("tree");
        for args in [
            vec![
                "get",
                "s3://cli/modes/m.bin",
                file.to_str().unwrap(),
                "--part-size",
                "5MiB",
            ],
            vec![
                "get",
                "s3://cli/modes/m.bin",
                ranged.to_str().unwrap(),
                "--range",
                "1-",
            ],
            vec!["cp", "-r", "s3://cli/modes/", tree.to_str().unwrap()],
        ] {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_cryptobucket"))
                .args(keyed(&args));
            ok(&hermetic(c, &s).output().unwrap());
        }
        for f in [file, ranged, tree.join("m.bin")] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{} under umask {umask}: {mode:o}", f.display());
        }
    }
    no_leftovers(dir.path());
}

/// `get --no-fsync` makes no sync call (seen on its system calls, with strace, as a reviewer
/// would check it); a plain `get` of the same object syncs its ranges and the file.
#[test]
fn get_without_fsync_makes_no_sync_calls() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 * 5 * 1024 * 1024 + 3, 44);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    ok(&run(
        &s,
        &["put", input.to_str().unwrap(), "s3://cli/scratch"],
    ));
    // Uploads write nothing locally: the flag is refused there rather than ignored.
    let e = fails(&run(
        &s,
        &["put", input.to_str().unwrap(), "s3://cli/x", "--no-fsync"],
    ));
    assert!(e.contains("--no-fsync applies to downloads only"), "{e}");
    let dest = dir.path().join("out.bin");
    let trace = dir.path().join("trace");
    // Whole objects (parallel ranges) and a ranged get (one GET, saved by the library's
    // other writer): both honour the flag.
    for (ranged, no_fsync) in [(false, false), (false, true), (true, false), (true, true)] {
        let _ = std::fs::remove_file(&dest);
        let mut args = keyed(&["get", "s3://cli/scratch", dest.to_str().unwrap()]);
        let want = match ranged {
            true => {
                args.extend(["--range".into(), "100-".into()]);
                &data[100..]
            }
            false => {
                args.extend(["--part-size".into(), "5MiB".into()]);
                &data[..]
            }
        };
        if no_fsync {
            args.push("--no-fsync".into());
        }
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,sync_file_range,syncfs",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cryptobucket"))
        .args(&args);
        let out = hermetic(c, &s)
            .output()
            .expect("strace (apt package strace; scripts/test.sh installs it)");
        ok(&out);
        assert!(std::fs::read(&dest).unwrap() == want);
        let calls = std::fs::read_to_string(&trace).unwrap();
        let syncs = calls.lines().filter(|l| l.contains("sync")).count();
        if no_fsync {
            assert_eq!(syncs, 0, "--no-fsync synced (ranged: {ranged}):\n{calls}");
        } else {
            // At least the file's sync before its rename and the directory's after it.
            assert!(
                syncs >= 2,
                "a durable get must sync (ranged: {ranged}):\n{calls}"
            );
        }
        no_leftovers(dir.path());
    }
}

/// `get` into a directory and `put` to a prefix behave as `cp` does: the file takes the key's
/// last name (or keeps its own), missing directories are created; `--range` refuses the
/// options a single GET cannot use.
#[test]
fn get_into_a_directory_and_range_refusals() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(2 * 5 * 1024 * 1024 + 9, 45);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    ok(&run(
        &s,
        &["put", input.to_str().unwrap(), "s3://cli/runs/m.bin"],
    ));
    // To a prefix, `put` keeps the file's name, as `cp` does.
    ok(&run(&s, &["put", input.to_str().unwrap(), "s3://cli/up/"]));
    let back = dir.path().join("back.bin");
    ok(&run(
        &s,
        &["get", "s3://cli/up/in.bin", back.to_str().unwrap()],
    ));
    assert!(std::fs::read(&back).unwrap() == data);
    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let fresh = dir.path().join("a/b/");
    for (dest, range) in [
        (existing.display().to_string(), None),
        (format!("{}/", fresh.display()), None),
        (existing.display().to_string(), Some("5-")),
    ] {
        let mut args = vec!["get", "s3://cli/runs/m.bin", &dest];
        if let Some(r) = range {
            args.extend(["--range", r]);
        }
        ok(&run(&s, &args));
        let got = std::fs::read(Path::new(&dest).join("m.bin")).unwrap();
        assert!(got == data[range.map_or(0, |_| 5)..], "{dest} {range:?}");
    }
    // A download that fails takes back the directories it made for its file.
    let made = dir.path().join("made");
    for range in [None, Some("0-9")] {
        let dest = format!("{}/x/y/", made.display());
        let mut args = vec!["get", "s3://cli/runs/missing.bin", &dest];
        if let Some(r) = range {
            args.extend(["--range", r]);
        }
        fails(&run(&s, &args));
        assert!(!made.exists(), "{range:?}");
    }
    // Options a ranged get cannot honour are refused, not ignored.
    for extra in [
        ["--concurrency", "2"],
        ["--part-size", "5MiB"],
        ["--checkpoint-dir", "/tmp"],
    ] {
        let out = run(
            &s,
            &[
                &["get", "s3://cli/runs/m.bin", "x", "--range", "0-9"][..],
                &extra[..],
            ]
            .concat(),
        );
        let e = stderr(&out);
        assert!(
            !out.status.success() && e.contains("cannot be used with"),
            "{e}"
        );
    }
    no_leftovers(dir.path());
}

/// `tensors ls/get` on our objects and veTurboIO files, and `veturbo import/export`, with
/// files from the safetensors package and veTurboIO files made by `cryptography`
/// (`tests/interop/tensors_peer.py`).
#[test]
fn tensors_and_veturbo_commands() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = support::python_peer(
        "tests/interop/tensors_peer.py",
        &serde_json::json!({"op": "make", "dir": d, "big": 300_000}),
    );
    let env_key = made["env_key"].as_str().unwrap();
    let env_iv = made["env_iv"].as_str().unwrap();
    let vt_env = [("VETURBOIO_KEY", env_key), ("VETURBOIO_IV", env_iv)];
    let rsa = [
        "--rsa-public-key",
        &testdata().join("keys/a/public.pem").display().to_string(),
        "--rsa-private-key",
        &testdata().join("keys/a/private.pem").display().to_string(),
    ]
    .map(|s| s.to_owned());
    fn keys_then<'a>(rsa: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
        let mut v: Vec<&str> = rsa.iter().map(String::as_str).collect();
        v.extend_from_slice(args);
        v
    }
    let model = d.join("model.safetensors");
    let vt_file = d.join("model.vt-env");

    // veTurboIO file -> our object; tensors listed and fetched from it.
    ok(&cli_with_env(
        &s,
        &keys_then(
            &rsa,
            &[
                "veturbo",
                "import",
                vt_file.to_str().unwrap(),
                "s3://cli/m.safetensors",
            ],
        ),
        &vt_env,
    ));
    let listing = ok(&cli(
        &s,
        &keys_then(&rsa, &["tensors", "ls", "s3://cli/m.safetensors"]),
    ));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines.len(),
        made["tensors"].as_object().unwrap().len(),
        "{listing}"
    );
    let q = lines
        .iter()
        .find(|l| l.starts_with("layers.0.attn.q\t"))
        .expect("layers.0.attn.q listed");
    assert!(q.contains("\tF32\t[5,7]\t") && q.ends_with("\t140"), "{q}");
    let out = d.join("layer0.safetensors");
    ok(&cli(
        &s,
        &keys_then(
            &rsa,
            &[
                "tensors",
                "get",
                "s3://cli/m.safetensors",
                out.to_str().unwrap(),
                "--names",
                "layers.0.*",
            ],
        ),
    ));
    let loaded = support::python_peer(
        "tests/interop/tensors_peer.py",
        &serde_json::json!({"op": "load", "path": out}),
    );
    let loaded = loaded["tensors"].as_object().unwrap();
    assert_eq!(loaded.len(), 4);
    for (name, t) in loaded {
        assert_eq!(t, &made["tensors"][name], "{name}");
    }
    let err = fails(&cli(
        &s,
        &keys_then(
            &rsa,
            &[
                "tensors",
                "get",
                "s3://cli/m.safetensors",
                "x.st",
                "--names",
                "nope.*",
            ],
        ),
    ));
    assert!(err.contains("no tensor matches"), "{err}");

    // Our object -> veTurboIO file: byte for byte the reference file (same key and IV).
    let back = d.join("back.vt");
    ok(&cli_with_env(
        &s,
        &keys_then(
            &rsa,
            &[
                "veturbo",
                "export",
                "s3://cli/m.safetensors",
                back.to_str().unwrap(),
            ],
        ),
        &vt_env,
    ));
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&vt_file).unwrap());

    // A veTurboIO file stored as it is, listed in place with --veturbo.
    let raw = d.join("model.vt-header");
    rt().block_on(async {
        let client = s.client().await;
        client
            .put_object()
            .bucket("cli")
            .key("vt/model.safetensors")
            .body(aws_sdk_s3::primitives::ByteStream::from(
                std::fs::read(&raw).unwrap(),
            ))
            .send()
            .await
            .unwrap();
    });
    let header_env = [
        ("VETURBOIO_KEY", made["header_key"].as_str().unwrap()),
        ("VETURBOIO_IV", made["header_iv"].as_str().unwrap()),
    ];
    let listing = ok(&cli_with_env(
        &s,
        &[
            "tensors",
            "ls",
            "--veturbo",
            "s3://cli/vt/model.safetensors",
        ],
        &header_env,
    ));
    assert_eq!(listing.lines().count(), lines.len(), "{listing}");
    // The wrong key: the header does not parse as safetensors, a typed error, no garbage.
    let err = fails(&cli_with_env(
        &s,
        &[
            "tensors",
            "ls",
            "--veturbo",
            "s3://cli/vt/model.safetensors",
        ],
        &vt_env,
    ));
    assert!(err.contains("safetensors"), "{err}");
    assert_eq!(
        std::fs::read(&model).unwrap().len() as u64,
        made["size"].as_u64().unwrap()
    );

    // Into the bucket as veTurboIO objects, byte for byte the reference file: a local file
    // encrypted as it is uploaded (`veturbo put`, 5 MiB parts), and one of our objects
    // converted in the bucket (`veturbo export` to s3://); `veturbo get` decrypts them back.
    let raw_object = |key: &str| {
        rt().block_on(async {
            let got = s
                .client()
                .await
                .get_object()
                .bucket("cli")
                .key(key)
                .send()
                .await
                .unwrap();
            got.body.collect().await.unwrap().to_vec()
        })
    };
    let reference = std::fs::read(&vt_file).unwrap();
    ok(&cli_with_env(
        &s,
        &[
            "veturbo",
            "put",
            model.to_str().unwrap(),
            "s3://cli/vt/put.bin",
            "--part-size",
            "5MiB",
            "--no-progress",
        ],
        &vt_env,
    ));
    assert!(raw_object("vt/put.bin") == reference);
    ok(&cli_with_env(
        &s,
        &keys_then(
            &rsa,
            &[
                "veturbo",
                "export",
                "s3://cli/m.safetensors",
                "s3://cli/vt/exported.bin",
            ],
        ),
        &vt_env,
    ));
    assert!(raw_object("vt/exported.bin") == reference);
    let plain = d.join("plain-again.safetensors");
    ok(&cli_with_env(
        &s,
        &[
            "veturbo",
            "get",
            "s3://cli/vt/exported.bin",
            plain.to_str().unwrap(),
        ],
        &vt_env,
    ));
    assert!(std::fs::read(&plain).unwrap() == std::fs::read(&model).unwrap());
}

/// veTurboIO's KMS route end to end: `veturbo export --kms` writes a headered file whose new
/// data key Volcengine KMS (the testkit's local server) encrypts into the header;
/// `tensors ls --veturbo --kms` reads it in place; `veturbo import --kms` brings it back.
#[test]
fn veturbo_files_keyed_by_volcengine_kms() {
    let s = server(Fault::None);
    let fake = support::volc_kms::FakeVolcKms::start("AKLT-cli", "cli-secret", None, "cn-beijing");
    fake.create_key("ml", "ckpt");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    support::python_peer(
        "tests/interop/tensors_peer.py",
        &serde_json::json!({"op": "make", "dir": d, "big": 1000}),
    );
    let model = d.join("model.safetensors");
    let kms_env = [
        ("VETURBOIO_KMS_HOST", fake.endpoint.as_str()),
        ("VETURBOIO_KMS_KEYRING_NAME", "ml"),
        ("VETURBOIO_KMS_KEY_NAME", "ckpt"),
        ("VOLCENGINE_ACCESS_KEY", "AKLT-cli"),
        ("VOLCENGINE_SECRET_KEY", "cli-secret"),
    ];
    let (public, private) = (
        testdata().join("keys/a/public.pem").display().to_string(),
        testdata().join("keys/a/private.pem").display().to_string(),
    );
    let keys = ["--rsa-public-key", &public, "--rsa-private-key", &private];
    let with =
        |args: &[&str]| -> Vec<String> { keys.iter().chain(args).map(|a| a.to_string()).collect() };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_with_env(&s, &args, &kms_env)
    };
    ok(&run(with(&[
        "put",
        model.to_str().unwrap(),
        "s3://cli/ours.safetensors",
    ])));
    let vt = d.join("exported.vt");
    ok(&run(with(&[
        "veturbo",
        "export",
        "s3://cli/ours.safetensors",
        vt.to_str().unwrap(),
        "--kms",
    ])));
    let file = std::fs::read(&vt).unwrap();
    assert!(file.starts_with(b"Byte3ncryptM0del{\"mode\": \"CTR-128\""));
    assert_eq!(
        file.len() as u64,
        262_144 + std::fs::metadata(&model).unwrap().len()
    );
    assert_eq!(
        fake.calls("Encrypt"),
        1,
        "the new veTurboIO data key, encrypted by KMS"
    );
    rt().block_on(async {
        s.client()
            .await
            .put_object()
            .bucket("cli")
            .key("vt.safetensors")
            .body(aws_sdk_s3::primitives::ByteStream::from(file))
            .send()
            .await
            .unwrap();
    });
    let listing = ok(&run(vec![
        "tensors".into(),
        "ls".into(),
        "--veturbo".into(),
        "--kms".into(),
        "s3://cli/vt.safetensors".into(),
    ]));
    assert_eq!(listing.lines().count(), 10, "{listing}");
    ok(&run(with(&[
        "veturbo",
        "import",
        vt.to_str().unwrap(),
        "s3://cli/back.safetensors",
        "--kms",
    ])));
    let back = d.join("back.safetensors");
    ok(&run(with(&[
        "get",
        "s3://cli/back.safetensors",
        back.to_str().unwrap(),
    ])));
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&model).unwrap());

    // A local file straight into a headered veTurboIO object (a new KMS data key), and back.
    ok(&run(vec![
        "veturbo".into(),
        "put".into(),
        model.to_str().unwrap().into(),
        "s3://cli/vt-put.safetensors".into(),
        "--kms".into(),
    ]));
    assert_eq!(fake.calls("Encrypt"), 2);
    let again = d.join("again.safetensors");
    ok(&run(vec![
        "veturbo".into(),
        "get".into(),
        "s3://cli/vt-put.safetensors".into(),
        again.to_str().unwrap().into(),
        "--kms".into(),
    ]));
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&model).unwrap());
}

/// `-` as source and destination: 50 MB through a pipe (multipart, unknown length), back out
/// on stdout byte for byte (stdout carries nothing else), a range to stdout, and stdin without
/// a key name refused.
#[test]
fn pipes_through_stdin_and_stdout() {
    use std::io::Write as _;
    let s = server(Fault::None);
    let (public, private) = (
        testdata().join("keys/a/public.pem").display().to_string(),
        testdata().join("keys/a/private.pem").display().to_string(),
    );
    let keys = ["--rsa-public-key", &public, "--rsa-private-key", &private];
    let command = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cryptobucket"));
        c.args(keys)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
            .env_remove("AWS_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_ENDPOINT_URL", &s.endpoint)
            .env("CRYPTOBUCKET_CHECKPOINT_DIR", checkpoint_dir());
        c
    };
    let data = pattern(50_000_000, 21);
    let mut up = command(&["cp", "-", "s3://cli/piped.bin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = up.stdin.take().unwrap();
    let feed = {
        let data = data.clone();
        std::thread::spawn(move || {
            // Written in odd-sized pieces, as a pipe delivers them.
            for piece in data.chunks(1_234_567) {
                stdin.write_all(piece).unwrap();
            }
        })
    };
    let out = up.wait_with_output().unwrap();
    feed.join().unwrap();
    ok(&out);
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uploaded standard input"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let down = command(&["cp", "s3://cli/piped.bin", "-"])
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(down.stdout.len(), data.len());
    assert!(
        down.stdout == data,
        "stdout must hold exactly the plaintext"
    );
    let range = command(&["get", "--range", "1000-1999", "s3://cli/piped.bin", "-"])
        .output()
        .unwrap();
    assert!(range.status.success());
    assert!(range.stdout == data[1000..2000]);
    // The same object through the parallel file path.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("back.bin");
    let args = [
        keys.as_slice(),
        &["get", "s3://cli/piped.bin", file.to_str().unwrap()],
    ]
    .concat();
    ok(&cli(&s, &args));
    assert!(std::fs::read(&file).unwrap() == data);
    // stdin needs a whole key.
    let no_key = command(&["cp", "-", "s3://cli/dir/"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = fails(&no_key);
    assert!(err.contains("standard input has no file name"), "{err}");
}

/// `ls`: one level with PRE lines, `-r` for everything; plaintext sizes, what each object needs
/// (wrap algorithm, matdesc, the keyring entry when keys are given, plain objects named as
/// such); integrity sidecars never shown.
#[test]
fn ls_lists_sizes_and_the_key_each_object_needs() {
    let s = server(Fault::None);
    let (public, private) = (
        testdata().join("keys/a/public.pem").display().to_string(),
        testdata().join("keys/a/private.pem").display().to_string(),
    );
    let keys = [
        "--rsa-public-key",
        public.as_str(),
        "--rsa-private-key",
        private.as_str(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pattern(5_000_000, 3)).unwrap();
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"twelve bytes").unwrap();
    fn with<'a>(keys: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [keys, args].concat()
    }
    ok(&cli(
        &s,
        &with(&keys, &["put", big.to_str().unwrap(), "s3://cli/m/big.bin"]),
    ));
    ok(&cli(
        &s,
        &with(
            &keys,
            &["put", small.to_str().unwrap(), "s3://cli/m/sub/small.bin"],
        ),
    ));
    rt().block_on(async {
        s.client()
            .await
            .put_object()
            .bucket("cli")
            .key("m/plain.txt")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"hello"))
            .send()
            .await
            .unwrap();
    });
    // One level, no keys.
    let out = ok(&cli(&s, &["ls", "s3://cli/m/"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("PRE m/sub/")),
        "{out}"
    );
    let big_line = lines.iter().find(|l| l.contains("m/big.bin")).expect(&out);
    assert!(big_line.contains(" 5000000 m/big.bin\t"), "{big_line}");
    assert!(
        big_line.contains("RSA/NONE/PKCS1Padding matdesc="),
        "{big_line}"
    );
    assert!(
        !big_line.contains("no-integrity") && !big_line.contains("key="),
        "{big_line}"
    );
    let plain = lines
        .iter()
        .find(|l| l.contains("m/plain.txt"))
        .expect(&out);
    assert!(
        plain.contains(" 5 m/plain.txt\tplain (not encrypted)"),
        "{plain}"
    );
    assert!(!out.contains(".cbtags"), "{out}");
    // Recursive, with keys: the entry that unwraps each object.
    let out = ok(&cli(&s, &with(&keys, &["ls", "-r", "s3://cli/m"])));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(!out.contains("PRE") && !out.contains(".cbtags"), "{out}");
    let small_line = lines
        .iter()
        .find(|l| l.contains("m/sub/small.bin"))
        .expect(&out);
    assert!(small_line.contains(" 12 m/sub/small.bin\t"), "{small_line}");
    assert!(small_line.contains("key=\"RSA-"), "{small_line}");
    // inspect --json: one JSON object for scripts.
    let out = ok(&cli(
        &s,
        &with(&keys, &["inspect", "--json", "s3://cli/m/big.bin"]),
    ));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["size"], 5_000_000);
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["wrap_algorithm"], "RSA/NONE/PKCS1Padding");
    assert_eq!(v["integrity"]["tags"], "in m/big.bin.cbtags");
    assert_eq!(v["integrity"]["chunks"], 5);
    assert!(
        v["keyring_key"].as_str().unwrap().starts_with("RSA-"),
        "{v}"
    );
    let v: serde_json::Value =
        serde_json::from_str(ok(&cli(&s, &["inspect", "--json", "s3://cli/m/plain.txt"])).trim())
            .unwrap();
    assert_eq!(v["encrypted"], false);
}

/// The default keyring: CRYPTOBUCKET_KEYRING, else the config directory's keyring.toml; RSA
/// flags still win over both (no conflict from an environment default).
#[test]
fn default_keyring_from_the_environment_and_the_config_dir() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let a = testdata().join("keys/a");
    let ring = format!(
        "[[keys]]\nkind = \"rsa\"\npublic_key = \"{0}/public.pem\"\nprivate_key = \"{0}/private.pem\"\nmatdesc = {{ ring = \"default\" }}\n",
        a.display()
    );
    let env_ring = dir.path().join("env.toml");
    std::fs::write(&env_ring, &ring).unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("cryptobucket")).unwrap();
    std::fs::write(config.join("cryptobucket/keyring.toml"), &ring).unwrap();
    let src = dir.path().join("m.bin");
    std::fs::write(&src, pattern(10_000, 4)).unwrap();
    let (src_s, out) = (src.to_str().unwrap(), dir.path().join("out.bin"));
    let env_ring_s = env_ring.to_str().unwrap();
    ok(&cli_with_env(
        &s,
        &["put", src_s, "s3://cli/default"],
        &[("CRYPTOBUCKET_KEYRING", env_ring_s)],
    ));
    let shown = ok(&cli(&s, &["ls", "s3://cli/default"]));
    assert!(shown.contains("\"ring\":\"default\""), "{shown}");
    ok(&cli_with_env(
        &s,
        &["get", "s3://cli/default", out.to_str().unwrap()],
        &[("XDG_CONFIG_HOME", config.to_str().unwrap())],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    // Explicit RSA flags with the environment default set: the flags are used.
    let public = a.join("public.pem").display().to_string();
    ok(&cli_with_env(
        &s,
        &["--rsa-public-key", &public, "put", src_s, "s3://cli/flags"],
        &[("CRYPTOBUCKET_KEYRING", env_ring_s)],
    ));
    let shown = ok(&cli(&s, &["ls", "s3://cli/flags"]));
    assert!(shown.contains("matdesc={}"), "{shown}");
    // Neither: the error names every way to give a key.
    let err = fails(&cli(&s, &["get", "s3://cli/default", "x"]));
    assert!(err.contains("CRYPTOBUCKET_KEYRING"), "{err}");
}

/// `gocryptfs push/ls/cat/pull`: a directory into a bucket as a gocryptfs tree and back.
#[test]
fn gocryptfs_push_ls_cat_pull() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir_all(src.join("shards")).unwrap();
    let big = pattern(9_000_000, 8);
    std::fs::write(src.join("shards/0.bin"), &big).unwrap();
    std::fs::write(src.join("config.json"), b"{\"layers\": 2}").unwrap();
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "gc password\n").unwrap();
    let p = pass.to_str().unwrap();
    let src_s = src.to_str().unwrap();
    ok(&cli(
        &s,
        &[
            "gocryptfs",
            "push",
            src_s,
            "s3://cli/eas/m/",
            "--scryptn",
            "10",
            "--password-file",
            p,
        ],
    ));
    let listing = ok(&cli(
        &s,
        &["gocryptfs", "ls", "s3://cli/eas/m", "--password-file", p],
    ));
    assert!(
        listing.contains("DIR shards/") && listing.contains(" 13 config.json"),
        "{listing}"
    );
    let cat = cli(
        &s,
        &[
            "gocryptfs",
            "cat",
            "s3://cli/eas/m",
            "shards/0.bin",
            "--range",
            "4090-12000",
            "--password-file",
            p,
        ],
    );
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(cat.stdout == big[4090..=12000]);
    let whole = cli(
        &s,
        &[
            "gocryptfs",
            "cat",
            "s3://cli/eas/m",
            "shards/0.bin",
            "--password-file",
            p,
        ],
    );
    assert!(whole.stdout == big);
    let out = dir.path().join("out");
    ok(&cli(
        &s,
        &[
            "gocryptfs",
            "pull",
            "s3://cli/eas/m/",
            out.to_str().unwrap(),
            "--password-file",
            p,
            "--part-size",
            "5MiB",
            "--concurrency",
            "2",
        ],
    ));
    assert!(std::fs::read(out.join("shards/0.bin")).unwrap() == big);
    // A wrong password: one error line, nothing pulled.
    std::fs::write(&pass, "not it\n").unwrap();
    let err = fails(&cli(
        &s,
        &["gocryptfs", "ls", "s3://cli/eas/m", "--password-file", p],
    ));
    assert!(err.contains("wrong gocryptfs password"), "{err}");
}

/// One exit code per class of failure, as `--help` lists them.
#[test]
fn exit_codes_tell_the_failure_class() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let code = |out: &Output| out.status.code();
    let help = cli(&s, &["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for line in [
        "3    not found",
        "4    key or decryption failure",
        "6    partial",
    ] {
        assert!(text.contains(line), "--help lacks {line:?}: {text}");
    }

    // 2: usage (clap's own, and input we refuse).
    assert_eq!(code(&cli(&s, &["cp"])), Some(2));
    assert_eq!(code(&run(&s, &["cp", "a", "b"])), Some(2));
    // 3: not found.
    let out = run(
        &s,
        &["get", "s3://cli/no/such/key", d.join("x").to_str().unwrap()],
    );
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    // 4: the wrong key.
    let file = d.join("f.bin");
    std::fs::write(&file, pattern(5000, 1)).unwrap();
    ok(&run(
        &s,
        &["put", file.to_str().unwrap(), "s3://cli/tree/f.bin"],
    ));
    let b = testdata().join("keys/b");
    let out = cli(
        &s,
        &[
            "--force-path-style",
            "--rsa-public-key",
            b.join("public.pem").to_str().unwrap(),
            "--rsa-private-key",
            b.join("private.pem").to_str().unwrap(),
            "get",
            "s3://cli/tree/f.bin",
            d.join("y").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    // 6: a tree where one object cannot be read (a plain object among encrypted ones).
    rt().block_on(async {
        s.client()
            .await
            .put_object()
            .bucket("cli")
            .key("tree/plain.bin")
            .body(aws_sdk_s3::primitives::ByteStream::from(
                b"not encrypted".to_vec(),
            ))
            .send()
            .await
            .unwrap();
    });
    let out = run(
        &s,
        &[
            "cp",
            "-r",
            "s3://cli/tree/",
            d.join("tree").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 failed"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(d.join("tree/f.bin")).unwrap(),
        pattern(5000, 1)
    );
    // Asked for, plain objects are read as they are; verify names them; not with --strict.
    let mixed = d.join("mixed");
    let out = run(
        &s,
        &[
            "--allow-unencrypted",
            "cp",
            "-r",
            "s3://cli/tree/",
            mixed.to_str().unwrap(),
        ],
    );
    ok(&out);
    assert_eq!(
        std::fs::read(mixed.join("plain.bin")).unwrap(),
        b"not encrypted"
    );
    assert_eq!(
        std::fs::read(mixed.join("f.bin")).unwrap(),
        pattern(5000, 1)
    );
    let out = run(&s, &["--allow-unencrypted", "verify", "s3://cli/tree/"]);
    let listed = ok(&out);
    assert!(listed.contains("NOT ENCRYPTED tree/plain.bin"), "{listed}");
    assert!(
        stderr(&out).contains("1 not encrypted, 0 failed"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &s,
        &[
            "--allow-unencrypted",
            "--strict",
            "get",
            "s3://cli/tree/plain.bin",
            "x",
        ],
    );
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    // 5: the store is unreachable (retries exhausted).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(
        &s,
        &[
            "--endpoint-url",
            &format!("http://127.0.0.1:{dead}"),
            "get",
            "s3://cli/tree/f.bin",
            d.join("z").to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), Some(5), "{}", stderr(&out));
}

/// `--profile` takes credentials from the shared files; `-vv` logs operations and parts to
/// stderr (never a secret); `--connect-timeout` bounds a connection that never happens.
#[test]
fn profile_logging_and_timeouts() {
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = support::testdata().join("keys/a/private.pem");
    let key = key.to_str().unwrap();
    let creds = d.join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[cbtest]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            support::server::ACCESS_KEY,
            support::server::SECRET_KEY
        ),
    )
    .unwrap();
    let config = d.join("config");
    std::fs::write(&config, "[profile cbtest]\nregion = us-east-1\n").unwrap();
    let data = pattern(12 << 20, 5);
    let input = d.join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cryptobucket"));
        c.args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("CRYPTOBUCKET_LOG")
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", &s.endpoint)
            .env("CRYPTOBUCKET_CHECKPOINT_DIR", checkpoint_dir())
            .env_remove("CRYPTOBUCKET_KEYRING")
            .env("XDG_CONFIG_HOME", "/nonexistent");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let put = ["--rsa-private-key", key, "put", input.to_str().unwrap()];
    // The profile's credentials work; without the profile there are none.
    let out = run(
        &[
            &["--profile", "cbtest", "-vv"],
            &put[..],
            &["s3://cli/p.bin", "--part-size", "5MiB"],
        ]
        .concat(),
        &[],
    );
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("upload_file"), "{log}");
    assert!(
        log.contains("part done") && log.contains("upload_part"),
        "{log}"
    );
    assert!(log.contains("key=\"p.bin\""), "{log}");
    let pem = std::fs::read_to_string(support::testdata().join("keys/a/private.pem")).unwrap();
    let pem_line = pem.lines().nth(3).unwrap();
    for secret in [support::server::SECRET_KEY, pem_line] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
    }
    let e = fails(&run(&[&put[..], &["s3://cli/q.bin"]].concat(), &[]));
    assert!(e.to_lowercase().contains("credential"), "{e}");
    fails(&run(
        &[&["--profile", "nosuch"], &put[..], &["s3://cli/q.bin"]].concat(),
        &[],
    ));
    // Without -v nothing but the result goes to stderr; CRYPTOBUCKET_LOG sets the filter.
    let dst = d.join("p.out");
    let get = [
        "--profile",
        "cbtest",
        "--rsa-private-key",
        key,
        "get",
        "s3://cli/p.bin",
        dst.to_str().unwrap(),
        "--no-progress",
    ];
    let out = run(&get, &[]);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("download_file"));
    assert!(std::fs::read(&dst).unwrap() == data);
    let out = run(&get, &[("CRYPTOBUCKET_LOG", "cryptobucket=debug")]);
    ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("download_file") && log.contains("get_ranges"),
        "{log}"
    );
    fails(&run(&get, &[("CRYPTOBUCKET_LOG", "cryptobucket=loud")]));
    // A store that never accepts the connection: the timeout ends it, as a transient failure.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Fill the backlog so new connections hang in SYN state (or are accepted but never
    // answered): either way nothing comes back before the timeout.
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = run(
        &[
            "--profile",
            "cbtest",
            "--read-timeout",
            "1",
            "--connect-timeout",
            "1",
            "--endpoint-url",
            &url,
            "ls",
            "s3://cli/",
        ],
        &[],
    );
    fails(&out);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    drop(silent);
}

/// The progress bar on a real terminal: it draws, moves, and is cleared before the final
/// line; with `-` as the destination, standard output carries the plaintext and nothing else
/// while the bar draws on the terminal.
#[test]
fn progress_bar_draws_on_a_terminal_and_ends_cleanly() {
    use sha2::Digest as _;
    let s = server(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let key = testdata().join("keys/a/private.pem");
    let key = key.to_str().unwrap();
    let data = pattern(40 << 20, 17);
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();
    let r = on_terminal_with(
        &s,
        &[
            "--rsa-private-key",
            key,
            "cp",
            src.to_str().unwrap(),
            "s3://cli/bar.bin",
            "--part-size",
            "5MiB",
            "--concurrency",
            "1",
        ],
        &[],
        false,
    );
    assert_eq!(r["status"], 0, "{r}");
    let shown = r["output"].as_str().unwrap();
    // Frames: "[=====>    ] 20.00 MiB/40.00 MiB ..." redrawn in place.
    let frames: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains("] ") && l.contains("MiB/40.00 MiB"))
        .collect();
    assert!(!frames.is_empty(), "no progress bar drawn: {shown:?}");
    assert!(
        frames.iter().any(|f| f.contains('=')),
        "the bar never moved: {frames:?}"
    );
    // Ends cleanly: the bar is erased, the last line is the summary, the terminal is left on a
    // new line.
    let last_frame = shown.rfind("MiB/40.00 MiB").unwrap();
    let tail = &shown[last_frame..];
    assert!(
        tail.contains("\x1b[2K"),
        "the bar was not cleared: {tail:?}"
    );
    let last_line = strip_ansi(shown.trim_end().rsplit('\n').next().unwrap());
    let last_line = last_line.rsplit('\r').next().unwrap();
    assert!(
        last_line.starts_with("uploaded"),
        "{last_line:?} in {shown:?}"
    );
    assert!(shown.ends_with('\n'), "{shown:?}");

    // `-` as the destination: stdout (a pipe) is exactly the plaintext.
    let r = on_terminal_with(
        &s,
        &["--rsa-private-key", key, "cp", "s3://cli/bar.bin", "-"],
        &[],
        true,
    );
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["stdout_len"], data.len() as u64, "{r}");
    assert_eq!(
        r["stdout_sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(&data))
    );
    let shown = r["output"].as_str().unwrap();
    assert!(shown.len() < 64 << 10, "plaintext reached the terminal");
}

/// `text` without ANSI control sequences (ESC [ parameters final-byte).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
