//! The [`HistoryStore`] port: a bounded, expiring history per topic with offsets
//! and epochs. Adapters: the in-memory store (one node, or engines sharing a
//! [`MemoryHub`](crate::MemoryHub)) and Redis streams (`realtime-redis`).

use std::future::Future;
use std::pin::Pin;

use realtime_core::{HistoryLimits, NodeTag, Position, StreamState, Topic};

use crate::cluster::bus::Inbox;

/// Why the store could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The store cannot be reached right now (Redis is down).
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

/// Resolves to the position a publication got, or a topic's new position.
pub type PositionFuture = Pin<Box<dyn Future<Output = Result<Position, HistoryError>> + Send>>;

/// Resolves to what a read found.
pub type PageFuture = Pin<Box<dyn Future<Output = Result<StoredPage, HistoryError>> + Send>>;

/// One publication to append to a topic's history and publish, in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    pub topic: Topic,
    pub limits: HistoryLimits,
    /// The publication's JSON, without its position.
    pub payload: String,
    /// The bus channel the publication goes out on, with its position, in the same
    /// atomic step as the append (as a [`realtime_core::history::WirePublication`]).
    pub channel: String,
    /// The appending node and a number that grows with each of its appends: a store
    /// that retries an append after a broken link uses them to apply it once.
    pub origin: NodeTag,
    pub seq: u64,
    /// The epoch to start if the topic has none (fresh from the engine: stores
    /// need no randomness of their own).
    pub new_epoch: String,
}

/// A read of a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub topic: Topic,
    pub limits: HistoryLimits,
    /// Publications with an offset above this, in the current epoch; `None`: from
    /// the oldest held.
    pub after: Option<u64>,
    /// Most publications to return; 0 reads only the position.
    pub limit: usize,
    /// The epoch to start if the topic has none, so every read answers a position
    /// that later appends continue.
    pub new_epoch: String,
}

/// A publication as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPublication {
    pub offset: u64,
    /// The publication's JSON, without its position.
    pub payload: String,
}

/// What a read found: the topic's state and publications in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPage {
    pub state: StreamState,
    pub publications: Vec<StoredPublication>,
}

/// Keeps each history topic's publications (at most `limits.size`, expiring
/// `limits.ttl` after the last one) and its position.
///
/// Contract:
/// - `append` assigns the next offset (starting at 1 in a new epoch) and makes
///   the publication reach every node subscribed to `channel` in the same atomic
///   step: nobody sees it live without it being in history, or in history without
///   it having been published. Appends one node requests are applied in the order
///   requested, interleaved in that order with its [`MessageBus`] publishes; the
///   request is taken when `append` is called, so a caller may drop the future.
///   An append's cost does not grow with the history's size.
/// - A topic whose position was lost (expired, or the store lost its data) starts
///   a new epoch at its next read or append.
///
/// [`MessageBus`]: crate::MessageBus
pub trait HistoryStore: Send + Sync + 'static {
    /// Called once by an engine without a cluster: publications are handed to
    /// `inbox` (as wire publications) instead of a bus. Stores that publish on a
    /// bus ignore it.
    fn start(&self, inbox: Inbox);

    fn append(&self, request: AppendRequest) -> PositionFuture;

    fn read(&self, request: ReadRequest) -> PageFuture;

    /// Drops a topic's publications and starts `new_epoch` at offset 0.
    fn reset(&self, topic: &Topic, limits: HistoryLimits, new_epoch: String) -> PositionFuture;
}
