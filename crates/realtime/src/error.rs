//! Errors returned by the library API.

use realtime_core::{InvalidTopic, MessageError};

use crate::cluster::ClusterError;
use crate::cluster::bus::BusError;

/// A send was refused before anything was delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    InvalidMessage(#[from] MessageError),
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
    /// The other nodes cannot be reached; nothing was delivered, locally either.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A history topic's store could not take the publication; nothing was delivered.
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
}

impl From<BusError> for SendError {
    fn from(e: BusError) -> Self {
        SendError::Cluster(ClusterError::Bus(e))
    }
}

/// A subscription change or disconnect was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
    #[error("no such connection")]
    UnknownConnection,
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The topic keeps history and its store could not be read.
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
}
