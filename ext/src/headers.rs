//! Header values as Fetch defines them, for the `http` crate.
//!
//! A Fetch header value is any byte sequence without NUL, CR or LF and
//! without leading or trailing whitespace (the JavaScript layer checks that).
//! The `http` crate is stricter: it refuses the other control characters
//! (0x01-0x1F but tab, and 0x7F), which Fetch lets a script send.
//!
//! Only `fetch()` takes them: a response the server sends keeps to what
//! clients parse (httparse, for one, refuses them), so it stays strict.

use http::HeaderValue;

/// The value for `bytes`, or `None` when no HTTP message may carry it.
pub fn fetch_header_value(bytes: &[u8]) -> Option<HeaderValue> {
  if let Ok(value) = HeaderValue::from_bytes(bytes) {
    return Some(value);
  }
  if bytes.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r')) || !bytes.is_ascii() {
    return None;
  }
  // SAFETY: the only requirement is valid UTF-8, and ASCII is. The control
  // characters left are written out as they are, as Fetch says.
  Some(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(bytes)) })
}

#[cfg(test)]
mod tests {
  use super::fetch_header_value;

  #[test]
  fn control_characters_but_nul_cr_lf_are_values() {
    for b in (1u8..0x20).chain([0x7f]) {
      let value = [b'a', b, b'z'];
      let got = fetch_header_value(&value);
      if matches!(b, b'\n' | b'\r') {
        assert!(got.is_none(), "byte {b:#x}");
      } else {
        assert_eq!(got.unwrap().as_bytes(), &value, "byte {b:#x}");
      }
    }
    assert!(fetch_header_value(b"a\0z").is_none());
  }

  #[test]
  fn latin1_bytes_are_values_but_not_with_controls() {
    assert_eq!(
      fetch_header_value(b"caf\xe9").unwrap().as_bytes(),
      b"caf\xe9"
    );
    assert!(fetch_header_value(b"caf\xe9\x01").is_none());
  }
}
