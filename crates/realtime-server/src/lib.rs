//! The standalone Boundary Realtime server as a library, so tests and tools can start
//! it in-process: configuration, the HTTP API, health, metrics, development mode and
//! graceful shutdown around the `realtime` engine.

pub mod api;
pub mod app;
pub mod config;
pub mod dev;
pub mod limits;
pub mod pages;
pub mod request_log;
pub mod server;

pub use config::{Options, Settings};
pub use server::{Server, shutdown_signal};
