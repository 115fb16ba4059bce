//! The topics a connect hook's admission names are subscribed server-side as the
//! connection opens, on both transports, over real sockets: a WebSocket is sent
//! nothing for them (as for an HTTP API subscribe) and receives their messages;
//! an SSE stream announces each with `subscribed` after its query's topics. The
//! hook is a test double of the `ConnectHook` port, told which transport asked.
//! And a namespace naming a subscribe or publish hook that is not set refuses,
//! never allows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime::{
    Admission, ClaimRules, ConnectHook, ConnectRequest, HookRefusal, Hooks, JwtVerifier, Realtime,
    RealtimeConfig, RefusalKind, Topic,
};
use realtime_core::{Access, Namespace, ProxyUse, Rules, TopicPolicy, Transport};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::sse;
use support::{WAIT, next_json};

const SECRET: &[u8] = b"admission-test-secret";

/// Admits a verified token's identity with `topics` subscribed server-side, and
/// records the transport of every handshake it decides.
struct AdmitWith {
    topics: Vec<Topic>,
    asked: Mutex<Vec<Transport>>,
}

impl ConnectHook for AdmitWith {
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Admission, HookRefusal>> {
        self.asked.lock().unwrap().push(request.transport);
        let answer = match request.identity {
            Some(identity) => Ok(Admission {
                identity,
                topics: self.topics.clone(),
            }),
            None => Err(HookRefusal::new(
                RefusalKind::Unauthorized,
                "no_session",
                "no token, no session",
            )),
        };
        async move { answer }.boxed()
    }
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

async fn start(topics: &[&str]) -> (Realtime, SocketAddr, Arc<AdmitWith>) {
    let hook = Arc::new(AdmitWith {
        topics: topics.iter().map(|t| topic(t)).collect(),
        asked: Mutex::new(Vec::new()),
    });
    let config = RealtimeConfig {
        hooks: Hooks {
            connect: Some(hook.clone()),
            ..Hooks::default()
        },
        ..RealtimeConfig::default()
    };
    let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
    let rt = Realtime::new(verifier, config);
    let (addr, _server) = support::serve(&rt).await;
    (rt, addr, hook)
}

fn token(user: &str) -> String {
    let now = realtime::unix_seconds(SystemTime::now());
    let claims = json!({"sub": user, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[tokio::test]
async fn a_websocket_is_subscribed_to_its_admission_topics_silently() {
    let (rt, addr, hook) = start(&["news", "alerts"]).await;
    let url = format!("ws://{addr}/ws?token={}", token("ann"));
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let id = welcome["connection_id"].as_str().unwrap().parse().unwrap();
    // Subscribed before anything reaches it: a ping's pong is the next frame,
    // so no `subscribed` (or anything else) was sent for them.
    ws.send(Message::Text(
        json!({"action": "ping", "ref": "p"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "pong", "ref": "p"})
    );
    assert_eq!(
        rt.connection(id).unwrap().topics,
        ["alerts", "news"],
        "both admission topics are the connection's"
    );
    assert_eq!(
        rt.publish("news", json!({"type": "headline", "n": 1}))
            .unwrap()
            .local,
        1
    );
    let got = next_json(&mut ws).await;
    assert_eq!(
        (got["topic"].clone(), got["n"].clone()),
        (json!("news"), json!(1)),
        "{got}"
    );
    assert_eq!(*hook.asked.lock().unwrap(), [Transport::Websocket]);
}

#[tokio::test]
async fn an_sse_stream_announces_its_query_topics_then_its_admission_topics() {
    let (rt, addr, hook) = start(&["news", "alerts"]).await;
    let target = format!("/sse?token={}&topic=alerts&topic=sports", token("bo"));
    let mut stream = sse::open(addr, &target, &[]).await.stream();
    let welcome = stream.next_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let announced: Vec<Value> = [
        stream.next_json().await,
        stream.next_json().await,
        stream.next_json().await,
    ]
    .into();
    assert_eq!(
        announced,
        [
            json!({"type": "subscribed", "topic": "alerts"}),
            json!({"type": "subscribed", "topic": "sports"}),
            json!({"type": "subscribed", "topic": "news"}),
        ],
        "query topics first, in order, then the admission's not already named"
    );
    assert_eq!(
        rt.publish("news", json!({"type": "headline"}))
            .unwrap()
            .local,
        1
    );
    let got = stream.next_json().await;
    assert_eq!(got["topic"], "news", "{got}");
    assert_eq!(*hook.asked.lock().unwrap(), [Transport::Sse]);
    let listed = rt.connections();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transport, Transport::Sse);
    assert_eq!(listed[0].topics, ["alerts", "news", "sports"]);
}

#[tokio::test]
async fn a_hook_refusal_refuses_the_stream_before_it_starts() {
    let (rt, addr, _hook) = start(&["news"]).await;
    let (status, body) = sse::open(addr, "/sse?topic=news", &[]).await.refused();
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "unauthorized", "reason": "no_session", "message": "no token, no session"})
    );
    assert_eq!(rt.connection_count(), 0);
}

#[tokio::test]
async fn a_token_that_does_not_verify_is_refused_before_the_hook_is_asked() {
    let (rt, addr, hook) = start(&["news"]).await;
    let (status, body) = sse::open(addr, "/sse?token=not-a-jwt&topic=news", &[])
        .await
        .refused();
    assert_eq!(status, 401);
    assert_eq!(
        (&body["error"], &body["reason"]),
        (&json!("unauthorized"), &json!("malformed")),
        "{body}"
    );
    let url = format!("ws://{addr}/ws?token=not-a-jwt");
    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(
        hook.asked.lock().unwrap().is_empty(),
        "a bad token is never the hook's to decide"
    );
    assert_eq!(rt.connection_count(), 0);
}

#[tokio::test]
async fn a_namespace_naming_a_hook_that_is_not_set_refuses_as_unavailable() {
    // An embedding application that marks `room` as decided by its backend but
    // forgets to set the hooks must not have every subscribe and publish allowed.
    let open = Rules {
        subscribe: Access::Authenticated,
        publish: Access::Authenticated,
    };
    let room = Namespace::new("room", open.clone())
        .unwrap()
        .with_proxy(ProxyUse {
            subscribe: true,
            publish: true,
        });
    let config = RealtimeConfig {
        topic_policy: TopicPolicy::new(vec![room], open).unwrap(),
        ..RealtimeConfig::default()
    };
    let verifier = JwtVerifier::hs256(SECRET, ClaimRules::default()).unwrap();
    let rt = Realtime::new(verifier, config);
    let (addr, _server) = support::serve(&rt).await;
    let url = format!("ws://{addr}/ws?token={}", token("cy"));
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for command in [
        json!({"action": "subscribe", "topic": "room:1", "ref": "s"}),
        json!({"action": "history", "topic": "room:1", "ref": "h"}),
        json!({"action": "publish", "topic": "room:1", "ref": "p", "message": {"type": "chat"}}),
        json!({"action": "subscribe", "topic": "other", "ref": "o"}),
    ] {
        ws.send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        let reply = next_json(&mut ws).await;
        if command["topic"] == "other" {
            assert_eq!(reply["type"], "subscribed", "{reply}");
        } else {
            assert_eq!(
                (&reply["type"], &reply["code"]),
                (&json!("error"), &json!("proxy_unavailable")),
                "{command}: {reply}"
            );
        }
    }
    let id = welcome["connection_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(rt.connection(id).unwrap().topics, ["other"]);
    let target = format!("/sse?token={}&topic=room:1", token("cy"));
    let (status, body) = sse::open(addr, &target, &[]).await.refused();
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("proxy_unavailable")),
        "{body}"
    );
}
