//! Whether a connection may subscribe to (or read) a topic and publish on it:
//! the topic policy first, then, for namespaces that name them, the backend's
//! subscribe and publish hooks. Every transport and command asks here, so a
//! WebSocket subscribe, an SSE stream's topics and a `history` read are decided
//! alike. A namespace that names a hook the configuration does not set refuses
//! as unavailable: the backend that was to decide is not there, so nothing is
//! allowed without it.

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
    /// The topic policy, then the subscribe hook when `topic`'s namespace names it
    /// (refused as unavailable when no subscribe hook is set).
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
        if !config.topic_policy.proxy_for(topic.as_str()).subscribe {
            return Ok(());
        }
        match &config.hooks.subscribe {
            Some(hook) => hook.subscribe(info, topic).await.map_err(Refused::from),
            None => Err(no_hook("subscribe")),
        }
    }

    /// The topic policy, then the publish hook when `topic`'s namespace names it;
    /// returns the message to publish (the client's, or the hook's replacement).
    /// Refused as unavailable when the namespace names it and no publish hook is set.
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
        if !config.topic_policy.proxy_for(topic.as_str()).publish {
            return Ok(message);
        }
        let Some(hook) = &config.hooks.publish else {
            return Err(no_hook("publish"));
        };
        match hook.publish(info, topic, &message).await? {
            PublishVerdict::Allow => Ok(message),
            PublishVerdict::Replace(replacement) => Ok(replacement),
        }
    }
}

/// The refusal for a namespace naming the `hook` hook when none is set.
fn no_hook(hook: &str) -> Refused {
    Refused {
        code: ErrorCode::ProxyUnavailable,
        reason: "proxy_unavailable".into(),
        message: format!("this topic's namespace names the {hook} hook, but none is set"),
    }
}
