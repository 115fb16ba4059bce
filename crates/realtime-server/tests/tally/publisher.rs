//! The steady publisher of the tally: per topic one lane per target node, each a
//! task posting `{"type":"m","seq":n}` through that node's HTTP API and sending its
//! next only once the last was answered, so the lanes of a topic publish at once.
//! `seq` counts the topic's publications (1, 2, ...) across its lanes. Keeps a log
//! of how every one was answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Position, WAIT};

/// Time between two publications of one lane. Pacing, not waiting: the tests
/// await what they need from the publisher's progress.
const PACE: Duration = Duration::from_millis(20);
/// Upper bound for one publish request: beyond the server's own request timeout
/// (60 s), so the server, not this client, decides how each one ends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);

/// How one publication was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: it must reach every subscriber. History topics answer its position.
    Accepted(Option<Position>),
    /// An error status: documented as "nothing was sent", so it must not arrive.
    Refused(String),
    /// No answer (the connection failed or broke): it may or may not have been
    /// published, so it may arrive, at most once.
    Unanswered(String),
}

/// Every publication on one topic: `outcomes[n - 1]` is how `seq` n was answered,
/// `via[n - 1]` which target's lane sent it.
#[derive(Debug, Clone, Default)]
pub struct TopicLog {
    pub outcomes: Vec<Outcome>,
    pub via: Vec<usize>,
}

impl TopicLog {
    pub fn outcome(&self, seq: u64) -> Option<&Outcome> {
        index(seq).and_then(|i| self.outcomes.get(i))
    }

    /// The lane (the target) that sent `seq`.
    pub fn via(&self, seq: u64) -> Option<usize> {
        index(seq).and_then(|i| self.via.get(i).copied())
    }

    /// Every lane that sent something.
    pub fn lanes(&self) -> std::collections::BTreeSet<usize> {
        self.via.iter().copied().collect()
    }

    pub fn accepted(&self) -> impl Iterator<Item = (u64, Option<&Position>)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Accepted(p) => Some((i as u64 + 1, p.as_ref())),
                _ => None,
            })
    }

    pub fn not_accepted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Accepted(_)))
            .count()
    }
}

fn index(seq: u64) -> Option<usize> {
    usize::try_from(seq).ok().and_then(|n| n.checked_sub(1))
}

/// Totals over every topic, for tests to await, and the highest `seq` answered
/// per topic, for tests to mark a moment.
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

/// What a topic's lanes recorded: `seq → (outcome, lane)`.
type Answers = BTreeMap<u64, (Outcome, usize)>;

pub struct Publisher {
    stop: watch::Sender<bool>,
    counts: watch::Receiver<Counts>,
    tasks: Vec<(String, JoinHandle<()>)>,
    logs: HashMap<String, Arc<Mutex<Answers>>>,
}

impl Publisher {
    /// Starts publishing on every topic: one lane per target (a base URL such as
    /// `http://127.0.0.1:4000`; the same target twice makes two lanes to it).
    pub fn start(topics: &[&str], targets: &[String]) -> Publisher {
        let (stop, stopped) = watch::channel(false);
        let (counted, counts) = watch::channel(Counts::default());
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        let mut logs = HashMap::new();
        for topic in topics {
            let answers = Arc::new(Mutex::new(Answers::new()));
            let next = Arc::new(AtomicU64::new(1));
            for (lane, target) in targets.iter().enumerate() {
                let task = tokio::spawn(publish_lane(
                    Lane {
                        http: http.clone(),
                        topic: (*topic).to_owned(),
                        lane,
                        target: target.clone(),
                        next: next.clone(),
                        answers: answers.clone(),
                    },
                    stopped.clone(),
                    counted.clone(),
                ));
                tasks.push(((*topic).to_owned(), task));
            }
            logs.insert((*topic).to_owned(), answers);
        }
        Publisher {
            stop,
            counts,
            tasks,
            logs,
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
    pub async fn wait_accepted_beyond(&mut self, from: &Counts, n: usize) {
        self.wait_for(&format!("{n} more accepted"), |c| {
            c.accepted >= from.accepted + n
        })
        .await;
    }

    /// Stops publishing (each lane finishes the request in flight) and returns
    /// every topic's log.
    pub async fn stop(self) -> HashMap<String, TopicLog> {
        let _ = self.stop.send(true);
        for (topic, task) in self.tasks {
            task.await
                .unwrap_or_else(|e| panic!("publisher lane of {topic}: {e}"));
        }
        let mut logs = HashMap::new();
        for (topic, answers) in self.logs {
            let answers = std::mem::take(&mut *answers.lock().unwrap());
            let mut log = TopicLog::default();
            for (k, (seq, (outcome, lane))) in answers.into_iter().enumerate() {
                // Every seq handed out was answered before its lane stopped.
                assert_eq!(seq, k as u64 + 1, "{topic}: the log has no hole");
                log.outcomes.push(outcome);
                log.via.push(lane);
            }
            logs.insert(topic, log);
        }
        logs
    }
}

/// One lane of one topic.
struct Lane {
    http: reqwest::Client,
    topic: String,
    lane: usize,
    target: String,
    /// The topic's next `seq`, shared by its lanes.
    next: Arc<AtomicU64>,
    answers: Arc<Mutex<Answers>>,
}

async fn publish_lane(
    lane: Lane,
    mut stopped: watch::Receiver<bool>,
    counted: watch::Sender<Counts>,
) {
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pace.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let seq = lane.next.fetch_add(1, Ordering::Relaxed);
        let outcome = publish(&lane.http, &lane.target, &lane.topic, seq).await;
        counted.send_modify(|c| {
            if matches!(outcome, Outcome::Accepted(_)) {
                c.accepted += 1;
            } else {
                c.not_accepted += 1;
            }
            let answered = c.answered.entry(lane.topic.clone()).or_default();
            *answered = (*answered).max(seq);
        });
        lane.answers
            .lock()
            .unwrap()
            .insert(seq, (outcome, lane.lane));
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
        Err(e) => return Outcome::Unanswered(format!("{e:?}")),
    };
    let status = response.status();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(e) if status.is_success() => return Outcome::Unanswered(format!("{e:?}")),
        Err(_) => Value::Null,
    };
    if !status.is_success() {
        return Outcome::Refused(format!("{status} {body}"));
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
