//! Carries out client commands (subscribe, unsubscribe, publish, ping) for one
//! connection and builds the reply frame. Decoding and policy live in realtime-core.

use std::sync::Arc;

use realtime_core::protocol::decode_command;
use realtime_core::{Command, ErrorCode, PreparedMessage, ProtocolError, Route, ServerFrame};
use serde_json::Value;

use crate::error::SendError;
use crate::handle::ConnectionHandle;
use crate::metrics::ErrorKind;
use crate::service::{Realtime, now_rfc3339};

/// Handles one inbound text frame and returns the reply to queue.
pub(crate) async fn handle_text(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    text: &str,
) -> String {
    let result = match decode_command(text, rt.config().max_topic_length) {
        Ok(cmd) => execute(rt, handle, cmd).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| {
        rt.inner.metrics.error(ErrorKind::Protocol);
        e.frame().to_json()
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
) -> Result<String, ProtocolError> {
    let policy = &rt.config().topic_policy;
    let error = |reference: &Option<Value>, code: ErrorCode, message: String| {
        ProtocolError::new(reference.clone(), code, message)
    };
    match cmd {
        Command::Subscribe {
            topic,
            since: _,
            reference,
        } => {
            policy
                .can_subscribe(handle.info(), &topic)
                .map_err(|e| error(&reference, ErrorCode::Forbidden, e.to_string()))?;
            let max = rt.config().max_subscriptions;
            if !handle.has_room_for(&topic, max) {
                return Err(error(
                    &reference,
                    ErrorCode::LimitExceeded,
                    format!("a connection may subscribe to at most {max} topics"),
                ));
            }
            rt.subscribe_local(handle, &topic).await.map_err(|_| {
                error(
                    &reference,
                    ErrorCode::Internal,
                    "connection is closing".into(),
                )
            })?;
            Ok(ServerFrame::Subscribed {
                topic: topic.as_str(),
                reference: reference.as_ref(),
                offset: None,
                epoch: None,
                recovered: None,
                reason: None,
            }
            .to_json())
        }
        Command::Unsubscribe { topic, reference } => {
            rt.unsubscribe_local(handle, &topic).await;
            Ok(ServerFrame::Unsubscribed {
                topic: topic.as_str(),
                reference: reference.as_ref(),
            }
            .to_json())
        }
        Command::Publish {
            topic,
            message,
            reference,
        } => {
            policy
                .can_publish(handle.info(), &topic)
                .map_err(|e| error(&reference, ErrorCode::Forbidden, e.to_string()))?;
            let prepared = PreparedMessage::from_map(message, &now_rfc3339(), Some(&topic))
                .map_err(|e| error(&reference, ErrorCode::BadRequest, e.to_string()))?;
            let delivery = rt
                .dispatch(&Route::Topic(topic), prepared)
                .map_err(|e| match e {
                    SendError::Cluster(c) => {
                        error(&reference, ErrorCode::BusUnavailable, c.to_string())
                    }
                    other => error(&reference, ErrorCode::BadRequest, other.to_string()),
                })?;
            Ok(ServerFrame::Published {
                reference: reference.as_ref(),
                delivered: delivery.local,
                relayed: delivery.relayed,
                offset: None,
                epoch: None,
            }
            .to_json())
        }
        Command::History {
            topic, reference, ..
        } => Err(error(
            &reference,
            ErrorCode::NoHistory,
            format!("topic {} keeps no history", topic.as_str()),
        )),
        Command::Ping { reference } => Ok(ServerFrame::Pong {
            reference: reference.as_ref(),
        }
        .to_json()),
        Command::Refresh { token, reference } => refresh(rt, handle, &token, reference),
    }
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
