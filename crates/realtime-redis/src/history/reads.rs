//! The history's read connection: one multiplexed connection of its own, so a
//! read never waits behind the publisher's queue; connected on first use, again
//! after any failure, every step bounded by the command timeout.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, Value};

use super::script::{self, Loaded, ScriptCall};
use crate::link;

pub(crate) struct Reads {
    client: Client,
    timeout: Duration,
    current: tokio::sync::Mutex<Option<(MultiplexedConnection, Loaded)>>,
}

impl Reads {
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        Reads {
            client,
            timeout,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs a script; a server that lost its scripts gets them again, once.
    pub(crate) async fn run(&self, call: &ScriptCall) -> Result<Value, String> {
        for attempt in 0..2 {
            // Bounded as a whole: reads queued behind a failing connect each give
            // up within the timeout rather than one timeout per read ahead.
            let (mut con, loaded) = tokio::time::timeout(self.timeout, self.connection())
                .await
                .map_err(|_| "redis connect timed out".to_string())??;
            match tokio::time::timeout(self.timeout, call.cmd(&loaded).query_async(&mut con)).await
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if script::is_noscript(&e) && attempt == 0 => self.forget().await,
                // A server's refusal leaves the connection usable.
                Ok(Err(e)) if e.code().is_some() => return Err(e.to_string()),
                Ok(Err(e)) => {
                    self.forget().await;
                    return Err(e.to_string());
                }
                Err(_) => {
                    self.forget().await;
                    return Err("redis read timed out".into());
                }
            }
        }
        Err("redis lost the history scripts twice in a row".into())
    }

    /// The current connection, or a new one. Held under the lock while
    /// connecting, so concurrent reads after a failure make one connection.
    async fn connection(&self) -> Result<(MultiplexedConnection, Loaded), String> {
        let mut current = self.current.lock().await;
        if let Some(ready) = current.as_ref() {
            return Ok(ready.clone());
        }
        let mut con = link::connect(&self.client, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let loaded = match tokio::time::timeout(self.timeout, script::load(&mut con)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("redis SCRIPT LOAD timed out".into()),
        };
        *current = Some((con.clone(), loaded.clone()));
        Ok((con, loaded))
    }

    async fn forget(&self) {
        *self.current.lock().await = None;
    }
}
