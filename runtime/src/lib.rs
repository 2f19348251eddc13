//! The engine: isolates created from the startup snapshot, the loader for
//! user scripts, and the HTTP server that feeds them.

pub mod loader;
pub mod server;
pub mod worker;
