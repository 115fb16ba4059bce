//! The Server-Sent Events endpoint: the same handshake as the WebSocket's
//! (crate::handshake), every `topic` of the query checked like a client
//! subscribe before any stream starts, then a `text/event-stream` response fed
//! by the stream's session task. A refused request gets a status with a JSON
//! body and leaves nothing registered. See docs/PROTOCOL.md, *Server-Sent Events*.

mod cors;
mod event;
mod pipe;
mod query;
mod refusal;
mod session;
mod writer;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::BytesMut;
use futures_util::future::join_all;
use realtime_core::{CloseCode, ServerFrame, Topic, Transport};
use tokio_util::sync::CancellationToken;

use crate::handshake::{HandshakeHeaders, admit};
use crate::hooks::Admission;
use crate::service::Realtime;
use cors::Cors;
use query::{LastEventId, Resume, StreamQuery};
use session::Subscription;

/// How many of a request's topics are checked at once: a subscribe proxy is
/// asked about up to this many together, so a request waits about one
/// `proxy_timeout` per this many proxied topics rather than one per topic,
/// and one request never holds more than this many of the hook's slots.
const TOPIC_CHECKS_AT_ONCE: usize = 8;

/// Found in the extensions of every SSE response that streams: resolves when the
/// engine gave the stream up with events it could not deliver (the client
/// stopped reading, so the HTTP server is blocked writing to it and will not
/// poll the body again). A server that owns its connections closes the TCP
/// connection then, as the standalone server does; with `axum::serve` the
/// connection stays until the client reads again or the kernel gives up on it
/// (the engine has already forgotten the stream either way).
#[derive(Debug, Clone, Default)]
pub struct StreamAbort(CancellationToken);

impl StreamAbort {
    /// Resolves once the stream was given up.
    pub async fn aborted(self) {
        self.0.cancelled_owned().await;
    }

    /// Whether the stream was given up.
    pub fn is_aborted(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl Realtime {
    /// The route that serves Server-Sent Events streams (`GET`, `HEAD`, and the
    /// `OPTIONS` preflight of a cross-origin page); mount it where you like:
    /// `Router::new().route("/sse", rt.sse_route())`.
    pub fn sse_route<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        get(open).options(cors::preflight).with_state(self.clone())
    }
}

/// Serves `GET /sse`. A browser page on another origin that the Origin rules
/// allow may open a WebSocket; to let it read a stream (or a refusal's JSON) as
/// well, every answer to an allowed `Origin` names it in
/// `Access-Control-Allow-Origin`, with credentials (the connect proxy's cookies).
/// Where every origin is allowed (`*`) the answer says `*`, without
/// credentials: no page of any site may read a stream opened with a visitor's
/// cookies. The `OPTIONS` preflight is `cors::preflight`'s.
async fn open(
    State(rt): State<Realtime>,
    method: Method,
    headers: HandshakeHeaders,
    last_event_id: LastEventId,
    raw: RawQuery,
) -> Response {
    let cors = Cors::of(&rt, &headers);
    let mut response = open_stream(rt, method, headers, last_event_id, raw).await;
    if let Some(cors) = cors {
        cors.apply(response.headers_mut());
    }
    response
}

async fn open_stream(
    rt: Realtime,
    method: Method,
    headers: HandshakeHeaders,
    LastEventId(last_event_id): LastEventId,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = StreamQuery::parse(raw.as_deref().unwrap_or(""));
    let admission = match admit(&rt, headers, query.token.as_deref(), Transport::Sse).await {
        Ok(admission) => admission,
        Err(refused) => return refused,
    };
    if query.too_many_topics {
        return refusal::too_many_topic_params(&rt.inner.metrics);
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(query.topics.len());
    for name in &query.topics {
        match rt.parse_topic(name) {
            Ok(topic) if topics.contains(&topic) => {}
            Ok(topic) => topics.push(topic),
            Err(e) => return refusal::invalid_topic(&rt.inner.metrics, name, &e),
        }
    }
    let max = rt.config().max_subscriptions;
    if max != 0 && topics.len() > max {
        return refusal::too_many_topics(&rt.inner.metrics, max);
    }
    let Admission {
        identity,
        topics: server_side,
    } = admission;
    let expires_at = identity.expires_at;
    let info = rt.new_connection(identity, Transport::Sse);
    // Several topics are asked about at once (a subscribe proxy answers each
    // within its own timeout); the first refused one in the query's order is named.
    for chunk in topics.chunks(TOPIC_CHECKS_AT_ONCE) {
        let checked = join_all(chunk.iter().map(|topic| rt.may_subscribe(&info, topic))).await;
        for (topic, checked) in chunk.iter().zip(checked) {
            if let Err(refused) = checked {
                tracing::debug!(topic = topic.as_str(), reason = %refused.reason, "event stream refused a topic");
                return refusal::topic_refused(&rt.inner.metrics, topic.as_str(), refused);
            }
        }
    }
    if method == Method::HEAD {
        // Everything checked, nothing opened: a HEAD has no stream to read.
        return stream_response(Body::empty());
    }
    let resume = Resume::new(last_event_id.as_ref(), query.last_event_id.as_deref());
    for topic in server_side {
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    let subscriptions = topics
        .into_iter()
        .map(|topic| Subscription {
            history: rt
                .history_limits(&topic)
                .map(|limits| (limits, resume.since(&topic))),
            topic,
        })
        .collect();

    let opened = rt.open_connection(info, expires_at, |info| {
        Some(
            ServerFrame::Welcome {
                connection_id: info.id,
                user_id: &info.user_id,
                roles: &info.roles,
                timestamp: &info.connected_at,
                expires_at,
            }
            .to_json(),
        )
    });
    let Ok((handle, ready)) = opened else {
        // Over the user's connection limit: told why, never registered.
        let mut body = BytesMut::from(&event::opening()[..]);
        event::close(&mut body, CloseCode::ConnectionLimit);
        return stream_response(Body::from(body.freeze()));
    };
    let (sender, body) = pipe::pipe(Some(Bytes::from(event::opening())));
    let abort = StreamAbort::default();
    let task = session::run(
        rt.clone(),
        handle,
        ready,
        subscriptions,
        sender,
        abort.0.clone(),
    );
    tokio::spawn(rt.inner.sessions.track_future(task));
    let mut response = stream_response(Body::from_stream(body));
    response.extensions_mut().insert(abort);
    response
}

/// A 200 `text/event-stream` response that no cache or proxy holds back.
fn stream_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response()
}
