//! `tensors` (list and fetch tensors of a safetensors object) and `veturbo` (convert veTurboIO
//! files to and from our objects).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use cryptobucket::VolcengineKmsKey;
use cryptobucket::reader::ObjectReader;
use cryptobucket::safetensors::SafetensorsIndex;
use cryptobucket::veturbo::{
    self, VeturboDecryptor, VeturboHeader, VeturboKey, VeturboKeySource, VeturboMode,
};
use cryptobucket::{PutBody, Result};

use super::transfer::{TransferArgs, progress};
use super::{Global, parse_s3_url};

#[derive(Debug, Args)]
pub(crate) struct ObjectFormat {
    /// Read the object as a veTurboIO file (headered or not), its key and IV from
    /// VETURBOIO_KEY and VETURBOIO_IV (base64), instead of as one of our objects.
    #[arg(long)]
    veturbo: bool,
    /// With --veturbo: a headered file's data key from Volcengine KMS (Decrypt of its
    /// meta_data_key), configured as veTurboIO does: VETURBOIO_KMS_KEYRING_NAME,
    /// VETURBOIO_KMS_KEY_NAME, VETURBOIO_KMS_REGION, VETURBOIO_KMS_HOST and the credentials
    /// VOLCENGINE_ACCESS_KEY/SECRET_KEY/SESSION_TOKEN (or VETURBOIO_KMS_*).
    #[arg(long, requires = "veturbo")]
    kms: bool,
}

/// Where a veTurboIO file's key comes from: Volcengine KMS, or VETURBOIO_KEY/VETURBOIO_IV.
fn key_source(kms: bool) -> Result<Box<dyn VeturboKeySource>> {
    Ok(match kms {
        true => Box::new(VolcengineKmsKey::from_veturbo_env()?),
        false => Box::new(VeturboKey::from_env()?),
    })
}

/// Tensor-level access to safetensors objects.
#[derive(Debug, Subcommand)]
pub(crate) enum Tensors {
    /// List the tensors of s3://BUCKET/KEY: name, dtype, shape, byte range (one ranged read
    /// of the header).
    Ls {
        /// The safetensors object, s3://BUCKET/KEY.
        object: String,
        #[command(flatten)]
        format: ObjectFormat,
    },
    /// Fetch the tensors matching --names (globs: *, ?, [abc]) with parallel ranged GETs of
    /// just their bytes, decrypted and verified, into a new safetensors file OUT.
    Get {
        /// The safetensors object, s3://BUCKET/KEY.
        object: String,
        /// Output safetensors file (appears only when complete).
        out: PathBuf,
        /// Tensor names or patterns, e.g. 'model.layers.0.*' (repeatable).
        #[arg(long, required = true, num_args = 1..)]
        names: Vec<String>,
        #[command(flatten)]
        format: ObjectFormat,
    },
}

/// veTurboIO model files (AES-CTR, no MAC) to and from our objects.
#[derive(Debug, Subcommand)]
pub(crate) enum Veturbo {
    /// Re-encrypt a veTurboIO file (a local path, or a stored object s3://B/K) into one of our
    /// objects at s3://BUCKET/KEY, streaming; its key from VETURBOIO_KEY/VETURBOIO_IV (a
    /// headered file's IV comes from its header).
    Import {
        /// The veTurboIO file: a local path or s3://BUCKET/KEY (read as stored).
        src: String,
        /// Destination, s3://BUCKET/KEY.
        dest: String,
        /// The file is headered and its data key is in Volcengine KMS (see `tensors ls
        /// --help` for the variables).
        #[arg(long)]
        kms: bool,
    },
    /// Decrypt one of our objects and write it as a veTurboIO file DEST (a local file, or an
    /// object s3://BUCKET/KEY stored as is; streamed either way), with the key and IV of
    /// VETURBOIO_KEY/VETURBOIO_IV; with --meta-data-key, behind a veTurboIO header naming that
    /// KMS ciphertext of the key.
    Export {
        /// The object, s3://BUCKET/KEY.
        src: String,
        /// The veTurboIO file to write (appears only when complete): a local path or
        /// s3://BUCKET/KEY.
        dest: String,
        /// Write the 256 KiB header with this `meta_data_key` (the KMS `CiphertextBlob` of
        /// the key in VETURBOIO_KEY).
        #[arg(long, value_name = "BLOB", conflicts_with = "kms")]
        meta_data_key: Option<String>,
        /// Write a headered file as veTurboIO does with KMS: a new random CTR-128 key and IV,
        /// the key encrypted by Volcengine KMS into the header (no VETURBOIO_KEY needed).
        #[arg(long)]
        kms: bool,
    },
    /// Encrypt the local plaintext file SRC into the veTurboIO object s3://BUCKET/KEY:
    /// parallel parts, resumable after a kill (rerun the same command). Key options as for
    /// `export`.
    Put {
        /// The plaintext file.
        src: PathBuf,
        /// Destination, s3://BUCKET/KEY.
        dest: String,
        /// Write the header with this `meta_data_key` (the KMS ciphertext of VETURBOIO_KEY).
        #[arg(long, value_name = "BLOB", conflicts_with = "kms")]
        meta_data_key: Option<String>,
        /// A new CTR-128 key encrypted by Volcengine KMS into the header.
        #[arg(long)]
        kms: bool,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Decrypt the veTurboIO object s3://BUCKET/KEY (headered or not) into the local file
    /// DEST: parallel ranges of the pinned version, resumable after a kill. No MAC: strict
    /// mode refuses it.
    Get {
        /// The veTurboIO object, s3://BUCKET/KEY.
        src: String,
        /// The plaintext file to write (appears only when complete).
        dest: PathBuf,
        /// A headered file's data key from Volcengine KMS (else VETURBOIO_KEY/VETURBOIO_IV).
        #[arg(long)]
        kms: bool,
        #[command(flatten)]
        transfer: TransferArgs,
    },
}

/// The key (and header) of a new veTurboIO file: a KMS-wrapped fresh key, or the environment
/// key, behind a header naming `meta_data_key` when given.
async fn new_file_key(
    kms: bool,
    meta_data_key: Option<&String>,
) -> Result<(VeturboKey, Option<VeturboHeader>)> {
    if kms {
        let kms = VolcengineKmsKey::from_veturbo_env()?;
        let key = VeturboKey::generate(VeturboMode::Ctr128)?;
        let blob = kms.encrypt(key.key_bytes(), None).await?;
        let header = VeturboHeader::new(key.mode(), *key.iv(), blob);
        Ok((key, Some(header)))
    } else {
        let key = VeturboKey::from_env()?;
        let header =
            meta_data_key.map(|blob| VeturboHeader::new(key.mode(), *key.iv(), blob.clone()));
        Ok((key, header))
    }
}

async fn open(g: &Global, object: &str, format: &ObjectFormat) -> Result<ObjectReader> {
    let (bucket, key) = parse_s3_url(object)?;
    let cb = match format.veturbo {
        true => g.bucket_keys_optional(bucket).await?,
        false => g.bucket(g.client().await, bucket, g.keyring(false)?)?,
    };
    let reader = cb.reader().key(key);
    match format.veturbo {
        true => reader.veturbo(key_source(format.kms)?).open().await,
        false => reader.open().await,
    }
}

pub(crate) async fn tensors(g: &Global, cmd: &Tensors) -> Result<()> {
    match cmd {
        Tensors::Ls { object, format } => {
            let reader = open(g, object, format).await?;
            let index = SafetensorsIndex::read(&reader).await?;
            let mut out = std::io::stdout().lock();
            for t in index.tensors() {
                let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
                let _ = std::io::Write::write_fmt(
                    &mut out,
                    format_args!(
                        "{}\t{}\t[{}]\t{}-{}\t{}\n",
                        t.name,
                        t.dtype,
                        shape.join(","),
                        t.range.start,
                        t.range.end,
                        t.len()
                    ),
                );
            }
            eprintln!(
                "{} tensors, header {} bytes, file {} bytes",
                index.tensors().len(),
                index.data_start(),
                index.file_size()
            );
            Ok(())
        }
        Tensors::Get {
            object,
            out,
            names,
            format,
        } => {
            let reader = open(g, object, format).await?;
            let index = SafetensorsIndex::read(&reader).await?;
            let patterns: Vec<&str> = names.iter().map(String::as_str).collect();
            let chosen = index.select(&patterns)?;
            let bytes: u64 = chosen.iter().map(|t| t.len()).sum();
            let written = index.write_subset(&reader, &chosen, out).await?;
            eprintln!(
                "wrote {} ({} tensors, {bytes} tensor bytes of {}, file {written} bytes)",
                out.display(),
                chosen.len(),
                index.file_size()
            );
            Ok(())
        }
    }
}

pub(crate) async fn veturbo(g: &Global, cmd: &Veturbo) -> Result<()> {
    match cmd {
        Veturbo::Import { src, dest, kms } => {
            let key = key_source(*kms)?;
            let (bucket, dest_key) = parse_s3_url(dest)?;
            let client = g.client().await;
            let source = super::open_source(&client, src).await?;
            let (plain, header) = VeturboDecryptor::open(source, key.as_ref()).await?;
            let cb = g.bucket(client, bucket, g.keyring(true)?)?;
            let out = cb
                .put_object()
                .key(&dest_key)
                .body(PutBody::from_stream(plain))
                .send()
                .await?;
            eprintln!(
                "imported {src} ({}) to {dest} (wrap algorithm {})",
                if header.is_some() {
                    "headered veTurboIO file"
                } else {
                    "headerless veTurboIO file"
                },
                out.envelope.wrap_alg
            );
            Ok(())
        }
        Veturbo::Export {
            src,
            dest,
            meta_data_key,
            kms,
        } => {
            let (key, header) = new_file_key(*kms, meta_data_key.as_ref()).await?;
            let (bucket, src_key) = parse_s3_url(src)?;
            let client = g.client().await;
            let cb = g.bucket(client.clone(), bucket, g.keyring(false)?)?;
            let n = match dest.strip_prefix("s3://") {
                Some(_) => {
                    let (dest_bucket, dest_key) = parse_s3_url(dest)?;
                    let out = g.bucket(client, dest_bucket, g.keyring(false)?)?;
                    // Read through `cb`, stored through `out` (another bucket perhaps).
                    let got = cb.get_object().key(&src_key).send().await?;
                    veturbo::store_stream(
                        &out,
                        got.body.into_async_read(),
                        &key,
                        header.as_ref(),
                        &dest_key,
                    )
                    .await?
                }
                None => veturbo::export_to_file(&cb, &src_key, &key, header.as_ref(), dest).await?,
            };
            eprintln!("exported {src} to {dest} ({n} bytes)");
            Ok(())
        }
        Veturbo::Put {
            src,
            dest,
            meta_data_key,
            kms,
            transfer,
        } => {
            transfer.for_upload()?;
            let (bucket, key) = parse_s3_url(dest)?;
            let cb = g.bucket_keys_optional(bucket).await?;
            let (vkey, header) = new_file_key(*kms, meta_data_key.as_ref()).await?;
            let (bar, listener) = progress(&src.display().to_string(), "upload", transfer);
            let mut job = veturbo::upload_file(&cb, src)
                .key(&key)
                .encryption(vkey.clone(), header)
                .part_size(transfer.part_size())
                .concurrency(transfer.concurrency)
                .progress(listener);
            job = match kms {
                true => job.key_source(VolcengineKmsKey::from_veturbo_env()?),
                false => job.key_source(vkey),
            };
            if let Some(d) = &transfer.checkpoint_dir {
                job = job.checkpoint_dir(d);
            }
            let out = job.send().await;
            bar.finish_and_clear();
            let out = out?;
            eprintln!(
                "stored {} as the veTurboIO object {dest} ({} bytes{}, {} parts{})",
                src.display(),
                out.stored_size,
                if out.header.is_some() {
                    ", headered"
                } else {
                    ""
                },
                out.parts,
                if out.resumed_bytes > 0 {
                    format!(
                        ", {} bytes taken over from the interrupted run",
                        out.resumed_bytes
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Veturbo::Get {
            src,
            dest,
            kms,
            transfer,
        } => {
            let (bucket, key) = parse_s3_url(src)?;
            let cb = g.bucket_keys_optional(bucket).await?;
            let (bar, listener) = progress(src, "download", transfer);
            let mut job = cb
                .download_file()
                .key(&key)
                .path(dest)
                .part_size(transfer.part_size())
                .concurrency(transfer.concurrency)
                .durable(!transfer.no_fsync)
                .progress(listener);
            job = match kms {
                true => job.veturbo(VolcengineKmsKey::from_veturbo_env()?),
                false => job.veturbo(VeturboKey::from_env()?),
            };
            if let Some(d) = &transfer.checkpoint_dir {
                job = job.checkpoint_dir(d);
            }
            let out = job.send().await;
            bar.finish_and_clear();
            let out = out?;
            eprintln!(
                "decrypted {src} into {} ({} bytes{})",
                dest.display(),
                out.size,
                if out.resumed_bytes > 0 {
                    format!(
                        ", {} bytes taken over from the interrupted run",
                        out.resumed_bytes
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
    }
}
