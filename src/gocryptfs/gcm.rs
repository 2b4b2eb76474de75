//! AES-256-GCM with the 128-bit nonces gocryptfs uses, from aws-lc (the same library as the
//! rest of this crate's cryptography).
//!
//! aws-lc-rs's safe AEAD API takes 96-bit nonces only, but aws-lc's `EVP_AEAD` AES-GCM accepts
//! any non-empty nonce length (GCM's `J0 = GHASH(nonce ‖ pad ‖ len)` for lengths other than
//! 12, as in NIST SP 800-38D and Go's `cipher.NewGCMWithNonceSize(…, 16)`), so this is a thin,
//! checked wrapper over `EVP_AEAD_CTX_seal_scatter`/`open_gather`: aws-lc's stitched
//! AES-NI/CLMUL code, about three times the speed of a portable implementation. Tested against
//! RustCrypto `aes-gcm` with `U16` nonces (the unit tests) and against real gocryptfs, which
//! mounts what this writes (tests/gocryptfs.rs).

use std::ptr::NonNull;

use aws_lc_sys as sys;

/// Nonce length (gocryptfs v2 content and config).
pub(crate) const NONCE_LEN: usize = 16;
/// Tag length.
pub(crate) const TAG_LEN: usize = 16;

/// An AES-256-GCM key with 128-bit nonces. The key schedule lives in aws-lc's context, which
/// aws-lc cleanses when it is freed.
pub(crate) struct Gcm16(NonNull<sys::EVP_AEAD_CTX>);

// SAFETY: an initialised EVP_AEAD_CTX is only read by seal and open (they take it by const
// pointer), which aws-lc documents as safe to call concurrently; it is freed once, on drop.
unsafe impl Send for Gcm16 {}
// SAFETY: as above.
unsafe impl Sync for Gcm16 {}

impl Drop for Gcm16 {
    fn drop(&mut self) {
        // SAFETY: the context came from EVP_AEAD_CTX_new and is freed exactly once.
        unsafe { sys::EVP_AEAD_CTX_free(self.0.as_ptr()) }
    }
}

/// The operation failed: a bad tag when opening (nothing else can fail for valid lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcmError;

impl Gcm16 {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        // SAFETY: the AEAD is a static, the key a valid 32-byte buffer; aws-lc copies it.
        let ctx = unsafe {
            sys::EVP_AEAD_CTX_new(
                sys::EVP_aead_aes_256_gcm(),
                key.as_ptr(),
                key.len(),
                TAG_LEN,
            )
        };
        // Allocation failure only (the key length is right): as Rust's allocator, abort.
        Self(NonNull::new(ctx).expect("aws-lc could not allocate an AEAD context"))
    }

    /// Encrypts `buf` in place under `nonce` with associated data `aad`; returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], GcmError> {
        let mut tag = [0u8; TAG_LEN];
        let mut tag_len = 0usize;
        // SAFETY: `buf` is both input and output (the same pointer, which aws-lc allows);
        // every pointer/length pair describes a live buffer of that length.
        let ok = unsafe {
            sys::EVP_AEAD_CTX_seal_scatter(
                self.0.as_ptr(),
                buf.as_mut_ptr(),
                tag.as_mut_ptr(),
                &mut tag_len,
                tag.len(),
                nonce.as_ptr(),
                nonce.len(),
                buf.as_ptr(),
                buf.len(),
                std::ptr::null(),
                0,
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok == 1 && tag_len == TAG_LEN {
            Ok(tag)
        } else {
            Err(GcmError)
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it; on failure `buf` holds no plaintext
    /// (aws-lc clears it).
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), GcmError> {
        // SAFETY: as in `seal_in_place`; `tag` is a live 16-byte buffer.
        let ok = unsafe {
            sys::EVP_AEAD_CTX_open_gather(
                self.0.as_ptr(),
                buf.as_mut_ptr(),
                nonce.as_ptr(),
                nonce.len(),
                buf.as_ptr(),
                buf.len(),
                tag.as_ptr(),
                tag.len(),
                aad.as_ptr(),
                aad.len(),
            )
        };
        if ok == 1 {
            Ok(())
        } else {
            buf.fill(0);
            Err(GcmError)
        }
    }

    /// `ciphertext ‖ tag` of `plain`.
    pub(crate) fn encrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>, GcmError> {
        let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
        out.extend_from_slice(plain);
        let tag = self.seal_in_place(nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The plaintext of `ciphertext ‖ tag`.
    pub(crate) fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, GcmError> {
        let body = sealed.len().checked_sub(TAG_LEN).ok_or(GcmError)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[body..]);
        let mut out = sealed[..body].to_vec();
        self.open_in_place(nonce, aad, &mut out, &tag)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::consts::U16;
    use aes_gcm::aead::{Aead, KeyInit, Payload};

    type Reference = aes_gcm::AesGcm<aes::Aes256, U16>;

    #[test]
    fn equals_a_portable_gcm_with_16_byte_nonces_both_ways() {
        let key = [0x42u8; 32];
        let ours = Gcm16::new(&key);
        let reference = Reference::new(aes_gcm::Key::<Reference>::from_slice(&key));
        for (len, aad_len) in [(0, 0), (1, 8), (15, 24), (16, 24), (4096, 24), (4097, 3)] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let aad: Vec<u8> = (0..aad_len).map(|i| i as u8).collect();
            let nonce = [len as u8 ^ 0x5a; 16];
            let sealed = ours.encrypt(&nonce, &aad, &plain).unwrap();
            let expect = reference
                .encrypt(
                    aes_gcm::Nonce::<U16>::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(sealed, expect, "len {len}");
            assert_eq!(ours.decrypt(&nonce, &aad, &expect).unwrap(), plain);
            // Any flipped bit, another nonce or other associated data: refused.
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(ours.decrypt(&nonce, &aad, &bad), Err(GcmError));
            if len > 0 {
                let mut bad = sealed.clone();
                bad[0] ^= 0x80;
                assert_eq!(ours.decrypt(&nonce, &aad, &bad), Err(GcmError));
            }
            let mut other = nonce;
            other[15] ^= 1;
            assert_eq!(ours.decrypt(&other, &aad, &sealed), Err(GcmError));
            assert_eq!(ours.decrypt(&nonce, b"x", &sealed), Err(GcmError));
        }
        assert_eq!(ours.decrypt(&[0; 16], &[], &[0; 15]), Err(GcmError));
    }
}
