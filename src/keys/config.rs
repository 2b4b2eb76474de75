//! The keyring file (TOML) that the CLI reads, usable from the library too.
//!
//! ```toml
//! [[keys]]
//! kind = "rsa"
//! public_key = "a/public.pem"    # relative paths are relative to the keyring file
//! private_key = "a/private.pem"  # optional when only writing
//! matdesc = { team = "a", v = "1" }
//! default = true                 # exactly one entry (optional when there is one entry)
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "airgap"
//! kind = "aes"                   # a local 256-bit master key (AES-256-GCM wrap)
//! key_env = "CKPT_MASTER_KEY"    # base64 of 32 bytes; or key_file = "master.key"
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "sandbox"
//! kind = "ecies-p256"            # ECIES to a P-256 certificate (Volcengine Ark's construction)
//! recipient = "sandbox.crt"      # certificate or public key PEM: enough to write
//! private_key = "sandbox.key"    # PKCS#8 or SEC1, to read (optional when only writing)
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "team"
//! kind = "passphrase"            # Argon2id (64 MiB, 3 passes) + AES-256-GCM key wrap
//! passphrase_env = "CKPT_PASSPHRASE"   # or passphrase_file = "passphrase.txt"; neither:
//!                                      # asked for (KeyringFile::load_with_prompt, the CLI)
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "prod-aws"
//! kind = "aws-kms"
//! key_id = "alias/ckpt"          # key id, ARN or alias
//! region = "us-east-1"           # optional, else the AWS chain
//! endpoint_url = "http://127.0.0.1:5055"   # optional (private endpoints, tests)
//! matdesc = { env = "prod" }
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "prod-ali"
//! kind = "aliyun-kms"
//! key_id = "key-hzz..."
//! region = "cn-hangzhou"
//! endpoint_url = "https://kms.cn-hangzhou.aliyuncs.com"    # optional
//! write_encoding = "blob"           # or "oss2"; reading accepts both
//! passphrase_env = "CKPT_PASSPHRASE" # optional: oss2's EncryptionContext passphrase
//! # credentials: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
//! # ALIBABA_CLOUD_SECURITY_TOKEN (STS) from the environment
//! ```
//!
//! ```toml
//! [[keys]]
//! name = "prod-volc"
//! kind = "volcengine-kms"
//! keyring_name = "ml"              # the KMS keyring
//! key_name = "ckpt"                # the key in it
//! region = "cn-beijing"
//! endpoint_url = "https://open.volcengineapi.com"   # optional (the default)
//! # credentials: VOLCENGINE_ACCESS_KEY, VOLCENGINE_SECRET_KEY, VOLCENGINE_SESSION_TOKEN (STS)
//! # (or veTurboIO's VETURBOIO_KMS_ACCESS_KEY, ..._SECRET_KEY, ..._SESSION_TOKEN)
//! ```
//!
//! Integrity settings (all optional): strict mode, the writer's Ed25519 signing key (its
//! seed, base64url, from a variable or a file; `cryptobucket keygen --signing` makes one) and
//! the writers whose signatures this reader trusts.
//!
//! ```toml
//! [integrity]
//! strict = true
//! signing_key_env = "CKPT_SIGNING_KEY"      # or signing_key_file = "signer.key"
//! trusted_signers = ["11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"]
//! ```
//!
//! Secrets are never written into this file; it only points at key files and variables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use super::{
    AesMasterKey, AliyunCredentials, AliyunKmsEncoding, AliyunKmsKey, AwsKmsKey, EciesP256Key,
    KeyEntry, KeyProvider, Keyring, KeyringBuilder, PassphraseKey, RsaKeyPair, RsaPadding,
    VolcengineCredentials, VolcengineKmsKey,
};
use crate::envelope::MatDesc;
use crate::error::{Error, Result};
use crate::integrity::{SignerPublicKey, SigningKey};

/// A parsed keyring file.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let (private_pem, public_pem) = cryptobucket::generate_rsa_pem(2048).unwrap();
/// std::fs::write(dir.path().join("private.pem"), private_pem.as_bytes()).unwrap();
/// std::fs::write(dir.path().join("public.pem"), public_pem).unwrap();
/// std::fs::write(dir.path().join("keyring.toml"), r#"
/// [[keys]]
/// kind = "rsa"
/// public_key = "public.pem"
/// private_key = "private.pem"
/// matdesc = { team = "a" }
/// default = true
/// "#).unwrap();
/// let keyring = cryptobucket::KeyringFile::load(dir.path().join("keyring.toml")).unwrap();
/// assert_eq!(keyring.entries().len(), 1);
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringFile {
    keys: Vec<KeySpec>,
    #[serde(default)]
    integrity: IntegritySpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntegritySpec {
    #[serde(default)]
    strict: bool,
    signing_key_env: Option<String>,
    signing_key_file: Option<PathBuf>,
    #[serde(default)]
    trusted_signers: Vec<String>,
}

impl IntegritySpec {
    fn apply(self, mut builder: KeyringBuilder, base: &Path) -> Result<KeyringBuilder> {
        builder = builder.strict(self.strict);
        let seed = match (self.signing_key_env, self.signing_key_file) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid_key(
                    "give signing_key_env or signing_key_file, not both",
                ));
            }
            (Some(var), None) => Some(Zeroizing::new(std::env::var(&var).map_err(|_| {
                Error::invalid_key(format!("the signing key variable {var} is not set"))
            })?)),
            (None, Some(file)) => {
                let full = base.join(file);
                Some(Zeroizing::new(std::fs::read_to_string(&full).map_err(
                    |e| Error::io(format!("cannot read signing key {}", full.display()), e),
                )?))
            }
            (None, None) => None,
        };
        if let Some(seed) = seed {
            builder = builder.signing_key(SigningKey::from_seed_base64(&seed)?);
        }
        for s in self.trusted_signers {
            builder = builder.trust_signer(s.parse::<SignerPublicKey>()?);
        }
        Ok(builder)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    kind: String,
    name: Option<String>,
    public_key: Option<PathBuf>,
    private_key: Option<PathBuf>,
    /// `ecies-p256`: the recipient's certificate or public key PEM (to write).
    recipient: Option<PathBuf>,
    /// `pkcs1` (default) or `oaep-sha1`: the padding used when writing.
    padding: Option<String>,
    /// `aes`: environment variable holding the base64 key.
    key_env: Option<String>,
    /// `aes`: file holding the key (32 raw bytes or base64).
    key_file: Option<PathBuf>,
    /// `aws-kms`, `aliyun-kms`: key id (ARN or alias for AWS).
    key_id: Option<String>,
    /// `aws-kms` (optional, else the AWS chain), `aliyun-kms` (required), `volcengine-kms`
    /// (required).
    region: Option<String>,
    /// `volcengine-kms`: the KMS keyring's name.
    keyring_name: Option<String>,
    /// `volcengine-kms`: the key's name in that keyring.
    key_name: Option<String>,
    /// `aws-kms`, `aliyun-kms`: endpoint override (private endpoints, tests).
    endpoint_url: Option<String>,
    /// `aliyun-kms`: `blob` (default, Go/Java) or `oss2`.
    write_encoding: Option<String>,
    /// `aliyun-kms`: environment variable holding oss2's passphrase; `passphrase`: the
    /// passphrase's variable.
    passphrase_env: Option<String>,
    /// `passphrase`: a file whose first line is the passphrase.
    passphrase_file: Option<PathBuf>,
    #[serde(default)]
    matdesc: BTreeMap<String, String>,
    #[serde(default)]
    default: bool,
}

/// Asks for the passphrase of a keyring entry (given its name or `entry N`), e.g. on a
/// terminal without echo; see [`KeyringFile::load_with_prompt`].
pub type PassphrasePrompt = dyn Fn(&str) -> Result<Zeroizing<String>> + Send + Sync;

impl KeyringFile {
    /// Reads and parses `path`, loads every key it names and builds the keyring.
    pub fn load(path: impl AsRef<Path>) -> Result<Keyring> {
        Self::load_inner(path.as_ref(), None)
    }

    /// As [`load`](Self::load), but a `passphrase` entry with neither `passphrase_env` nor
    /// `passphrase_file` asks `prompt` for its passphrase (given the entry's name, or
    /// `entry N`). The CLI passes a no-echo terminal prompt here.
    ///
    /// ```no_run
    /// use zeroize::Zeroizing;
    /// let keyring = cryptobucket::KeyringFile::load_with_prompt("keyring.toml", &|entry: &str| {
    ///     Ok(Zeroizing::new(format!("secret for {entry}")))
    /// })?;
    /// # Ok::<(), cryptobucket::Error>(())
    /// ```
    pub fn load_with_prompt(path: impl AsRef<Path>, prompt: &PassphrasePrompt) -> Result<Keyring> {
        Self::load_inner(path.as_ref(), Some(prompt))
    }

    fn load_inner(path: &Path, prompt: Option<&PassphrasePrompt>) -> Result<Keyring> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read keyring file {}", path.display()), e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse_and_build(&text, base, prompt).map_err(|e| {
            Error::new(
                e.kind(),
                format!("keyring file {}: {}", path.display(), e.message()),
            )
        })
    }

    /// Parses keyring TOML `text`; relative key paths are resolved against `base`.
    ///
    /// ```
    /// let err = cryptobucket::KeyringFile::from_toml_str("[[keys]]\nkind = \"vault\"\n", ".".as_ref())
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("supported kinds"));
    /// ```
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Keyring> {
        Self::parse_and_build(text, base, None)
    }

    fn parse_and_build(
        text: &str,
        base: &Path,
        prompt: Option<&PassphrasePrompt>,
    ) -> Result<Keyring> {
        let file: KeyringFile = toml::from_str(text)
            .map_err(|e| Error::invalid_key(format!("invalid keyring: {}", e.message())))?;
        file.build(base, prompt)
    }

    fn build(self, base: &Path, prompt: Option<&PassphrasePrompt>) -> Result<Keyring> {
        let mut builder = self
            .integrity
            .apply(Keyring::builder(), base)
            .map_err(|e| Error::new(e.kind(), format!("[integrity]: {}", e.message())))?;
        for (i, spec) in self.keys.into_iter().enumerate() {
            let default = spec.default;
            let label = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("entry {}", i + 1));
            let prompt = prompt.map(|p| move || p(&label));
            let entry = spec.into_entry(base, prompt).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("keyring entry {}: {}", i + 1, e.message()),
                )
            })?;
            builder = if default {
                builder.default_key(entry)
            } else {
                builder.key(entry)
            };
        }
        builder.build()
    }
}

/// A key file named in the keyring file (relative to it), kept in a zeroizing buffer.
fn read_key_file(base: &Path, path: &Path) -> Result<Zeroizing<String>> {
    let full = base.join(path);
    std::fs::read_to_string(&full)
        .map(Zeroizing::new)
        .map_err(|e| Error::io(format!("cannot read key file {}", full.display()), e))
}

impl KeySpec {
    /// Refuses fields that belong to another kind (a likely mistake, e.g. `key_env` on an RSA
    /// entry).
    fn check_fields(&self) -> Result<()> {
        let rsa_only =
            self.public_key.is_some() || self.private_key.is_some() || self.padding.is_some();
        let aes_only = self.key_env.is_some() || self.key_file.is_some();
        let bad = match self.kind.as_str() {
            "rsa" if aes_only || self.recipient.is_some() => Some("key_env/key_file/recipient"),
            "ecies-p256" if aes_only || self.public_key.is_some() || self.padding.is_some() => {
                Some("key_env/key_file/public_key/padding")
            }
            "aes" if rsa_only => Some("public_key/private_key/padding"),
            "volcengine-kms" if rsa_only || aes_only || self.key_id.is_some() => {
                Some("public_key/private_key/padding/key_env/key_file/key_id")
            }
            k if k != "volcengine-kms"
                && (self.keyring_name.is_some() || self.key_name.is_some()) =>
            {
                Some("keyring_name/key_name")
            }
            _ => None,
        };
        match bad {
            Some(fields) => Err(Error::invalid_key(format!(
                "{fields} do not apply to a {:?} key",
                self.kind
            ))),
            None => Ok(()),
        }
    }

    fn into_entry(
        self,
        base: &Path,
        prompt: Option<impl FnOnce() -> Result<Zeroizing<String>>>,
    ) -> Result<KeyEntry> {
        self.check_fields()?;
        let provider = match self.kind.as_str() {
            "rsa" => {
                let read = |p: &PathBuf| read_key_file(base, p);
                let public = self.public_key.as_ref().map(read).transpose()?;
                let private = self.private_key.as_ref().map(read).transpose()?;
                let padding = match self.padding.as_deref() {
                    None | Some("pkcs1") => RsaPadding::Pkcs1,
                    Some("oaep-sha1") => RsaPadding::OaepSha1,
                    Some(other) => {
                        return Err(Error::invalid_key(format!(
                            "unknown padding {other:?}; use \"pkcs1\" or \"oaep-sha1\""
                        )));
                    }
                };
                Box::new(
                    RsaKeyPair::from_pem(
                        public.as_deref().map(|s| s.as_str()),
                        private.as_deref().map(|s| s.as_str()),
                    )?
                    .with_padding(padding),
                ) as Box<dyn KeyProvider>
            }
            "aes" => {
                let key = match (&self.key_env, &self.key_file) {
                    (Some(var), None) => AesMasterKey::from_env(var)?,
                    (None, Some(file)) => AesMasterKey::from_file(&base.join(file))?,
                    _ => {
                        return Err(Error::invalid_key(
                            "an \"aes\" key needs exactly one of key_env (an environment variable \
                             holding the base64 key) or key_file",
                        ));
                    }
                };
                Box::new(key) as Box<dyn KeyProvider>
            }
            "ecies-p256" => {
                let read = |p: &PathBuf| read_key_file(base, p);
                let key = match (&self.private_key, &self.recipient) {
                    (Some(private), recipient) => {
                        let key = EciesP256Key::from_private_pem(&read(private)?)?;
                        if let Some(r) = recipient {
                            let given = EciesP256Key::from_recipient_pem(&read(r)?)?;
                            if given.public_point() != key.public_point() {
                                return Err(Error::invalid_key(
                                    "recipient and private_key are not one key pair",
                                ));
                            }
                        }
                        key
                    }
                    (None, Some(r)) => EciesP256Key::from_recipient_pem(&read(r)?)?,
                    (None, None) => {
                        return Err(Error::invalid_key(
                            "an \"ecies-p256\" key needs recipient (certificate or public key, to \
                             write) and/or private_key (to read)",
                        ));
                    }
                };
                Box::new(key) as Box<dyn KeyProvider>
            }
            "passphrase" => {
                let key = match (&self.passphrase_env, &self.passphrase_file) {
                    (Some(var), None) => PassphraseKey::from_env(var)?,
                    (None, Some(file)) => PassphraseKey::from_file(&base.join(file))?,
                    (None, None) => match prompt {
                        Some(ask) => PassphraseKey::from_prompt(ask()?)?,
                        None => {
                            return Err(Error::invalid_key(
                                "a \"passphrase\" key needs passphrase_env or passphrase_file \
                                 (the CLI asks on a terminal when neither is set)",
                            ));
                        }
                    },
                    _ => {
                        return Err(Error::invalid_key(
                            "a \"passphrase\" key takes only one of passphrase_env or \
                             passphrase_file",
                        ));
                    }
                };
                Box::new(key) as Box<dyn KeyProvider>
            }
            "aws-kms" => {
                let key_id = self.key_id.clone().ok_or_else(|| {
                    Error::invalid_key("an \"aws-kms\" key needs key_id (a key id, ARN or alias)")
                })?;
                Box::new(AwsKmsKey::from_env(
                    key_id,
                    self.region.clone(),
                    self.endpoint_url.clone(),
                )) as Box<dyn KeyProvider>
            }
            "aliyun-kms" => {
                let key_id = self
                    .key_id
                    .clone()
                    .ok_or_else(|| Error::invalid_key("an \"aliyun-kms\" key needs key_id"))?;
                let region = self.region.clone().ok_or_else(|| {
                    Error::invalid_key("an \"aliyun-kms\" key needs region (e.g. \"cn-hangzhou\")")
                })?;
                let mut key = AliyunKmsKey::new(key_id, region, AliyunCredentials::from_env()?);
                if let Some(url) = &self.endpoint_url {
                    key = key.endpoint_url(url);
                }
                key = key.write_encoding(match self.write_encoding.as_deref() {
                    None | Some("blob") => AliyunKmsEncoding::Blob,
                    Some("oss2") => AliyunKmsEncoding::Oss2,
                    Some(other) => {
                        return Err(Error::invalid_key(format!(
                            "unknown write_encoding {other:?}; use \"blob\" or \"oss2\""
                        )));
                    }
                });
                if let Some(var) = &self.passphrase_env {
                    let p = Zeroizing::new(std::env::var(var).map_err(|_| {
                        Error::invalid_key(format!(
                            "environment variable {var} (passphrase_env) is not set"
                        ))
                    })?);
                    key = key.passphrase(p.as_str());
                }
                Box::new(key) as Box<dyn KeyProvider>
            }
            "volcengine-kms" => {
                let need = |v: &Option<String>, what: &str| {
                    v.clone().ok_or_else(|| {
                        Error::invalid_key(format!("a \"volcengine-kms\" key needs {what}"))
                    })
                };
                let mut key = VolcengineKmsKey::new(
                    need(&self.keyring_name, "keyring_name")?,
                    need(&self.key_name, "key_name")?,
                    need(&self.region, "region (e.g. \"cn-beijing\")")?,
                    VolcengineCredentials::from_env()?,
                );
                if let Some(url) = &self.endpoint_url {
                    key = key.endpoint_url(url);
                }
                Box::new(key) as Box<dyn KeyProvider>
            }
            other => {
                return Err(Error::invalid_key(format!(
                    "unknown key kind {other:?}; supported kinds: \"rsa\", \"aes\", \"ecies-p256\", \"passphrase\", \"aws-kms\", \"aliyun-kms\", \"volcengine-kms\""
                )));
            }
        };
        let mut entry =
            KeyEntry::from_arc(std::sync::Arc::from(provider)).matdesc(MatDesc::from(self.matdesc));
        if let Some(name) = self.name {
            entry = entry.name(name);
        }
        Ok(entry)
    }
}
