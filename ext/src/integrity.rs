//! Subresource Integrity for `fetch(url, { integrity })`: whether a
//! response's bytes match the request's integrity metadata
//! (https://w3c.github.io/webappsec-subresource-integrity/#does-response-match-metadatalist).

use base64::Engine;
use deno_core::op2;
use sha2::Digest;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Algorithm {
  Sha256,
  Sha384,
  Sha512,
}

impl Algorithm {
  fn parse(name: &str) -> Option<Self> {
    match name.to_ascii_lowercase().as_str() {
      "sha256" => Some(Self::Sha256),
      "sha384" => Some(Self::Sha384),
      "sha512" => Some(Self::Sha512),
      _ => None,
    }
  }

  fn digest(self, bytes: &[u8]) -> Vec<u8> {
    match self {
      Self::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
      Self::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
      Self::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
    }
  }
}

/// `alg-digest[?options]` items of the metadata; unknown algorithms are
/// ignored, as the spec says.
fn parse_metadata(metadata: &str) -> Vec<(Algorithm, &str)> {
  metadata
    .split_ascii_whitespace()
    .filter_map(|item| {
      let item = item.split('?').next().unwrap_or_default();
      let (name, digest) = item.split_once('-')?;
      Some((Algorithm::parse(name)?, digest))
    })
    .collect()
}

/// Base64 or base64url, with or without padding, as the same digest.
fn normalized(digest: &str) -> String {
  digest
    .trim_end_matches('=')
    .chars()
    .map(|c| match c {
      '-' => '+',
      '_' => '/',
      c => c,
    })
    .collect()
}

pub fn matches(metadata: &str, bytes: &[u8]) -> bool {
  let items = parse_metadata(metadata);
  // Nothing this runtime understands: no integrity to check.
  let Some(strongest) = items.iter().map(|(alg, _)| *alg).max() else {
    return true;
  };
  let actual = base64::engine::general_purpose::STANDARD_NO_PAD.encode(strongest.digest(bytes));
  items
    .iter()
    .filter(|(alg, _)| *alg == strongest)
    .any(|(_, expected)| normalized(expected) == actual)
}

#[op2(fast)]
pub fn op_fetch_integrity_matches(#[string] metadata: &str, #[buffer] bytes: &[u8]) -> bool {
  matches(metadata, bytes)
}

#[cfg(test)]
mod tests {
  use super::matches;

  // "Hello, world!" digests (published by e.g. `openssl dgst -binary | base64`).
  const SHA256: &str = "sha256-MV9b23bQeMQ7isAGTkoBZGErH853yGk0W/yUx1iU7dM=";
  const SHA512_URL: &str =
    "sha512-wVJ82JPBJHc9gRkRlwyP5uhX1t9dySJr2KFgYUwM2WOk3eorlLt9NgIe-dhl1c6ilKgt1JoLsmn1H256V_eUIQ";

  #[test]
  fn standard_and_url_alphabets_with_or_without_padding() {
    assert!(matches(SHA256, b"Hello, world!"));
    assert!(!matches(SHA256, b"Hello, world?"));
    assert!(matches(SHA512_URL, b"Hello, world!"));
  }

  #[test]
  fn the_strongest_algorithm_decides() {
    let wrong512 = "sha512-AAAA";
    assert!(!matches(&format!("{SHA256} {wrong512}"), b"Hello, world!"));
    assert!(matches(
      &format!("{wrong512} {SHA512_URL}"),
      b"Hello, world!"
    ));
  }

  #[test]
  fn unknown_or_empty_metadata_checks_nothing() {
    assert!(matches("", b"x"));
    assert!(matches("md5-abc sha1-def", b"x"));
  }
}
