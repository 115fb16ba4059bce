//! The steady publisher of the tally: one task per topic posting `{"type":"m","seq":n}`
//! through the HTTP API, n = 1, 2, ... in order, each request answered before the
//! next is sent, and a log of how every one was answered.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Position, WAIT};

/// Time between two publications on one topic. Pacing, not waiting: the tests
/// await what they need from the publisher's progress.
const PACE: Duration = Duration::from_millis(20);
/// Upper bound for one publish request; one that takes longer is counted as not
/// accepted (it may still have been applied).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How one publication was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: it must reach every subscriber. History topics answer its position.
    Accepted(Option<Position>),
    /// Refused, failed or timed out: not expected, but it may have been applied, so
    /// it may arrive (at most once, in order).
    NotAccepted(String),
}

/// Every publication on one topic: `outcomes[n - 1]` is how `seq` n was answered,
/// `via[n - 1]` which of the targets it was sent to.
#[derive(Debug, Clone, Default)]
pub struct TopicLog {
    pub outcomes: Vec<Outcome>,
    pub via: Vec<usize>,
}

impl TopicLog {
    /// The target `seq` was sent to.
    pub fn via(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.via.get(i).copied())
    }

    /// Every target publications were sent to.
    pub fn targets(&self) -> std::collections::BTreeSet<usize> {
        self.via.iter().copied().collect()
    }

    pub fn outcome(&self, seq: u64) -> Option<&Outcome> {
        usize::try_from(seq)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| self.outcomes.get(i))
    }

    pub fn accepted(&self) -> impl Iterator<Item = (u64, Option<&Position>)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Accepted(p) => Some((i as u64 + 1, p.as_ref())),
                Outcome::NotAccepted(_) => None,
            })
    }

    pub fn not_accepted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::NotAccepted(_)))
            .count()
    }
}

/// Totals over every topic, for tests to await, and the last `seq` answered per
/// topic, for tests to mark a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: usize,
    pub not_accepted: usize,
    pub answered: HashMap<String, u64>,
}

impl Counts {
    pub fn answered(&self, topic: &str) -> u64 {
        self.answered.get(topic).copied().unwrap_or(0)
    }
}

pub struct Publisher {
    stop: watch::Sender<bool>,
    counts: watch::Receiver<Counts>,
    tasks: Vec<(String, JoinHandle<TopicLog>)>,
}

impl Publisher {
    /// Starts publishing on every topic, through `targets` (base URLs such as
    /// `http://127.0.0.1:4000`) in turn.
    pub fn start(topics: &[&str], targets: &[String]) -> Publisher {
        let (stop, stopped) = watch::channel(false);
        let (counted, counts) = watch::channel(Counts::default());
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        let tasks = topics
            .iter()
            .map(|topic| {
                let task = tokio::spawn(publish_topic(
                    http.clone(),
                    (*topic).to_owned(),
                    targets.to_vec(),
                    stopped.clone(),
                    counted.clone(),
                ));
                ((*topic).to_owned(), task)
            })
            .collect();
        Publisher {
            stop,
            counts,
            tasks,
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts.borrow().clone()
    }

    /// Waits (bounded by [`WAIT`]) until the totals satisfy `done`.
    pub async fn wait_for(&mut self, what: &str, done: impl Fn(&Counts) -> bool) {
        let reached = tokio::time::timeout(WAIT, self.counts.wait_for(|c| done(c))).await;
        assert!(
            reached.is_ok_and(|r| r.is_ok()),
            "publisher: {what} not reached within {WAIT:?}; counts {:?}",
            self.counts()
        );
    }

    /// Waits until `n` more publications were accepted than `from` counted.
    pub async fn wait_accepted_beyond(&mut self, from: Counts, n: usize) {
        self.wait_for(&format!("{n} more accepted"), |c| {
            c.accepted >= from.accepted + n
        })
        .await;
    }

    /// Waits until `n` more publications were not accepted than `from` counted.
    pub async fn wait_refused_beyond(&mut self, from: Counts, n: usize) {
        self.wait_for(&format!("{n} more refused"), |c| {
            c.not_accepted >= from.not_accepted + n
        })
        .await;
    }

    /// Stops publishing (each topic finishes the request in flight) and returns
    /// every topic's log.
    pub async fn stop(self) -> HashMap<String, TopicLog> {
        let _ = self.stop.send(true);
        let mut logs = HashMap::new();
        for (topic, task) in self.tasks {
            logs.insert(topic, task.await.expect("publisher task"));
        }
        logs
    }
}

async fn publish_topic(
    http: reqwest::Client,
    topic: String,
    targets: Vec<String>,
    mut stopped: watch::Receiver<bool>,
    counted: watch::Sender<Counts>,
) -> TopicLog {
    let mut log = TopicLog::default();
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pace.tick() => {}
            _ = stopped.wait_for(|s| *s) => return log,
        }
        let seq = log.outcomes.len() as u64 + 1;
        let via = log.outcomes.len() % targets.len();
        let outcome = publish(&http, &targets[via], &topic, seq).await;
        counted.send_modify(|c| {
            match outcome {
                Outcome::Accepted(_) => c.accepted += 1,
                Outcome::NotAccepted(_) => c.not_accepted += 1,
            }
            c.answered.insert(topic.clone(), seq);
        });
        log.outcomes.push(outcome);
        log.via.push(via);
    }
}

async fn publish(http: &reqwest::Client, target: &str, topic: &str, seq: u64) -> Outcome {
    let sent = http
        .post(format!("{target}/api/topics/{topic}/messages"))
        .bearer_auth(crate::common::API_KEY)
        .json(&json!({"type": "m", "seq": seq}))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::NotAccepted(format!("request failed: {e}")),
    };
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Outcome::NotAccepted(format!("{status} {body}"));
    }
    let position = match (body["offset"].as_u64(), body["epoch"].as_str()) {
        (Some(offset), Some(epoch)) => Some(Position {
            offset,
            epoch: epoch.to_owned(),
        }),
        _ => None,
    };
    Outcome::Accepted(position)
}
