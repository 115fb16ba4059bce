//! The two-node presence cluster the tests run on: a real `redis-server`, a real
//! webhook receiver, and two `realtime-server` processes reading a config file
//! with a presence namespace and the webhook options; plus reading presence the
//! way a backend and a client do (every page, HTTP and WebSocket).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::common::{API_KEY, answer};
use crate::peer::Peer;
use crate::processes::{ConfigFile, Node, RedisServer};
use crate::webhook_receiver::Receiver;

/// The bound on a killed node's presence (`presence_node_timeout`).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of a configured bound for a loaded 2-core machine: process
/// scheduling and the test's own polling, never the behaviour under test.
pub const MARGIN: Duration = Duration::from_secs(3);
/// Upper bound for what has no configured bound (a node reconnecting to Redis).
pub const SLOW: Duration = Duration::from_secs(30);
pub const WEBHOOK_SECRET: &str = "presence-webhook-secret-for-tests";
/// Topics under `room` keep presence and push join/leave; topics under `quiet`
/// keep presence only.
pub const ROOM: &str = "room";

/// Node ids long enough that no other key or value contains them by chance.
pub const EAST: &str = "presence-east";
pub const WEST: &str = "presence-west";

/// How a cluster is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub offline_grace: Duration,
    /// The receiver answers 500 to this many attempts of each event first.
    pub fail_first: u32,
    /// Each node posts to a path of its own (`/hooks/{node id}`).
    pub per_node_paths: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            offline_grace: Duration::from_secs(2),
            fail_first: 0,
            per_node_paths: false,
        }
    }
}

pub struct PresenceCluster {
    pub redis: RedisServer,
    pub hooks: Receiver,
    pub east: Option<Node>,
    pub west: Option<Node>,
    pub setup: Setup,
    configs: Vec<ConfigFile>,
}

impl PresenceCluster {
    pub async fn start(setup: Setup) -> PresenceCluster {
        let hooks = Receiver::failing_first(WEBHOOK_SECRET, setup.fail_first).await;
        Self::start_with(setup, hooks).await
    }

    /// As [`PresenceCluster::start`], with a receiver of the test's own.
    pub async fn start_with(setup: Setup, hooks: Receiver) -> PresenceCluster {
        let redis = RedisServer::start().await;
        let mut c = PresenceCluster {
            redis,
            hooks,
            east: None,
            west: None,
            setup,
            configs: Vec::new(),
        };
        c.east = Some(c.start_node(EAST).await);
        c.west = Some(c.start_node(WEST).await);
        c
    }

    pub fn east(&self) -> &Node {
        self.east.as_ref().expect("east runs")
    }

    pub fn west(&self) -> &Node {
        self.west.as_ref().expect("west runs")
    }

    pub fn east_mut(&mut self) -> &mut Node {
        self.east.as_mut().expect("east runs")
    }

    /// Starts a node called `id` (a new process; the id may be one a killed node
    /// had). With `per_node_paths` its webhooks go to `/hooks/{id}`.
    pub async fn start_node(&mut self, id: &str) -> Node {
        let path = if self.setup.per_node_paths {
            format!("/hooks/{id}")
        } else {
            "/hooks/presence".to_owned()
        };
        self.start_node_posting_to(id, &path).await
    }

    /// As [`PresenceCluster::start_node`], with webhooks posted to `path`.
    pub async fn start_node_posting_to(&mut self, id: &str, path: &str) -> Node {
        let url = self.hooks.url_at(path);
        let config = ConfigFile::write(&format!(
            r#"
presence_node_timeout = "{timeout}ms"
presence_offline_grace = "{grace}ms"
webhook_url = "{url}"
webhook_secret = "{WEBHOOK_SECRET}"
webhook_timeout = "2s"

[[namespaces]]
pattern = "{ROOM}"
subscribe = "authenticated"
publish = "nobody"
presence = true
join_leave = true

[[namespaces]]
pattern = "quiet"
subscribe = "authenticated"
publish = "nobody"
presence = true
"#,
            timeout = NODE_TIMEOUT.as_millis(),
            grace = self.setup.offline_grace.as_millis(),
        ));
        let node = Node::start(&self.redis.url(), id, &[("REALTIME_CONFIG", config.path())]).await;
        self.configs.push(config);
        node
    }

    /// The time from a user's last connection going away to its `user.offline`
    /// being queued at most, when the connection was on a killed node.
    pub fn offline_after_kill(&self) -> Duration {
        NODE_TIMEOUT + self.setup.offline_grace + MARGIN
    }
}

pub async fn get(node: &Node, path: &str) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .get(node.url(path))
            .bearer_auth(API_KEY),
    )
    .await
}

/// `(user_id, connection_id)` of one presence member.
pub type MemberKey = (String, String);

/// The members the test itself knows to be in a topic.
pub fn keys<'a>(peers: impl IntoIterator<Item = &'a Peer>) -> BTreeSet<MemberKey> {
    peers
        .into_iter()
        .map(|p| (p.user.clone(), p.connection_id.clone()))
        .collect()
}

/// A whole presence listing read page by page, and whether any page said it was
/// degraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub members: BTreeSet<MemberKey>,
    pub degraded: bool,
}

/// Pages of this size make a handful of members span several pages.
const PAGE: u64 = 2;

/// Reads every page of `topic`'s presence over HTTP from `node`, checking each
/// page's shape and that the walk returns members in order, each once.
pub async fn listing_http(node: &Node, topic: &str) -> Listing {
    walk(topic, |cursor| async move {
        let mut path = format!("/api/topics/{topic}/presence?limit={PAGE}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", urlencode(&c)));
        }
        let (status, body) = get(node, &path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    })
    .await
}

/// As [`listing_http`], over `peer`'s socket.
pub async fn listing_ws(peer: &mut Peer, topic: &str) -> Listing {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = peer.presence(topic, PAGE, cursor.as_deref()).await;
        assert_eq!(page["type"], "presence", "{page}");
        cursor = page["cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return check_pages(topic, &pages);
        }
        assert!(
            pages.len() < 1000,
            "presence paging does not end: {pages:?}"
        );
    }
}

async fn walk<F, Fut>(topic: &str, mut fetch: F) -> Listing
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = fetch(cursor.take()).await;
        cursor = page["cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return check_pages(topic, &pages);
        }
        assert!(
            pages.len() < 1000,
            "presence paging does not end: {pages:?}"
        );
    }
}

/// Members of every page in walk order; no page may be larger than asked, and
/// the walk must be strictly increasing in (user_id, connection_id).
fn check_pages(topic: &str, pages: &[Value]) -> Listing {
    let mut order: Vec<MemberKey> = Vec::new();
    let mut degraded = false;
    for page in pages {
        assert_eq!(page["topic"], topic, "{page}");
        degraded |= page["degraded"] == true;
        let users = page["users"].as_array().expect("users array");
        let mut on_page = 0;
        for user in users {
            let user_id = user["user_id"].as_str().expect("user_id").to_owned();
            for c in user["connections"].as_array().expect("connections") {
                assert!(c["connected_at"].is_string(), "connected_at: {c}");
                assert!(c["info"].is_object(), "info: {c}");
                let conn = c["connection_id"].as_str().expect("connection_id");
                order.push((user_id.clone(), conn.to_owned()));
                on_page += 1;
            }
        }
        assert!(on_page as u64 <= PAGE, "page larger than the limit: {page}");
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "presence walk not in order or with repeats: {order:?}"
    );
    Listing {
        members: order.into_iter().collect(),
        degraded,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sums a counter or gauge sample over both nodes' `/metrics`: lines starting
/// with `series` (a name with or without `{labels}`).
pub async fn metric_sum(nodes: [&Node; 2], series: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        let text = reqwest::get(node.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(series)
                && (rest.starts_with(' ') || series.ends_with('}'))
            {
                sum += rest.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    sum
}
