//! Routing a request to a worker by its Host header and path, with
//! wrangler-style patterns: `api.example.com/*`, `*/v1/*`, `*.example.com/x`.
//! `*` matches any run of characters; the most specific pattern (the most
//! literal characters) wins, ties going to the first declared.

use anyhow::bail;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
  host: String,
  path: String,
}

impl RoutePattern {
  pub fn parse(pattern: &str) -> anyhow::Result<Self> {
    let trimmed = pattern
      .trim()
      .trim_start_matches("https://")
      .trim_start_matches("http://");
    if trimmed.is_empty() {
      bail!("empty route pattern");
    }
    let (host, path) = match trimmed.find('/') {
      Some(i) => (&trimmed[..i], &trimmed[i..]),
      None => (trimmed, "/*"),
    };
    if host.is_empty() {
      bail!("route pattern {pattern:?} has no host part (use \"*/path\" for any host)");
    }
    Ok(Self {
      host: host.to_ascii_lowercase(),
      path: path.to_string(),
    })
  }

  /// Literal characters: more means more specific.
  fn specificity(&self) -> usize {
    self.host.chars().filter(|&c| c != '*').count()
      + self.path.chars().filter(|&c| c != '*').count()
  }

  fn matches(&self, host: &str, path: &str) -> bool {
    glob(&self.host, host) && glob(&self.path, path)
  }

  /// `*/*`: every request matches.
  fn matches_everything(&self) -> bool {
    self.host.bytes().all(|c| c == b'*')
      && self.path.len() > 1
      && self.path.starts_with('/')
      && self.path[1..].bytes().all(|c| c == b'*')
  }
}

/// `*` matches any run of characters (including none).
fn glob(pattern: &str, text: &str) -> bool {
  let (p, t) = (pattern.as_bytes(), text.as_bytes());
  let (mut pi, mut ti) = (0, 0);
  let mut star: Option<(usize, usize)> = None;
  while ti < t.len() {
    if pi < p.len() && p[pi] == b'*' {
      star = Some((pi, ti));
      pi += 1;
    } else if pi < p.len() && p[pi] == t[ti] {
      pi += 1;
      ti += 1;
    } else if let Some((sp, st)) = star {
      pi = sp + 1;
      ti = st + 1;
      star = Some((sp, st + 1));
    } else {
      return false;
    }
  }
  p[pi..].iter().all(|&c| c == b'*')
}

/// Every worker's patterns, most specific first.
pub struct Router {
  entries: Vec<(RoutePattern, usize)>,
}

impl Router {
  /// `routes[i]` are the patterns of worker `i`.
  pub fn new(routes: &[Vec<RoutePattern>]) -> Self {
    let mut entries: Vec<(RoutePattern, usize)> = routes
      .iter()
      .enumerate()
      .flat_map(|(i, patterns)| patterns.iter().map(move |p| (p.clone(), i)))
      .collect();
    // Stable: ties keep declaration order.
    entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.specificity()));
    Self { entries }
  }

  /// The worker for `host` (a Host header, port ignored) and `path`.
  pub fn route(&self, host: &str, path: &str) -> Option<usize> {
    // The one-worker shorthand routes everything to its worker: no need to
    // look at the host.
    if let Some((pattern, worker)) = self.entries.first() {
      if pattern.matches_everything() {
        return Some(*worker);
      }
    }
    let host = strip_port(host).to_ascii_lowercase();
    self
      .entries
      .iter()
      .find(|(p, _)| p.matches(&host, path))
      .map(|(_, i)| *i)
  }
}

fn strip_port(host: &str) -> &str {
  if host.starts_with('[') {
    // [::1]:8080
    return host
      .split(']')
      .next()
      .map_or(host, |h| &host[..h.len() + 1]);
  }
  host.rsplit_once(':').map_or(host, |(h, port)| {
    if port.chars().all(|c| c.is_ascii_digit()) {
      h
    } else {
      host
    }
  })
}

#[cfg(test)]
mod tests {
  use super::*;

  fn router(routes: &[&[&str]]) -> Router {
    Router::new(
      &routes
        .iter()
        .map(|r| r.iter().map(|p| RoutePattern::parse(p).unwrap()).collect())
        .collect::<Vec<_>>(),
    )
  }

  #[test]
  fn most_specific_wins() {
    let r = router(&[
      &["*/*"],
      &["api.example.com/*", "*/v1/*"],
      &["api.example.com/v1/admin/*"],
    ]);
    assert_eq!(r.route("api.example.com:8080", "/x"), Some(1));
    assert_eq!(r.route("other.org", "/v1/users"), Some(1));
    assert_eq!(r.route("api.example.com", "/v1/admin/x"), Some(2));
    assert_eq!(r.route("other.org", "/"), Some(0));
  }

  #[test]
  fn catch_all_alone_takes_everything_and_narrower_patterns_still_route() {
    let r = router(&[&["*/*"]]);
    assert_eq!(r.route("anything.example:1", "/a/b?c"), Some(0));
    assert_eq!(r.route("", "/"), Some(0));
    let r = router(&[&["*/"]]);
    assert_eq!(r.route("a.example", "/"), Some(0));
    assert_eq!(r.route("a.example", "/x"), None);
    let r = router(&[&["*/*"], &["b.example/*"]]);
    assert_eq!(r.route("b.example", "/x"), Some(1));
    assert_eq!(r.route("c.example", "/x"), Some(0));
  }

  #[test]
  fn no_match() {
    let r = router(&[&["api.example.com/*"]]);
    assert_eq!(r.route("example.com", "/"), None);
    assert_eq!(r.route("API.EXAMPLE.COM", "/a"), Some(0));
  }

  #[test]
  fn globs() {
    assert!(glob("*.example.com", "a.b.example.com"));
    assert!(!glob("*.example.com", "example.com"));
    assert!(glob("/v1/*", "/v1/"));
    assert!(!glob("/v1/*", "/v2/x"));
    assert!(glob("*", ""));
  }
}
