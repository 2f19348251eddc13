//! cSHAKE (NIST SP 800-185) for `digest`, from the RustCrypto `sha3`
//! crate, which deno_crypto does not offer; ECDSA on P-384 with SHA-1, which
//! it refuses (see `op_runtime_ecdsa_p384_sha1`); and AES-GCM for the
//! parameters deno_crypto refuses: initialization vectors of
//! other lengths than 96 or 128 bits, and (when decrypting) tags shorter than
//! 128 bits. WebCrypto allows both (IVs of 1 to 2^64 - 1 bytes, tags of 32,
//! 64, 96, 104, 112, 120 or 128 bits). `js/40_crypto.js` routes only those
//! cases here, after it did the checks the spec puts before the operation.
//!
//! This is GCM as NIST SP 800-38D defines it, built from the `aes` block
//! cipher, the `ghash` universal hash and the `ctr` mode of the RustCrypto
//! project (the pieces the `aes-gcm` crate is made of, whose nonce size is a
//! type parameter).

use aes::cipher::consts::U16;
use aes::cipher::{BlockEncrypt, BlockSizeUser, KeyInit, KeyIvInit, StreamCipher};
use aes::{Aes128, Aes192, Aes256};
use deno_core::op2;
use deno_error::JsErrorBox;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;

const BLOCK: usize = 16;

fn operation_error(message: &str) -> JsErrorBox {
  JsErrorBox::new("DOMExceptionOperationError", message.to_string())
}

/// One key size of AES, as GCM needs it: the block function and CTR mode
/// with a 32-bit big-endian counter (`inc32`).
trait GcmCipher: BlockEncrypt + BlockSizeUser<BlockSize = U16> + KeyInit + Sized {
  fn ctr(key: &[u8], counter_block: &[u8; BLOCK], data: &mut [u8]);
}

macro_rules! gcm_cipher {
  ($aes:ty) => {
    impl GcmCipher for $aes {
      fn ctr(key: &[u8], counter_block: &[u8; BLOCK], data: &mut [u8]) {
        let mut ctr = ctr::Ctr32BE::<$aes>::new_from_slices(key, counter_block)
          .expect("key length checked by the caller");
        ctr.apply_keystream(data);
      }
    }
  };
}
gcm_cipher!(Aes128);
gcm_cipher!(Aes192);
gcm_cipher!(Aes256);

fn lengths_block(a_bytes: usize, b_bytes: usize) -> [u8; BLOCK] {
  let mut block = [0u8; BLOCK];
  block[..8].copy_from_slice(&((a_bytes as u64) * 8).to_be_bytes());
  block[8..].copy_from_slice(&((b_bytes as u64) * 8).to_be_bytes());
  block
}

/// `GCM-AE` (`encrypt`) or `GCM-AD`; `data` is the plaintext, or the
/// ciphertext followed by the tag. Returns the ciphertext followed by the
/// tag, or the plaintext.
fn gcm<C: GcmCipher>(
  key: &[u8],
  iv: &[u8],
  aad: &[u8],
  tag_bytes: usize,
  data: &[u8],
  encrypt: bool,
) -> Result<Vec<u8>, JsErrorBox> {
  let cipher = C::new_from_slice(key).map_err(|_| operation_error("invalid AES key length"))?;
  let mut h = [0u8; BLOCK].into();
  cipher.encrypt_block(&mut h);
  let ghash_key = h;

  // The pre-counter block J0.
  let mut j0 = [0u8; BLOCK];
  if iv.len() == 12 {
    j0[..12].copy_from_slice(iv);
    j0[15] = 1;
  } else {
    let mut ghash = GHash::new(&ghash_key);
    ghash.update_padded(iv);
    ghash.update_padded(&lengths_block(0, iv.len()));
    j0.copy_from_slice(&ghash.finalize());
  }
  let mut counter = j0;
  counter[12..].copy_from_slice(
    &u32::from_be_bytes([j0[12], j0[13], j0[14], j0[15]])
      .wrapping_add(1)
      .to_be_bytes(),
  );

  let (mut text, given_tag) = if encrypt {
    (data.to_vec(), None)
  } else {
    if data.len() < tag_bytes {
      return Err(operation_error("the data is shorter than the tag"));
    }
    let (text, tag) = data.split_at(data.len() - tag_bytes);
    (text.to_vec(), Some(tag))
  };

  let tag_of = |ciphertext: &[u8]| {
    let mut ghash = GHash::new(&ghash_key);
    ghash.update_padded(aad);
    ghash.update_padded(ciphertext);
    ghash.update_padded(&lengths_block(aad.len(), ciphertext.len()));
    let mut s: [u8; BLOCK] = ghash.finalize().into();
    let mut ek_j0 = j0.into();
    cipher.encrypt_block(&mut ek_j0);
    for (s, k) in s.iter_mut().zip(ek_j0.iter()) {
      *s ^= k;
    }
    s
  };

  if let Some(given_tag) = given_tag {
    let tag = tag_of(&text);
    // Constant time: every byte is compared.
    let diff = tag[..tag_bytes]
      .iter()
      .zip(given_tag)
      .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
      return Err(operation_error("the authentication tag does not match"));
    }
    C::ctr(key, &counter, &mut text);
    Ok(text)
  } else {
    C::ctr(key, &counter, &mut text);
    let tag = tag_of(&text);
    text.extend_from_slice(&tag[..tag_bytes]);
    Ok(text)
  }
}

/// `tag_length` in bits. Errors are `OperationError` DOMExceptions.
#[op2]
#[buffer]
pub fn op_runtime_aes_gcm(
  #[buffer] key: &[u8],
  #[buffer] iv: &[u8],
  #[buffer] aad: &[u8],
  #[smi] tag_length: u32,
  #[buffer] data: &[u8],
  encrypt: bool,
) -> Result<Vec<u8>, JsErrorBox> {
  if !matches!(tag_length, 32 | 64 | 96 | 104 | 112 | 120 | 128) {
    return Err(operation_error("invalid AES-GCM tag length"));
  }
  if iv.is_empty() {
    return Err(operation_error("the AES-GCM iv is empty"));
  }
  let tag_bytes = tag_length as usize / 8;
  match key.len() {
    16 => gcm::<Aes128>(key, iv, aad, tag_bytes, data, encrypt),
    24 => gcm::<Aes192>(key, iv, aad, tag_bytes, data, encrypt),
    32 => gcm::<Aes256>(key, iv, aad, tag_bytes, data, encrypt),
    _ => Err(operation_error("invalid AES key length")),
  }
}

// `cargo test --release -p runtime_ext --lib crypto` (the crate's tests are
// not part of `cargo test --workspace`).
#[cfg(test)]
mod tests {
  use super::*;

  fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
      .step_by(2)
      .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
      .collect()
  }

  // The test cases of the GCM specification (McGrew & Viega), 128-bit key.
  const KEY: &str = "feffe9928665731c6d6a8f9467308308";
  const PT: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
  const AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";

  #[test]
  fn gcm_96_bit_iv() {
    // Test case 4.
    let out = gcm::<Aes128>(
      &hex(KEY),
      &hex("cafebabefacedbaddecaf888"),
      &hex(AAD),
      16,
      &hex(PT),
      true,
    )
    .unwrap();
    let expected = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e0915bc94fbc3221a5db94fae95ae7121a47";
    assert_eq!(out, hex(expected));
    let back = gcm::<Aes128>(
      &hex(KEY),
      &hex("cafebabefacedbaddecaf888"),
      &hex(AAD),
      16,
      &out,
      false,
    )
    .unwrap();
    assert_eq!(back, hex(PT));
  }

  #[test]
  fn gcm_long_iv_and_short_tag() {
    // Test case 6: a 60-byte IV.
    let iv = "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b";
    let out = gcm::<Aes128>(&hex(KEY), &hex(iv), &hex(AAD), 16, &hex(PT), true).unwrap();
    let expected = "8ce24998625615b603a033aca13fb894be9112a5c3a211a8ba262a3cca7e2ca701e4a9a4fba43c90ccdcb281d48c7c6fd62875d2aca417034c34aee5619cc5aefffe0bfa462af43c1699d050";
    assert_eq!(out, hex(expected));
    // A 96-bit tag: the first 12 bytes of the full one.
    let short = gcm::<Aes128>(&hex(KEY), &hex(iv), &hex(AAD), 12, &hex(PT), true).unwrap();
    assert_eq!(short[..], out[..out.len() - 4]);
    assert_eq!(
      gcm::<Aes128>(&hex(KEY), &hex(iv), &hex(AAD), 12, &short, false).unwrap(),
      hex(PT)
    );
    let mut altered = short.clone();
    altered[0] ^= 1;
    assert!(gcm::<Aes128>(&hex(KEY), &hex(iv), &hex(AAD), 12, &altered, false).is_err());
  }
}

/// `digest({ name: "cSHAKE128" | "cSHAKE256", length, functionName,
/// customization }, data)`: `length_bytes` of output.
#[op2]
#[buffer]
pub fn op_runtime_cshake(
  #[smi] variant: u32,
  #[smi] length_bytes: u32,
  #[buffer] function_name: &[u8],
  #[buffer] customization: &[u8],
  #[buffer] data: &[u8],
) -> Result<Vec<u8>, JsErrorBox> {
  use sha3::digest::core_api::CoreWrapper;
  use sha3::digest::{ExtendableOutput, XofReader};
  fn squeeze(mut hasher: impl ExtendableOutput, data: &[u8], out: &mut [u8]) {
    hasher.update(data);
    hasher.finalize_xof().read(out);
  }
  let mut out = vec![0u8; length_bytes as usize];
  match variant {
    128 => squeeze(
      CoreWrapper::from_core(sha3::CShake128Core::new_with_function_name(
        function_name,
        customization,
      )),
      data,
      &mut out,
    ),
    256 => squeeze(
      CoreWrapper::from_core(sha3::CShake256Core::new_with_function_name(
        function_name,
        customization,
      )),
      data,
      &mut out,
    ),
    _ => return Err(operation_error("unknown cSHAKE variant")),
  }
  Ok(out)
}

/// ECDSA on P-384 with SHA-1: deno_crypto hands the 20-byte digest to the
/// `ecdsa` crate, which wants a prehash of at least half the field (24
/// bytes) and refuses it. FIPS 186-5's bits2int of a digest shorter than
/// the field is the digest's own value, so the digest left-padded with
/// zeros to the field's 48 bytes signs and verifies the same (deno_crypto
/// pads so for P-521). `key` is the key's PKCS#8 (signing) or SPKI
/// (verifying) DER; a signature is r || s. Returns the signature, or (when
/// verifying) one byte, 1 if it verifies.
#[op2]
#[buffer]
pub fn op_runtime_ecdsa_p384_sha1(
  #[buffer] key: &[u8],
  #[buffer] data: &[u8],
  #[buffer] signature: &[u8],
  sign: bool,
) -> Result<Vec<u8>, JsErrorBox> {
  use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
  use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
  use p384::pkcs8::{DecodePrivateKey, DecodePublicKey};
  use sha1::Digest;
  let digest = sha1::Sha1::digest(data);
  let mut prehash = [0u8; 48];
  prehash[48 - digest.len()..].copy_from_slice(&digest);
  if sign {
    let key = SigningKey::from_pkcs8_der(key).map_err(|_| operation_error("invalid P-384 key"))?;
    let signature: Signature = key
      .sign_prehash(&prehash)
      .map_err(|_| operation_error("signing failed"))?;
    return Ok(signature.to_bytes().to_vec());
  }
  let key =
    VerifyingKey::from_public_key_der(key).map_err(|_| operation_error("invalid P-384 key"))?;
  let verified = Signature::from_slice(signature)
    .is_ok_and(|signature| key.verify_prehash(&prehash, &signature).is_ok());
  Ok(vec![u8::from(verified)])
}
