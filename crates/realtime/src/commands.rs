//! Carries out client commands (subscribe, unsubscribe, publish, ping) for one
//! connection and builds the reply frame. Decoding and policy live in realtime-core.

use std::sync::Arc;

use realtime_core::protocol::decode_command;
use realtime_core::{Command, ErrorCode, PreparedMessage, ProtocolError, Route, ServerFrame};

use crate::handle::ConnectionHandle;
use crate::metrics::ErrorKind;
use crate::service::{Realtime, now_rfc3339};

/// Handles one inbound text frame and returns the reply to queue.
pub(crate) fn handle_text(rt: &Realtime, handle: &Arc<ConnectionHandle>, text: &str) -> String {
    let config = rt.config();
    let result =
        decode_command(text, config.max_topic_length).and_then(|cmd| execute(rt, handle, cmd));
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

fn execute(
    rt: &Realtime,
    handle: &Arc<ConnectionHandle>,
    cmd: Command,
) -> Result<String, ProtocolError> {
    let policy = &rt.config().topic_policy;
    let forbidden = |reference: &Option<serde_json::Value>, e: realtime_core::policy::Denied| {
        ProtocolError::new(reference.clone(), ErrorCode::Forbidden, e.to_string())
    };
    match cmd {
        Command::Subscribe { topic, reference } => {
            policy
                .can_subscribe(handle.info(), &topic)
                .map_err(|e| forbidden(&reference, e))?;
            rt.inner.registry.subscribe(handle, &topic).map_err(|_| {
                ProtocolError::new(
                    reference.clone(),
                    ErrorCode::Internal,
                    "connection is closing",
                )
            })?;
            Ok(ServerFrame::Subscribed {
                topic: topic.as_str(),
                reference: reference.as_ref(),
            }
            .to_json())
        }
        Command::Unsubscribe { topic, reference } => {
            rt.inner.registry.unsubscribe(handle, topic.as_str());
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
                .map_err(|e| forbidden(&reference, e))?;
            let prepared = PreparedMessage::from_map(message, &now_rfc3339(), Some(&topic))
                .map_err(|e| {
                    ProtocolError::new(reference.clone(), ErrorCode::BadRequest, e.to_string())
                })?;
            let delivered = rt.deliver(&Route::Topic(topic), prepared);
            Ok(ServerFrame::Published {
                reference: reference.as_ref(),
                delivered,
            }
            .to_json())
        }
        Command::Ping { reference } => Ok(ServerFrame::Pong {
            reference: reference.as_ref(),
        }
        .to_json()),
    }
}
