//! Topic history in the shell: the [`HistoryStore`] port (where publications and
//! positions are kept) and what the engine builds on it.

pub mod api;
pub(crate) mod engine;
pub mod memory;
pub mod store;
pub(crate) mod tracker;

pub use api::{HistoryQuery, HistoryQueryError, TopicHistory};
pub use memory::MemoryHistory;

pub use store::{
    AppendRequest, HistoryError, HistoryStore, PageFuture, PositionFuture, ReadRequest, StoredPage,
    StoredPublication,
};
