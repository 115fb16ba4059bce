//! The publish proxy: for a client publish on a namespace with
//! `publish_proxy = true`, POSTs the connection, the topic and the message and
//! reads allow (`{"result": {}}`), replace (`{"result": {"message": {..}}}`) or
//! deny (`{"error": {"reason", "message"}}`, `forbidden` to the client).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use realtime::hooks::{HookRefusal, PublishHook, PublishVerdict};
use realtime_core::{ConnectionInfo, Topic};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{Denied, ProxyClient};
use super::reply::{self, Answer, Failure, Refusal};
use super::subscribe::denied;

/// The [`PublishHook`] that asks the backend.
pub struct PublishProxy {
    client: Arc<ProxyClient>,
}

impl PublishProxy {
    pub fn new(client: ProxyClient) -> PublishProxy {
        PublishProxy {
            client: Arc::new(client),
        }
    }
}

/// `{"result": ...}` of a publish answer: a replacement message, or none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    #[serde(default)]
    message: Option<Map<String, Value>>,
}

impl PublishHook for PublishProxy {
    fn publish(
        &self,
        connection: &ConnectionInfo,
        topic: &Topic,
        message: &Map<String, Value>,
    ) -> BoxFuture<'static, Result<PublishVerdict, HookRefusal>> {
        let body = json!({
            "user": connection.user_id,
            "roles": connection.roles,
            "connection_id": connection.id,
            "topic": topic,
            "message": message,
        })
        .to_string()
        .into_bytes();
        let client = self.client.clone();
        Box::pin(async move { client.call(body, judge).await })
    }
}

/// Allow, replace or deny. A replacement without a string `type` is a wrong
/// shape (the backend's fault, refused as unavailable), not a bad client message.
fn judge(answer: Value) -> Result<PublishVerdict, Denied> {
    match reply::answer::<Published, Refusal>(answer)? {
        Answer::Result(Published { message: None }) => Ok(PublishVerdict::Allow),
        Answer::Result(Published {
            message: Some(replacement),
        }) => match replacement.get("type") {
            Some(Value::String(_)) => Ok(PublishVerdict::Replace(replacement)),
            _ => {
                Err(Failure::Shape("the replacement `message` needs a string `type`".into()).into())
            }
        },
        Answer::Error(refusal) => Err(denied(refusal.checked()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_replace_deny_or_garbage() {
        assert_eq!(judge(json!({"result": {}})).unwrap(), PublishVerdict::Allow);
        let replaced =
            judge(json!({"result": {"message": {"type": "chat", "text": "***"}}})).unwrap();
        let PublishVerdict::Replace(message) = replaced else {
            panic!("{replaced:?}")
        };
        assert_eq!(
            Value::Object(message),
            json!({"type": "chat", "text": "***"})
        );
        assert!(matches!(
            judge(json!({"error": {"reason": "spam"}})),
            Err(Denied::Refused(_))
        ));
        for garbage in [
            json!({"result": {"message": "text"}}),
            json!({"result": {"message": [1]}}),
            json!({"result": {"replace": {}}}),
            json!({"result": {"message": {"text": "***"}}}),
            json!({"result": {"message": {"type": 7}}}),
        ] {
            assert!(
                matches!(
                    judge(garbage.clone()),
                    Err(Denied::Failed(Failure::Shape(_)))
                ),
                "{garbage}"
            );
        }
    }
}
