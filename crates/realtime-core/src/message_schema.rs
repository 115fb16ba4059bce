//! The OpenAPI schemas of the messages [`PreparedMessage`](crate::PreparedMessage)
//! accepts, written beside its rules: a JSON object with a string `type`, and
//! `topic` only on the topic route (where the server sets it).

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Any JSON object with a string `type`; other members are the sender's.
fn message(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "What the message is, for the receiver to dispatch on.",
                )),
        )
        .required("type")
        .examples([json!({"type": "notification", "text": "New message received"})])
}

/// The body of a send to a user, a role, a connection or everyone. It may not
/// carry `topic`: only messages that came through a topic have one
/// ([`MessageError::ReservedTopic`](crate::MessageError::ReservedTopic)).
pub struct RouteMessage;

impl PartialSchema for RouteMessage {
    fn schema() -> RefOr<Schema> {
        // JSON Schema's `not`, which utoipa's builder does not model, as a raw keyword.
        let no_topic = Extensions::from_iter([("not", json!({"required": ["topic"]}))]);
        message(
            "A JSON object with a string `type`, without `topic`. The server adds \
             `timestamp` (RFC 3339 UTC, milliseconds) when absent.",
        )
        .extensions(Some(no_topic))
        .into()
    }
}

impl ToSchema for RouteMessage {}

/// The body of a publish to a topic: the server sets `topic` (overwriting any
/// sent). On a topic whose namespace keeps history it may not carry `offset` or
/// `epoch` ([`MessageError::ReservedPosition`](crate::MessageError::ReservedPosition)),
/// which depends on the server's configuration, so the schema says it in words.
pub struct TopicMessage;

impl PartialSchema for TopicMessage {
    fn schema() -> RefOr<Schema> {
        message(
            "A JSON object with a string `type`. The server sets `topic` and adds \
             `timestamp` when absent; on a topic whose namespace keeps history it adds \
             `offset` and `epoch`, and a message that carries either is refused \
             (400 `invalid_message`).",
        )
        .into()
    }
}

impl ToSchema for TopicMessage {}
