//! The `cryptobucket` command line: put, get, cp, rewrap, verify, inspect, keygen.
//!
//! `mod.rs` holds the arguments and the small commands; `transfer.rs` the file transfers
//! (put, get, cp -r) and their progress bars.

pub(crate) mod exit;
mod gocryptfs;
mod inspect;
mod ls;
mod models;
mod prompt;
mod rewrap;
mod transfer;
mod verify;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use cryptobucket::{
    ByteRange, ChecksumPolicy, ClientOptions, CryptoBucket, Error, ErrorKind, KeyEntry, Keyring,
    KeyringFile, MatDesc, Result, RsaKeyPair,
};
use zeroize::Zeroizing;

/// Client-side encryption for S3-compatible storage, compatible with the OSS SDKs.
#[derive(Debug, Parser)]
#[command(name = "cryptobucket", version, about, after_help = exit::HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// S3 endpoint (MinIO, Garage, OSS's S3 endpoint, ...).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Region (else AWS_REGION, else the profile's, else us-east-1).
    #[arg(long, global = true)]
    region: Option<String>,
    /// Named profile of the shared AWS config/credentials files for S3 credentials and
    /// region (else AWS_PROFILE, else `default`); environment credentials still come first.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Seconds to wait for a connection to the store (default 10).
    #[arg(long, global = true, value_name = "SECS")]
    connect_timeout: Option<f64>,
    /// Seconds to wait for the store's response headers after a request is sent (default:
    /// none; this clock also runs while a part uploads, so allow for the largest part).
    #[arg(long, global = true, value_name = "SECS")]
    read_timeout: Option<f64>,
    /// Log what happens to standard error: -v operations and retries, -vv parts and ranges
    /// too. CRYPTOBUCKET_LOG (e.g. `cryptobucket=debug`) sets the filter directly. Never
    /// logs keys, passwords or credentials.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Path-style addressing (http://host/bucket/key), needed by most self-hosted stores.
    #[arg(long, global = true)]
    force_path_style: bool,
    /// Request checksums: when-required (works with every store, Garage included) or
    /// when-supported (aws-sdk-s3's default CRC32 trailer).
    #[arg(long, global = true, default_value = "when-required", value_parser = ["when-required", "when-supported"])]
    checksum: String,
    /// RSA public key PEM (PKCS#1 or SPKI), used to write.
    #[arg(long, global = true, value_name = "PEM")]
    rsa_public_key: Option<PathBuf>,
    /// RSA private key PEM (PKCS#1 or PKCS#8), used to read (and to write if no public key).
    #[arg(long, global = true, value_name = "PEM")]
    rsa_private_key: Option<PathBuf>,
    /// Keyring TOML file (instead of --rsa-*). Without it (and without --rsa-*):
    /// CRYPTOBUCKET_KEYRING, else $XDG_CONFIG_HOME/cryptobucket/keyring.toml (or
    /// ~/.config/cryptobucket/keyring.toml) when that file exists.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["rsa_public_key", "rsa_private_key"])]
    keyring: Option<PathBuf>,
    /// Material description as a JSON object of strings. With --rsa-*: the key's matdesc.
    /// With --keyring on put: write with the keyring entry that has this matdesc.
    #[arg(long, global = true, value_name = "JSON")]
    matdesc: Option<String>,
    /// Strict mode: refuse objects without integrity data, and RSA-wrapped objects not signed
    /// by a trusted signer (see the keyring file's [integrity] table).
    #[arg(long, global = true, env = "CRYPTOBUCKET_STRICT")]
    strict: bool,
    /// Read objects without client-side encryption as they are (a bucket that mixes plain
    /// and encrypted objects on purpose); by default they are refused, since anyone who can
    /// write to the bucket can plant one. Not with --strict.
    #[arg(long, global = true, conflicts_with = "strict")]
    allow_unencrypted: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encrypt FILE and upload it (large files: parallel multipart, resumable; `-` reads
    /// standard input).
    Put {
        /// Local file to upload, or `-` for standard input.
        file: PathBuf,
        /// Destination, s3://BUCKET/KEY; to s3://BUCKET/PREFIX/ the file keeps its name.
        dest: String,
        #[command(flatten)]
        transfer: transfer::TransferArgs,
    },
    /// Download and decrypt to FILE (parallel, resumable; FILE appears only when complete;
    /// `-` writes to standard output, in order, nothing else printed there).
    Get {
        /// Source, s3://BUCKET/KEY.
        src: String,
        /// Local file to create or replace (missing directories are created); in an existing
        /// directory, or a path ending in `/`, the file takes the key's last name, as with
        /// `cp`; `-` for standard output.
        file: PathBuf,
        /// Plaintext byte range: FIRST-LAST, FIRST- or -SUFFIX (e.g. 100-199, 100-, -50).
        /// Fetched with one GET and not resumable, so --concurrency, --part-size and
        /// --checkpoint-dir do not go with it (--no-fsync does).
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with_all = ["concurrency", "part_size", "checkpoint_dir"]
        )]
        range: Option<String>,
        #[command(flatten)]
        transfer: transfer::TransferArgs,
    },
    /// Copy between the local disk and a bucket: `cp FILE s3://B/KEY`, `cp s3://B/KEY FILE`
    /// (`-` for standard input or output), or with -r a whole directory, `cp -r DIR
    /// s3://B/PREFIX/` and back. `cp` always copies (use `sync` to skip what is already
    /// there); small files go several at once, large ones with parallel parts, within one
    /// memory budget (--concurrency × --part-size); unfinished files resume.
    Cp {
        /// Copy a directory tree (every object under the prefix, every file under DIR).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// With -r: print what would be copied, copy nothing.
        #[arg(long, requires = "recursive")]
        dryrun: bool,
        /// With -r, uploads: leave symlinks out instead of copying what they point to.
        #[arg(long, requires = "recursive")]
        no_follow_symlinks: bool,
        /// Source: a local path or s3://BUCKET/KEY (or PREFIX/ with -r).
        src: String,
        /// Destination: a local path or s3://BUCKET/KEY (or PREFIX/ with -r).
        dest: String,
        #[command(flatten)]
        transfer: transfer::TransferArgs,
    },
    /// Make DEST hold what SRC holds: `sync DIR s3://B/PREFIX/` or `sync s3://B/PREFIX/ DIR`.
    /// A file is skipped when its copy has the same size and is not older (whole seconds; an
    /// upload is only skipped over an encrypted object); everything else is copied as by
    /// `cp -r`. Nothing is deleted.
    Sync {
        /// Print what would be copied, copy nothing.
        #[arg(long)]
        dryrun: bool,
        /// Uploads: leave symlinks out instead of copying what they point to.
        #[arg(long)]
        no_follow_symlinks: bool,
        /// Source directory or s3://BUCKET/PREFIX/.
        src: String,
        /// Destination directory or s3://BUCKET/PREFIX/.
        dest: String,
        #[command(flatten)]
        transfer: transfer::TransferArgs,
    },
    /// Re-wrap every object under s3://BUCKET/PREFIX with the keyring entry named NAME (key
    /// rotation; bodies are not touched). Needs --keyring with the current keys and the target.
    /// Objects already under NAME are skipped, so rerunning resumes. Not supported by OSS's own
    /// API, which refuses metadata changes on encrypted objects.
    Rewrap {
        /// s3://BUCKET/PREFIX (or s3://BUCKET/ for the whole bucket).
        target: String,
        /// Name of the keyring entry to wrap under.
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Rotate the content keys too: each object is downloaded, encrypted again under NAME
        /// with a new content key and written back in place if it did not change meanwhile.
        /// Reads and writes every byte; a rerun re-encrypts every object again.
        #[arg(long)]
        reencrypt: bool,
        /// Check every object (metadata, policy, the current key unwraps it, the target key
        /// wraps it) and print what would be rewrapped; write nothing.
        #[arg(long)]
        dryrun: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Read and verify every object under s3://BUCKET/PREFIX (tags, key commitment,
    /// signature) without writing plaintext anywhere; lists objects that lack integrity data.
    /// Exits non-zero if any object fails.
    Verify {
        /// s3://BUCKET/PREFIX (or s3://BUCKET/KEY, or s3://BUCKET/ for the whole bucket).
        target: String,
    },
    /// Migrate a file of the password-CBC model scripts (IV ‖ AES-256-CBC(SHA-256(password)))
    /// into an object of ours, streaming: SRC is a local file or a plain object s3://B/KEY, DEST
    /// s3://BUCKET/KEY, encrypted with the keyring as `put` does. A wrong password or a damaged
    /// file writes nothing. The password comes from --password-env or --password-file, else it
    /// is asked for on the terminal without echo.
    MigratePasswordCbc {
        /// The encrypted file: a local path or s3://BUCKET/KEY (read as stored).
        src: String,
        /// Destination, s3://BUCKET/KEY.
        dest: String,
        /// Environment variable holding the old password.
        #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
        password_env: Option<String>,
        /// File whose first line is the old password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List objects under s3://BUCKET/PREFIX with their plaintext sizes and what each needs:
    /// wrap algorithm and matdesc (and, with keys given, which of them unwraps it); sub-
    /// prefixes as PRE lines unless -r. Integrity sidecars are not shown.
    Ls {
        /// s3://BUCKET/PREFIX (or s3://BUCKET/).
        target: String,
        /// Every object under the prefix, not just one level.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// gocryptfs v2 trees in a bucket (PAI-EAS encrypted models), no FUSE: push, pull, ls,
    /// cat.
    #[command(subcommand)]
    Gocryptfs(gocryptfs::Gocryptfs),
    /// Tensor-level access to safetensors objects (ours or veTurboIO files): ls, get.
    #[command(subcommand)]
    Tensors(models::Tensors),
    /// veTurboIO model files: import into our objects, export from them.
    #[command(subcommand)]
    Veturbo(models::Veturbo),
    /// Show an object's encryption metadata and integrity state (no secrets).
    Inspect {
        /// Object, s3://BUCKET/KEY.
        object: String,
        /// One JSON object on stdout instead of text lines (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Generate an RSA key pair: DIR/private.pem (PKCS#8, mode 0600) and DIR/public.pem (SPKI);
    /// with --signing an Ed25519 signing key instead: DIR/signing.key (seed, mode 0600) and
    /// DIR/signing.pub (the public key readers list in trusted_signers); with --ecies-p256 an
    /// ECIES recipient: DIR/recipient.key (P-256, PKCS#8, mode 0600) and DIR/recipient.crt (a
    /// self-signed certificate writers use as `recipient`).
    Keygen {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Modulus size: 2048, 3072, 4096 or 8192.
        #[arg(long, default_value_t = 2048, conflicts_with_all = ["signing", "ecies_p256"])]
        bits: u32,
        /// Make an integrity signing key instead of an RSA pair.
        #[arg(long, conflicts_with = "ecies_p256")]
        signing: bool,
        /// Make a P-256 recipient key and a self-signed certificate instead of an RSA pair.
        #[arg(long)]
        ecies_p256: bool,
        /// With --ecies-p256: the certificate's common name.
        #[arg(
            long,
            default_value = "cryptobucket recipient",
            requires = "ecies_p256"
        )]
        subject: String,
        /// With --ecies-p256: how many days the certificate is valid.
        #[arg(long, default_value_t = 365, requires = "ecies_p256")]
        days: u32,
    },
}

pub(crate) fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?} is not an s3://BUCKET/KEY URL"),
        )
    })?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_owned(), k.to_owned())),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?} needs both a bucket and a key: s3://BUCKET/KEY"),
        )),
    }
}

fn read_secret(path: &Path) -> Result<Zeroizing<String>> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read {}: {e}", path.display()),
            )
        })
}

impl Global {
    fn matdesc(&self) -> Result<Option<MatDesc>> {
        self.matdesc
            .as_deref()
            .map(|s| {
                MatDesc::from_json(s)
                    .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("--matdesc: {e}")))
            })
            .transpose()
    }

    pub(crate) fn keyring(&self, for_write: bool) -> Result<Keyring> {
        let keyring = self.keyring_from_args(for_write)?;
        Ok(if self.strict {
            keyring.with_strict(true)
        } else {
            keyring
        })
    }

    fn keyring_from_args(&self, for_write: bool) -> Result<Keyring> {
        if let Some(path) = &self.keyring_path() {
            let ask = move |entry: &str| prompt::passphrase(&format!("keyring {entry}"), for_write);
            let keyring = KeyringFile::load_with_prompt(path, &ask)?;
            return match (for_write, self.matdesc()?) {
                (true, Some(desc)) => {
                    // Write with the entry that has this matdesc: make it the default.
                    let chosen = keyring
                        .entries()
                        .iter()
                        .find(|e| e.get_matdesc() == &desc)
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::NoMatchingKey,
                                format!("no keyring entry has matdesc {desc}"),
                            )
                        })?;
                    let mut b = Keyring::builder()
                        .default_key(chosen.clone())
                        .strict(keyring.integrity().is_strict());
                    if let Some(k) = keyring.integrity().signing_key() {
                        b = b.signing_key(k.clone());
                    }
                    for s in keyring.integrity().trusted_signers() {
                        b = b.trust_signer(*s);
                    }
                    for e in keyring
                        .entries()
                        .iter()
                        .filter(|e| e.get_matdesc() != &desc)
                    {
                        b = b.key(e.clone());
                    }
                    b.build()
                }
                _ => Ok(keyring),
            };
        }
        let public = self
            .rsa_public_key
            .as_deref()
            .map(read_secret)
            .transpose()?;
        let private = self
            .rsa_private_key
            .as_deref()
            .map(read_secret)
            .transpose()?;
        if public.is_none() && private.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                "no key given: use --keyring FILE (or CRYPTOBUCKET_KEYRING, or \
                 ~/.config/cryptobucket/keyring.toml) or --rsa-public-key/--rsa-private-key PEM \
                 files",
            ));
        }
        let key = RsaKeyPair::from_pem(
            public.as_deref().map(|s| s.as_str()),
            private.as_deref().map(|s| s.as_str()),
        )?;
        Keyring::builder()
            .default_key(KeyEntry::new(key).matdesc(self.matdesc()?.unwrap_or_default()))
            .build()
    }

    /// The keyring file in use: --keyring; else, when no --rsa-* key is given,
    /// CRYPTOBUCKET_KEYRING; else the default path in the config directory if it exists.
    pub(crate) fn keyring_path(&self) -> Option<PathBuf> {
        if self.keyring.is_some() || self.has_rsa_keys() {
            return self.keyring.clone();
        }
        if let Some(p) = std::env::var_os("CRYPTOBUCKET_KEYRING").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(config.join("cryptobucket").join("keyring.toml")).filter(|p| p.is_file())
    }

    /// Whether RSA key files were given.
    pub(crate) fn has_rsa_keys(&self) -> bool {
        self.rsa_public_key.is_some() || self.rsa_private_key.is_some()
    }

    /// A bucket for commands whose keys are optional (veTurboIO reads, `ls`): the given keys,
    /// or when none are given a keyring of one random, never-used key.
    pub(crate) async fn bucket_keys_optional(&self, bucket: String) -> Result<CryptoBucket> {
        let given = self.keyring_path().is_some() || self.has_rsa_keys();
        let keyring = if given {
            self.keyring(false)?
        } else {
            let mut random = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(&mut random[..])
                .map_err(|_| Error::new(ErrorKind::Io, "no randomness"))?;
            Keyring::single(
                cryptobucket::AesMasterKey::from_bytes(&random[..])?,
                MatDesc::new(),
            )
            .with_strict(self.strict)
        };
        self.bucket(self.client().await, bucket, keyring)
    }

    /// The bucket handle every command works through: `client`, `keyring`, and how objects
    /// without encryption are treated (`--allow-unencrypted`).
    pub(crate) fn bucket(
        &self,
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        keyring: Keyring,
    ) -> Result<CryptoBucket> {
        let policy = match self.allow_unencrypted {
            true => cryptobucket::UnencryptedPolicy::PassThrough,
            false => cryptobucket::UnencryptedPolicy::Refuse,
        };
        CryptoBucket::builder()
            .client(client)
            .bucket(bucket)
            .keyring(keyring)
            .unencrypted_policy(policy)
            .build()
    }

    pub(crate) async fn client(&self) -> aws_sdk_s3::Client {
        let mut timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(secs(self.connect_timeout.unwrap_or(10.0)));
        if let Some(t) = self.read_timeout {
            timeouts = timeouts.read_timeout(secs(t));
        }
        ClientOptions::new()
            .set_endpoint_url(self.endpoint_url.clone())
            .set_region(self.region.clone())
            .set_profile(self.profile.clone())
            .timeout_config(timeouts.build())
            .force_path_style(self.force_path_style)
            .checksum(if self.checksum == "when-supported" {
                ChecksumPolicy::WhenSupported
            } else {
                ChecksumPolicy::WhenRequired
            })
            .build()
            .await
    }
}

/// A duration from a number of seconds given on the command line (clamped to a sane range).
fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.001, 86_400.0)
    } else {
        10.0
    })
}

/// Sends `tracing` output to standard error: the filter from CRYPTOBUCKET_LOG, else by -v.
fn init_logging(verbose: u8) -> Result<()> {
    let filter = match std::env::var("CRYPTOBUCKET_LOG") {
        Ok(spec) => spec
            .parse::<tracing_subscriber::filter::Targets>()
            .map_err(|e| {
                cryptobucket::Error::new(
                    cryptobucket::ErrorKind::InvalidInput,
                    format!("CRYPTOBUCKET_LOG {spec:?}: {e}"),
                )
            })?,
        Err(_) => {
            let level = match verbose {
                0 => return Ok(()),
                1 => tracing::Level::INFO,
                2 => tracing::Level::DEBUG,
                _ => tracing::Level::TRACE,
            };
            tracing_subscriber::filter::Targets::new().with_target("cryptobucket", level)
        }
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
    Ok(())
}

pub(crate) async fn run(cli: Cli) -> Result<()> {
    init_logging(cli.global.verbose)?;
    let g = &cli.global;
    match &cli.command {
        Command::Keygen {
            out_dir,
            signing: true,
            ..
        } => keygen_signing(out_dir),
        Command::Keygen {
            out_dir,
            ecies_p256: true,
            subject,
            days,
            ..
        } => keygen_ecies(out_dir, subject, *days),
        Command::Keygen { out_dir, bits, .. } => keygen(out_dir, *bits),
        Command::Verify { target } => verify::verify(g, target).await,
        Command::MigratePasswordCbc {
            src,
            dest,
            password_env,
            password_file,
        } => {
            migrate_password_cbc(
                g,
                src,
                dest,
                password_env.as_deref(),
                password_file.as_deref(),
            )
            .await
        }
        Command::Put {
            file,
            dest,
            transfer,
        } => transfer::upload(g, file, dest, transfer).await,
        Command::Get {
            src,
            file,
            range: Some(range),
            transfer,
        } => {
            let (bucket, key) = parse_s3_url(src)?;
            let range = range.parse::<ByteRange>()?;
            let target = transfer::download_target(file, &key)?;
            let cb = g.bucket(g.client().await, bucket, g.keyring(false)?)?;
            let got = download(&cb, &key, Some(range), &target.file, !transfer.no_fsync).await;
            let n = target.settle(got)?;
            eprintln!(
                "downloaded {range} of {src} ({n} bytes, decrypted) to {}",
                target.file.display()
            );
            Ok(())
        }
        Command::Get {
            src,
            file,
            range: None,
            transfer,
        } => {
            let (bucket, key) = parse_s3_url(src)?;
            let target = transfer::download_target(file, &key)?;
            let cb = g.bucket(g.client().await, bucket, g.keyring(false)?)?;
            target.settle(transfer::get(&cb, &key, src, &target.file, transfer).await)
        }
        Command::Cp {
            recursive: false,
            src,
            dest,
            transfer,
            ..
        } => transfer::cp(g, src, dest, transfer).await,
        Command::Cp {
            recursive: true,
            dryrun,
            no_follow_symlinks,
            src,
            dest,
            transfer,
        } => {
            let how = transfer::Tree {
                skip_identical: false,
                dryrun: *dryrun,
                follow_symlinks: !no_follow_symlinks,
            };
            transfer::copy_tree(g, src, dest, how, transfer).await
        }
        Command::Sync {
            dryrun,
            no_follow_symlinks,
            src,
            dest,
            transfer,
        } => {
            let how = transfer::Tree {
                skip_identical: true,
                dryrun: *dryrun,
                follow_symlinks: !no_follow_symlinks,
            };
            transfer::copy_tree(g, src, dest, how, transfer).await
        }
        Command::Rewrap {
            target,
            to,
            reencrypt,
            dryrun,
            no_progress,
        } => rewrap::rewrap(g, target, to, *reencrypt, *dryrun, *no_progress).await,
        Command::Inspect { object, json } => inspect::inspect(g, object, *json).await,
        Command::Ls { target, recursive } => ls::ls(g, target, *recursive).await,
        Command::Gocryptfs(cmd) => gocryptfs::run(g, cmd).await,
        Command::Tensors(cmd) => models::tensors(g, cmd).await,
        Command::Veturbo(cmd) => models::veturbo(g, cmd).await,
    }
}

/// A ranged GET saved to `dest` through the library's one download path (partial file,
/// fsync when `durable`, rename; nothing left on failure).
async fn download(
    cb: &CryptoBucket,
    key: &str,
    range: Option<ByteRange>,
    dest: &Path,
    durable: bool,
) -> Result<u64> {
    let out = cb.get_object().key(key).set_range(range).send().await?;
    if dest == Path::new("-") {
        // Each piece is verified before the stream yields it.
        return out.body.write_to(&mut tokio::io::stdout()).await;
    }
    match durable {
        true => out.save(dest).await,
        false => out.save_unsynced(dest).await,
    }
}

/// Writes a new key pair into `out_dir`: the secret half (mode 0600, created exclusively) and
/// the public half; refuses to overwrite either. `make` runs only once both names are free.
fn write_key_pair(
    out_dir: &Path,
    (secret_name, public_name): (&str, &str),
    make: impl FnOnce() -> Result<(Zeroizing<String>, String)>,
) -> Result<(PathBuf, PathBuf)> {
    let io = |what: &str, e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    std::fs::create_dir_all(out_dir)
        .map_err(|e| io(&format!("cannot create {}", out_dir.display()), e))?;
    let secret_path = out_dir.join(secret_name);
    let public_path = out_dir.join(public_name);
    for p in [&secret_path, &public_path] {
        if p.exists() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} exists; refusing to overwrite a key", p.display()),
            ));
        }
    }
    let (secret, public) = make()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&secret_path)
        .map_err(|e| io(&format!("cannot create {}", secret_path.display()), e))?;
    std::io::Write::write_all(&mut f, secret.as_bytes())
        .map_err(|e| io("cannot write the secret key", e))?;
    std::fs::write(&public_path, public).map_err(|e| io("cannot write the public key", e))?;
    Ok((secret_path, public_path))
}

async fn migrate_password_cbc(
    g: &Global,
    src: &str,
    dest: &str,
    password_env: Option<&str>,
    password_file: Option<&Path>,
) -> Result<()> {
    use cryptobucket::PutBody;
    use cryptobucket::migrate::PasswordCbcReader;
    let password = match (password_env, password_file) {
        (Some(var), None) => Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("the password variable {var} is not set"),
            )
        })?),
        (None, Some(file)) => {
            let text = read_secret(file)?;
            Zeroizing::new(text.lines().next().unwrap_or("").to_owned())
        }
        (None, None) => prompt::passphrase("the password-CBC file", false)?,
        (Some(_), Some(_)) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "give only one of --password-env and --password-file",
            ));
        }
    };
    let (bucket, key) = parse_s3_url(dest)?;
    let client = g.client().await;
    let source = open_source(&client, src).await?;
    let cb = g.bucket(client, bucket, g.keyring(true)?)?;
    let plain = PasswordCbcReader::new(source, &password);
    let out = cb
        .put_object()
        .key(&key)
        .body(PutBody::from_stream(plain))
        .send()
        .await?;
    eprintln!(
        "migrated {src} to {dest} (wrap algorithm {}); the old password-CBC file is untouched",
        out.envelope.wrap_alg
    );
    Ok(())
}

fn keygen_signing(out_dir: &Path) -> Result<()> {
    let key = cryptobucket::SigningKey::generate()?;
    let (secret, public) = write_key_pair(out_dir, ("signing.key", "signing.pub"), || {
        Ok((key.seed_base64(), format!("{}\n", key.public_key())))
    })?;
    eprintln!(
        "wrote {} (secret) and {}; readers trust it with trusted_signers = [\"{}\"]",
        secret.display(),
        public.display(),
        key.public_key()
    );
    Ok(())
}

fn keygen_ecies(out_dir: &Path, subject: &str, days: u32) -> Result<()> {
    if days == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--days must be at least 1",
        ));
    }
    let valid_for = std::time::Duration::from_secs(u64::from(days) * 86_400);
    let (private, cert) = write_key_pair(out_dir, ("recipient.key", "recipient.crt"), || {
        cryptobucket::EciesP256Key::generate_self_signed(subject, valid_for)
    })?;
    eprintln!(
        "wrote {} (secret) and {} (valid {days} days); writers use recipient = \"{}\", readers \
         private_key = \"{}\" in a kind = \"ecies-p256\" keyring entry",
        private.display(),
        cert.display(),
        cert.display(),
        private.display()
    );
    Ok(())
}

fn keygen(out_dir: &Path, bits: u32) -> Result<()> {
    let (private, public) = write_key_pair(out_dir, ("private.pem", "public.pem"), || {
        cryptobucket::generate_rsa_pem(bits)
    })?;
    eprintln!("wrote {} and {}", private.display(), public.display());
    Ok(())
}

/// A file to convert, read as stored: a local path or a plain object `s3://B/K`.
pub(crate) async fn open_source(
    client: &aws_sdk_s3::Client,
    src: &str,
) -> Result<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>> {
    Ok(match src.strip_prefix("s3://") {
        Some(_) => {
            let (b, k) = parse_s3_url(src)?;
            let got = client
                .get_object()
                .bucket(&b)
                .key(&k)
                .send()
                .await
                .map_err(|e| Error::from_sdk("GetObject", e).with_object(&b, &k))?;
            Box::pin(got.body.into_async_read())
        }
        None => Box::pin(
            tokio::fs::File::open(src)
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {src}: {e}")))?,
        ),
    })
}
