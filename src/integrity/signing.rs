//! Writer signatures over integrity records (Ed25519, AWS-LC).

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use zeroize::Zeroizing;

use super::{IntegrityRecord, RecordSignature};
use crate::error::{Error, ErrorKind, Result};

/// An Ed25519 key that signs the integrity records of the objects a writer creates.
///
/// Readers list the matching [`SignerPublicKey`] as trusted; with RSA wrapping (whose public
/// key lets anyone make a valid-looking object) this is what proves who wrote an object. The
/// seed is zeroized on drop and never shown by `Debug`.
///
/// ```
/// use cryptobucket::integrity::{SigningKey, SignerPublicKey};
/// let key = SigningKey::generate().unwrap();
/// let text = key.public_key().to_string();
/// assert_eq!(text.parse::<SignerPublicKey>().unwrap(), key.public_key());
/// assert!(!format!("{key:?}").contains(&key.seed_base64()[..8]));
/// ```
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        Self::from_seed(&self.seed).expect("a seed that loaded once loads again")
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut seed[..])
            .map_err(|_| Error::new(ErrorKind::Io, "the system random number generator failed"))?;
        Self::from_seed(&seed)
    }

    /// The key with this 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| Error::invalid_key("not a valid Ed25519 seed"))?;
        Ok(Self {
            pair,
            seed: Zeroizing::new(*seed),
        })
    }

    /// The key from its seed in base64url (what [`seed_base64`](Self::seed_base64) and
    /// `cryptobucket keygen --signing` produce).
    pub fn from_seed_base64(text: &str) -> Result<Self> {
        let raw = Zeroizing::new(
            B64URL
                .decode(text.trim())
                .map_err(|_| Error::invalid_key("the signing key is not base64url"))?,
        );
        let seed: &[u8; 32] = raw[..]
            .try_into()
            .map_err(|_| Error::invalid_key("the signing key seed is not 32 bytes"))?;
        Self::from_seed(seed)
    }

    /// The seed in base64url, for storing the key (a secret: keep it out of logs).
    pub fn seed_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64URL.encode(&self.seed[..]))
    }

    /// The public half, to list as trusted on the readers' side.
    pub fn public_key(&self) -> SignerPublicKey {
        let bytes: [u8; 32] = self
            .pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes");
        SignerPublicKey(bytes)
    }

    pub(crate) fn sign(&self, record: &IntegrityRecord) -> RecordSignature {
        let sig = self.pair.sign(&record.signed_bytes());
        RecordSignature {
            signer: self.public_key(),
            signature: sig
                .as_ref()
                .try_into()
                .expect("Ed25519 signatures are 64 bytes"),
        }
    }
}

/// An Ed25519 public key of a writer; `Display`/`FromStr` use base64url.
///
/// ```
/// let k: cryptobucket::integrity::SignerPublicKey =
///     "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".parse().unwrap();
/// assert_eq!(k.as_bytes()[0], 0xd7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignerPublicKey([u8; 32]);

impl SignerPublicKey {
    /// From the raw 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `sig` over `record` with this key.
    pub(crate) fn verify(&self, record: &IntegrityRecord, sig: &[u8; 64]) -> Result<()> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(&record.signed_bytes(), sig)
            .map_err(|_| {
                Error::new(
                    ErrorKind::SignatureInvalid,
                    format!("the integrity record's signature by {self} does not verify"),
                )
            })
    }
}

impl std::fmt::Display for SignerPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&B64URL.encode(self.0))
    }
}

impl std::fmt::Debug for SignerPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerPublicKey({self})")
    }
}

impl std::str::FromStr for SignerPublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let raw = B64URL
            .decode(s.trim())
            .map_err(|_| Error::invalid_key("a signer public key is not base64url"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::invalid_key("a signer public key is not 32 bytes"))?;
        Ok(Self(bytes))
    }
}
