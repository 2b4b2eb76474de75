//! The envelope: how an object's wrapped key material is stored as S3 user metadata.
//!
//! Byte-compatible with the OSS SDKs' client-side encryption (V2 headers
//! `client-side-encryption-*`, and read-only legacy V1 headers `oss-crypto-*`). The keys here
//! are user-metadata keys, without the `x-amz-meta-` / `x-oss-meta-` prefix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, ErrorKind, Result};

/// User-metadata key of the wrapped content key.
pub const META_KEY: &str = "client-side-encryption-key";
/// User-metadata key of the wrapped IV.
pub const META_START: &str = "client-side-encryption-start";
/// User-metadata key of the content algorithm.
pub const META_CEK_ALG: &str = "client-side-encryption-cek-alg";
/// User-metadata key of the key-wrapping algorithm.
pub const META_WRAP_ALG: &str = "client-side-encryption-wrap-alg";
/// User-metadata key of the material description (JSON object).
pub const META_MATDESC: &str = "client-side-encryption-matdesc";
/// User-metadata key of the plaintext length of a single PUT.
pub const META_UNENCRYPTED_LENGTH: &str = "client-side-encryption-unencrypted-content-length";
/// User-metadata key of a caller-supplied plaintext MD5 (never written by default).
pub const META_UNENCRYPTED_MD5: &str = "client-side-encryption-unencrypted-content-md5";
/// User-metadata key of a multipart object's total plaintext size.
pub const META_DATA_SIZE: &str = "client-side-encryption-data-size";
/// User-metadata key of a multipart object's part size.
pub const META_PART_SIZE: &str = "client-side-encryption-part-size";

const V1_KEY: &str = "oss-crypto-key";
const V1_START: &str = "oss-crypto-start";
const V1_CEK_ALG: &str = "oss-cek-alg";
const V1_WRAP_ALG: &str = "oss-wrap-alg";
const V1_MATDESC: &str = "oss-crypto-matdesc";
const V1_UNENCRYPTED_LENGTH: &str = "unencrypted-content-length";

/// The only content algorithm of the format.
pub const CEK_ALG_AES_CTR: &str = "AES/CTR/NoPadding";
/// What legacy V1 objects claim (the data is really AES-256-CTR).
const V1_CEK_ALG_GCM: &str = "AES/GCM/NoPadding";

/// True when `key` (a user-metadata key) belongs to the encryption envelope, V1 or V2.
pub fn is_envelope_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("client-side-encryption-")
        || k.starts_with("oss-crypto-")
        || k == V1_CEK_ALG
        || k == V1_WRAP_ALG
        || (k.starts_with("unencrypted-content-"))
}

/// How the content key and IV are wrapped.
///
/// ```
/// use cryptobucket::WrapAlgorithm;
/// assert_eq!(WrapAlgorithm::RsaPkcs1.as_str(), "RSA/NONE/PKCS1Padding");
/// assert_eq!(WrapAlgorithm::parse("KMS/ALICLOUD"), WrapAlgorithm::AliyunKms);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrapAlgorithm {
    /// `RSA/NONE/PKCS1Padding`: RSAES-PKCS1-v1_5, the interoperable default.
    RsaPkcs1,
    /// `RSA/NONE/OAEPWithSHA-1AndMGF1Padding`: RSA-OAEP-SHA1 (oss2 `LocalRsaProvider`, V1 `rsa`).
    RsaOaepSha1,
    /// `KMS/ALICLOUD`: Alibaba Cloud KMS.
    AliyunKms,
    /// `CRYPTOBUCKET/AES-256-GCM`: a local 256-bit master key
    /// ([`AesMasterKey`](crate::AesMasterKey)); this crate's own, not read by the OSS SDKs.
    LocalAes256Gcm,
    /// `CRYPTOBUCKET/AWS-KMS`: AWS KMS ([`AwsKmsKey`](crate::AwsKmsKey)); this crate's own.
    AwsKms,
    /// `CRYPTOBUCKET/ECIES-P256`: ECIES to a P-256 recipient with Volcengine Ark's construction
    /// ([`EciesP256Key`](crate::EciesP256Key)); this crate's own.
    EciesP256,
    /// `CRYPTOBUCKET/PASSPHRASE-ARGON2ID`: a passphrase through Argon2id
    /// ([`PassphraseKey`](crate::PassphraseKey)); this crate's own.
    PassphraseArgon2id,
    /// `CRYPTOBUCKET/VOLCENGINE-KMS`: Volcengine KMS
    /// ([`VolcengineKmsKey`](crate::VolcengineKmsKey)); this crate's own.
    VolcengineKms,
    /// Any other string, kept so that errors can name it.
    Other(String),
}

impl WrapAlgorithm {
    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::RsaPkcs1 => "RSA/NONE/PKCS1Padding",
            Self::RsaOaepSha1 => "RSA/NONE/OAEPWithSHA-1AndMGF1Padding",
            Self::AliyunKms => "KMS/ALICLOUD",
            Self::LocalAes256Gcm => "CRYPTOBUCKET/AES-256-GCM",
            Self::AwsKms => "CRYPTOBUCKET/AWS-KMS",
            Self::EciesP256 => "CRYPTOBUCKET/ECIES-P256",
            Self::PassphraseArgon2id => "CRYPTOBUCKET/PASSPHRASE-ARGON2ID",
            Self::VolcengineKms => "CRYPTOBUCKET/VOLCENGINE-KMS",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire string; unknown strings become [`WrapAlgorithm::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "RSA/NONE/PKCS1Padding" => Self::RsaPkcs1,
            "RSA/NONE/OAEPWithSHA-1AndMGF1Padding" => Self::RsaOaepSha1,
            "KMS/ALICLOUD" => Self::AliyunKms,
            "CRYPTOBUCKET/AES-256-GCM" => Self::LocalAes256Gcm,
            "CRYPTOBUCKET/AWS-KMS" => Self::AwsKms,
            "CRYPTOBUCKET/ECIES-P256" => Self::EciesP256,
            "CRYPTOBUCKET/PASSPHRASE-ARGON2ID" => Self::PassphraseArgon2id,
            "CRYPTOBUCKET/VOLCENGINE-KMS" => Self::VolcengineKms,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for WrapAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A material description: the string map stored as `client-side-encryption-matdesc` that says
/// which master key wrapped an object. Compared as parsed maps, never as strings, because
/// writers format the JSON differently.
///
/// ```
/// use cryptobucket::MatDesc;
/// let a = MatDesc::from_json(r#"{"team": "a", "v": "1"}"#).unwrap(); // oss2 style
/// let b = MatDesc::from_json(r#"{"v":"1","team":"a"}"#).unwrap();   // Go style
/// assert_eq!(a, b);
/// assert_eq!(a.to_json(), r#"{"team":"a","v":"1"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MatDesc(BTreeMap<String, String>);

impl MatDesc {
    /// The empty description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JSON object whose values are all strings.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            Error::invalid_metadata(format!("matdesc is not valid JSON ({e}): {json:?}"))
        })?;
        let serde_json::Value::Object(map) = value else {
            return Err(Error::invalid_metadata(format!(
                "matdesc must be a JSON object of strings, got {json:?}"
            )));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let serde_json::Value::String(v) = v else {
                return Err(Error::invalid_metadata(format!(
                    "matdesc value for {k:?} is not a string: {json:?}"
                )));
            };
            out.insert(k, v);
        }
        Ok(Self(out))
    }

    /// Compact JSON with sorted keys.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a string map always serializes")
    }

    /// Adds or replaces an entry (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries.
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for MatDesc {
    fn from(m: BTreeMap<String, String>) -> Self {
        Self(m)
    }
}

impl fmt::Display for MatDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// Which generation of the format an object was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatVersion {
    /// `client-side-encryption-*` headers (every current SDK).
    V2,
    /// Legacy `oss-crypto-*` headers of oss2 2.5–2.10 (read-only).
    V1,
}

/// The encryption metadata of one object, parsed and validated; holds only *wrapped* keys.
///
/// ```
/// use std::collections::HashMap;
/// use cryptobucket::Envelope;
/// assert!(Envelope::from_metadata(&HashMap::new()).unwrap().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Format generation.
    pub version: FormatVersion,
    /// Wrap algorithm.
    pub wrap_alg: WrapAlgorithm,
    /// The wrapped content key, as stored. For RSA: the decoded bytes of the header. For KMS:
    /// the header text itself (its encoding is the provider's business).
    pub wrapped_key: WrappedValue,
    /// The wrapped IV (V1: the wrapped ASCII counter), as stored.
    pub wrapped_iv: WrappedValue,
    /// Material description (empty when absent).
    pub matdesc: MatDesc,
    /// Recorded plaintext length of a single PUT.
    pub unencrypted_content_length: Option<u64>,
    /// Caller-supplied plaintext MD5 (base64), if any.
    pub unencrypted_content_md5: Option<String>,
    /// Multipart total plaintext size.
    pub data_size: Option<u64>,
    /// Multipart part size.
    pub part_size: Option<u64>,
}

/// A wrapped key or IV: the header text and, when it is valid base64, its decoded bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedValue {
    /// The header value exactly as stored.
    pub text: String,
}

impl WrappedValue {
    /// Wraps a header value.
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into() }
    }

    /// The value as raw bytes (base64-decoded), as RSA wrapping stores it.
    pub fn decode(&self, what: &str) -> Result<Vec<u8>> {
        B64.decode(self.text.trim())
            .map_err(|e| Error::invalid_metadata(format!("{what} is not valid base64 ({e})")))
    }

    /// Encodes raw bytes as the header value.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::new(B64.encode(bytes))
    }
}

impl fmt::Debug for WrappedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Wrapped values are not secret, but they are long; show their size only.
        write!(f, "WrappedValue({} chars)", self.text.len())
    }
}

/// The value of user-metadata key `key`, matched case-insensitively (stores differ in case).
pub(crate) fn lookup<'a>(meta: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    meta.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

fn parse_u64(meta: &HashMap<String, String>, key: &str) -> Result<Option<u64>> {
    lookup(meta, key)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                Error::invalid_metadata(format!("{key} is not a non-negative integer: {v:?}"))
            })
        })
        .transpose()
}

impl Envelope {
    /// Parses an object's user metadata. `Ok(None)` when the object carries no encryption
    /// metadata at all; an error when it carries some but not a usable set.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<Self>> {
        if lookup(meta, META_KEY).is_some()
            || lookup(meta, META_START).is_some()
            || lookup(meta, META_WRAP_ALG).is_some()
            || lookup(meta, META_CEK_ALG).is_some()
        {
            return Self::parse_v2(meta).map(Some);
        }
        if lookup(meta, V1_KEY).is_some() || lookup(meta, V1_START).is_some() {
            return Self::parse_v1(meta).map(Some);
        }
        Ok(None)
    }

    fn require<'a>(meta: &'a HashMap<String, String>, key: &str) -> Result<&'a str> {
        lookup(meta, key).ok_or_else(|| {
            Error::invalid_metadata(format!(
                "the object has encryption metadata but no {key}; it cannot be decrypted"
            ))
        })
    }

    fn parse_v2(meta: &HashMap<String, String>) -> Result<Self> {
        let key = Self::require(meta, META_KEY)?;
        let start = Self::require(meta, META_START)?;
        let cek_alg = Self::require(meta, META_CEK_ALG)?;
        let wrap_alg = Self::require(meta, META_WRAP_ALG)?;
        if cek_alg != CEK_ALG_AES_CTR {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!(
                    "unsupported content algorithm {cek_alg:?}; only {CEK_ALG_AES_CTR} exists in this format"
                ),
            ));
        }
        let matdesc = match lookup(meta, META_MATDESC) {
            Some(s) if !s.trim().is_empty() => MatDesc::from_json(s)?,
            _ => MatDesc::new(),
        };
        let env = Self {
            version: FormatVersion::V2,
            wrap_alg: WrapAlgorithm::parse(wrap_alg),
            wrapped_key: WrappedValue::new(key),
            wrapped_iv: WrappedValue::new(start),
            matdesc,
            unencrypted_content_length: parse_u64(meta, META_UNENCRYPTED_LENGTH)?,
            unencrypted_content_md5: lookup(meta, META_UNENCRYPTED_MD5).map(str::to_owned),
            data_size: parse_u64(meta, META_DATA_SIZE)?,
            part_size: parse_u64(meta, META_PART_SIZE)?,
        };
        env.validate()?;
        Ok(env)
    }

    fn parse_v1(meta: &HashMap<String, String>) -> Result<Self> {
        let key = Self::require(meta, V1_KEY)?;
        let start = Self::require(meta, V1_START)?;
        let cek_alg = Self::require(meta, V1_CEK_ALG)?;
        let wrap_alg = Self::require(meta, V1_WRAP_ALG)?;
        // V1 says GCM but its data is CTR (oss2 2.5-2.10 wrote it so).
        if cek_alg != V1_CEK_ALG_GCM && cek_alg != CEK_ALG_AES_CTR {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!("unsupported legacy content algorithm {cek_alg:?}"),
            ));
        }
        let wrap_alg = match wrap_alg {
            "rsa" => WrapAlgorithm::RsaOaepSha1,
            "kms" => WrapAlgorithm::AliyunKms,
            other => WrapAlgorithm::Other(other.to_owned()),
        };
        let matdesc = match lookup(meta, V1_MATDESC) {
            Some(s) if !s.trim().is_empty() => MatDesc::from_json(s)?,
            _ => MatDesc::new(),
        };
        let env = Self {
            version: FormatVersion::V1,
            wrap_alg,
            wrapped_key: WrappedValue::new(key),
            wrapped_iv: WrappedValue::new(start),
            matdesc,
            unencrypted_content_length: parse_u64(meta, V1_UNENCRYPTED_LENGTH)?,
            unencrypted_content_md5: None,
            data_size: None,
            part_size: None,
        };
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<()> {
        if let WrapAlgorithm::Other(s) = &self.wrap_alg {
            return Err(Error::new(
                ErrorKind::UnsupportedAlgorithm,
                format!(
                    "unsupported key wrap algorithm {s:?}; supported: RSA/NONE/PKCS1Padding, RSA/NONE/OAEPWithSHA-1AndMGF1Padding, KMS/ALICLOUD"
                ),
            ));
        }
        if let Some(ps) = self.part_size
            && (ps == 0 || ps % crate::cipher::BLOCK_LEN != 0)
        {
            return Err(Error::invalid_metadata(format!(
                "{META_PART_SIZE} {ps} is not a positive multiple of 16"
            )));
        }
        Ok(())
    }

    /// The plaintext size this envelope promises, if it records one.
    pub fn recorded_plaintext_size(&self) -> Option<u64> {
        self.unencrypted_content_length.or(self.data_size)
    }

    /// Renders the envelope as user metadata (V2 keys; V1 is never written).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert(META_KEY.to_owned(), self.wrapped_key.text.clone());
        m.insert(META_START.to_owned(), self.wrapped_iv.text.clone());
        m.insert(META_CEK_ALG.to_owned(), CEK_ALG_AES_CTR.to_owned());
        m.insert(META_WRAP_ALG.to_owned(), self.wrap_alg.as_str().to_owned());
        if !self.matdesc.is_empty() {
            m.insert(META_MATDESC.to_owned(), self.matdesc.to_json());
        }
        if let Some(n) = self.unencrypted_content_length {
            m.insert(META_UNENCRYPTED_LENGTH.to_owned(), n.to_string());
        }
        if let Some(md5) = &self.unencrypted_content_md5 {
            m.insert(META_UNENCRYPTED_MD5.to_owned(), md5.clone());
        }
        if let Some(n) = self.data_size {
            m.insert(META_DATA_SIZE.to_owned(), n.to_string());
        }
        if let Some(n) = self.part_size {
            m.insert(META_PART_SIZE.to_owned(), n.to_string());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> HashMap<String, String> {
        HashMap::from([
            (META_KEY.into(), B64.encode([1u8; 128])),
            (META_START.into(), B64.encode([2u8; 128])),
            (META_CEK_ALG.into(), CEK_ALG_AES_CTR.into()),
            (META_WRAP_ALG.into(), "RSA/NONE/PKCS1Padding".into()),
        ])
    }

    #[test]
    fn round_trip_v2() {
        let mut m = v2();
        m.insert(META_MATDESC.into(), r#"{"a": "b"}"#.into());
        m.insert(META_UNENCRYPTED_LENGTH.into(), "17".into());
        let e = Envelope::from_metadata(&m).unwrap().unwrap();
        assert_eq!(e.matdesc, MatDesc::new().with("a", "b"));
        assert_eq!(e.unencrypted_content_length, Some(17));
        let again = Envelope::from_metadata(&e.to_metadata()).unwrap().unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let m: HashMap<_, _> = v2()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        assert!(Envelope::from_metadata(&m).unwrap().is_some());
    }

    #[test]
    fn missing_or_bad_fields_are_typed_errors() {
        for drop in [META_KEY, META_START, META_CEK_ALG, META_WRAP_ALG] {
            let mut m = v2();
            m.remove(drop);
            let e = Envelope::from_metadata(&m).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidMetadata, "{drop}");
            assert!(e.message().contains(drop));
        }
        let mut m = v2();
        m.insert(META_CEK_ALG.into(), "AES/GCM/NoPadding".into());
        assert_eq!(
            Envelope::from_metadata(&m).unwrap_err().kind(),
            ErrorKind::UnsupportedAlgorithm
        );
        let mut m = v2();
        m.insert(META_WRAP_ALG.into(), "ROT13".into());
        assert_eq!(
            Envelope::from_metadata(&m).unwrap_err().kind(),
            ErrorKind::UnsupportedAlgorithm
        );
        for bad in ["[]", "{\"a\":1}", "{not json", "\"s\""] {
            let mut m = v2();
            m.insert(META_MATDESC.into(), bad.into());
            assert_eq!(
                Envelope::from_metadata(&m).unwrap_err().kind(),
                ErrorKind::InvalidMetadata,
                "{bad}"
            );
        }
        for (k, v) in [
            (META_UNENCRYPTED_LENGTH, "-1"),
            (META_DATA_SIZE, "x"),
            (META_PART_SIZE, "100"),
        ] {
            let mut m = v2();
            m.insert(k.into(), v.into());
            assert_eq!(
                Envelope::from_metadata(&m).unwrap_err().kind(),
                ErrorKind::InvalidMetadata,
                "{k}"
            );
        }
    }

    #[test]
    fn bad_base64_is_reported_on_decode() {
        let w = WrappedValue::new("not base64!!");
        assert_eq!(
            w.decode("key").unwrap_err().kind(),
            ErrorKind::InvalidMetadata
        );
    }

    #[test]
    fn v1_headers_parse() {
        let m = HashMap::from([
            ("oss-crypto-key".to_owned(), "a2V5".to_owned()),
            ("oss-crypto-start".to_owned(), "c3RhcnQ=".to_owned()),
            ("oss-cek-alg".to_owned(), "AES/GCM/NoPadding".to_owned()),
            ("oss-wrap-alg".to_owned(), "rsa".to_owned()),
        ]);
        let e = Envelope::from_metadata(&m).unwrap().unwrap();
        assert_eq!(e.version, FormatVersion::V1);
        assert_eq!(e.wrap_alg, WrapAlgorithm::RsaOaepSha1);
    }
}
