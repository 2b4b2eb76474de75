//! Stored gocryptfs blocks as a stream of plaintext: the download engine's decoder for files of
//! a tree in a bucket (each GET returns whole stored blocks, from a block boundary on).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::{BLOCK, BLOCK_OVERHEAD, GocryptfsKeys, HEADER_LEN};
use crate::error::{Error, ErrorKind, Result};

/// Stored bytes `(start, end)` (end exclusive) of the blocks holding plaintext `first ..
/// last_exclusive` of a file whose stored form has `stored_size` bytes; `first` must lie on a
/// block boundary.
pub(crate) fn stored_span(first: u64, last_exclusive: u64, stored_size: u64) -> (u64, u64) {
    let full = (BLOCK + BLOCK_OVERHEAD) as u64;
    let (from, to) = (first / BLOCK as u64, last_exclusive.div_ceil(BLOCK as u64));
    let start = HEADER_LEN as u64 + from * full;
    let end = (HEADER_LEN as u64 + to * full).min(stored_size);
    (start, end)
}

/// Decrypts a stream of stored bytes that starts at block `first` of a file into its
/// plaintext, every tag checked, as whole blocks arrive (the file's last block may be short).
/// A body that ends inside a block's overhead is an error, never short plaintext.
pub(crate) struct DecryptBlocks<S> {
    inner: S,
    keys: Arc<GocryptfsKeys>,
    file_id: [u8; 16],
    next: u64,
    buf: BytesMut,
    what: String,
    ended: bool,
}

impl<S> DecryptBlocks<S> {
    /// `what` names the file in errors.
    pub(crate) fn new(
        inner: S,
        keys: Arc<GocryptfsKeys>,
        file_id: [u8; 16],
        first: u64,
        what: String,
    ) -> Self {
        Self {
            inner,
            keys,
            file_id,
            next: first,
            buf: BytesMut::new(),
            what,
            ended: false,
        }
    }

    /// Decrypts the first `stored_len` bytes held: whole blocks (the last may be short).
    fn decrypt(&mut self, stored_len: usize) -> Result<Bytes> {
        let mut blocks = self.buf.split_to(stored_len);
        let n = stored_len.div_ceil(BLOCK + BLOCK_OVERHEAD);
        self.keys
            .open_blocks_in_place(&self.file_id, self.next, &mut blocks, &self.what)?;
        self.next += n as u64;
        Ok(blocks.freeze())
    }
}

impl<S> Stream for DecryptBlocks<S>
where
    S: Stream<Item = Result<Bytes>> + Unpin,
{
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let full = BLOCK + BLOCK_OVERHEAD;
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let whole = self.buf.len() / full * full;
            if whole > 0 {
                return Poll::Ready(Some(self.decrypt(whole)));
            }
            match std::task::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.ended = true;
                    let rest = self.buf.len();
                    return Poll::Ready(match rest {
                        0 => None,
                        n if n <= BLOCK_OVERHEAD => Some(Err(Error::new(
                            ErrorKind::Truncated,
                            format!(
                                "{}: the stored data ends inside block {} ({n} bytes)",
                                self.what, self.next
                            ),
                        ))),
                        n => Some(self.decrypt(n)),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn keys() -> Arc<GocryptfsKeys> {
        let master = crate::gocryptfs::MasterKey::from_hex(&"07".repeat(32)).unwrap();
        Arc::new(GocryptfsKeys::new(&master))
    }

    /// The stored form of `plain` from block 0 (no header).
    fn stored(keys: &GocryptfsKeys, id: &[u8; 16], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.encrypt_blocks_into(id, 0, plain, &mut out).unwrap();
        out
    }

    async fn decode(chunks: Vec<Vec<u8>>, first: u64, id: [u8; 16]) -> Result<Vec<u8>> {
        let inner = futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        let mut s = DecryptBlocks::new(inner, keys(), id, first, "f".into());
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn blocks_decode_across_any_chunking_and_damage_is_refused() {
        let k = keys();
        let id = [3u8; 16];
        let plain: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let all = stored(&k, &id, &plain);
        for size in [1, 17, 4128, 5000, all.len()] {
            let chunks = all.chunks(size).map(<[u8]>::to_vec).collect();
            assert_eq!(
                decode(chunks, 0, id).await.unwrap(),
                plain,
                "chunks of {size}"
            );
        }
        // From block 1 on: the stream must be numbered from 1.
        let tail = all[BLOCK + BLOCK_OVERHEAD..].to_vec();
        assert_eq!(
            decode(vec![tail.clone()], 1, id).await.unwrap(),
            plain[BLOCK..]
        );
        assert_eq!(
            decode(vec![tail], 0, id).await.unwrap_err().kind(),
            ErrorKind::TagMismatch
        );
        // Another file's id, a flipped bit, an end inside the overhead.
        let e = decode(vec![all.clone()], 0, [4; 16]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TagMismatch);
        let mut bad = all.clone();
        bad[5000] ^= 1;
        let e = decode(vec![bad], 0, id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TagMismatch);
        let cut = all[..3 * (BLOCK + BLOCK_OVERHEAD) + 20].to_vec();
        let e = decode(vec![cut], 0, id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Truncated);
    }

    #[test]
    fn spans_cover_whole_stored_blocks() {
        let full = (BLOCK + BLOCK_OVERHEAD) as u64;
        let size = crate::gocryptfs::stored_size(3 * BLOCK as u64 + 100);
        assert_eq!(stored_span(0, 100, size), (18, 18 + full));
        assert_eq!(
            stored_span(BLOCK as u64, 3 * BLOCK as u64 + 100, size),
            (18 + full, size)
        );
        assert_eq!(stored_span(0, 2 * BLOCK as u64, size), (18, 18 + 2 * full));
    }
}
