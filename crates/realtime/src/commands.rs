//! Carries out client commands (subscribe, unsubscribe, publish, history,
//! presence, presence_stats, ping, refresh) for one connection and builds the
//! reply frame. Decoding and policy live in realtime-core.

use std::sync::Arc;

use realtime_core::history::Unrecoverable;
use realtime_core::protocol::decode_command;
use realtime_core::{
    Command, ErrorCode, MessageError, PreparedMessage, ProtocolError, Route, ServerFrame, Topic,
};
use serde_json::Value;

use crate::error::SendError;
use crate::handle::ConnectionHandle;
use crate::history::engine::HistorySubscribeError;
use crate::history::{HistoryQuery, HistoryQueryError};
use crate::metrics::ErrorKind;
use crate::presence::{PresenceQuery, PresenceQueryError};
use crate::service::{Realtime, now_rfc3339};

/// Handles one inbound text frame and returns the reply to queue; `None` when
/// the command queued its reply itself (a subscribe on a history topic, whose
/// reply must come before its replay).
pub(crate) async fn handle_text(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    text: &str,
) -> Option<String> {
    let result = match decode_command(text, rt.config().max_topic_length) {
        Ok(cmd) => execute(rt, handle, cmd).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| {
        rt.inner.metrics.error(ErrorKind::Protocol);
        Some(e.frame().to_json())
    })
}

/// The reply for a frame the protocol does not accept at all (binary data).
pub(crate) fn binary_frame_reply(rt: &Realtime) -> String {
    rt.inner.metrics.error(ErrorKind::Protocol);
    ProtocolError::new(
        None,
        ErrorCode::BadRequest,
        "binary frames are not supported; send JSON text",
    )
    .frame()
    .to_json()
}

async fn execute(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    cmd: Command,
) -> Result<Option<String>, ProtocolError> {
    let error = |reference: &Option<Value>, code: ErrorCode, message: String| {
        ProtocolError::new(reference.clone(), code, message)
    };
    // Subscribing, and reading a topic's history or presence, are allowed alike
    // (the subscribe hook included).
    let may_subscribe = async |topic: &Topic, reference: &Option<Value>| {
        Box::pin(rt.may_subscribe(handle.info(), topic))
            .await
            .map_err(|refused| error(reference, refused.code, refused.message))
    };
    match cmd {
        Command::Subscribe {
            topic,
            since,
            reference,
        } => {
            // The limit first: a subscribe it refuses never reaches the
            // subscribe hook (a backend is not asked about what cannot happen).
            let max = rt.config().max_subscriptions;
            if !handle.has_room_for(&topic, max) {
                return Err(error(
                    &reference,
                    ErrorCode::LimitExceeded,
                    format!("a connection may subscribe to at most {max} topics"),
                ));
            }
            may_subscribe(&topic, &reference).await?;
            if let Some(limits) = rt.history_limits(&topic) {
                rt.subscribe_history(
                    handle,
                    &topic,
                    limits,
                    since.as_ref(),
                    Some(reference.as_ref()),
                )
                .await
                .map_err(|e| match e {
                    HistorySubscribeError::Store(e) => {
                        error(&reference, ErrorCode::HistoryUnavailable, e.to_string())
                    }
                    HistorySubscribeError::Gone => error(
                        &reference,
                        ErrorCode::Internal,
                        "connection is closing".into(),
                    ),
                })?;
                return Ok(None);
            }
            rt.subscribe_channel(handle, &topic).await.map_err(|_| {
                error(
                    &reference,
                    ErrorCode::Internal,
                    "connection is closing".into(),
                )
            })?;
            // Without history nothing can be recovered: say so to a client that asked.
            Ok(Some(
                ServerFrame::Subscribed {
                    topic: topic.as_str(),
                    reference: reference.as_ref(),
                    offset: None,
                    epoch: None,
                    recovered: since.as_ref().map(|_| false),
                    reason: since.as_ref().map(|_| Unrecoverable::NoHistory),
                }
                .to_json(),
            ))
        }
        Command::Unsubscribe { topic, reference } => {
            rt.unsubscribe_local(handle, &topic).await;
            Ok(Some(
                ServerFrame::Unsubscribed {
                    topic: topic.as_str(),
                    reference: reference.as_ref(),
                }
                .to_json(),
            ))
        }
        Command::Publish {
            topic,
            message,
            reference,
        } => {
            let message = Box::pin(rt.may_publish(handle.info(), &topic, message))
                .await
                .map_err(|refused| error(&reference, refused.code, refused.message))?;
            let history = rt.history_limits(&topic).is_some();
            let prepared =
                PreparedMessage::from_map_with(message, &now_rfc3339(), Some(&topic), history)
                    .map_err(|e| {
                        let code = match e {
                            MessageError::ReservedPosition => ErrorCode::InvalidMessage,
                            _ => ErrorCode::BadRequest,
                        };
                        error(&reference, code, e.to_string())
                    })?;
            // On a history topic the answer waits for the position.
            let delivery = rt
                .dispatch_confirmed(&Route::Topic(topic), prepared)
                .await
                .map_err(|e| match e {
                    SendError::Cluster(c) => {
                        error(&reference, ErrorCode::BusUnavailable, c.to_string())
                    }
                    SendError::History(h) => {
                        error(&reference, ErrorCode::HistoryUnavailable, h.to_string())
                    }
                    other => error(&reference, ErrorCode::BadRequest, other.to_string()),
                })?;
            let position = delivery.position.as_ref();
            Ok(Some(
                ServerFrame::Published {
                    reference: reference.as_ref(),
                    delivered: delivery.local,
                    relayed: delivery.relayed,
                    offset: position.map(|p| p.offset),
                    epoch: position.map(|p| p.epoch.as_str()),
                }
                .to_json(),
            ))
        }
        Command::History {
            topic,
            since,
            limit,
            reference,
        } => {
            may_subscribe(&topic, &reference).await?;
            let page = rt
                .history(topic.as_str(), HistoryQuery { since, limit })
                .await
                .map_err(|e| {
                    let code = match &e {
                        HistoryQueryError::InvalidTopic(_) => ErrorCode::InvalidTopic,
                        HistoryQueryError::NoHistory(_) => ErrorCode::NoHistory,
                        HistoryQueryError::Store(_) => ErrorCode::HistoryUnavailable,
                    };
                    error(&reference, code, e.to_string())
                })?;
            Ok(Some(
                ServerFrame::History {
                    topic: topic.as_str(),
                    reference: reference.as_ref(),
                    publications: &page.publications,
                    offset: page.position.offset,
                    epoch: &page.position.epoch,
                    recovered: page.recovered,
                }
                .to_json(),
            ))
        }
        Command::Presence {
            topic,
            limit,
            cursor,
            reference,
        } => {
            may_subscribe(&topic, &reference).await?;
            let page = rt
                .presence_of(&topic, PresenceQuery { limit, cursor })
                .await
                .map_err(|e| presence_error(reference.clone(), e))?;
            let users = serde_json::value::to_raw_value(&page.users)
                .map_err(|e| error(&reference, ErrorCode::Internal, e.to_string()))?;
            Ok(Some(
                ServerFrame::Presence {
                    topic: topic.as_str(),
                    reference: reference.as_ref(),
                    users: &users,
                    cursor: page.cursor.as_deref(),
                    degraded: page.degraded,
                }
                .to_json(),
            ))
        }
        Command::PresenceStats { topic, reference } => {
            may_subscribe(&topic, &reference).await?;
            let stats = rt
                .presence_stats_of(&topic)
                .await
                .map_err(|e| presence_error(reference.clone(), e))?;
            Ok(Some(
                ServerFrame::PresenceStats {
                    topic: topic.as_str(),
                    reference: reference.as_ref(),
                    connections: stats.connections,
                    users: stats.users,
                    degraded: stats.degraded,
                }
                .to_json(),
            ))
        }
        Command::Ping { reference } => Ok(Some(
            ServerFrame::Pong {
                reference: reference.as_ref(),
            }
            .to_json(),
        )),
        Command::Refresh { token, reference } => refresh(rt, handle, &token, reference).map(Some),
    }
}

/// The error frame for a presence query the engine refused.
fn presence_error(reference: Option<Value>, e: PresenceQueryError) -> ProtocolError {
    let code = match &e {
        PresenceQueryError::InvalidTopic(_) => ErrorCode::InvalidTopic,
        PresenceQueryError::NoPresence => ErrorCode::NoPresence,
        PresenceQueryError::BadLimit | PresenceQueryError::BadCursor => ErrorCode::BadRequest,
    };
    ProtocolError::new(reference, code, e.to_string())
}

/// Replaces the connection's token: the new one must verify and name the same
/// user with the same roles; the connection's expiry moves to the new `exp`.
fn refresh(
    rt: &Realtime,
    handle: &ConnectionHandle,
    token: &str,
    reference: Option<Value>,
) -> Result<String, ProtocolError> {
    let identity = rt.verify(token).map_err(|e| {
        ProtocolError::new(
            reference.clone(),
            ErrorCode::InvalidToken,
            format!("{}: {e}", e.reason()),
        )
    })?;
    let info = handle.info();
    // The same set of roles, whatever their order or repetitions.
    let same_roles = identity.roles.iter().all(|r| info.has_role(r))
        && info
            .roles
            .iter()
            .all(|r| identity.roles.iter().any(|s| s == &**r));
    if identity.user_id != *info.user_id || !same_roles {
        return Err(ProtocolError::new(
            reference,
            ErrorCode::TokenMismatch,
            "the token names another user or other roles; reconnect with it instead",
        ));
    }
    handle.set_expires_at(identity.expires_at);
    Ok(ServerFrame::Refreshed {
        reference: reference.as_ref(),
        expires_at: identity.expires_at.unwrap_or(i64::MAX),
    }
    .to_json())
}

/// The reply to a command dropped by the rate limit. The frame is only scanned
/// for its `ref`, so the reply can be matched to the command.
pub(crate) fn rate_limited_reply(rt: &Realtime, text: &str) -> String {
    rt.inner.metrics.error(ErrorKind::RateLimited);
    ProtocolError::new(
        realtime_core::protocol::peek_reference(text),
        ErrorCode::RateLimited,
        "too many commands; slow down",
    )
    .frame()
    .to_json()
}
