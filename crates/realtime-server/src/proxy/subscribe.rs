//! The subscribe proxy: for a client subscribe (or history / presence read) on
//! a namespace with `subscribe_proxy = true`, POSTs the connection and the
//! topic and reads allow (`{"result": {}}`) or deny (`{"error": {"reason",
//! "message"}}`, the `forbidden` error code to the client).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use realtime::hooks::{HookRefusal, RefusalKind, SubscribeHook};
use realtime_core::{ConnectionInfo, Topic};
use serde_json::{Value, json};

use super::client::{Denied, ProxyClient};
use super::reply::{self, Answer, Empty, Refusal};

/// The [`SubscribeHook`] that asks the backend.
pub struct SubscribeProxy {
    client: Arc<ProxyClient>,
}

impl SubscribeProxy {
    pub fn new(client: ProxyClient) -> SubscribeProxy {
        SubscribeProxy {
            client: Arc::new(client),
        }
    }
}

impl SubscribeHook for SubscribeProxy {
    fn subscribe(
        &self,
        connection: &ConnectionInfo,
        topic: &Topic,
    ) -> BoxFuture<'static, Result<(), HookRefusal>> {
        let body = json!({
            "user": connection.user_id,
            "roles": connection.roles,
            "connection_id": connection.id,
            "topic": topic,
            "metadata": connection.metadata,
        })
        .to_string()
        .into_bytes();
        let client = self.client.clone();
        Box::pin(async move { client.call(body, judge).await })
    }
}

fn judge(answer: Value) -> Result<(), Denied> {
    match reply::answer::<Empty, Refusal>(answer)? {
        Answer::Result(Empty {}) => Ok(()),
        Answer::Error(refusal) => Err(denied(refusal.checked()?)),
    }
}

/// A backend's refusal of a subscribe or publish: `forbidden` to the client.
pub(super) fn denied(refusal: Refusal) -> Denied {
    Denied::Refused(HookRefusal::new(
        RefusalKind::Forbidden,
        refusal.reason,
        refusal.message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::reply::Failure;

    #[test]
    fn allow_deny_or_garbage() {
        assert!(judge(json!({"result": {}})).is_ok());
        match judge(json!({"error": {"reason": "not_a_member", "message": "join first"}})) {
            Err(Denied::Refused(r)) => {
                assert_eq!(r.kind, RefusalKind::Forbidden);
                assert_eq!(
                    (r.reason.as_str(), r.message.as_str()),
                    ("not_a_member", "join first")
                );
            }
            other => panic!("{other:?}"),
        }
        for garbage in [
            json!({"result": {"allow": false}}),
            json!({"error": {"reason": "NO"}}),
            json!({"error": {"status": 403, "reason": "no"}}),
            json!({"allow": true}),
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
