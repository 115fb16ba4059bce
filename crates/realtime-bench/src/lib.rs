//! Boundary Realtime's load generator as a library: scenarios, servers under test, reports.
pub mod client;
pub mod delivery;
pub mod docs;
pub mod fleet;
mod headline;
pub mod history;
pub mod idle;
pub mod machine;
pub mod plot;
pub mod procstat;
pub mod progress;
pub mod publisher;
pub mod record;
pub mod report;
pub mod scenarios;
pub mod servers;
pub mod tokens;
pub mod tracker;
