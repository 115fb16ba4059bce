//! Errors returned by the library API.

use realtime_core::{InvalidTopic, MessageError};

/// A send was refused before anything was delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    InvalidMessage(#[from] MessageError),
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
}

/// A server-side subscription change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
    #[error("no such connection")]
    UnknownConnection,
}
