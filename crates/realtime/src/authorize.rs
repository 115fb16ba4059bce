//! Whether a connection may subscribe to (or read) a topic and publish on it:
//! the topic policy first, then, for namespaces that name them, the backend's
//! subscribe and publish hooks. Every transport and command asks here, so a
//! WebSocket subscribe, an SSE stream's topics and a `history` read are decided
//! alike.

use realtime_core::{ConnectionInfo, ErrorCode, Topic};
use serde_json::{Map, Value};

use crate::hooks::{HookRefusal, PublishVerdict};
use crate::service::Realtime;

/// Why a connection may not subscribe or publish: the error code and message a
/// command answers with, and the stable reason (the policy's or the hook's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl From<HookRefusal> for Refused {
    fn from(refusal: HookRefusal) -> Self {
        Refused {
            code: refusal.error_code(),
            reason: refusal.reason,
            message: refusal.message,
        }
    }
}

impl Realtime {
    /// The topic policy, then the subscribe hook when `topic`'s namespace names it.
    pub(crate) async fn may_subscribe(
        &self,
        info: &ConnectionInfo,
        topic: &Topic,
    ) -> Result<(), Refused> {
        let config = self.config();
        config
            .topic_policy
            .can_subscribe(info, topic)
            .map_err(|e| Refused {
                code: ErrorCode::Forbidden,
                reason: "forbidden".into(),
                message: e.to_string(),
            })?;
        match &config.hooks.subscribe {
            Some(hook) if config.topic_policy.proxy_for(topic.as_str()).subscribe => {
                hook.subscribe(info, topic).await.map_err(Refused::from)
            }
            _ => Ok(()),
        }
    }

    /// The topic policy, then the publish hook when `topic`'s namespace names it;
    /// returns the message to publish (the client's, or the hook's replacement).
    pub(crate) async fn may_publish(
        &self,
        info: &ConnectionInfo,
        topic: &Topic,
        message: Map<String, Value>,
    ) -> Result<Map<String, Value>, Refused> {
        let config = self.config();
        config
            .topic_policy
            .can_publish(info, topic)
            .map_err(|e| Refused {
                code: ErrorCode::Forbidden,
                reason: "forbidden".into(),
                message: e.to_string(),
            })?;
        match &config.hooks.publish {
            Some(hook) if config.topic_policy.proxy_for(topic.as_str()).publish => {
                match hook.publish(info, topic, &message).await? {
                    PublishVerdict::Allow => Ok(message),
                    PublishVerdict::Replace(replacement) => Ok(replacement),
                }
            }
            _ => Ok(message),
        }
    }
}
