//! History across two real `realtime-server` processes sharing a real
//! `redis-server`: a client cut off from one node resumes on the other with `since`
//! and receives exactly what it missed, then live messages, while a steady
//! publisher keeps going; checked by the independent tally in `tally/`.

mod common;
mod processes;
mod tally;

use std::collections::HashMap;

use processes::RedisWithArgs;
use tally::{Cluster, Publisher, Subscriber, base, settle, ws};

/// B has a subscriber of its own on the first topic only, so the roamer's resume
/// on B finds that topic already followed there and the second one not.
const TOPICS: [&str; 2] = ["feed:cluster-1", "feed:cluster-2"];

#[tokio::test]
async fn a_client_cut_off_from_one_node_resumes_on_the_other_with_nothing_missed() {
    let redis = RedisWithArgs::volatile().await;
    let cluster = Cluster::start(&redis.url()).await;
    let mut roamer = Subscriber::start("roamer@a", ws(&cluster.a, "roamer"), &TOPICS, None).await;
    let witness =
        Subscriber::start("witness@b", ws(&cluster.b, "witness"), &TOPICS[..1], None).await;

    // Every publication goes through B, in two lanes; the roamer hears them
    // through the bus.
    let mut publisher = Publisher::start(&TOPICS, &[base(&cluster.b), base(&cluster.b)]);
    let ten: HashMap<String, u64> = TOPICS.iter().map(|t| ((*t).to_owned(), 10)).collect();
    roamer.wait_seen(&ten).await;

    roamer.cut().await;
    let at_cut = roamer.progress();
    // Enough is published while it is away that it has something to miss.
    publisher
        .wait_accepted_beyond(&publisher.counts(), 30 * TOPICS.len())
        .await;
    roamer.connect(ws(&cluster.b, "roamer")).await;
    let at_resume = publisher.counts();
    // And live ones after the replay.
    publisher
        .wait_accepted_beyond(&at_resume, 30 * TOPICS.len())
        .await;
    let logs = publisher.stop().await;

    let verdicts = settle(vec![roamer, witness], &logs).await;
    for topic in TOPICS {
        let away = at_cut.seen(topic) + 1..=at_resume.answered(topic);
        let missed_while_away = logs[topic]
            .accepted()
            .filter(|(seq, _)| away.contains(seq))
            .count();
        assert!(
            missed_while_away >= 10,
            "{topic}: only {missed_while_away} published while away"
        );

        let roamed = &verdicts[&("roamer@a".to_owned(), topic.to_owned())];
        assert_eq!(roamed.disconnects, 1, "{topic}: {roamed:?}");
        assert_eq!(roamed.resubscribed, [Some(true)], "{topic}: {roamed:?}");
        assert!(
            roamed.lost.is_empty() && roamed.notices.is_empty(),
            "{topic}: {roamed:?}"
        );
        assert_eq!(roamed.epochs.len(), 1, "{topic}: {roamed:?}");
        // It heard every accepted publication (the check holds each one against its
        // publish answer's position).
        let accepted = logs[topic].accepted().count();
        assert_eq!(roamed.received, accepted);
    }
    let stayed = &verdicts[&("witness@b".to_owned(), TOPICS[0].to_owned())];
    assert!(
        stayed.lost.is_empty() && stayed.notices.is_empty() && stayed.disconnects == 0,
        "{stayed:?}"
    );
    assert_eq!(stayed.received, logs[TOPICS[0]].accepted().count());
    assert_eq!(verdicts.len(), 3);
}
