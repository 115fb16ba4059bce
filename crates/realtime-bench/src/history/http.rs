//! The HTTP calls the history scenarios make to our server: one publish at a time
//! (so sequence numbers and offsets grow together), and a topic's current
//! position read from its history endpoint.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::publisher::payload;
use crate::servers::API_KEY;

/// Where a topic's history stands: its last offset in an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A keep-alive HTTP client to one node.
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    node: SocketAddr,
}

impl Api {
    pub fn new(node: SocketAddr) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            node,
        }
    }

    /// Publishes benchmark message `seq` of `size` bytes on `topic` and waits for
    /// the answer; on a history topic, the position it got (when the answer says).
    pub async fn publish(
        &self,
        topic: &str,
        seq: u64,
        size: usize,
    ) -> anyhow::Result<Option<Position>> {
        let request =
            hyper::Request::post(format!("http://{}/api/topics/{topic}/messages", self.node))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {API_KEY}"))
                .body(Full::new(Bytes::from(payload(seq, size))))?;
        let body = self.call(request).await.context("publishing")?;
        Ok(serde_json::from_slice::<Position>(&body).ok())
    }

    /// The topic's current position, from `GET /api/topics/{topic}/history`.
    pub async fn position(&self, topic: &str) -> anyhow::Result<Position> {
        let request = hyper::Request::get(format!(
            "http://{}/api/topics/{topic}/history?limit=1",
            self.node
        ))
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(Full::new(Bytes::new()))?;
        let body = self.call(request).await.context("reading the history")?;
        serde_json::from_slice(&body).context("the history answer has no offset and epoch")
    }

    async fn call(&self, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<Bytes> {
        let response = self.client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}
