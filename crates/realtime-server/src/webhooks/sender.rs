//! The webhook sender: takes events from the engine's [`EventQueue`], POSTs each
//! signed to the receiver with up to [`MAX_IN_FLIGHT`] at once, retries anything
//! but a 2xx after a doubling backoff, and marks each event done once delivered
//! or given up. Order between events is not kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use realtime::EventQueue;
use realtime::presence::QueuedEvent;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{Outcome, WebhookMetrics};
use super::sign;
use crate::config::{WebhookEndpoint, WebhookSettings};
use crate::outbound;

/// Events being delivered at once (posted or waiting to retry). Past it the
/// sender takes no more from the queue, which then holds them (and counts what
/// it has to drop once full).
pub const MAX_IN_FLIGHT: usize = 16;

/// The first retry waits this long; each later one twice the one before.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// No retry waits longer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long to wait before asking a queue that failed (Redis down) again.
const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// The wait after failed attempt `attempt` (1-based): 1 s, 2 s, 4 s … capped at
/// 60 s, before a jitter of ±10% so that nodes retrying a receiver that came
/// back do not all hit it in the same instant.
pub fn backoff(attempt: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.9..=1.1))
}

/// A running sender; [`stop`](Self::stop) it on shutdown.
pub struct WebhookSender {
    cancel: CancellationToken,
    deliveries: TaskTracker,
    taking: JoinHandle<()>,
}

/// What every delivery shares.
struct Target {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
    max_attempts: u32,
    queue: Arc<dyn EventQueue>,
    metrics: WebhookMetrics,
    cancel: CancellationToken,
}

impl WebhookSender {
    /// Starts taking events from `queue` for `endpoint`. Must run inside a tokio
    /// runtime. Fails only when the URL (checked by the configuration) or the
    /// HTTP client cannot be built.
    pub fn start(
        queue: Arc<dyn EventQueue>,
        endpoint: &WebhookEndpoint,
        settings: &WebhookSettings,
        metrics: WebhookMetrics,
    ) -> Result<WebhookSender, String> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| e.to_string())?;
        // A redirect is an answer other than 2xx: retried, never followed.
        let client = outbound::client(settings.timeout)?;
        let cancel = CancellationToken::new();
        let target = Arc::new(Target {
            client,
            url,
            secret: endpoint.secret.as_bytes().to_vec(),
            max_attempts: settings.max_attempts.max(1),
            queue,
            metrics,
            cancel: cancel.clone(),
        });
        let deliveries = TaskTracker::new();
        let taking = tokio::spawn(take(target, deliveries.clone()));
        Ok(WebhookSender {
            cancel,
            deliveries,
            taking,
        })
    }

    /// Stops taking events, stops waiting retries (their events stay in the queue:
    /// with Redis a surviving node delivers them), and gives attempts in flight
    /// until `deadline` to finish. Returns whether every delivery ended in time.
    pub async fn stop(self, deadline: tokio::time::Instant) -> bool {
        self.cancel.cancel();
        let _ = self.taking.await;
        self.deliveries.close();
        let ended = tokio::time::timeout_at(deadline, self.deliveries.wait())
            .await
            .is_ok();
        if !ended {
            tracing::warn!("webhook deliveries still in flight at shutdown");
        }
        ended
    }
}

/// Takes events while a delivery slot is free, until cancelled.
async fn take(target: Arc<Target>, deliveries: TaskTracker) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut queue_down = false;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = target.cancel.cancelled() => return,
        };
        let next = tokio::select! {
            next = target.queue.next() => next,
            () = target.cancel.cancelled() => return,
        };
        match next {
            Ok(queued) => {
                if queue_down {
                    tracing::info!("webhook event queue reachable again");
                    queue_down = false;
                }
                target.metrics.event(queued.event.kind);
                let target = target.clone();
                deliveries.spawn(async move {
                    target.metrics.in_flight.inc();
                    deliver(&target, queued).await;
                    target.metrics.in_flight.dec();
                    drop(slot);
                });
            }
            Err(e) => {
                if !queue_down {
                    tracing::warn!(error = %e, "webhook event queue unavailable; retrying");
                    queue_down = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(QUEUE_RETRY) => {}
                    () = target.cancel.cancelled() => return,
                }
            }
        }
    }
}

/// Attempts `queued` until a 2xx or `max_attempts`, then marks it done. A stop
/// during a backoff leaves it in the queue.
async fn deliver(target: &Target, queued: QueuedEvent) {
    let body = queued.event.to_json();
    let signature = sign::signature(&target.secret, body.as_bytes());
    let kind = queued.event.kind.as_str();
    let id = queued.event.id.as_str();
    for attempt in 1..=target.max_attempts {
        let started = Instant::now();
        let result = target
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, &signature)
            .header("x-realtime-event", kind)
            .header("x-realtime-event-id", id)
            .body(body.clone())
            .send()
            .await;
        target
            .metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
        let failure = match result {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("answered {}", answer.status())),
            Err(e) => Some(outbound::error_text(&e)),
        };
        let Some(reason) = failure else {
            target.metrics.outcome(Outcome::Delivered);
            tracing::debug!(id, kind, attempt, "webhook event delivered");
            break;
        };
        if attempt == target.max_attempts {
            target.metrics.outcome(Outcome::Failed);
            tracing::warn!(id, kind, attempts = attempt, %reason, "webhook event given up");
            break;
        }
        target.metrics.outcome(Outcome::Retried);
        tracing::debug!(id, kind, attempt, %reason, "webhook attempt failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(jittered(backoff(attempt))) => {}
            () = target.cancel.cancelled() => return,
        }
    }
    if let Err(e) = target.queue.done(&queued.key).await {
        // Still claimed: it will be handed out again (at least once).
        tracing::warn!(id, error = %e, "cannot mark a webhook event done");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(9) && j <= Duration::from_secs(11),
                "{j:?}"
            );
        }
    }
}
