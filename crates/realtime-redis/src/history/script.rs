//! The history's Lua scripts (append, read, reset): their keys and arguments,
//! loading them into Redis, and reading their replies.

use std::time::Duration;

use realtime::history::{AppendRequest, ReadRequest, StoredPage, StoredPublication};
use realtime::realtime_core::{HistoryLimits, Position, StreamState, Topic};
use redis::Value;
use redis::aio::MultiplexedConnection;

/// Applied appends remembered per origin, to answer a re-sent one with its first
/// position. Far more than one publisher batch, the most a reconnect re-sends.
const ORIGIN_KEEP: usize = 4096;

/// How long an origin's applied appends are remembered after its last one: far
/// longer than any outage its queued appends could wait through.
const ORIGIN_TTL: Duration = HistoryLimits::MIN_POSITION_TTL;

/// Past this, Lua's numbers (doubles) stop being exact; no real offset gets there.
const LUA_EXACT: u64 = 1 << 53;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Append,
    Read,
    Reset,
}

impl Script {
    const ALL: [Script; 3] = [Script::Append, Script::Read, Script::Reset];

    fn source(self) -> &'static str {
        match self {
            Script::Append => include_str!("lua/append.lua"),
            Script::Read => include_str!("lua/read.lua"),
            Script::Reset => include_str!("lua/reset.lua"),
        }
    }
}

/// The scripts' SHA1 digests as one Redis server knows them.
#[derive(Debug, Clone)]
pub(crate) struct Loaded([String; 3]);

impl Loaded {
    fn sha(&self, script: Script) -> &str {
        &self.0[script as usize]
    }
}

/// Loads every script into the server behind `con`.
pub(crate) async fn load(con: &mut MultiplexedConnection) -> redis::RedisResult<Loaded> {
    let mut pipe = redis::pipe();
    for script in Script::ALL {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.source());
    }
    let shas: Vec<String> = pipe.query_async(con).await?;
    let shas: [String; 3] = shas.try_into().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::Client, "SCRIPT LOAD answered short"))
    })?;
    Ok(Loaded(shas))
}

/// Whether a reply says the server does not know the script (it lost its
/// script cache: restarted, or `SCRIPT FLUSH`).
pub(crate) fn is_noscript(error: &redis::RedisError) -> bool {
    error.code() == Some("NOSCRIPT")
}

/// Key names of the history under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn stream(&self, topic: &Topic) -> String {
        format!("{}:history:{}", self.prefix, topic.as_str())
    }

    fn meta(&self, topic: &Topic) -> String {
        format!("{}:history-meta:{}", self.prefix, topic.as_str())
    }

    fn origin(&self, origin: &str) -> String {
        format!("{}:history-origin:{origin}", self.prefix)
    }
}

/// One invocation of a script: EVALSHA with these keys and arguments.
#[derive(Debug, Clone)]
pub(crate) struct ScriptCall {
    script: Script,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

fn millis(d: Duration) -> Vec<u8> {
    d.as_millis().max(1).to_string().into_bytes()
}

impl ScriptCall {
    pub(crate) fn append(keys: &Keys, request: &AppendRequest) -> Self {
        let origin = request.origin.to_string();
        let token = format!("{origin}:{}", request.seq);
        ScriptCall {
            script: Script::Append,
            keys: vec![
                keys.stream(&request.topic),
                keys.meta(&request.topic),
                keys.origin(&origin),
            ],
            args: vec![
                request.new_epoch.clone().into_bytes(),
                request.limits.size().to_string().into_bytes(),
                millis(request.limits.ttl()),
                millis(request.limits.position_ttl()),
                request.channel.clone().into_bytes(),
                request.topic.as_str().as_bytes().to_vec(),
                request.payload.clone().into_bytes(),
                request.seq.min(LUA_EXACT).to_string().into_bytes(),
                token.into_bytes(),
                ORIGIN_KEEP.to_string().into_bytes(),
                millis(ORIGIN_TTL),
            ],
        }
    }

    pub(crate) fn read(keys: &Keys, request: &ReadRequest) -> Self {
        let after = request
            .after
            .map(|a| a.min(LUA_EXACT).to_string())
            .unwrap_or_default();
        ScriptCall {
            script: Script::Read,
            keys: vec![keys.stream(&request.topic), keys.meta(&request.topic)],
            args: vec![
                request.new_epoch.clone().into_bytes(),
                millis(request.limits.position_ttl()),
                after.into_bytes(),
                request.limit.to_string().into_bytes(),
            ],
        }
    }

    pub(crate) fn reset(
        keys: &Keys,
        topic: &Topic,
        limits: HistoryLimits,
        new_epoch: String,
    ) -> Self {
        ScriptCall {
            script: Script::Reset,
            keys: vec![keys.stream(topic), keys.meta(topic)],
            args: vec![new_epoch.into_bytes(), millis(limits.position_ttl())],
        }
    }

    /// The operation, as metrics name it.
    pub(crate) fn op(&self) -> &'static str {
        match self.script {
            Script::Append => "append",
            Script::Read => "read",
            Script::Reset => "reset",
        }
    }

    /// Bytes it carries, weighed against the outbox's byte bound.
    pub(crate) fn size(&self) -> usize {
        self.keys.iter().map(String::len).sum::<usize>()
            + self.args.iter().map(Vec::len).sum::<usize>()
    }

    pub(crate) fn add_to(&self, pipe: &mut redis::Pipeline, loaded: &Loaded) {
        pipe.add_command(self.cmd(loaded));
    }

    pub(crate) fn cmd(&self, loaded: &Loaded) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(loaded.sha(self.script)).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key);
        }
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
    }
}

/// A reply the scripts never give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected reply from a history script: {0}")]
pub(crate) struct BadReply(String);

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    text(value)?.parse().ok()
}

/// The `{offset, epoch}` an append or a reset answers.
pub(crate) fn position(reply: &Value) -> Result<Position, BadReply> {
    let bad = || BadReply(format!("{reply:?}"));
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    match items.as_slice() {
        [offset, epoch] => Ok(Position {
            offset: number(offset).ok_or_else(bad)?,
            epoch: text(epoch).ok_or_else(bad)?,
        }),
        _ => Err(bad()),
    }
}

/// The `{epoch, top, first, id, payload, ...}` a read answers.
pub(crate) fn page(reply: &Value) -> Result<StoredPage, BadReply> {
    let bad = || BadReply(format!("{reply:?}"));
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let [epoch, top, first, entries @ ..] = items.as_slice() else {
        return Err(bad());
    };
    if entries.len() % 2 != 0 {
        return Err(bad());
    }
    let mut publications = Vec::with_capacity(entries.len() / 2);
    for pair in entries.chunks(2) {
        let id = text(&pair[0]).ok_or_else(bad)?;
        let offset = id
            .split_once('-')
            .and_then(|(offset, _)| offset.parse().ok())
            .ok_or_else(bad)?;
        publications.push(StoredPublication {
            offset,
            payload: text(&pair[1]).ok_or_else(bad)?,
        });
    }
    Ok(StoredPage {
        state: StreamState {
            epoch: text(epoch).ok_or_else(bad)?,
            top: number(top).ok_or_else(bad)?,
            first: number(first).ok_or_else(bad)?,
        },
        publications,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_are_read_into_positions_and_pages() {
        let reply = Value::Array(vec![bulk("17"), bulk("e1")]);
        assert_eq!(
            position(&reply),
            Ok(Position {
                offset: 17,
                epoch: "e1".into()
            })
        );
        assert!(position(&Value::Array(vec![bulk("x"), bulk("e1")])).is_err());

        let reply = Value::Array(vec![
            bulk("e1"),
            bulk("12"),
            bulk("11"),
            bulk("11-0"),
            bulk("{\"n\":11}"),
            bulk("12-0"),
            bulk("{\"n\":12}"),
        ]);
        let page = page(&reply).unwrap();
        assert_eq!(
            page.state,
            StreamState {
                epoch: "e1".into(),
                top: 12,
                first: 11
            }
        );
        assert_eq!(
            page.publications
                .iter()
                .map(|p| (p.offset, p.payload.as_str()))
                .collect::<Vec<_>>(),
            vec![(11, "{\"n\":11}"), (12, "{\"n\":12}")]
        );
        assert!(super::page(&Value::Array(vec![bulk("e1"), bulk("1")])).is_err());
    }
}
