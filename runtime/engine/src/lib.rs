//! The engine: workers (isolates created from the startup snapshot running
//! one script each), their per-thread pool and limits, routing, and the HTTP
//! server that feeds them.

pub mod admin;
pub mod coarse_timer;
pub mod config;
pub mod dev;
pub mod drain;
pub mod inspector;
pub mod limits;
pub mod loader;
pub mod metrics;
pub mod pool;
pub mod routes;
pub mod scheduled;
pub mod server;
pub mod side_server;
pub mod typescript;
pub mod worker;
pub mod wrangler;
