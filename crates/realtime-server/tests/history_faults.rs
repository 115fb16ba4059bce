//! Real faults under a steady publisher, two real `realtime-server` processes and a
//! real `redis-server`: Redis killed with SIGKILL mid-stream (with and without
//! persistence), a topic without history across the same, one node cut off from
//! Redis while the other carries on, and a node killed with SIGKILL whose clients
//! move to the other node. The independent tally in `tally/`
//! holds every subscriber's record against the publisher's answers.

mod common;
mod gate;
mod processes;
mod tally;

use std::collections::HashMap;

use gate::Gate;
use processes::RedisWithArgs;
use tally::{
    Cluster, Publisher, Subscriber, TopicLog, Verdict, base, link_logged, links_logged, settle, ws,
};

/// What a run through a Redis crash left: every subscriber's verdict per topic,
/// the publisher's logs, and per topic the seqs answered while node B was kept
/// away from Redis (its subscribers can only get those by catching up).
struct Crash {
    verdicts: HashMap<(String, String), Verdict>,
    logs: HashMap<String, TopicLog>,
    away: HashMap<String, std::ops::RangeInclusive<u64>>,
}

impl Crash {
    /// How many publications accepted while B was away are on `topic`.
    fn accepted_while_away(&self, topic: &str) -> usize {
        let away = &self.away[topic];
        self.logs[topic]
            .accepted()
            .filter(|(seq, _)| away.contains(seq))
            .count()
    }
}

/// The subscriber that is away during the crash.
const AWAY: &str = "away@a";

/// Two subscribers on each node, each on every topic.
async fn subscribers(cluster: &Cluster, topics: &[&str]) -> Vec<Subscriber> {
    let mut all = Vec::new();
    for (node, label) in [(&cluster.a, "a"), (&cluster.b, "b")] {
        for k in 0..2 {
            let name = format!("s{k}@{label}");
            all.push(Subscriber::start(&name, ws(node, &name), topics, None).await);
        }
    }
    all
}

/// Waits until every subscriber received `n` messages on every topic.
async fn all_seen(subscribers: &mut [Subscriber], topics: &[&str], n: u64) {
    let seqs: HashMap<String, u64> = topics.iter().map(|t| ((*t).to_owned(), n)).collect();
    for s in subscribers {
        s.wait_seen(&seqs).await;
    }
}

/// Publishes through both nodes, kills Redis with SIGKILL once every subscriber is
/// receiving, keeps publishing through the outage (those are refused, or held
/// until Redis is back if they were already on their way), restarts
/// Redis on the same port, and keeps node B away from it (behind a closed gate)
/// until node A accepted more, so B's subscribers certainly have something to
/// catch up on; then lets B back and publishes on. One more subscriber, `AWAY`, is
/// cut off just before the crash and comes back (with `since`) only at the end.
/// Returns the tally of every subscriber.
async fn through_a_redis_crash(mut redis: RedisWithArgs, topics: &[&str]) -> Crash {
    let gate = Gate::start(redis.port).await;
    let mut cluster = Cluster::start_with(&redis.url(), &gate.url()).await;
    let mut subs = subscribers(&cluster, topics).await;
    subs.push(Subscriber::start(AWAY, ws(&cluster.a, AWAY), topics, None).await);
    let mut publisher = Publisher::start(topics, &[base(&cluster.a), base(&cluster.b)]);
    all_seen(&mut subs, topics, 10).await;
    let away = subs.last_mut().unwrap();
    away.cut().await;

    let marks = [cluster.a.log_mark(), cluster.b.log_mark()];
    redis.kill().await;
    for (node, mark) in cluster.nodes().into_iter().zip(marks) {
        for link in ["subscriber", "publisher"] {
            link_logged(node, mark, "redis link down", link).await;
        }
    }
    gate.close();
    let closed = publisher.counts();
    redis.restart().await;
    links_logged(&mut cluster.a, marks[0], "redis link restored").await;
    // A accepts again; B still refuses, and its subscribers hear nothing.
    publisher
        .wait_accepted_beyond(&publisher.counts(), 10 * topics.len())
        .await;
    gate.open();
    let opened = publisher.counts();
    links_logged(&mut cluster.b, marks[1], "redis link restored").await;
    subs.last_mut().unwrap().connect(ws(&cluster.a, AWAY)).await;
    publisher
        .wait_accepted_beyond(&publisher.counts(), 20 * topics.len())
        .await;
    let logs = publisher.stop().await;
    let away = topics
        .iter()
        .map(|t| {
            let seqs = closed.answered(t) + 1..=opened.answered(t);
            ((*t).to_owned(), seqs)
        })
        .collect();
    Crash {
        verdicts: settle(subs, &logs).await,
        logs,
        away,
    }
}

#[tokio::test]
async fn a_redis_crash_with_persistence_loses_nothing_on_history_topics() {
    const TOPICS: [&str; 2] = ["feed:durable-1", "feed:durable-2"];
    let crash = through_a_redis_crash(RedisWithArgs::durable().await, &TOPICS).await;
    for ((who, topic), v) in &crash.verdicts {
        // Nothing accepted was lost and no subscriber had to be told anything: the
        // nodes filled the gap themselves, and the one that was away recovered.
        assert!(v.lost.is_empty(), "{who} {topic}: {v:?}");
        assert!(v.notices.is_empty(), "{who} {topic}: {v:?}");
        if who == AWAY {
            assert_eq!(v.resubscribed, [Some(true)], "{who} {topic}: {v:?}");
        } else {
            assert_eq!(v.disconnects, 0, "{who} {topic}: {v:?}");
        }
        assert_eq!(
            v.epochs.len(),
            1,
            "{who} {topic}: the epoch survived: {v:?}"
        );
        assert_eq!(
            v.received,
            crash.logs[topic].accepted().count(),
            "{who} {topic}"
        );
    }
    // So B's subscribers received publications made while B could not hear any:
    // B read them from the history when its link returned.
    for topic in TOPICS {
        assert!(
            crash.accepted_while_away(topic) > 0,
            "{topic}: {:?}",
            crash.away
        );
    }
}

#[tokio::test]
async fn a_redis_crash_without_persistence_tells_every_subscriber_of_the_new_epoch() {
    const TOPICS: [&str; 2] = ["feed:volatile-1", "feed:volatile-2"];
    let crash = through_a_redis_crash(RedisWithArgs::volatile().await, &TOPICS).await;
    for ((who, topic), v) in &crash.verdicts {
        // The check already failed any loss not right at a notice; here: every
        // subscriber was told, and the epoch really changed. The one that was away
        // is told by its resubscribe.
        let told = if who == AWAY {
            "recovered=false:other_epoch"
        } else {
            "history_lost"
        };
        assert!(
            v.notices.iter().any(|n| n == told),
            "{who} {topic}: no {told} notice: {v:?}"
        );
        assert_eq!(v.epochs.len(), 2, "{who} {topic}: {v:?}");
        if who != AWAY {
            assert_eq!(v.disconnects, 0, "{who} {topic}: {v:?}");
        }
    }
}

#[tokio::test]
async fn a_topic_without_history_gets_a_bus_reconnected_notice_across_a_redis_crash() {
    const TOPICS: [&str; 2] = ["plain:crash-1", "plain:crash-2"];
    let crash = through_a_redis_crash(RedisWithArgs::volatile().await, &TOPICS).await;
    for ((who, topic), v) in &crash.verdicts {
        if who == AWAY {
            // It knows it was away; it resubscribed plainly.
            assert_eq!(v.resubscribed, [None], "{who} {topic}: {v:?}");
            continue;
        }
        // The subscriber link of every node broke, so each subscriber is told, and
        // whatever it lost sits right at that notice.
        assert!(
            v.notices.iter().all(|n| n == "bus_reconnected") && !v.notices.is_empty(),
            "{who} {topic}: {v:?}"
        );
        assert_eq!(v.disconnects, 0, "{who} {topic}: {v:?}");
        // B's subscribers did miss what A accepted while B was away: the notice
        // covers a real gap.
        if who.ends_with("@b") {
            assert!(
                crash.accepted_while_away(topic) > 0,
                "{topic}: {:?}",
                crash.away
            );
            assert!(!v.lost.is_empty(), "{who} {topic}: {v:?}");
        }
    }
}

#[tokio::test]
async fn clients_of_a_node_killed_with_sigkill_resume_on_the_other_with_nothing_missed() {
    // B follows the first topic for a subscriber of its own before A dies, the
    // second only once A's clients arrive.
    const TOPICS: [&str; 2] = ["feed:survive-1", "feed:survive-2"];
    let redis = RedisWithArgs::volatile().await;
    let mut cluster = Cluster::start(&redis.url()).await;
    // One reconnects to B as soon as A is gone, as a client library does; the
    // other only after more was published, so its replay is longer.
    let quick = Some(ws(&cluster.b, "quick"));
    let mut subs = vec![
        Subscriber::start("quick@a", ws(&cluster.a, "quick"), &TOPICS, quick).await,
        Subscriber::start("late@a", ws(&cluster.a, "late"), &TOPICS, None).await,
        Subscriber::start("stayer@b", ws(&cluster.b, "stayer"), &TOPICS[..1], None).await,
    ];
    // Through both nodes, so some publications are in flight on A when it dies.
    let mut publisher = Publisher::start(&TOPICS, &[base(&cluster.a), base(&cluster.b)]);
    all_seen(&mut subs[..2], &TOPICS, 10).await;

    cluster.a.kill().await;
    subs[0].wait_for_resubscribed(2).await;
    subs[1].wait_for("A gone", |p| !p.connected).await;
    publisher
        .wait_accepted_beyond(&publisher.counts(), 20 * TOPICS.len())
        .await;
    subs[1].connect(ws(&cluster.b, "late")).await;
    publisher
        .wait_accepted_beyond(&publisher.counts(), 20 * TOPICS.len())
        .await;
    let logs = publisher.stop().await;
    let verdicts = settle(subs, &logs).await;

    for ((who, topic), v) in &verdicts {
        assert!(
            v.lost.is_empty() && v.notices.is_empty(),
            "{who} {topic}: {v:?}"
        );
        assert_eq!(v.epochs.len(), 1, "{who} {topic}: {v:?}");
        assert_eq!(v.received, logs[topic].accepted().count(), "{who} {topic}");
        if who.ends_with("@a") {
            assert_eq!(v.disconnects, 1, "{who} {topic}: {v:?}");
            assert_eq!(v.resubscribed, [Some(true)], "{who} {topic}: {v:?}");
        } else {
            assert_eq!(v.disconnects, 0, "{who} {topic}: {v:?}");
        }
    }
    assert_eq!(verdicts.len(), 5);
}

#[tokio::test]
async fn a_node_cut_off_from_redis_catches_up_within_the_window_and_says_so_past_it() {
    // The same outage on a topic keeping 10000 publications and one keeping 5.
    const TOPICS: [&str; 2] = ["feed:partition", "brief:partition"];
    let redis = RedisWithArgs::volatile().await;
    let gate = Gate::start(redis.port).await;
    let mut cluster = Cluster::start_with(&redis.url(), &gate.url()).await;
    let mut subs = vec![
        Subscriber::start("s0@a", ws(&cluster.a, "s0"), &TOPICS, None).await,
        Subscriber::start("s0@b", ws(&cluster.b, "s0"), &TOPICS, None).await,
        Subscriber::start("s1@b", ws(&cluster.b, "s1"), &TOPICS, None).await,
    ];
    let mut publisher = Publisher::start(&TOPICS, &[base(&cluster.a), base(&cluster.b)]);
    all_seen(&mut subs, &TOPICS, 10).await;

    let mark = cluster.b.log_mark();
    gate.close();
    link_logged(&mut cluster.b, mark, "redis link down", "subscriber").await;
    let closed = publisher.counts();
    // Well past the short window: A accepts, B refuses.
    publisher.wait_accepted_beyond(&closed, 40).await;
    let opened = publisher.counts();
    gate.open();
    links_logged(&mut cluster.b, mark, "redis link restored").await;
    publisher
        .wait_accepted_beyond(&publisher.counts(), 20 * TOPICS.len())
        .await;
    let logs = publisher.stop().await;
    let verdicts = settle(subs, &logs).await;

    for topic in TOPICS {
        let away = closed.answered(topic) + 1..=opened.answered(topic);
        let accepted_away = logs[topic]
            .accepted()
            .filter(|(seq, _)| away.contains(seq))
            .count();
        assert!(
            accepted_away > 5,
            "{topic}: {accepted_away} accepted while B was away"
        );
    }
    for ((who, topic), v) in &verdicts {
        assert_eq!(v.disconnects, 0, "{who} {topic}: {v:?}");
        assert_eq!(v.epochs.len(), 1, "{who} {topic}: {v:?}");
        if who.ends_with("@b") && topic.starts_with("brief:") {
            // The check held every lost one to sit right at this notice.
            assert_eq!(v.notices, ["history_trimmed"], "{who} {topic}: {v:?}");
            assert!(!v.lost.is_empty(), "{who} {topic}: {v:?}");
        } else {
            assert!(
                v.lost.is_empty() && v.notices.is_empty(),
                "{who} {topic}: {v:?}"
            );
        }
    }
}
