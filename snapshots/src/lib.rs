//! The startup snapshot: the runtime's whole global scope, evaluated at build
//! time (see `build.rs`).

pub static RUNTIME_SNAPSHOT: &[u8] =
  include_bytes!(concat!(env!("OUT_DIR"), "/RUNTIME_SNAPSHOT.bin"));
