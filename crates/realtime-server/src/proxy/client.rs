//! One proxy hook's HTTP calls: the JSON body signed like a webhook
//! (`X-Realtime-Signature`), POSTed with at most `proxy_max_concurrency` in
//! flight at the backend, each caller's wait bounded by `proxy_timeout` from
//! the moment it asks for a slot; the answer read (bounded), judged by the
//! hook, and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realtime::hooks::{HookRefusal, RefusalKind};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::metrics::{Hook, Outcome, ProxyMetrics};
use super::reply::Failure;
use crate::outbound;
use crate::webhooks::sign;

/// The largest answer read; a longer one is garbage.
pub const MAX_ANSWER: usize = 1 << 20;

/// How many `proxy_timeout`s an exchange the caller gave up on may keep its
/// slot while the backend is still answering: the HTTP client's own timeout.
pub const ABANDON_AFTER: u32 = 10;

/// The reason of every refusal for want of an answer.
pub const UNAVAILABLE: &str = "proxy_unavailable";

/// How a call that got an answer ended without allowing.
#[derive(Debug)]
pub enum Denied {
    /// The backend refused: its reason and message.
    Refused(HookRefusal),
    /// No usable decision.
    Failed(Failure),
}

impl From<Failure> for Denied {
    fn from(failure: Failure) -> Self {
        Denied::Failed(failure)
    }
}

/// Where and how one hook calls the backend.
pub struct ProxyClient {
    hook: Hook,
    http: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    metrics: ProxyMetrics,
    /// Whether the last call failed, so a backend that goes down is logged
    /// once as a warning (and its return once), not at every handshake.
    failing: AtomicBool,
}

/// What every client of the three hooks shares.
pub struct Shared {
    pub http: reqwest::Client,
    pub secret: Vec<u8>,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub metrics: ProxyMetrics,
}

impl ProxyClient {
    pub fn new(hook: Hook, url: &str, shared: &Shared) -> Result<ProxyClient, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(ProxyClient {
            hook,
            http: shared.http.clone(),
            url,
            secret: shared.secret.clone(),
            timeout: shared.timeout,
            slots: Arc::new(Semaphore::new(shared.max_concurrency)),
            metrics: shared.metrics.clone(),
            failing: AtomicBool::new(false),
        })
    }

    /// POSTs `body` and lets `judge` read the JSON answer; counts the outcome.
    /// Anything but the backend's own decision refuses as unavailable.
    pub async fn call<T>(
        &self,
        body: Vec<u8>,
        judge: impl FnOnce(Value) -> Result<T, Denied>,
    ) -> Result<T, HookRefusal> {
        let started = Instant::now();
        let decided = match self.post(body, started + self.timeout).await {
            Ok(answer) => judge(answer),
            Err(failure) => Err(Denied::Failed(failure)),
        };
        let (outcome, result) = match decided {
            Ok(value) => (Outcome::Allowed, Ok(value)),
            Err(Denied::Refused(refusal)) => (Outcome::Refused, Err(refusal)),
            Err(Denied::Failed(failure)) => (Outcome::Unavailable, Err(self.unavailable(&failure))),
        };
        self.metrics.observe(self.hook, outcome, started.elapsed());
        if outcome != Outcome::Unavailable && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(hook = self.hook.as_str(), "proxy answering again");
        }
        result
    }

    /// The refusal for a call that got no decision, logged.
    fn unavailable(&self, failure: &Failure) -> HookRefusal {
        let hook = self.hook.as_str();
        let detail = failure.detail(hook);
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(hook, %detail, "proxy unavailable; refused");
        } else {
            tracing::warn!(hook, %detail, "proxy unavailable; refusing until it answers");
        }
        HookRefusal::new(RefusalKind::Unavailable, UNAVAILABLE, failure.message(hook))
    }

    /// Takes a slot and has the signed body POSTed, waiting for the answer
    /// until `deadline`. The exchange runs on its own and keeps its slot until
    /// the backend answers (or [`ABANDON_AFTER`] timeouts pass), so a backend
    /// that is still working on calls the callers gave up on gets no more than
    /// `proxy_max_concurrency` of them at once.
    async fn post(&self, body: Vec<u8>, deadline: Instant) -> Result<Value, Failure> {
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| Failure::Busy)?
            .map_err(|_| Failure::Busy)?;
        let signature = sign::signature(&self.secret, &body);
        let request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, signature)
            .body(body);
        let hook = self.hook.as_str();
        let exchange = tokio::spawn(async move {
            let answer = exchange(request).await;
            drop(slot);
            answer
        });
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Err(Failure::Unreachable(format!("the call failed: {e}"))),
            Err(_) => {
                tracing::debug!(hook, "proxy call still running past the timeout");
                Err(Failure::TimedOut)
            }
        }
    }
}

/// Sends `request` and reads a 2xx answer of at most [`MAX_ANSWER`] bytes as JSON.
async fn exchange(request: reqwest::RequestBuilder) -> Result<Value, Failure> {
    let transport = |e: reqwest::Error| match e.is_timeout() {
        true => Failure::TimedOut,
        false => Failure::Unreachable(outbound::error_text(&e)),
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER as u64)
    {
        return Err(Failure::TooLarge);
    }
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if answer.len() + chunk.len() > MAX_ANSWER {
            return Err(Failure::TooLarge);
        }
        answer.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&answer).map_err(|e| Failure::NotJson(e.to_string()))
}
