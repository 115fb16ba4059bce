//! The library's history API: reading a topic's history, resetting it, and
//! publishing with the position confirmed.

use realtime_core::history::{Recovery, history_limit, recovery, with_position};
use realtime_core::{InvalidTopic, Position, PreparedMessage, Route, Topic};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::engine::new_epoch;
use super::store::{HistoryError, ReadRequest};
use crate::error::SendError;
use crate::service::{Delivery, Realtime, now_rfc3339};

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicHistory {
    pub topic: Topic,
    /// In offset order, each with its `offset` and `epoch`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
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
    /// A page of `topic`'s history: with `query.since` recoverable, the
    /// publications after it (`recovered: Some(true)`); with `since` not
    /// recoverable, from the oldest held (`recovered: Some(false)`); without
    /// `since`, from the oldest held (`recovered: None`). At most `query.limit`
    /// publications, capped at
    /// [`MAX_HISTORY_LIMIT`](realtime_core::history::MAX_HISTORY_LIMIT).
    pub async fn history(
        &self,
        topic: &str,
        query: HistoryQuery,
    ) -> Result<TopicHistory, HistoryQueryError> {
        let topic = self.parse_topic(topic)?;
        let limits = self
            .history_limits(&topic)
            .ok_or_else(|| HistoryQueryError::NoHistory(topic.to_string()))?;
        let store = self.history_store()?;
        let limit = history_limit(query.limit);
        let read = |after: Option<u64>| {
            store.read(ReadRequest {
                topic: topic.clone(),
                limits,
                after,
                limit,
                new_epoch: new_epoch(),
            })
        };
        let (page, recovered) = match &query.since {
            None => (read(None).await?, None),
            Some(since) => {
                let page = read(Some(since.offset)).await?;
                match recovery(since, &page.state) {
                    Recovery::Recovered => (page, Some(true)),
                    // Read in the current epoch from its oldest instead.
                    Recovery::NotRecovered(_) => (read(None).await?, Some(false)),
                }
            }
        };
        let epoch = page.state.epoch.clone();
        let publications = page
            .publications
            .iter()
            .filter_map(|p| RawValue::from_string(with_position(&p.payload, p.offset, &epoch)).ok())
            .collect();
        Ok(TopicHistory {
            topic,
            publications,
            position: page.state.position(),
            recovered,
        })
    }

    /// Drops `topic`'s publications and starts a new epoch; returns the new position.
    /// Subscribers on this node are told with a `missed` notice (`history_lost`);
    /// other nodes' subscribers when the next publication shows them the new epoch.
    pub async fn reset_history(&self, topic: &str) -> Result<Position, HistoryQueryError> {
        let topic = self.parse_topic(topic)?;
        let limits = self
            .history_limits(&topic)
            .ok_or_else(|| HistoryQueryError::NoHistory(topic.to_string()))?;
        let position = self
            .history_store()?
            .reset(&topic, limits, new_epoch())
            .await?;
        if let Some(tracker) = self.inner.trackers.get(topic.as_str()) {
            tracker
                .lock()
                .adopt_epoch(self.fanout(), &topic, position.epoch.clone());
        }
        Ok(position)
    }

    /// As [`publish`](Self::publish), and on a history topic waits for the store to
    /// assign the publication's position, which the answer carries.
    pub async fn publish_confirmed(
        &self,
        topic: &str,
        message: Value,
    ) -> Result<Delivery, SendError> {
        let topic = self.parse_topic(topic)?;
        let history = self.history_limits(&topic).is_some();
        let prepared = PreparedMessage::new_with(message, &now_rfc3339(), Some(&topic), history)?;
        self.dispatch_confirmed(&Route::Topic(topic), prepared)
            .await
    }

    /// As [`publish_confirmed`](Self::publish_confirmed), from raw JSON bytes (an
    /// HTTP request body).
    pub async fn publish_json_confirmed(
        &self,
        topic: &Topic,
        body: &[u8],
    ) -> Result<Delivery, SendError> {
        let history = self.history_limits(topic).is_some();
        let prepared =
            PreparedMessage::from_slice_with(body, &now_rfc3339(), Some(topic), history)?;
        self.dispatch_confirmed(&Route::Topic(topic.clone()), prepared)
            .await
    }
}
