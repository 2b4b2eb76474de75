//! `tensors` (list and fetch tensors of a safetensors object) and `veturbo` (convert veTurboIO
//! files to and from our objects).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use cryptobucket::VolcengineKmsKey;
use cryptobucket::reader::ObjectReader;
use cryptobucket::safetensors::SafetensorsIndex;
use cryptobucket::veturbo::{
    VeturboDecryptor, VeturboHeader, VeturboKey, VeturboKeySource, VeturboMode,
};
use cryptobucket::{CryptoBucket, PutBody, Result};

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
    /// Decrypt one of our objects and write it as a veTurboIO file DEST (local), with the key
    /// and IV of VETURBOIO_KEY/VETURBOIO_IV; with --meta-data-key, behind a veTurboIO header
    /// naming that KMS ciphertext of the key.
    Export {
        /// The object, s3://BUCKET/KEY.
        src: String,
        /// The veTurboIO file to write (appears only when complete).
        dest: PathBuf,
        /// Write the 256 KiB header with this `meta_data_key` (the KMS `CiphertextBlob` of
        /// the key in VETURBOIO_KEY).
        #[arg(long, value_name = "BLOB", conflicts_with = "kms")]
        meta_data_key: Option<String>,
        /// Write a headered file as veTurboIO does with KMS: a new random CTR-128 key and IV,
        /// the key encrypted by Volcengine KMS into the header (no VETURBOIO_KEY needed).
        #[arg(long)]
        kms: bool,
    },
}

async fn open(g: &Global, object: &str, format: &ObjectFormat) -> Result<ObjectReader> {
    let (bucket, key) = parse_s3_url(object)?;
    let cb = match format.veturbo {
        true => g.bucket_keys_optional(bucket).await?,
        false => CryptoBucket::new(g.client().await, bucket, g.keyring(false)?),
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
            let cb = CryptoBucket::new(client, bucket, g.keyring(true)?);
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
            let (key, header) = if *kms {
                let kms = VolcengineKmsKey::from_veturbo_env()?;
                let key = VeturboKey::generate(VeturboMode::Ctr128)?;
                let blob = kms.encrypt(key.key_bytes(), None).await?;
                let header = VeturboHeader::new(key.mode(), *key.iv(), blob);
                (key, Some(header))
            } else {
                let key = VeturboKey::from_env()?;
                let header = meta_data_key
                    .as_ref()
                    .map(|blob| VeturboHeader::new(key.mode(), *key.iv(), blob.clone()));
                (key, header)
            };
            let (bucket, src_key) = parse_s3_url(src)?;
            let cb = CryptoBucket::new(g.client().await, bucket, g.keyring(false)?);
            let n =
                cryptobucket::veturbo::export_to_file(&cb, &src_key, &key, header.as_ref(), dest)
                    .await?;
            eprintln!("exported {src} to {} ({n} bytes)", dest.display());
            Ok(())
        }
    }
}
