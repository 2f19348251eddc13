//! Workers KV's limits, and the error messages Workers gives for them.

/// Longest key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value: 25 MiB.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Largest metadata, as serialized JSON.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Most keys of one bulk get.
pub const MAX_BULK_KEYS: usize = 100;
/// Most keys of one list (and its default).
pub const MAX_LIST_KEYS: usize = 1000;
/// Workers' least expiration TTL; a namespace's `min_ttl_seconds` may lower it.
pub const DEFAULT_MIN_TTL_SECONDS: u64 = 60;

pub fn value_too_large(length: usize) -> String {
  format!("KV PUT failed: 413 Value length of {length} exceeds limit of {MAX_VALUE_BYTES}.")
}

/// When an entry written now expires (ms since the epoch), from a put's
/// `expiration` (seconds since the epoch) and `expirationTtl` (seconds),
/// checked against the namespace's least TTL.
pub fn expiry(
  expiration: Option<f64>,
  expiration_ttl: Option<f64>,
  min_ttl_seconds: u64,
  now_ms: i64,
) -> Result<Option<i64>, String> {
  let min = min_ttl_seconds as f64;
  if let Some(ttl) = expiration_ttl {
    if !ttl.is_finite() || ttl < min {
      return Err(format!(
        "KV PUT failed: 400 Invalid expiration_ttl of {}. Expiration TTL must be at least {min_ttl_seconds}.",
        number(ttl)
      ));
    }
    return Ok(Some(now_ms + (ttl.trunc() * 1000.0) as i64));
  }
  if let Some(at) = expiration {
    let now = now_ms as f64 / 1000.0;
    if !at.is_finite() || at.trunc() < (now + min).floor() {
      return Err(format!(
        "KV PUT failed: 400 Invalid expiration of {}. Expiration times must be at least {min_ttl_seconds} seconds in the future.",
        number(at)
      ));
    }
    return Ok(Some((at.trunc() * 1000.0) as i64));
  }
  Ok(None)
}

/// A number as JavaScript prints it (integers without a fraction).
fn number(n: f64) -> String {
  if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e21 {
    format!("{}", n as i64)
  } else if n.is_nan() {
    "NaN".into()
  } else {
    format!("{n}")
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn expiry_rules() {
    let now = 1_000_000_000_000;
    assert_eq!(expiry(None, None, 60, now), Ok(None));
    assert_eq!(expiry(None, Some(60.0), 60, now), Ok(Some(now + 60_000)));
    let e = expiry(None, Some(59.0), 60, now).unwrap_err();
    assert!(e.contains("Invalid expiration_ttl of 59"), "{e}");
    assert_eq!(expiry(None, Some(1.0), 1, now), Ok(Some(now + 1000)));
    let e = expiry(Some(1_000_000_030.0), None, 60, now).unwrap_err();
    assert!(e.contains("Invalid expiration of 1000000030"), "{e}");
    assert_eq!(
      expiry(Some(1_000_000_060.0), None, 60, now),
      Ok(Some(1_000_000_060_000))
    );
  }
}
