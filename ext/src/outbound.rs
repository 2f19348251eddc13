//! Where a worker's `fetch()` may connect: its outbound network policy.
//!
//! A policy is a list of `"public"`, `"private"`, `"local"`, CIDRs and host
//! names (`"api.internal:8443"`), or `"any"`. The check is made on the
//! address actually connected to: names are resolved by [`PolicyResolver`],
//! which hands the connector only the addresses the policy allows (so no
//! second resolution happens between check and connect), and an address
//! literal in the URL is checked before anything is sent. Every redirect hop
//! is a request of its own and is checked again.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

/// What kind of network an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
  /// Reachable on the internet.
  Public,
  /// RFC 1918, carrier-grade NAT (RFC 6598), link-local (169.254.0.0/16,
  /// so cloud metadata services, and fe80::/10), unique-local (fc00::/7).
  Private,
  /// Loopback: this machine.
  Local,
  /// Neither a host nor reachable as one: unspecified, multicast,
  /// broadcast, reserved. Only `"any"` or a CIDR naming it allows it.
  Special,
}

/// The class of `ip`; an IPv4-mapped or IPv4-compatible IPv6 address is
/// classed as the IPv4 address it carries.
pub fn classify(ip: IpAddr) -> AddressClass {
  match ip {
    IpAddr::V4(v4) => classify_v4(v4),
    IpAddr::V6(v6) => {
      if let Some(v4) = v6.to_ipv4_mapped() {
        return classify_v4(v4);
      }
      let segments = v6.segments();
      // ::a.b.c.d (deprecated IPv4-compatible), but not :: and ::1.
      if segments[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        return classify_v4(Ipv4Addr::from(v6.to_bits() as u32));
      }
      classify_v6(v6)
    }
  }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
  let [a, b, ..] = ip.octets();
  if ip.is_loopback() {
    AddressClass::Local
  } else if ip.is_private()
    || ip.is_link_local()
    // 100.64.0.0/10, carrier-grade NAT.
    || (a == 100 && (64..128).contains(&b))
  {
    AddressClass::Private
  } else if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
    AddressClass::Special
  } else {
    AddressClass::Public
  }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
  let first = ip.segments()[0];
  if ip.is_loopback() {
    AddressClass::Local
  } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
    AddressClass::Private
  } else if ip.is_unspecified() || ip.is_multicast() {
    AddressClass::Special
  } else {
    AddressClass::Public
  }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
  Any,
  Class(AddressClass),
  Net(IpNet),
  /// A host name (lowercase) and, if given, the one port allowed on it.
  Host(String, Option<u16>),
}

/// A worker's outbound policy, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPolicy {
  rules: Vec<Rule>,
  /// As written, for error messages: `["public"]`.
  shown: String,
}

impl OutboundPolicy {
  pub fn any() -> Self {
    Self::parse(&["any".to_string()]).unwrap()
  }

  pub fn public() -> Self {
    Self::parse(&["public".to_string()]).unwrap()
  }

  /// Parses a policy list; an entry that is none of the forms is an error
  /// naming it.
  pub fn parse(entries: &[String]) -> Result<Self, String> {
    let mut rules = Vec::with_capacity(entries.len());
    for entry in entries {
      let rule = match entry.as_str() {
        "any" => Rule::Any,
        "public" => Rule::Class(AddressClass::Public),
        "private" => Rule::Class(AddressClass::Private),
        "local" => Rule::Class(AddressClass::Local),
        text => {
          if let Ok(net) = text.parse::<IpNet>() {
            Rule::Net(net.trunc())
          } else if let Ok(ip) = text.parse::<IpAddr>() {
            Rule::Net(IpNet::from(ip))
          } else {
            parse_host(text).ok_or_else(|| {
              format!(
                "outbound entry {text:?} is not \"any\", \"public\", \"private\", \"local\", a CIDR (\"10.0.0.0/8\") or a host name (\"api.internal:8443\")"
              )
            })?
          }
        }
      };
      rules.push(rule);
    }
    let shown = format!(
      "[{}]",
      entries
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ")
    );
    Ok(Self { rules, shown })
  }

  pub fn allows_everything(&self) -> bool {
    self.rules.contains(&Rule::Any)
  }

  /// Does a host rule allow `host:port` whatever its addresses are?
  pub fn allows_host(&self, host: &str, port: u16) -> bool {
    self.rules.iter().any(|rule| match rule {
      Rule::Any => true,
      Rule::Host(name, allowed) => {
        name.eq_ignore_ascii_case(host) && allowed.is_none_or(|p| p == port)
      }
      _ => false,
    })
  }

  /// May a connection go to `ip`?
  pub fn allows_address(&self, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let class = classify(ip);
    self.rules.iter().any(|rule| match rule {
      Rule::Any => true,
      Rule::Class(allowed) => *allowed == class,
      Rule::Net(net) => net.contains(&ip),
      Rule::Host(..) => false,
    })
  }

  /// The TypeError's message for a connection the policy refuses.
  pub fn denial(&self, ip: IpAddr, url: &str) -> String {
    format!(
      "fetch failed: {url}: the address {ip} ({}) is not allowed by this worker's outbound policy {}",
      match classify(canonical(ip)) {
        AddressClass::Public => "public",
        AddressClass::Private => "a private network",
        AddressClass::Local => "loopback",
        AddressClass::Special => "not a host address",
      },
      self.shown
    )
  }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so that CIDRs and
/// classes see one form.
fn canonical(ip: IpAddr) -> IpAddr {
  match ip {
    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
    v4 => v4,
  }
}

fn parse_host(text: &str) -> Option<Rule> {
  let (host, port) = match text.rsplit_once(':') {
    Some((host, port)) => (host, Some(port.parse::<u16>().ok()?)),
    None => (text, None),
  };
  let valid = !host.is_empty()
    && host.split('.').all(|label| {
      !label.is_empty()
        && label
          .chars()
          .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
  valid.then(|| Rule::Host(host.to_ascii_lowercase(), port))
}

/// The error a name gets when the policy allows none of its addresses;
/// `fetch`'s error description finds it in the connect error's sources.
#[derive(Debug)]
pub struct DeniedAddress {
  pub ip: IpAddr,
  pub policy: Arc<OutboundPolicy>,
}

impl std::fmt::Display for DeniedAddress {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    write!(f, "address {} denied", self.ip)
  }
}

impl std::error::Error for DeniedAddress {}

/// Resolves names for the connector of one policy, keeping only the
/// addresses it allows.
#[derive(Clone)]
pub struct PolicyResolver {
  pub policy: Arc<OutboundPolicy>,
}

type Addresses = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for PolicyResolver {
  type Response = Addresses;
  type Error = std::io::Error;
  type Future = Pin<Box<dyn Future<Output = Result<Addresses, std::io::Error>> + Send>>;

  fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
    Poll::Ready(Ok(()))
  }

  fn call(&mut self, name: Name) -> Self::Future {
    let policy = self.policy.clone();
    Box::pin(async move {
      let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
      let allowed: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|addr| policy.allows_address(addr.ip()))
        .collect();
      match (allowed.is_empty(), resolved.first()) {
        (true, Some(first)) => Err(std::io::Error::new(
          std::io::ErrorKind::PermissionDenied,
          DeniedAddress {
            ip: first.ip(),
            policy,
          },
        )),
        _ => Ok(allowed.into_iter()),
      }
    })
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
  }

  #[test]
  fn every_range_is_classified() {
    use AddressClass::*;
    for (address, class) in [
      ("127.0.0.1", Local),
      ("127.255.0.9", Local),
      ("::1", Local),
      ("::ffff:127.0.0.1", Local),
      ("::127.0.0.1", Local),
      ("10.0.0.1", Private),
      ("172.16.0.1", Private),
      ("172.31.255.255", Private),
      ("192.168.1.1", Private),
      ("100.64.0.1", Private),
      ("100.127.255.254", Private),
      ("169.254.169.254", Private),
      ("::ffff:169.254.169.254", Private),
      ("::ffff:10.0.0.1", Private),
      ("fd00::1", Private),
      ("fc00::1", Private),
      ("fe80::1", Private),
      ("0.0.0.0", Special),
      ("::", Special),
      ("224.0.0.1", Special),
      ("ff02::1", Special),
      ("255.255.255.255", Special),
      ("240.0.0.1", Special),
      ("8.8.8.8", Public),
      ("1.1.1.1", Public),
      ("100.128.0.1", Public),
      ("172.32.0.1", Public),
      ("2606:4700:4700::1111", Public),
      ("::ffff:8.8.8.8", Public),
    ] {
      assert_eq!(classify(ip(address)), class, "{address}");
    }
  }

  #[test]
  fn public_denies_everything_but_public_addresses() {
    let policy = OutboundPolicy::public();
    assert!(policy.allows_address(ip("93.184.216.34")));
    for denied in [
      "127.0.0.1",
      "::1",
      "::ffff:127.0.0.1",
      "10.0.0.1",
      "169.254.169.254",
      "fd00::1",
      "0.0.0.0",
    ] {
      assert!(!policy.allows_address(ip(denied)), "{denied}");
    }
    assert!(!policy.allows_host("localhost", 80));
  }

  #[test]
  fn cidrs_hosts_and_any() {
    let policy = OutboundPolicy::parse(&[
      "127.0.0.2/32".to_string(),
      "fd00::/8".to_string(),
      "api.internal:8443".to_string(),
    ])
    .unwrap();
    assert!(policy.allows_address(ip("127.0.0.2")));
    assert!(policy.allows_address(ip("::ffff:127.0.0.2")));
    assert!(!policy.allows_address(ip("127.0.0.1")));
    assert!(policy.allows_address(ip("fd12::3")));
    assert!(!policy.allows_address(ip("8.8.8.8")));
    assert!(policy.allows_host("API.internal", 8443));
    assert!(!policy.allows_host("api.internal", 443));
    assert!(OutboundPolicy::any().allows_address(ip("127.0.0.1")));
    let error = OutboundPolicy::parse(&["everywhere!".to_string()]).unwrap_err();
    assert!(error.contains("\"everywhere!\""), "{error}");
  }
}
