//! Reads the test's own `redis-server` directly, on a connection of the test's
//! own, to find what a dead node left behind: every key under the nodes' prefix
//! whose name or content mentions something only that node wrote.

use crate::processes::RedisServer;

/// The prefix the test nodes use (`REALTIME_REDIS_PREFIX` in `Node::start`).
pub const PREFIX: &str = "rt-test";

/// Every key under [`PREFIX`]`:presence:` whose name, field, member or value
/// contains one of `needles`, as `key: what matched`.
pub async fn presence_leftovers(redis: &RedisServer, needles: &[&str]) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pattern = format!("{PREFIX}:presence:*");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut found = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut con)
            .await
            .unwrap();
        let content: Vec<String> = match kind.as_str() {
            "string" => vec![query(&mut con, &["GET", &key]).await],
            "hash" => query(&mut con, &["HGETALL", &key]).await,
            "set" => query(&mut con, &["SMEMBERS", &key]).await,
            "zset" => query(&mut con, &["ZRANGE", &key, "0", "-1"]).await,
            // Stream entries are events, which name users and topics only; the
            // consumer group's consumers are what a node leaves here.
            "stream" => stream_consumers(&mut con, &key).await,
            _ => Vec::new(),
        };
        for needle in needles {
            if key.contains(needle) {
                found.push(format!("{key}: its name has {needle:?}"));
            }
            for item in content.iter().filter(|c| c.contains(needle)) {
                found.push(format!("{key} ({kind}): {item:?} has {needle:?}"));
            }
        }
    }
    found
}

async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(con).await.unwrap()
}

/// The names of the consumers in every group of the stream `key`, and how many
/// entries each holds claimed.
async fn stream_consumers(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    let groups: Vec<redis::Value> = query(con, &["XINFO", "GROUPS", key]).await;
    let mut out = Vec::new();
    for group in groups {
        let Some(name) = field(&group, "name") else {
            continue;
        };
        let consumers: Vec<redis::Value> = query(con, &["XINFO", "CONSUMERS", key, &name]).await;
        for consumer in consumers {
            if let (Some(c), pending) = (field(&consumer, "name"), field(&consumer, "pending")) {
                out.push(format!("group {name} consumer {c} pending {pending:?}"));
            }
        }
    }
    out
}

/// A field of an `XINFO` reply (a flat array or a map, by protocol version).
fn field(reply: &redis::Value, name: &str) -> Option<String> {
    let pairs: Vec<(&redis::Value, &redis::Value)> = match reply {
        redis::Value::Array(items) => items.chunks(2).map(|p| (&p[0], &p[1])).collect(),
        redis::Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| {
        (text(k).as_deref() == Some(name))
            .then(|| text(v))
            .flatten()
    })
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}
