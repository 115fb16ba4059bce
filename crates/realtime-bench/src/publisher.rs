//! The publisher: posts numbered, timestamped messages of a fixed size at a fixed
//! rate to the servers' HTTP publish endpoints (keep-alive connections, bounded
//! concurrency), and remembers which ones each server accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::servers::{API_KEY, Kind};
use crate::tracker::now_us;

/// Most publish requests in flight at once.
const IN_FLIGHT: usize = 256;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub kind: Kind,
    /// Nodes to publish through, used in turn.
    pub nodes: Vec<SocketAddr>,
    /// Topics to publish to, used in turn (ignored by the ceiling).
    pub topics: Vec<String>,
    /// Publishes per second.
    pub rate: f64,
    pub duration: Duration,
    /// Size of each message body in bytes (the payload is padded to it).
    pub size: usize,
}

/// Which publishes the servers accepted.
#[derive(Debug, Default)]
pub struct Published {
    /// Accepted sequence numbers per topic index.
    pub accepted: Vec<Vec<u64>>,
    pub failed: u64,
    /// Wall time from the first publish to the last answer.
    pub elapsed: Duration,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.accepted.iter().map(|a| a.len() as u64).sum()
    }
}

/// Publishes for `plan.duration` at `plan.rate`, then waits for every answer.
/// `on_tick` is called with the number sent so far, for progress bars.
pub async fn run(plan: &PublishPlan, on_tick: impl Fn(u64)) -> Published {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IN_FLIGHT)
        .build_http();
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    for seq in 0..total {
        ticks.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let topic = (seq as usize) % plan.topics.len().max(1);
        let node = plan.nodes[(seq as usize) % plan.nodes.len()];
        let request = request(plan, node, topic, seq);
        let client = client.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let ok = match client.request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let _ = response.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            };
            drop(permit);
            let _ = done.send((seq, topic, ok));
        });
        on_tick(seq + 1);
    }
    drop(done_tx);
    let mut published = Published {
        accepted: vec![Vec::new(); plan.topics.len().max(1)],
        ..Published::default()
    };
    while let Some((seq, topic, ok)) = done_rx.recv().await {
        if ok {
            published.accepted[topic].push(seq);
        } else {
            published.failed += 1;
        }
    }
    published.elapsed = start.elapsed();
    published
}

fn request(
    plan: &PublishPlan,
    node: SocketAddr,
    topic: usize,
    seq: u64,
) -> hyper::Request<Full<Bytes>> {
    let body = payload(seq, plan.size);
    let topic_name = plan.topics.get(topic).map_or("bench", String::as_str);
    let builder = hyper::Request::post(match plan.kind {
        Kind::Realtime => format!("http://{node}/api/topics/{topic_name}/messages"),
        Kind::Ceiling => format!("http://{node}/publish"),
        Kind::SocketIo if plan.topics.len() > 1 => {
            format!("http://{node}/publish?room={topic_name}")
        }
        Kind::SocketIo => format!("http://{node}/publish"),
    })
    .header("content-type", "application/json")
    .header("authorization", format!("Bearer {API_KEY}"));
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("valid request")
}

/// A message of about `size` bytes: `{"type":"bench","seq":N,"sent":T,"pad":"..."}`.
pub fn payload(seq: u64, size: usize) -> String {
    let head = format!(
        r#"{{"type":"bench","seq":{seq},"sent":{},"pad":""#,
        now_us()
    );
    let pad = size.saturating_sub(head.len() + 2);
    let mut body = String::with_capacity(head.len() + pad + 2);
    body.push_str(&head);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str("\"}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size_and_a_readable_stamp() {
        let body = payload(12, 100);
        assert_eq!(body.len(), 100);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["seq"], 12);
        assert_eq!(crate::tracker::parse_stamp(&body).unwrap().0, 12);
    }
}
