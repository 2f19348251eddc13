//! URL parsing with ada (the WHATWG URL parser Node uses) behind deno_web's
//! URL class. deno_web's ops parse with the `url` crate, which departs from
//! the URL Standard in ways the web-platform-tests catch (opaque paths ending
//! in spaces, `file:` hosts, the `/.` prefix of a path starting with `//`,
//! percent-encoding of `^` in paths, some setters). These ops have the same
//! names, signatures and contract as deno_web's (see its `url.rs` and
//! `00_url.js`), and `crate::replace_web_ops` swaps their implementations into
//! deno_web's op table, so its JavaScript is used unchanged.
//! URLSearchParams keeps deno_web's ops: its form-urlencoded parsing and
//! serializing already pass the tests.

use deno_core::{op2, OpDecl, OpState};

/// What the parse ops return, as deno_web's JavaScript reads it.
#[repr(u32)]
enum ParseStatus {
  /// The URL serializes to its input: the JavaScript keeps its string.
  Ok = 0,
  /// It serializes differently: `op_url_get_serialization` gives it.
  OkSerialization = 1,
  /// Not a URL (the JavaScript throws a TypeError, or ignores a setter).
  Err = 2,
}

/// The serialization of the last URL parsed when it differs from its input.
struct UrlSerialization(String);

/// The "no port" value of the component buffer (ports are below 2^16).
const NO_PORT: u32 = 65536;

#[op2(fast)]
#[smi]
pub fn op_url_parse(state: &mut OpState, #[string] href: &str, #[buffer] buf: &mut [u32]) -> u32 {
  match ada_url::Url::parse(href, None) {
    Ok(url) => finish(state, &url, href, buf),
    Err(_) => ParseStatus::Err as u32,
  }
}

#[op2(fast)]
#[smi]
pub fn op_url_parse_with_base(
  state: &mut OpState,
  #[string] href: &str,
  #[string] base_href: &str,
  #[buffer] buf: &mut [u32],
) -> u32 {
  match ada_url::Url::parse(href, Some(base_href)) {
    Ok(url) => finish(state, &url, href, buf),
    Err(_) => ParseStatus::Err as u32,
  }
}

#[op2]
#[string]
pub fn op_url_get_serialization(state: &mut OpState) -> String {
  state.take::<UrlSerialization>().0
}

/// A setter: `href` (a serialized URL) parsed again, then `setter` (deno_web's
/// `UrlSetter` numbering) applied with `setter_value`. A setter the URL
/// Standard ignores (an invalid host, a port on a `file:` URL...) returns
/// `Err`, which the JavaScript takes as "unchanged".
#[op2(fast)]
#[smi]
pub fn op_url_reparse(
  state: &mut OpState,
  #[string] href: String,
  #[smi] setter: u8,
  #[string] setter_value: String,
  #[buffer] buf: &mut [u32],
) -> u32 {
  let Ok(mut url) = ada_url::Url::parse(href.as_str(), None) else {
    return ParseStatus::Err as u32;
  };
  let value = setter_value.as_str();
  let applied = match setter {
    0 => {
      url.set_hash(Some(value));
      Ok(())
    }
    1 => url.set_host(Some(value)),
    2 => url.set_hostname(Some(value)),
    3 => url.set_password(Some(value)),
    4 => url.set_pathname(Some(value)),
    5 => url.set_port(Some(value)),
    6 => url.set_protocol(value),
    7 => {
      url.set_search(Some(value));
      Ok(())
    }
    8 => url.set_username(Some(value)),
    _ => Err(()),
  };
  match applied {
    Ok(()) => finish(state, &url, &href, buf),
    Err(()) => ParseStatus::Err as u32,
  }
}

/// Fills `buf` with the offsets deno_web's URL getters slice the serialization
/// with (the `url` crate's internal components, which differ from ada's):
/// `[scheme_end (the ':'), username_end, host_start, host_end, port or
/// NO_PORT, path_start, query_start (the '?') or 0, fragment_start (the '#')
/// or 0]`. The getters read username and password only when the
/// serialization has "://" after the scheme; a URL without a host gets
/// `host_start = host_end = path_start`, so that its host is empty also when
/// its path is preceded by "/." (ada's host offsets point before the "/.").
fn finish(state: &mut OpState, url: &ada_url::Url, input: &str, buf: &mut [u32]) -> u32 {
  if has_invalid_ace_label(url) {
    return ParseStatus::Err as u32;
  }
  let c = url.components();
  let path_start = c.pathname_start.unwrap_or(c.host_end);
  let scheme_end = c.protocol_end - 1;
  let (username_end, host_start, host_end) = if url.has_hostname() {
    let username_end = scheme_end + 3 + url.username().len() as u32;
    (
      username_end,
      c.host_end - url.hostname().len() as u32,
      c.host_end,
    )
  } else {
    (path_start, path_start, path_start)
  };
  buf[0] = scheme_end;
  buf[1] = username_end;
  buf[2] = host_start;
  buf[3] = host_end;
  buf[4] = c.port.unwrap_or(NO_PORT);
  buf[5] = path_start;
  buf[6] = c.search_start.unwrap_or(0);
  buf[7] = c.hash_start.unwrap_or(0);
  let href = url.href();
  if href == input {
    ParseStatus::Ok as u32
  } else {
    state.put(UrlSerialization(href.to_owned()));
    ParseStatus::OkSerialization as u32
  }
}

/// Whether the host has an ASCII `xn--` label that the URL Standard's "domain
/// to ASCII" rejects. ada takes such labels as they are when they are
/// well-formed Punycode, without checking that they decode to a valid label
/// (UTS #46 validity criteria): `https://xn--/` and
/// `http://a.b.c.xn--pokxncvks` parse, and about 780 of the 2,800 cases of
/// WPT's IdnaTestV2 and toascii data (window-only tests) go wrong. The idna
/// crate (the `url` crate's, already built) implements domain to ASCII and
/// rejects them; only hosts with an `xn--` label pay for the check.
fn has_invalid_ace_label(url: &ada_url::Url) -> bool {
  let host = url.hostname();
  url.scheme_type() != ada_url::SchemeType::NotSpecial
    && url.host_type() == ada_url::HostType::Domain
    && host.contains("xn--")
    && idna::domain_to_ascii_cow(host.as_bytes(), idna::AsciiDenyList::URL).is_err()
}

/// The ops above, to take the place of deno_web's own of the same names and
/// contracts (see `crate::replace_web_ops`).
pub(crate) fn replacement_ops() -> [OpDecl; 4] {
  [
    op_url_parse(),
    op_url_parse_with_base(),
    op_url_get_serialization(),
    op_url_reparse(),
  ]
}
