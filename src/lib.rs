//! # cryptobucket
//!
//! Client-side encryption for S3-compatible object storage, byte-compatible with the Alibaba
//! Cloud OSS SDKs' client-side encryption (oss2, Go, Java, C++): every object gets a fresh
//! AES-256 content key and IV, the body is AES-256-CTR, and the key and IV are wrapped by a
//! master key (RSA today) and stored as `client-side-encryption-*` user metadata.
//!
//! Where things live:
//! - [`cipher`]: AES-256-CTR, seekable to any byte offset;
//! - [`envelope`]: the metadata format (V2, and legacy V1 for reading) and [`MatDesc`];
//! - [`keys`]: the [`KeyProvider`] trait, [`RsaKeyPair`], the [`Keyring`] and its TOML file;
//! - [`bucket`]: [`CryptoBucket`] and its request builders (each operation in its own file
//!   under `src/ops/`, all of them on the shared state in `src/handle.rs`);
//! - [`multipart`]: encrypted multipart uploads, parts in any order and in parallel;
//! - [`engine`]: the transfer engine every multi-request transfer runs on: [`TransferConfig`],
//!   the one retry layer, bounded concurrency;
//! - [`resumable`]: whole-file upload/download, parallel, retried, resumable; its
//!   [`checkpoint`] files and [`progress`] reports;
//! - [`rewrap`]: key rotation by re-wrapping the content key, body untouched;
//! - [`body`]: the streaming encrypt/decrypt data path;
//! - [`range`]: byte ranges and response checks;
//! - [`client`]: building an S3 client for any store;
//! - [`reader`]: random-access plaintext reads of one object version (parallel ranges);
//! - [`gocryptfs`]: gocryptfs v2 trees without FUSE (PAI-EAS encrypted models);
//! - [`safetensors`]: tensor-level loading of safetensors files through a reader;
//! - [`veturbo`]: veTurboIO encrypted model files (read, write, convert).
//!
//! ```no_run
//! # async fn demo() -> cryptobucket::Result<()> {
//! use cryptobucket::{ByteRange, ClientOptions, CryptoBucket, Keyring, MatDesc, RsaKeyPair};
//! let client = ClientOptions::new().endpoint_url("http://127.0.0.1:9000").force_path_style(true).build().await;
//! let key = RsaKeyPair::from_private_pem(&std::fs::read_to_string("private.pem").unwrap())?;
//! let bucket = CryptoBucket::new(client, "models", Keyring::single(key, MatDesc::new().with("team", "ml")));
//! bucket.put_object().key("ckpt/shard-0").body(cryptobucket::PutBody::from_path("shard-0").await?).send().await?;
//! let part = bucket.get_object().key("ckpt/shard-0").range("1000-1999".parse::<ByteRange>()?).send().await?;
//! let bytes = part.body.collect().await?;
//! # let _ = bytes; Ok(()) }
//! ```
//!
//! Integrity: the OSS format itself has no MAC; every object this crate writes also carries
//! integrity data (chunk tags, key commitment, optional writer signature; [`integrity`],
//! `docs/integrity.md`), and every read verifies what it returns. Strict mode
//! ([`KeyringBuilder::strict`](keys::KeyringBuilder::strict)) refuses objects that cannot be
//! verified. What this covers and what it cannot: SECURITY.md.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod body;
pub mod bucket;
pub mod checkpoint;
pub mod cipher;
pub mod client;
pub mod codec;
pub mod engine;
pub mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gocryptfs;
mod handle;
pub mod integrity;
pub mod keys;
pub mod migrate;
pub mod multipart;
mod ops;
mod partial;
mod parts;
pub mod progress;
pub mod range;
pub mod reader;
pub mod resumable;
pub mod rewrap;
pub mod safetensors;
pub mod veturbo;

pub use body::{DecryptingStream, PutBody};
pub use bucket::{
    CryptoBucket, CryptoBucketBuilder, GetObjectOutput, HeadObjectOutput, ListEntry,
    ListObjectsFluentBuilder, ObjectEntry, PutObjectOutput, UnencryptedPolicy,
};
pub use cipher::ContentMaterial;
pub use client::{ChecksumPolicy, ClientOptions};
pub use engine::{FailedUploadPolicy, TransferConfig};
pub use envelope::{Envelope, FormatVersion, MatDesc, WrapAlgorithm};
pub use error::{Error, ErrorKind, Result};
pub use integrity::{IntegrityState, SignerPublicKey, SigningKey};
pub use keys::{
    AesMasterKey, AliyunCredentials, AliyunKmsEncoding, AliyunKmsKey, AwsKmsKey, EciesP256Key,
    KeyEntry, KeyProvider, Keyring, KeyringBuilder, KeyringFile, PassphraseKey, PassphrasePrompt,
    RsaKeyPair, RsaPadding, VolcengineCredentials, VolcengineKmsKey, WrappedMaterial,
    generate_rsa_pem,
};
pub use multipart::{MultipartUpload, PartSize};
pub use progress::{Progress, ProgressEvent, ProgressListener};
pub use range::ByteRange;
pub use resumable::{DirTransferOutput, DownloadFileOutput, UploadFileOutput};
/// Cancels long transfers (`cancellation_token` on their builders); tokio-util's token.
pub use tokio_util::sync::CancellationToken;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
