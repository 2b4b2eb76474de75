//! Reading files of the "encrypt the model with a password" scripts people migrate from
//! (`docs/other-formats.md`): `IV (16 bytes) ‖ AES-256-CBC(key = SHA-256(UTF-8
//! password), IV, PKCS#7-padded plaintext)`. Unauthenticated, with an unsalted, unstretched
//! password hash: this crate reads the format to migrate such files into its own objects, and
//! never writes it.
//!
//! ```no_run
//! # async fn demo(bucket: cryptobucket::CryptoBucket) -> cryptobucket::Result<()> {
//! use cryptobucket::{PutBody, migrate::PasswordCbcReader};
//! let file = tokio::fs::File::open("model.enc").await.unwrap();
//! let plain = PasswordCbcReader::new(file, "the old password");
//! // Streams: a bad padding (wrong password, damaged file) fails the upload, nothing is written.
//! bucket.put_object().key("model.bin").body(PutBody::from_stream(plain)).send().await?;
//! # Ok(()) }
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use aws_lc_rs::cipher::{AES_256, DecryptionContext, StreamingDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use tokio::io::{AsyncRead, ReadBuf};
use zeroize::Zeroizing;

const BLOCK: usize = 16;
const CHUNK: usize = 64 * 1024;

/// Decrypts a password-CBC file as it is read. A file shorter than one IV and one block, or
/// whose padding is wrong (a wrong password, almost always; a damaged or foreign file), ends the
/// stream with an `InvalidData` error, so a streaming upload of it fails and writes nothing.
///
/// A wrong password passes the padding check by chance about once in 256 tries (the last
/// decrypted byte happens to be 0x01); the format has no other way to tell. Compare what you
/// migrate against a known digest when you can.
pub struct PasswordCbcReader<R> {
    inner: R,
    key: Option<Zeroizing<[u8; 32]>>,
    iv: Vec<u8>,
    cipher: Option<StreamingDecryptingKey>,
    input: Vec<u8>,
    output: Zeroizing<Vec<u8>>,
    pos: usize,
    done: bool,
}

impl<R> std::fmt::Debug for PasswordCbcReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCbcReader").finish_non_exhaustive()
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl<R: AsyncRead + Unpin> PasswordCbcReader<R> {
    /// Decrypts `inner` with `password`.
    pub fn new(inner: R, password: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(digest.as_ref());
        Self {
            inner,
            key: Some(key),
            iv: Vec::with_capacity(BLOCK),
            cipher: None,
            input: vec![0; CHUNK],
            output: Zeroizing::new(Vec::new()),
            pos: 0,
            done: false,
        }
    }

    fn start(&mut self) -> io::Result<()> {
        let key = self
            .key
            .take()
            .ok_or_else(|| invalid("cipher already set up"))?;
        let iv: [u8; BLOCK] = self.iv[..].try_into().map_err(|_| invalid("short IV"))?;
        let unbound = UnboundCipherKey::new(&AES_256, &key[..])
            .map_err(|_| invalid("AES-256 key setup failed"))?;
        let cipher = StreamingDecryptingKey::cbc_pkcs7(
            unbound,
            DecryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(|_| invalid("AES-256-CBC setup failed"))?;
        self.cipher = Some(cipher);
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for PasswordCbcReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.output.len() {
                let n = (this.output.len() - this.pos).min(buf.remaining());
                buf.put_slice(&this.output[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.input);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let mut data = rb.filled().to_vec();
            this.output.clear();
            this.pos = 0;
            if data.is_empty() {
                // End of the file: the last block and its padding.
                this.done = true;
                let Some(cipher) = this.cipher.take() else {
                    return Poll::Ready(Err(invalid(
                        "the file is shorter than an IV and one block: not a password-CBC file",
                    )));
                };
                let mut last = Zeroizing::new(vec![0u8; 2 * BLOCK]);
                let n = cipher
                    .finish(&mut last)
                    .map_err(|_| {
                        invalid(
                            "bad padding at the end of the file: a wrong password, or not a \
                             password-CBC file; nothing was migrated",
                        )
                    })?
                    .written()
                    .len();
                this.output.extend_from_slice(&last[..n]);
                continue;
            }
            if this.cipher.is_none() {
                let need = BLOCK - this.iv.len();
                let take = need.min(data.len());
                this.iv.extend_from_slice(&data[..take]);
                data.drain(..take);
                if this.iv.len() < BLOCK {
                    continue;
                }
                this.start()?;
            }
            let cipher = this.cipher.as_mut().expect("set up above");
            let mut out = Zeroizing::new(vec![0u8; data.len() + BLOCK]);
            let n = cipher
                .update(&data, &mut out)
                .map_err(|_| invalid("AES-256-CBC decryption failed"))?
                .written()
                .len();
            this.output.extend_from_slice(&out[..n]);
        }
    }
}
