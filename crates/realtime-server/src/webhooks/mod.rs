//! Webhooks: presence events (`user.online`, `user.offline`, `topic.occupied`,
//! `topic.vacated`) drained from the engine's event queue and POSTed, signed, to
//! the configured receiver, at least once, with capped retries.

mod metrics;
mod sender;
pub mod sign;

pub use crate::outbound::user_agent;
pub use metrics::WebhookMetrics;
pub use sender::{MAX_IN_FLIGHT, WebhookSender, backoff};
