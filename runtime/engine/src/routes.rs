//! Routing a request to a worker by its Host header and path, with
//! wrangler-style patterns: `api.example.com/*`, `*/v1/*`, `*.example.com/x`.
//! `*` matches any run of characters; the most specific pattern (the most
//! literal characters) wins, ties going to the first declared.

use anyhow::bail;
// A fast hash for the short path prefixes looked up on every request.
use rustc_hash::FxHashMap;

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

  /// `host` as it came (any case, no port); `path` as it came.
  fn matches(&self, host: &str, path: &str) -> bool {
    glob(&self.host, host, true) && glob(&self.path, path, false)
  }
}

/// `*` matches any run of characters (including none); with `fold_case`,
/// `text` is compared as if ASCII-lowercased (patterns are lowercase).
fn glob(pattern: &str, text: &str, fold_case: bool) -> bool {
  let (p, t) = (pattern.as_bytes(), text.as_bytes());
  // The usual shapes, `*` and `literal*`, need no backtracking.
  if let Some((b'*', literal)) = p.split_last() {
    if !literal.contains(&b'*') {
      return t.len() >= literal.len()
        && if fold_case {
          t[..literal.len()].eq_ignore_ascii_case(literal)
        } else {
          &t[..literal.len()] == literal
        };
    }
  }
  let at = |i: usize| {
    if fold_case {
      t[i].to_ascii_lowercase()
    } else {
      t[i]
    }
  };
  let (mut pi, mut ti) = (0, 0);
  let mut star: Option<(usize, usize)> = None;
  while ti < t.len() {
    if pi < p.len() && p[pi] == b'*' {
      star = Some((pi, ti));
      pi += 1;
    } else if pi < p.len() && p[pi] == at(ti) {
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

/// Every worker's patterns, most specific first, indexed by the literal
/// start of their path so that a request looks only at patterns that can
/// match it (thousands of workers must not mean thousands of globs).
pub struct Router {
  entries: Vec<(RoutePattern, usize)>,
  /// Entries (indices into `entries`, ascending) by the path up to its
  /// first `*`.
  by_path_prefix: FxHashMap<String, Vec<usize>>,
  /// The lengths those prefixes have, ascending.
  prefix_lengths: Vec<usize>,
  /// The worker of the only route, when that route is `*/*` (the one-script
  /// shorthand): every path that starts with `/` is its, whatever the host.
  only_catch_all: Option<usize>,
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
    let mut by_path_prefix: FxHashMap<String, Vec<usize>> = FxHashMap::default();
    for (index, (pattern, _)) in entries.iter().enumerate() {
      let prefix = pattern.path.split('*').next().unwrap_or_default();
      by_path_prefix
        .entry(prefix.to_string())
        .or_default()
        .push(index);
    }
    let mut prefix_lengths: Vec<usize> = by_path_prefix.keys().map(String::len).collect();
    prefix_lengths.sort_unstable();
    prefix_lengths.dedup();
    let only_catch_all = match entries.as_slice() {
      [(pattern, worker)] if pattern.host == "*" && pattern.path == "/*" => Some(*worker),
      _ => None,
    };
    Self {
      entries,
      by_path_prefix,
      prefix_lengths,
      only_catch_all,
    }
  }

  /// The worker for `host` (a Host header, port ignored) and `path`.
  pub fn route(&self, host: &str, path: &str) -> Option<usize> {
    if let Some(worker) = self.only_catch_all {
      if path.starts_with('/') {
        return Some(worker);
      }
    }
    let host = strip_port(host);
    // The most specific match is the one with the lowest index.
    let mut best: Option<usize> = None;
    for &len in &self.prefix_lengths {
      if len > path.len() {
        break;
      }
      // (Not a character boundary: no literal prefix ends there.)
      let Some(prefix) = path.get(..len) else {
        continue;
      };
      let Some(candidates) = self.by_path_prefix.get(prefix) else {
        continue;
      };
      for &index in candidates {
        if best.is_some_and(|b| b < index) {
          break;
        }
        if self.entries[index].0.matches(host, path) {
          best = Some(index);
          break;
        }
      }
    }
    best.map(|index| self.entries[index].1)
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
  // A byte search: `rsplit_once(':')` goes through the generic char
  // searcher, a noticeable cost on the request path.
  match host.bytes().rposition(|b| b == b':') {
    Some(colon) if host.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => &host[..colon],
    _ => host,
  }
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
    // `OPTIONS *`: not a path `/*` matches, alone or not.
    assert_eq!(r.route("a.example", "*"), None);
    assert_eq!(
      router(&[&["*/*"], &["b.example/*"]]).route("a.example", "*"),
      None
    );
    let r = router(&[&["*/"]]);
    assert_eq!(r.route("a.example", "/"), Some(0));
    assert_eq!(r.route("a.example", "/x"), None);
    let r = router(&[&["*/*"], &["b.example/*"]]);
    assert_eq!(r.route("b.example", "/x"), Some(1));
    assert_eq!(r.route("c.example", "/x"), Some(0));
  }

  #[test]
  fn thousands_of_workers_route_as_one_scan_would() {
    let patterns: Vec<Vec<String>> = (0..2000)
      .map(|i| match i % 4 {
        0 => vec![format!("*/w/{i}")],
        1 => vec![format!("*/w/{i}/*")],
        2 => vec![format!("h{i}.example/*")],
        _ => vec![format!("*.example/a/{i}*")],
      })
      .collect();
    let routes: Vec<Vec<RoutePattern>> = patterns
      .iter()
      .map(|p| p.iter().map(|p| RoutePattern::parse(p).unwrap()).collect())
      .collect();
    let r = Router::new(&routes);
    // The reference: every pattern tried, most specific first.
    let scan = |host: &str, path: &str| {
      let host = strip_port(host).to_ascii_lowercase();
      r.entries
        .iter()
        .find(|(p, _)| p.matches(&host, path))
        .map(|(_, i)| *i)
    };
    for (host, path) in [
      ("x.org", "/w/8"),
      ("x.org", "/w/9/deep/er"),
      ("h2.example:80", "/w/8"),
      ("h6.example", "/anything"),
      ("q.example", "/a/1111"),
      ("q.example", "/a/11"),
      ("x.org", "/w/4000"),
      ("x.org", "/"),
      ("x.org", ""),
    ] {
      assert_eq!(r.route(host, path), scan(host, path), "{host} {path}");
    }
    assert_eq!(r.route("x.org", "/w/8"), Some(8));
    assert_eq!(r.route("h2.example:80", "/w/8"), Some(2));
    assert_eq!(r.route("x.org", "/w/4000"), None);
  }

  #[test]
  fn ports_are_stripped_from_hosts() {
    assert_eq!(strip_port("a.example:8080"), "a.example");
    assert_eq!(strip_port("a.example:"), "a.example");
    assert_eq!(strip_port("a.example"), "a.example");
    assert_eq!(strip_port("a.example:http"), "a.example:http");
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("[::1]"), "[::1]");
  }

  #[test]
  fn no_match() {
    let r = router(&[&["api.example.com/*"]]);
    assert_eq!(r.route("example.com", "/"), None);
    assert_eq!(r.route("API.EXAMPLE.COM", "/a"), Some(0));
  }

  #[test]
  fn globs() {
    assert!(glob("*.example.com", "a.b.example.com", false));
    assert!(!glob("*.example.com", "example.com", false));
    assert!(glob("/v1/*", "/v1/", false));
    assert!(!glob("/v1/*", "/v2/x", false));
    assert!(glob("*", "", false));
  }
}
