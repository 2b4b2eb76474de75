//! The `cryptobucket` binary, scripted as users script it, against a real S3 server.

mod support;

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
    Command::new(env!("CARGO_BIN_EXE_cryptobucket"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", support::server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", support::server::SECRET_KEY)
        .env_remove("AWS_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .output()
        .unwrap()
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

/// A failed command: non-zero exit, one line on stderr; returns it.
fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "command unexpectedly succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "stderr must be one line: {err}"
    );
    assert!(err.starts_with("cryptobucket: error: "), "{err}");
    err
}

fn no_leftovers(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".cryptobucket-")),
        "temp files left: {names:?}"
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
            "could not unwrap",
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
            "no such object",
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
    no_leftovers(dir.path());
}
