//! The presence Lua scripts (in `lua/`, each with `prelude.lua` in front):
//! loading them, building their calls, and reading the values they answer.

use redis::Value;
use redis::aio::MultiplexedConnection;

macro_rules! script {
    ($file:literal) => {
        concat!(include_str!("lua/prelude.lua"), include_str!($file))
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    Apply,
    Renew,
    Claim,
    Finish,
    Due,
    Sweep,
    Members,
}

impl Script {
    const ALL: [Script; 7] = [
        Script::Apply,
        Script::Renew,
        Script::Claim,
        Script::Finish,
        Script::Due,
        Script::Sweep,
        Script::Members,
    ];

    fn source(self) -> &'static str {
        match self {
            Script::Apply => script!("lua/apply.lua"),
            Script::Renew => script!("lua/renew.lua"),
            Script::Claim => script!("lua/claim.lua"),
            Script::Finish => script!("lua/finish.lua"),
            Script::Due => script!("lua/due.lua"),
            Script::Sweep => script!("lua/sweep.lua"),
            Script::Members => script!("lua/members.lua"),
        }
    }
}

/// The scripts' SHA1 digests as one Redis server knows them.
#[derive(Debug, Clone)]
pub(crate) struct Loaded(Vec<String>);

impl Loaded {
    /// An EVALSHA of `script` with `keys`, arguments to be added by the caller.
    pub(crate) fn call<K: redis::ToRedisArgs>(&self, script: Script, keys: &[K]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.0[script as usize]).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        cmd
    }
}

/// Loads every script into the server behind `con`. A server that later loses
/// them (restart, `SCRIPT FLUSH`) answers NOSCRIPT, which the worker treats
/// as a broken link: it reconnects, loads them again and rewrites its state.
pub(crate) async fn load(con: &mut MultiplexedConnection) -> redis::RedisResult<Loaded> {
    let mut pipe = redis::pipe();
    for script in Script::ALL {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.source());
    }
    let shas: Vec<String> = pipe.query_async(con).await?;
    if shas.len() != Script::ALL.len() {
        return Err(bad_reply("SCRIPT LOAD answered short"));
    }
    Ok(Loaded(shas))
}

pub(crate) fn bad_reply(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply from a presence script",
        what.to_owned(),
    ))
}

/// A reply value as text (bulk, simple or integer).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A reply value as an integer.
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The items of an array reply (nil: none).
pub(crate) fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_carries_the_prelude() {
        for script in Script::ALL {
            assert!(
                script
                    .source()
                    .starts_with("-- Shared by the presence scripts")
            );
            assert!(script.source().contains("KEYS"));
        }
        assert_eq!(int(&Value::BulkString(b"-2".to_vec())), Some(-2));
        assert_eq!(items(&Value::Nil).map(<[Value]>::len), Some(0));
    }
}
