//! Evaluates all of the runtime's JavaScript (deno_webidl, deno_web,
//! deno_crypto and ours) into a V8 startup snapshot, once, at build time.

use std::path::PathBuf;

fn main() {
  let output = deno_core::snapshot::create_snapshot(
    deno_core::snapshot::CreateSnapshotOptions {
      cargo_manifest_dir: env!("CARGO_MANIFEST_DIR"),
      startup_snapshot: None,
      skip_op_registration: false,
      extensions: runtime_ext::extensions(),
      extension_transpiler: None,
      with_runtime_cb: None,
    },
    None,
  )
  .expect("creating the startup snapshot failed");
  let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("RUNTIME_SNAPSHOT.bin");
  std::fs::write(&out, &output.output).expect("writing the snapshot");
  for path in output.files_loaded_during_snapshot {
    println!("cargo:rerun-if-changed={}", path.display());
  }
  println!("cargo:rerun-if-changed=../js");
}
