//! Segment encryption as HLS `METHOD=AES-128` defines it: the whole segment
//! file is one AES-128-CBC message with PKCS#7 padding, under the key and IV
//! the playlist names, so any HLS player given the key can play it.

use crate::error::MediaError;
use crate::keys::SegmentKey;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};

type Encryptor = cbc::Encryptor<aes::Aes128>;
type Decryptor = cbc::Decryptor<aes::Aes128>;

/// Encrypts one segment file with its key and IV.
///
/// The output is 1 to 16 bytes longer than the input (PKCS#7 always pads, a
/// whole block when the input is already a multiple of 16).
pub fn encrypt_segment(key: &SegmentKey, plaintext: &[u8]) -> Vec<u8> {
    Encryptor::new(&key.key.into(), &key.iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

/// Decrypts one segment file with its key and IV.
///
/// # Errors
/// [`MediaError::Decrypt`] when the ciphertext is not a whole, non-empty
/// number of blocks or its padding is wrong, which is what a wrong key
/// usually gives. A wrong key can also, about once in 256 tries, yield
/// well-padded garbage: CBC has no integrity check, so callers that must
/// know should check what they decrypted (a TS segment starts with 0x47).
pub fn decrypt_segment(key: &SegmentKey, ciphertext: &[u8]) -> Result<Vec<u8>, MediaError> {
    Decryptor::new(&key.key.into(), &key.iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| MediaError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterSecret;

    fn key(segment: u64) -> SegmentKey {
        MasterSecret([3; 32]).segment_key("demo", segment)
    }

    #[test]
    fn round_trip_at_every_length_around_a_block() {
        for len in 0..=50 {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let cipher = encrypt_segment(&key(0), &plain);
            assert_eq!(cipher.len(), (len / 16 + 1) * 16);
            assert_eq!(decrypt_segment(&key(0), &cipher).unwrap(), plain);
        }
    }

    #[test]
    fn an_exact_multiple_of_the_block_gets_a_whole_block_of_padding() {
        let plain = [0x47u8; 32];
        let cipher = encrypt_segment(&key(1), &plain);
        assert_eq!(cipher.len(), 48);
        // The last block, decrypted without unpadding, is sixteen 16s.
        let raw = Decryptor::new(&key(1).key.into(), &key(1).iv.into())
            .decrypt_padded_vec_mut::<aes::cipher::block_padding::NoPadding>(&cipher)
            .unwrap();
        assert_eq!(&raw[32..], &[16u8; 16]);
        assert_eq!(decrypt_segment(&key(1), &cipher).unwrap(), plain);
    }

    #[test]
    fn known_answer_matches_openssl() {
        // printf tollstream | openssl enc -aes-128-cbc \
        //     -K 000102030405060708090a0b0c0d0e0f -iv 0f0e0d0c0b0a09080706050403020100
        let key = SegmentKey { key: std::array::from_fn(|i| i as u8), iv: std::array::from_fn(|i| 15 - i as u8) };
        let cipher = encrypt_segment(&key, b"tollstream");
        let expected = [0x91, 0xb7, 0xea, 0x29, 0x01, 0x61, 0xa2, 0x29, 0xce, 0xd2, 0x0a, 0x85, 0x9f, 0x90, 0x61, 0x53];
        assert_eq!(cipher, expected);
        assert_eq!(decrypt_segment(&key, &cipher).unwrap(), b"tollstream");
    }

    #[test]
    fn wrong_keys_and_malformed_input_never_panic() {
        let plain = vec![0x47u8; 188 * 7];
        let cipher = encrypt_segment(&key(0), &plain);
        for segment in 1..300 {
            match decrypt_segment(&key(segment), &cipher) {
                Err(MediaError::Decrypt) => {}
                Ok(garbage) => assert_ne!(garbage, plain),
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert!(decrypt_segment(&key(0), &[]).is_err());
        assert!(decrypt_segment(&key(0), &cipher[..cipher.len() - 1]).is_err());
        assert!(decrypt_segment(&key(0), &[1, 2, 3]).is_err());
    }
}
