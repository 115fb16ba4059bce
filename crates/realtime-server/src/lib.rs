//! The standalone Boundary Realtime server as a library, so tests and tools can start
//! it in-process: configuration, the HTTP API, health, metrics, development mode and
//! graceful shutdown around the `realtime` engine.

pub mod api;
pub mod app;
pub mod config;
mod connection;
mod connection_io;
pub mod dev;
mod http_error;
pub mod limits;
mod outbound;
pub mod pages;
mod phase;
pub mod proxy;
pub mod request_log;
pub mod server;
pub mod slots;
pub mod webhooks;

pub use config::{Options, Settings};
pub use server::{Server, shutdown_signal};
