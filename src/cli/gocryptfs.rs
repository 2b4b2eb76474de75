//! `cryptobucket gocryptfs push|pull|ls|cat`: gocryptfs trees in a bucket, no FUSE.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use cryptobucket::gocryptfs::MasterKey;
use cryptobucket::gocryptfs::push::push;
use cryptobucket::gocryptfs::remote::{GocryptfsRemote, Unlock};
use cryptobucket::{Error, ErrorKind, Result};
use tokio::io::AsyncWriteExt as _;
use zeroize::Zeroizing;

use super::transfer::{TransferArgs, parse_s3_prefix, progress_bar};
use super::{Global, prompt};

#[derive(Debug, Args)]
pub(crate) struct Secret {
    /// File whose first line is the gocryptfs password.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password_env", "masterkey_file"])]
    password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[arg(long, value_name = "VAR", conflicts_with = "masterkey_file")]
    password_env: Option<String>,
    /// File holding the raw master key in hex, as `gocryptfs -masterkey` takes it (reading
    /// only; e.g. released by attestation or a KMS).
    #[arg(long, value_name = "FILE")]
    masterkey_file: Option<PathBuf>,
}

/// gocryptfs v2 trees in a bucket (what PAI-EAS mounts), without FUSE or root.
#[derive(Debug, Subcommand)]
pub(crate) enum Gocryptfs {
    /// Encrypt the local directory DIR into s3://BUCKET/PREFIX/ as a new gocryptfs tree.
    Push {
        /// Plain local directory.
        dir: PathBuf,
        /// Destination, s3://BUCKET/PREFIX/.
        dest: String,
        /// scrypt cost as log2(N) (gocryptfs's default 16; raise it, never lower than 10).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(10..=20))]
        scryptn: u8,
        /// Files (and parts of large files) sent at once.
        #[arg(long, value_name = "N", default_value_t = cryptobucket::resumable::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Where the checkpoints of an unfinished push live (a rerun with the same password
        /// continues it). Default as for `put`.
        #[arg(long, value_name = "DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// No progress bar (it is also hidden when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
        #[command(flatten)]
        secret: Secret,
    },
    /// Decrypt the whole tree at s3://BUCKET/PREFIX/ into the local directory DIR (a rerun
    /// after a failure or a kill resumes the unfinished files).
    Pull {
        /// The tree, s3://BUCKET/PREFIX/.
        src: String,
        /// Local directory to create or fill.
        dir: PathBuf,
        #[command(flatten)]
        transfer: TransferArgs,
        #[command(flatten)]
        secret: Secret,
    },
    /// List a directory of the tree with plaintext names and sizes.
    Ls {
        /// The tree, s3://BUCKET/PREFIX/.
        tree: String,
        /// Directory inside the tree (default: its root).
        #[arg(default_value = "")]
        path: String,
        #[command(flatten)]
        secret: Secret,
    },
    /// Write a file of the tree (or a byte range of it) to standard output, verified.
    Cat {
        /// The tree, s3://BUCKET/PREFIX/.
        tree: String,
        /// File inside the tree, e.g. model/config.json.
        path: String,
        /// Plaintext bytes FIRST-LAST (inclusive).
        #[arg(long)]
        range: Option<String>,
        #[command(flatten)]
        secret: Secret,
    },
}

fn password(secret: &Secret, confirm: bool) -> Result<Zeroizing<String>> {
    match (&secret.password_file, &secret.password_env) {
        (Some(f), _) => {
            let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot read {}: {e}", f.display()))
            })?);
            Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_owned()))
        }
        (None, Some(v)) => std::env::var(v).map(Zeroizing::new).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("the password variable {v} is not set"),
            )
        }),
        (None, None) => prompt::passphrase("the gocryptfs tree", confirm),
    }
}

fn unlock(secret: &Secret) -> Result<Unlock> {
    match &secret.masterkey_file {
        Some(f) => {
            let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot read {}: {e}", f.display()))
            })?);
            Ok(Unlock::MasterKey(MasterKey::from_hex(&text)?))
        }
        None => Ok(Unlock::Password(password(secret, false)?)),
    }
}

pub(crate) async fn run(g: &Global, cmd: &Gocryptfs) -> Result<()> {
    match cmd {
        Gocryptfs::Push {
            dir,
            dest,
            scryptn,
            concurrency,
            checkpoint_dir,
            no_progress,
            secret,
        } => {
            if secret.masterkey_file.is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "push makes a new tree: give its password (--password-file, \
                     --password-env or the prompt)",
                ));
            }
            let (bucket, prefix) = parse_s3_prefix(dest)?;
            let cb = g.bucket_keys_optional(bucket).await?;
            let (bar, listener) = progress_bar(&dir.display().to_string(), "push", *no_progress);
            let mut job = push(&cb, dir, &prefix)
                .password(password(secret, true)?.as_str())
                .scrypt_log_n(*scryptn)
                .concurrency(*concurrency)
                .progress(listener);
            if let Some(d) = checkpoint_dir {
                job = job.checkpoint_dir(d);
            }
            let out = job.send().await;
            bar.finish_and_clear();
            let out = out?;
            let stats = out.stats;
            eprintln!(
                "pushed {} as a gocryptfs tree to {dest}: {} files, {} directories, {} bytes{}",
                dir.display(),
                stats.files,
                stats.dirs,
                stats.bytes,
                if out.resumed_bytes > 0 || out.resumed_files > 0 {
                    format!(
                        " ({} files and {} bytes taken over from the interrupted run)",
                        out.resumed_files, out.resumed_bytes
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Gocryptfs::Pull {
            src,
            dir,
            transfer,
            secret,
        } => {
            let tree = open(g, src, secret).await?;
            let (bar, listener) = progress_bar(src, "pull", transfer.no_progress);
            let mut job = tree
                .pull(dir)
                .part_size(transfer.part_size())
                .concurrency(transfer.concurrency)
                .durable(!transfer.no_fsync)
                .progress(listener);
            if let Some(d) = &transfer.checkpoint_dir {
                job = job.checkpoint_dir(d);
            }
            let stats = job.send().await;
            bar.finish_and_clear();
            let stats = stats?;
            eprintln!(
                "pulled {src} into {}: {} files, {} directories, {} bytes (every block verified)",
                dir.display(),
                stats.files,
                stats.dirs,
                stats.bytes
            );
            Ok(())
        }
        Gocryptfs::Ls { tree, path, secret } => {
            let t = open(g, tree, secret).await?;
            for e in t.list(path).await? {
                if e.is_dir {
                    println!("{:>14} {}/", "DIR", e.name);
                } else {
                    println!("{:>14} {}", e.size, e.name);
                }
            }
            Ok(())
        }
        Gocryptfs::Cat {
            tree,
            path,
            range,
            secret,
        } => {
            let t = open(g, tree, secret).await?;
            let (first, len) = match range {
                Some(r) => {
                    let (a, b) = r.split_once('-').ok_or_else(|| {
                        Error::new(ErrorKind::InvalidInput, "--range is FIRST-LAST")
                    })?;
                    let parse = |s: &str| {
                        s.parse::<u64>().map_err(|_| {
                            Error::new(ErrorKind::InvalidInput, "--range is FIRST-LAST")
                        })
                    };
                    let (a, b) = (parse(a)?, parse(b)?);
                    if b < a {
                        return Err(Error::new(
                            ErrorKind::InvalidInput,
                            "--range FIRST-LAST needs FIRST <= LAST",
                        ));
                    }
                    (a, b - a + 1)
                }
                None => (0, u64::MAX),
            };
            let file = t.open_file(path).await?;
            let mut out = tokio::io::stdout();
            // 8 MiB at a time, each verified before it is written.
            let (mut at, end) = (first, first.saturating_add(len));
            while at < end {
                let piece = t.read_file(&file, at, (end - at).min(8 << 20)).await?;
                if piece.is_empty() {
                    break;
                }
                out.write_all(&piece)
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, format!("cannot write: {e}")))?;
                at += piece.len() as u64;
            }
            out.flush()
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("cannot write: {e}")))?;
            Ok(())
        }
    }
}

async fn open(g: &Global, url: &str, secret: &Secret) -> Result<GocryptfsRemote> {
    let (bucket, prefix) = parse_s3_prefix(url)?;
    let cb = g.bucket_keys_optional(bucket).await?;
    GocryptfsRemote::open(&cb, &prefix, unlock(secret)?).await
}
