//! EME (ECB-Mix-ECB, Halevi–Rogaway) wide-block encryption over AES-256, as gocryptfs encrypts
//! file names (rfjakob/eme): 1 to 128 blocks of 16 bytes under a 16-byte tweak (the
//! directory IV). The multiplier table starts at 2·AES_enc(0¹²⁸), doubled in GF(2¹²⁸) with
//! byte 0 least significant.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};

use crate::error::{Error, Result};

/// Which way [`transform`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Encrypt,
    Decrypt,
}

/// An AES-256 key for EME.
pub(crate) fn cipher(key: &[u8; 32]) -> Aes256 {
    Aes256::new(GenericArray::from_slice(key))
}

fn double(b: &mut [u8; 16]) {
    let carry = b[15] >> 7;
    for j in (1..16).rev() {
        b[j] = (b[j] << 1) | (b[j - 1] >> 7);
    }
    b[0] = (b[0] << 1) ^ (carry * 135);
}

fn xor(a: &mut [u8; 16], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

fn aes(bc: &Aes256, block: &mut [u8; 16], dir: Direction) {
    let b = GenericArray::from_mut_slice(block);
    match dir {
        Direction::Encrypt => bc.encrypt_block(b),
        Direction::Decrypt => bc.decrypt_block(b),
    }
}

/// Encrypts or decrypts `data` (a multiple of 16 bytes, 16 to 2048) under `tweak`.
pub(crate) fn transform(
    bc: &Aes256,
    tweak: &[u8; 16],
    data: &[u8],
    dir: Direction,
) -> Result<Vec<u8>> {
    let m = data.len() / 16;
    if !data.len().is_multiple_of(16) || m == 0 || m > 128 {
        return Err(Error::invalid_input(format!(
            "EME takes 1 to 128 blocks of 16 bytes, not {} bytes",
            data.len()
        )));
    }
    // L table: L_j = 2^(j+1) · AES_enc(0).
    let mut l = [0u8; 16];
    bc.encrypt_block(GenericArray::from_mut_slice(&mut l));
    let mut table = Vec::with_capacity(m);
    for _ in 0..m {
        double(&mut l);
        table.push(l);
    }
    let mut c: Vec<[u8; 16]> = Vec::with_capacity(m);
    for (j, p) in data.chunks_exact(16).enumerate() {
        let mut b = table[j];
        xor(&mut b, p);
        aes(bc, &mut b, dir);
        c.push(b);
    }
    let mut mp = *tweak;
    for b in &c {
        xor(&mut mp, b);
    }
    let mut mc = mp;
    aes(bc, &mut mc, dir);
    let mut mm = mp;
    xor(&mut mm, &mc);
    for b in c.iter_mut().skip(1) {
        double(&mut mm);
        xor(b, &mm);
    }
    let mut c1 = mc;
    xor(&mut c1, tweak);
    for b in c.iter().skip(1) {
        xor(&mut c1, b);
    }
    c[0] = c1;
    let mut out = Vec::with_capacity(data.len());
    for (j, mut b) in c.into_iter().enumerate() {
        aes(bc, &mut b, dir);
        xor(&mut b, &table[j]);
        out.extend_from_slice(&b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_vector_and_round_trips() {
        // rfjakob/eme's own vector: all-zero key, tweak and block.
        let bc = cipher(&[0; 32]);
        let out = transform(&bc, &[0; 16], &[0; 16], Direction::Encrypt).unwrap();
        assert_eq!(hex::encode(&out), "f1b9ce8ca15a4ba9fb476905434b9fd3");
        // ... and 128 zero blocks (its TestEnc2048), first and last block.
        let out = transform(&bc, &[0; 16], &[0; 2048], Direction::Encrypt).unwrap();
        assert_eq!(hex::encode(&out[..16]), "630500884158a8d41216aaa6351e92ea");
        for blocks in [1, 2, 7, 128] {
            let data: Vec<u8> = (0..blocks * 16).map(|i| i as u8).collect();
            let e = transform(&bc, &[3; 16], &data, Direction::Encrypt).unwrap();
            assert_ne!(e, data);
            assert_eq!(
                transform(&bc, &[3; 16], &e, Direction::Decrypt).unwrap(),
                data
            );
        }
        assert!(transform(&bc, &[0; 16], &[0; 15], Direction::Encrypt).is_err());
        assert!(transform(&bc, &[0; 16], &[0; 16 * 129], Direction::Encrypt).is_err());
    }
}
