//! Topic history in the shell: the [`HistoryStore`] port (where publications and
//! positions are kept) and what the engine builds on it.

pub mod api;
pub mod store;

pub use api::{HistoryQuery, HistoryQueryError, TopicHistory};

pub use store::{
    AppendRequest, HistoryError, HistoryStore, PageFuture, PositionFuture, ReadRequest, StoredPage,
    StoredPublication,
};
