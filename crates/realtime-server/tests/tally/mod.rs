//! An independent tally for the multi-node history tests: a steady publisher that
//! numbers each topic's messages (`seq` in the body), subscribers that record every
//! frame they receive, and the check of one against the other. Also the two-node
//! cluster these tests run on: real `realtime-server` processes reading a config
//! file with a history namespace, sharing a real `redis-server`.
//!
//! With `TALLY_DUMP` set, every subscriber's record is also written to
//! `/tmp/tally-<subscriber>-<topic>.txt`, one event a line, for reading a failure.
#![allow(dead_code)]

mod check;
mod publisher;
mod subscriber;

use std::collections::HashMap;
use std::time::Duration;

pub use check::{Verdict, check};
pub use publisher::{Publisher, TopicLog};
pub use realtime_core::history::Position;
pub use subscriber::Subscriber;

use crate::processes::{ConfigFile, Node};

/// Upper bound for anything the tally awaits, generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Topics under `feed` keep a long history, topics under `brief` the last 5
/// publications; every other topic keeps none.
pub const CONFIG: &str = r#"
[[namespaces]]
pattern = "feed"
subscribe = "authenticated"
publish = "nobody"
history_size = 10000
history_ttl = "10m"

[[namespaces]]
pattern = "brief"
subscribe = "authenticated"
publish = "nobody"
history_size = 5
history_ttl = "10m"
"#;

/// Whether [`CONFIG`] gives `topic` a history.
pub fn keeps_history(topic: &str) -> bool {
    topic.starts_with("feed:") || topic.starts_with("brief:")
}

/// The Redis links of a node; each logs `redis link connected` / `restored` when
/// it comes up and `redis link down` when it fails, as its state changes.
pub const LINKS: [&str; 3] = ["subscriber", "publisher", "directory"];

/// Two nodes on one Redis, reading [`CONFIG`].
pub struct Cluster {
    pub a: Node,
    pub b: Node,
    _config: ConfigFile,
}

impl Cluster {
    pub async fn start(redis_url: &str) -> Cluster {
        Self::start_with(redis_url, redis_url).await
    }

    /// Node A reaches Redis at `a_url`, node B at `b_url` (e.g. through a gate).
    pub async fn start_with(a_url: &str, b_url: &str) -> Cluster {
        let config = ConfigFile::write(CONFIG);
        let env = [("REALTIME_CONFIG", config.path())];
        let mut a = Node::start(a_url, "a", &env).await;
        let mut b = Node::start(b_url, "b", &env).await;
        for node in [&mut a, &mut b] {
            links_logged(node, 0, "redis link connected").await;
        }
        Cluster {
            a,
            b,
            _config: config,
        }
    }

    pub fn nodes(&mut self) -> [&mut Node; 2] {
        [&mut self.a, &mut self.b]
    }
}

/// Waits (bounded by [`WAIT`]) until every Redis link of `node` logged `event`
/// after `mark`.
pub async fn links_logged(node: &mut Node, mark: usize, event: &str) {
    for link in LINKS {
        link_logged(node, mark, event, link).await;
    }
}

/// Waits (bounded by [`WAIT`]) until `node`'s Redis link `link` logged `event`
/// after `mark`.
pub async fn link_logged(node: &mut Node, mark: usize, event: &str, link: &str) {
    node.wait_for_log_within(mark, &[event, &format!("link=\"{link}\"")], WAIT)
        .await;
}

/// The node's HTTP base URL.
pub fn base(node: &Node) -> String {
    format!("http://{}", node.addr)
}

/// A WebSocket URL on `node` for a user of its own.
pub fn ws(node: &Node, user: &str) -> String {
    node.ws_url(&crate::common::token(user, &[]))
}

/// Per topic, the last accepted `seq` of each lane: once those arrived, nothing
/// accepted before them is still on its way.
pub fn last_accepted(logs: &HashMap<String, TopicLog>) -> HashMap<String, Vec<u64>> {
    logs.iter()
        .map(|(t, log)| {
            let mut last = HashMap::new();
            for (seq, _) in log.accepted() {
                last.insert(log.via(seq), seq);
            }
            (t.clone(), last.into_values().collect())
        })
        .collect()
}

/// Waits until every subscriber received each topic's last accepted publication,
/// then ends them and checks each one: `(subscriber, topic) → verdict`.
pub async fn settle(
    subscribers: Vec<Subscriber>,
    logs: &HashMap<String, TopicLog>,
) -> HashMap<(String, String), Verdict> {
    let last = last_accepted(logs);
    let mut verdicts = HashMap::new();
    for mut subscriber in subscribers {
        let own: HashMap<String, Vec<u64>> = last
            .iter()
            .filter(|(t, _)| subscriber.topics.contains(t))
            .map(|(t, seqs)| (t.clone(), seqs.clone()))
            .collect();
        // One that never gets there fails in the check below, with its record.
        subscriber.received_all(&own).await;
        let name = subscriber.name.clone();
        for (topic, events) in subscriber.finish().await {
            if std::env::var_os("TALLY_DUMP").is_some() {
                let text: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
                std::fs::write(format!("/tmp/tally-{name}-{topic}.txt"), text.join("\n")).unwrap();
            }
            let history = keeps_history(&topic);
            let who = format!("subscriber {name}, topic {topic}");
            let verdict = check(&who, history, &events, &logs[&topic]);
            println!(
                "{who}: received {}, lost {:?}, arrived unaccepted {:?}, notices {:?}, epochs {}, disconnects {}, resubscribed {:?}",
                verdict.received,
                verdict.lost,
                verdict.arrived_unaccepted,
                verdict.notices,
                verdict.epochs.len(),
                verdict.disconnects,
                verdict.resubscribed
            );
            verdicts.insert((name.clone(), topic), verdict);
        }
    }
    verdicts
}
