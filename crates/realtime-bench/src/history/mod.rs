//! The history benchmarks: fan-out with history on against off, and a recovery
//! storm (every client of a history topic dropped, messages published, every
//! client back at once with `since`).

mod fanout;
mod http;
pub(crate) mod node;
mod session;
mod storm;
mod tally;

pub use fanout::history_fanout;
pub(crate) use fanout::medians;
pub use node::{HistoryLimits, Store};
pub use storm::{Storm, recovery_storm};
