//! File transfers of the CLI: `put`, `get`, `cp` (and `cp -r`), with progress bars.

use std::path::{Path, PathBuf};

use clap::Args;
use cryptobucket::{
    CryptoBucket, Error, ErrorKind, PartSize, ProgressEvent, ProgressListener, Result,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Global, parse_s3_url};

/// Options of every file transfer.
#[derive(Debug, Clone, Args)]
pub(crate) struct TransferArgs {
    /// Part size: plain bytes, or with a suffix KiB/MiB/GiB (also K/M/G; KB/MB/GB are powers
    /// of 1000). A multiple of 16, 5 MiB to 5 GiB. Default: 8 MiB, more for files over ~78 GiB
    /// so that 10,000 parts suffice.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub(crate) part_size: Option<u64>,
    /// Parts transferred at once (memory use is about this many parts).
    #[arg(long, value_name = "N", default_value_t = cryptobucket::resumable::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
    /// Where checkpoints of unfinished transfers live; they are removed when a transfer
    /// completes. Default: $CRYPTOBUCKET_CHECKPOINT_DIR, else
    /// $XDG_STATE_HOME/cryptobucket/checkpoints, else ~/.local/state/cryptobucket/checkpoints.
    #[arg(long, value_name = "DIR")]
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,
    /// Downloads only: do not sync what is written. Files are renamed into place as soon as
    /// their bytes are written and may sit in the page cache for a while (a power loss can
    /// leave them incomplete); nothing is resumable. For scratch copies loaded right away.
    /// Uploads refuse it.
    #[arg(long)]
    pub(crate) no_fsync: bool,
}

impl TransferArgs {
    pub(crate) fn part_size(&self) -> PartSize {
        self.part_size.map_or(PartSize::Auto, PartSize::Target)
    }

    /// Refuses what only downloads take (an upload writes nothing locally to sync).
    pub(crate) fn for_upload(&self) -> Result<()> {
        if self.no_fsync {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "--no-fsync applies to downloads only (an upload writes nothing locally)",
            ));
        }
        Ok(())
    }
}

/// Parses `8388608`, `8MiB`, `8M`, `8MB` (= 8,000,000), `1.5GiB`.
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use bytes or KiB, MiB, GiB (K, M, G), KB, MB, GB"
            ));
        }
    };
    let bad = || format!("{text:?} is not a size (examples: 8388608, 8MiB, 64M)");
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 && v.fract() == 0.0 {
        Ok(v as u64)
    } else {
        Err(format!("{text:?} is not a whole number of bytes"))
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with --no-progress) and
/// the listener that feeds it. Resumes, restarts and retries are always reported as lines.
pub(crate) fn progress(
    label: &str,
    verb: &'static str,
    args: &TransferArgs,
) -> (ProgressBar, ProgressListener) {
    progress_bar(label, verb, args.no_progress)
}

/// [`progress`] for commands without [`TransferArgs`]; `hidden`: `--no-progress` given.
pub(crate) fn progress_bar(
    label: &str,
    verb: &'static str,
    hidden: bool,
) -> (ProgressBar, ProgressListener) {
    let target = if hidden {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    let (b, label) = (bar.clone(), label.to_owned());
    let listener = ProgressListener::new(move |p| {
        b.set_length(p.total);
        b.set_position(p.done);
        match &p.event {
            ProgressEvent::Started {
                resumed_bytes,
                resumed_parts,
            } if *resumed_bytes > 0 => b.suspend(|| {
                eprintln!(
                    "resuming {verb} of {label}: {resumed_parts} parts ({resumed_bytes} of {} bytes) already done",
                    p.total
                )
            }),
            ProgressEvent::Restarted { reason } => {
                b.suspend(|| eprintln!("{label}: {reason}"));
            }
            ProgressEvent::Warning { message } => {
                b.suspend(|| eprintln!("warning: {label}: {message}"));
            }
            ProgressEvent::Retrying {
                part_number,
                attempt,
                reason,
            } => b.suspend(|| {
                eprintln!("{label}: retrying part {part_number} (attempt {attempt}): {reason}")
            }),
            _ => {}
        }
    });
    (bar, listener)
}

/// Uploads one file.
pub(crate) async fn put(
    cb: &CryptoBucket,
    file: &Path,
    key: &str,
    dest: &str,
    args: &TransferArgs,
) -> Result<()> {
    args.for_upload()?;
    if file == Path::new("-") {
        return put_stdin(cb, key, dest).await;
    }
    let (bar, listener) = progress(&file.display().to_string(), "upload", args);
    let mut up = cb
        .upload_file()
        .key(key)
        .path(file)
        .part_size(args.part_size())
        .concurrency(args.concurrency)
        .progress(listener);
    if let Some(dir) = &args.checkpoint_dir {
        up = up.checkpoint_dir(dir);
    }
    let out = up.send().await;
    bar.finish_and_clear();
    let out = out?;
    let how = match out.part_size {
        Some(p) => format!("{} parts of {p}", out.parts),
        None => "one request".to_owned(),
    };
    let resumed = if out.resumed_bytes > 0 {
        format!(
            "; resumed, {} bytes were already uploaded",
            out.resumed_bytes
        )
    } else {
        String::new()
    };
    eprintln!(
        "uploaded {} ({} bytes, encrypted, {how}{resumed}) to {dest}",
        file.display(),
        out.size
    );
    Ok(())
}

/// Downloads one object to a file.
pub(crate) async fn get(
    cb: &CryptoBucket,
    key: &str,
    src: &str,
    file: &Path,
    args: &TransferArgs,
) -> Result<()> {
    if file == Path::new("-") {
        return get_stdout(cb, key, src).await;
    }
    let (bar, listener) = progress(src, "download", args);
    let mut down = cb
        .download_file()
        .key(key)
        .path(file)
        .part_size(args.part_size())
        .concurrency(args.concurrency)
        .durable(!args.no_fsync)
        .progress(listener);
    if let Some(dir) = &args.checkpoint_dir {
        down = down.checkpoint_dir(dir);
    }
    let out = down.send().await;
    bar.finish_and_clear();
    let out = out?;
    let resumed = if out.resumed_bytes > 0 {
        format!(
            "; resumed, {} bytes were already downloaded",
            out.resumed_bytes
        )
    } else {
        String::new()
    };
    eprintln!(
        "downloaded {src} ({} bytes, decrypted{resumed}) to {}",
        out.size,
        file.display()
    );
    Ok(())
}

/// `-` as source: standard input, length unknown, encrypted as it streams (multipart once it
/// outgrows one part; memory within concurrency × part size).
async fn put_stdin(cb: &CryptoBucket, key: &str, dest: &str) -> Result<()> {
    let out = cb
        .put_object()
        .key(key)
        .body(cryptobucket::PutBody::from_stream(tokio::io::stdin()))
        .send()
        .await?;
    let size = out
        .envelope
        .unencrypted_content_length
        .map(|n| format!("{n} bytes, "))
        .unwrap_or_default();
    eprintln!("uploaded standard input ({size}encrypted) to {dest}");
    Ok(())
}

/// `-` as destination: the plaintext on standard output, in order, verified before it is
/// written (parallel ranged reads); nothing else goes to standard output.
async fn get_stdout(cb: &CryptoBucket, key: &str, src: &str) -> Result<()> {
    let reader = cb.reader().key(key).open().await?;
    let n = reader.write_to(&mut tokio::io::stdout()).await?;
    eprintln!("downloaded {src} ({n} bytes, decrypted) to standard output");
    Ok(())
}

/// Every object key under `prefix`, in listing order, without integrity sidecars.
pub(crate) async fn list_keys(cb: &CryptoBucket, prefix: &str) -> Result<Vec<String>> {
    use futures::TryStreamExt as _;
    cb.list()
        .prefix(prefix)
        .recursive(true)
        .into_stream()
        .try_filter_map(|e| async move {
            Ok(match e {
                cryptobucket::ListEntry::Object(o) => Some(o.key),
                _ => None,
            })
        })
        .try_collect()
        .await
}

/// `s3://BUCKET/PREFIX` with a possibly empty prefix.
pub(crate) fn parse_s3_prefix(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").unwrap_or_default();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?} is not an s3://BUCKET/PREFIX URL"),
        ));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// `cp` of one file, in either direction.
pub(crate) async fn cp(g: &Global, src: &str, dest: &str, args: &TransferArgs) -> Result<()> {
    let remote = |s: &str| s.starts_with("s3://");
    match (remote(src), remote(dest)) {
        (false, true) => upload(g, Path::new(src), dest, args).await,
        (true, false) => {
            let (bucket, key) = parse_s3_url(src)?;
            let target = download_target(Path::new(dest), &key)?;
            let cb = g.bucket(g.client().await, bucket, g.keyring(false)?)?;
            target.settle(get(&cb, &key, src, &target.file, args).await)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            "cp copies between the local disk and a bucket: exactly one side must be s3://...",
        )),
    }
}

/// A download's local file, and the directories made for it.
pub(crate) struct Target {
    pub(crate) file: PathBuf,
    /// Created for the file, outermost first.
    made: Vec<PathBuf>,
}

impl Target {
    /// Passes the download's result on; when it failed, removes the directories made for it
    /// again, those that are still empty (a resumable download's partial file keeps its own).
    pub(crate) fn settle<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            for dir in self.made.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }
}

/// Where a download of `key` goes: `dest` itself, or, when `dest` is an existing directory or
/// ends in `/`, the key's last name inside it; missing directories on the way are created (as
/// `cp` and `aws s3 cp` do), and removed again by [`Target::settle`] if the download fails.
/// `-` stays `-`.
pub(crate) fn download_target(dest: &Path, key: &str) -> Result<Target> {
    if dest == Path::new("-") {
        return Ok(Target {
            file: dest.to_owned(),
            made: Vec::new(),
        });
    }
    let into_dir = dest.as_os_str().as_encoded_bytes().ends_with(b"/") || dest.is_dir();
    let file = match key.rsplit('/').next() {
        _ if !into_dir => dest.to_owned(),
        Some(name) if !name.is_empty() => dest.join(name),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the key {key:?} ends in '/', so it gives no file name to create in {}: \
                     give the file's path",
                    dest.display()
                ),
            ));
        }
    };
    let mut made = Vec::new();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut missing = Some(dir);
        while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            made.insert(0, d.to_owned());
            missing = d.parent();
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create the directory {}: {e}", dir.display()),
            )
        })?;
    }
    Ok(Target { file, made })
}

/// `put FILE s3://B/KEY` and `cp FILE s3://B/KEY`: to a key ending in `/` (or a bucket alone)
/// the file goes under its own name, as with `aws s3 cp`.
pub(crate) async fn upload(g: &Global, file: &Path, dest: &str, args: &TransferArgs) -> Result<()> {
    let (bucket, mut key) = parse_s3_prefix(dest)?;
    if key.is_empty() || key.ends_with('/') {
        if file == Path::new("-") {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "standard input has no file name: give the whole object key, s3://BUCKET/KEY",
            ));
        }
        key.push_str(&file_name(file)?);
    }
    let cb = g.bucket(g.client().await, bucket, g.keyring(true)?)?;
    let shown = format!("s3://{}/{key}", cb.bucket());
    put(&cb, file, &key, &shown, args).await
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} has no usable file name", path.display()),
            )
        })
}

/// How a tree is copied: `cp -r` (`skip_identical` false) or `sync` (true).
pub(crate) struct Tree {
    pub(crate) skip_identical: bool,
    pub(crate) dryrun: bool,
    /// Uploads: copy what symlinks point to (else leave them out).
    pub(crate) follow_symlinks: bool,
}

/// `cp -r` and `sync` of a directory tree, either direction, through the library's directory
/// transfers.
pub(crate) async fn copy_tree(
    g: &Global,
    src: &str,
    dest: &str,
    how: Tree,
    args: &TransferArgs,
) -> Result<()> {
    let Tree {
        skip_identical,
        dryrun,
        follow_symlinks,
    } = how;
    let remote = |s: &str| s.starts_with("s3://");
    // Options of one direction only are refused before anything starts.
    match (remote(src), remote(dest)) {
        (false, true) => args.for_upload()?,
        (true, false) if !follow_symlinks => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "--no-follow-symlinks applies to uploads only",
            ));
        }
        _ => {}
    }
    let (label, verb) = (format!("{src} -> {dest}"), "copy");
    let (bar, listener) = progress(&label, verb, args);
    // The same options for either direction (the two builders share their setters).
    macro_rules! with_options {
        ($builder:expr) => {{
            let b = $builder
                .skip_identical(skip_identical)
                .dry_run(dryrun)
                .part_size(args.part_size())
                .concurrency(args.concurrency)
                .progress(listener);
            match &args.checkpoint_dir {
                Some(d) => b.checkpoint_dir(d),
                None => b,
            }
        }};
    }
    let out = match (remote(src), remote(dest)) {
        (false, true) => {
            let (bucket, prefix) = parse_s3_prefix(dest)?;
            let cb = g.bucket(g.client().await, bucket, g.keyring(true)?)?;
            with_options!(cb.upload_dir().path(src).prefix(prefix))
                .follow_symlinks(follow_symlinks)
                .send()
                .await
        }
        (true, false) => {
            let (bucket, prefix) = parse_s3_prefix(src)?;
            let cb = g.bucket(g.client().await, bucket, g.keyring(false)?)?;
            with_options!(cb.download_dir().prefix(prefix).path(dest))
                .durable(!args.no_fsync)
                .send()
                .await
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            "copies go between the local disk and a bucket: exactly one side must be s3://...",
        )),
    };
    bar.finish_and_clear();
    let out = out?;
    if out.dry_run {
        for (path, key, size) in &out.copied {
            println!("(dryrun) copy {} <-> {key} ({size} bytes)", path.display());
        }
    }
    for (path, key, e) in &out.failed {
        eprintln!("failed: {} <-> {key}: {e}", path.display());
    }
    for (path, why) in &out.left_out {
        eprintln!("left out: {}: {why}", path.display());
    }
    eprintln!(
        "{} {} files ({} bytes){}{}{}",
        if out.dry_run { "would copy" } else { "copied" },
        out.copied.len(),
        out.bytes(),
        if skip_identical {
            format!(
                ", skipped {} identical (same size, copy not older)",
                out.skipped.len()
            )
        } else {
            String::new()
        },
        if out.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", out.failed.len())
        },
        match out.left_out.len() {
            0 => String::new(),
            n => format!(", left out {n} (listed above)"),
        }
    );
    out.into_result().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8388608"), Ok(8 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("8 mib"), Ok(8 << 20));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("0.3B").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn where_a_download_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let slash = |rel: &str| PathBuf::from(format!("{}/{rel}/", d.display()));

        // A file path is the file; `-` is standard output.
        let t = download_target(&d.join("m.bin"), "run/model.bin").unwrap();
        assert_eq!((t.file, t.made), (d.join("m.bin"), vec![]));
        assert_eq!(
            download_target(Path::new("-"), "k").unwrap().file,
            Path::new("-")
        );
        // An existing directory takes the key's last name.
        let t = download_target(d, "run/model.bin").unwrap();
        assert_eq!((t.file, t.made), (d.join("model.bin"), vec![]));

        // A path ending in '/': the directories it needs are made, and removed again (only)
        // when the download fails.
        let t = download_target(&slash("x/y"), "model.bin").unwrap();
        assert_eq!(t.file, d.join("x/y/model.bin"));
        assert_eq!(t.made, [d.join("x"), d.join("x/y")]);
        assert!(d.join("x/y").is_dir());
        t.settle(Ok(())).unwrap();
        assert!(d.join("x/y").is_dir());
        let failed = Err(Error::new(ErrorKind::Io, "the download failed"));
        assert_eq!(t.settle::<()>(failed).unwrap_err().kind(), ErrorKind::Io);
        assert!(!d.join("x").exists());

        // A key ending in '/' names no file to create in a directory: refused, nothing made.
        for dest in [slash("z"), d.to_owned()] {
            let err = download_target(&dest, "run/").err().unwrap();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains("ends in '/'"), "{err}");
        }
        assert!(!d.join("z").exists());
    }
}
