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
        Command::Subscribe { topic, reference } => {
            policy
                .can_subscribe(handle.info(), &topic)
                .map_err(|e| error(&reference, ErrorCode::Forbidden, e.to_string()))?;
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
            }
            .to_json())
        }
        Command::Ping { reference } => Ok(ServerFrame::Pong {
            reference: reference.as_ref(),
        }
        .to_json()),
    }
}
