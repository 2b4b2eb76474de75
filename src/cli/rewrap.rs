//! `cryptobucket rewrap s3://BUCKET/PREFIX --keyring FILE --to NAME`: key rotation for every
//! object under a prefix.

use cryptobucket::{Error, ErrorKind, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Global;
use super::transfer::{list_keys, parse_s3_prefix};

/// Re-wraps every object under the prefix with the keyring entry named `to`. Objects already
/// under it are skipped, so an interrupted run is resumed by running it again. With
/// `reencrypt`, every object gets a new content key and its body is encrypted anew.
pub(crate) async fn rewrap(
    g: &Global,
    target: &str,
    to: &str,
    reencrypt: bool,
    dry_run: bool,
    no_progress: bool,
) -> Result<()> {
    if g.keyring_path().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "rewrap needs a keyring file (--keyring FILE or the default keyring) holding both the \
             current keys and the target key",
        ));
    }
    let keyring = g.keyring(false)?;
    let entry = keyring.by_name(to).cloned().ok_or_else(|| {
        let names: Vec<&str> = keyring
            .entries()
            .iter()
            .filter_map(|e| e.get_name())
            .collect();
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "no keyring entry is named {to:?}; named entries: {}",
                if names.is_empty() {
                    "(none)".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        )
    })?;
    let (bucket, prefix) = parse_s3_prefix(target)?;
    let cb = g.bucket(g.client().await, bucket, keyring)?;
    let keys = list_keys(&cb, &prefix).await?;
    let bar = ProgressBar::with_draw_target(
        Some(keys.len() as u64),
        if no_progress {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("rewrap [{bar:30}] {pos}/{len} objects {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (mut done, mut already, mut plain, mut failed) = (0usize, 0usize, 0usize, 0usize);
    for key in &keys {
        match cb
            .rewrap_object()
            .key(key)
            .to(entry.clone())
            .reencrypt(reencrypt)
            .dry_run(dry_run)
            .send()
            .await
        {
            Ok(out) if out.skipped => already += 1,
            Ok(out) => {
                done += 1;
                if dry_run {
                    // The plan goes to stdout, one object per line, as `cp -r --dryrun` does.
                    bar.suspend(|| {
                        println!(
                            "(dryrun) {} s3://{}/{key} ({} -> {})",
                            if reencrypt { "reencrypt" } else { "rewrap" },
                            cb.bucket(),
                            out.from,
                            out.to
                        )
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::NotEncrypted => {
                plain += 1;
                bar.suspend(|| eprintln!("s3://{}/{key}: not encrypted, left as is", cb.bucket()));
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("s3://{}/{key}: {e}", cb.bucket()));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "{} {done} objects under s3://{}/{prefix} to {to}; {already} already under {to}; \
         {plain} not encrypted; {failed} failed",
        match (dry_run, reencrypt) {
            (true, true) => "(dryrun) would re-encrypt",
            (true, false) => "(dryrun) would rewrap",
            (false, true) => "rewrapped",
            (false, false) => "rewrapped",
        },
        cb.bucket()
    );
    if failed > 0 {
        return Err(Error::new(
            ErrorKind::Partial,
            format!(
                "{failed} objects {} (see above); rerun to retry them",
                if dry_run {
                    "would fail to rewrap"
                } else {
                    "could not be rewrapped"
                }
            ),
        ));
    }
    Ok(())
}
