//! TLS for the runner's wptserve: a throwaway certificate authority and a
//! leaf for `localhost`/`127.0.0.1` signed by it, made fresh for each run
//! (nothing secret is kept in the tree), written to a private directory that
//! goes away with the run. Test children trust the CA through
//! `RUNTIME_CA_CERTS`, as an operator's internal CA is trusted.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct TestCertificates {
  dir: PathBuf,
}

impl TestCertificates {
  pub fn generate() -> anyhow::Result<TestCertificates> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
      .distinguished_name
      .push(DnType::CommonName, "runtime wpt throwaway CA");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut leaf_params =
      CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
      .distinguished_name
      .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;

    let dir = std::env::temp_dir().join(format!("runtime-wpt-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let certificates = TestCertificates { dir };
    std::fs::write(certificates.ca(), ca.pem())?;
    std::fs::write(certificates.cert(), leaf.pem())?;
    write_private(&certificates.key(), &leaf_key.serialize_pem())?;
    Ok(certificates)
  }

  /// The CA's certificate (PEM), for `RUNTIME_CA_CERTS`.
  pub fn ca(&self) -> PathBuf {
    self.dir.join("ca.pem")
  }

  /// The server's certificate (PEM).
  pub fn cert(&self) -> PathBuf {
    self.dir.join("cert.pem")
  }

  /// The server's private key (PEM).
  pub fn key(&self) -> PathBuf {
    self.dir.join("key.pem")
  }
}

impl Drop for TestCertificates {
  fn drop(&mut self) {
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
  use std::io::Write as _;
  #[cfg(unix)]
  use std::os::unix::fs::OpenOptionsExt as _;
  let mut options = std::fs::OpenOptions::new();
  options.write(true).create(true).truncate(true);
  #[cfg(unix)]
  options.mode(0o600);
  options.open(path)?.write_all(contents.as_bytes())
}
