//! The connect proxy: at every handshake, POSTs the transport, the token's
//! identity (when a token verified), the cookies and the allow-listed headers,
//! and reads who the connection is (user, roles, metadata, server-side topics,
//! expiry) or the backend's 401/403 refusal.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderName, header};
use futures_util::future::BoxFuture;
use realtime::hooks::{Admission, ConnectHook, ConnectRequest, HookRefusal, RefusalKind};
use realtime_core::{Identity, Topic};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{Denied, ProxyClient};
use super::reply::{self, Answer, Failure};

/// The [`ConnectHook`] that asks the backend.
pub struct ConnectProxy {
    client: Arc<ProxyClient>,
    /// Forwarded besides the cookies; lowercase.
    headers: Vec<HeaderName>,
    max_topic_length: usize,
}

impl ConnectProxy {
    pub fn new(client: ProxyClient, headers: &[String], max_topic_length: usize) -> ConnectProxy {
        ConnectProxy {
            client: Arc::new(client),
            // The configuration checked every name.
            headers: headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            max_topic_length,
        }
    }
}

/// `{"result": ...}` of a connect answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Connected {
    user: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    expires_at: Option<i64>,
}

/// `{"error": ...}` of a connect answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Refused {
    status: u16,
    reason: String,
    #[serde(default)]
    message: String,
}

impl ConnectHook for ConnectProxy {
    fn connect(
        &self,
        request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Admission, HookRefusal>> {
        let body = request_body(&request, &self.headers);
        let client = self.client.clone();
        let max_topic_length = self.max_topic_length;
        let token_expiry = request.identity.and_then(|i| i.expires_at);
        Box::pin(async move {
            client
                .call(body, |answer| {
                    let now = realtime::unix_seconds(SystemTime::now());
                    judge(answer, max_topic_length, token_expiry, now)
                })
                .await
        })
    }
}

/// The JSON POSTed: `{"transport", "user", "roles", "metadata", "cookies",
/// "headers"}`; `user`, `roles` and `metadata` are `null` without a token.
fn request_body(request: &ConnectRequest, allowed: &[HeaderName]) -> Vec<u8> {
    let identity = request.identity.as_ref();
    let headers: Map<String, Value> = allowed
        .iter()
        .filter_map(|name| {
            let values: Vec<&str> = request
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                .collect();
            (!values.is_empty()).then(|| (name.as_str().to_owned(), json!(values.join(", "))))
        })
        .collect();
    json!({
        "transport": request.transport,
        "user": identity.map(|i| &i.user_id),
        "roles": identity.map(|i| &i.roles),
        "metadata": identity.map(|i| &i.metadata),
        "cookies": cookies(&request.headers),
        "headers": headers,
    })
    .to_string()
    .into_bytes()
}

/// Every cookie of the `Cookie` header(s) by name; the first of a repeated name
/// wins (browsers send the most specific first), unparsable pairs are skipped.
/// Each `;`-separated pair is read on its own, as UTF-8 (browsers send cookie
/// values as raw UTF-8 bytes): one pair that is not UTF-8 loses only itself.
fn cookies(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let Ok(text) = std::str::from_utf8(pair) else {
                continue;
            };
            let Ok(cookie) = cookie::Cookie::parse(text.trim()) else {
                continue;
            };
            if !out.contains_key(cookie.name()) {
                out.insert(cookie.name().to_owned(), json!(cookie.value()));
            }
        }
    }
    out
}

/// The admission the answer grants, or its refusal. With a token, the
/// connection also ends no later than the token's `exp`. An `expires_at` that is
/// not after `now` (Unix seconds) refuses as an expired token does (401
/// `expired`): admitted, the connection would be closed with 3005 at once, and a
/// client reconnects after 3005 without waiting.
fn judge(
    answer: Value,
    max_topic_length: usize,
    token_expiry: Option<i64>,
    now: i64,
) -> Result<Admission, Denied> {
    let connected = match reply::answer::<Connected, Refused>(answer)? {
        Answer::Result(connected) => connected,
        Answer::Error(refused) => {
            reply::check_reason(&refused.reason)?;
            let kind = match refused.status {
                401 => RefusalKind::Unauthorized,
                403 => RefusalKind::Forbidden,
                other => {
                    return Err(
                        Failure::Shape(format!("error status {other}: give 401 or 403")).into(),
                    );
                }
            };
            return Err(Denied::Refused(HookRefusal::new(
                kind,
                refused.reason,
                refused.message,
            )));
        }
    };
    if connected.user.is_empty() {
        return Err(Failure::Shape("`user` is empty".into()).into());
    }
    if let Some(at) = connected.expires_at
        && at <= now
    {
        return Err(Denied::Refused(HookRefusal::new(
            RefusalKind::Unauthorized,
            "expired",
            format!("the connect proxy's expires_at ({at}) has passed"),
        )));
    }
    let mut topics: Vec<Topic> = Vec::with_capacity(connected.topics.len());
    for name in &connected.topics {
        let topic = Topic::parse_with_max(name, max_topic_length)
            .map_err(|e| Failure::Shape(format!("topic {name:?}: {e}")))?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    let expires_at = match (connected.expires_at, token_expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(Admission {
        identity: Identity {
            user_id: connected.user,
            roles: connected.roles,
            metadata: connected.metadata.unwrap_or_default(),
            expires_at,
        },
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use realtime_core::Transport;

    /// The time of these judgements: before every `expires_at` they accept.
    const NOW: i64 = 10;

    fn admitted(answer: Value) -> Admission {
        judge(answer, 255, None, NOW).unwrap()
    }

    fn failed(answer: Value) -> Failure {
        match judge(answer.clone(), 255, None, NOW) {
            Err(Denied::Failed(f)) => f,
            other => panic!("{answer}: expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_result_is_the_identity_and_its_topics() {
        let a = admitted(json!({"result": {
            "user": "u1", "roles": ["admin"], "metadata": {"plan": "pro"},
            "topics": ["news", "chat:1", "news"], "expires_at": 1_900_000_000
        }}));
        assert_eq!(a.identity.user_id, "u1");
        assert_eq!(a.identity.roles, ["admin"]);
        assert_eq!(a.identity.metadata["plan"], "pro");
        assert_eq!(a.identity.expires_at, Some(1_900_000_000));
        let names: Vec<&str> = a.topics.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["news", "chat:1"]);
        let minimal = admitted(json!({"result": {"user": "u2", "metadata": null}}));
        assert_eq!(
            minimal,
            Admission::new(Identity {
                user_id: "u2".into(),
                roles: vec![],
                metadata: Map::new(),
                expires_at: None,
            })
        );
    }

    #[test]
    fn a_token_expiry_still_ends_the_connection() {
        let a = judge(json!({"result": {"user": "u"}}), 255, Some(100), NOW).unwrap();
        assert_eq!(a.identity.expires_at, Some(100));
        let a = judge(
            json!({"result": {"user": "u", "expires_at": 50}}),
            255,
            Some(100),
            NOW,
        )
        .unwrap();
        assert_eq!(a.identity.expires_at, Some(50));
        let a = judge(
            json!({"result": {"user": "u", "expires_at": 500}}),
            255,
            Some(100),
            NOW,
        )
        .unwrap();
        assert_eq!(a.identity.expires_at, Some(100));
    }

    #[test]
    fn an_expires_at_not_after_now_refuses_as_expired() {
        for at in [NOW, NOW - 1, i64::MIN] {
            match judge(
                json!({"result": {"user": "u", "expires_at": at}}),
                255,
                None,
                NOW,
            ) {
                Err(Denied::Refused(r)) => {
                    assert_eq!(
                        (r.kind, r.reason.as_str()),
                        (RefusalKind::Unauthorized, "expired")
                    );
                }
                other => panic!("{at}: {other:?}"),
            }
        }
        let far = admitted(json!({"result": {"user": "u", "expires_at": i64::MAX}}));
        assert_eq!(far.identity.expires_at, Some(i64::MAX));
    }

    #[test]
    fn refusals_are_401_or_403_with_a_reason() {
        for (status, kind) in [
            (401, RefusalKind::Unauthorized),
            (403, RefusalKind::Forbidden),
        ] {
            match judge(
                json!({"error": {"status": status, "reason": "no_session", "message": "log in"}}),
                255,
                None,
                NOW,
            ) {
                Err(Denied::Refused(r)) => {
                    assert_eq!(
                        (r.kind, r.reason.as_str(), r.message.as_str()),
                        (kind, "no_session", "log in")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            failed(json!({"error": {"status": 500, "reason": "x"}})),
            Failure::Shape(_)
        ));
        assert!(matches!(
            failed(json!({"error": {"status": 403, "reason": "Bad Reason"}})),
            Failure::Shape(_)
        ));
        assert!(matches!(
            failed(json!({"error": {"reason": "x"}})),
            Failure::Shape(_)
        ));
    }

    #[test]
    fn garbage_results_are_failures() {
        for garbage in [
            json!({"result": {}}),
            json!({"result": {"user": ""}}),
            json!({"result": {"user": 5}}),
            json!({"result": {"user": "u", "roles": [1]}}),
            json!({"result": {"user": "u", "roles": "admin"}}),
            json!({"result": {"user": "u", "metadata": [1]}}),
            json!({"result": {"user": "u", "topics": ["bad topic"]}}),
            json!({"result": {"user": "u", "expires_at": "soon"}}),
            json!({"result": {"user": "u", "admin": true}}),
        ] {
            assert!(
                matches!(failed(garbage.clone()), Failure::Shape(_)),
                "{garbage}"
            );
        }
        let long = "t".repeat(20);
        assert!(
            judge(
                json!({"result": {"user": "u", "topics": [long]}}),
                10,
                None,
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn only_cookies_and_allowed_headers_are_sent() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("sid=abc; theme=dark; sid=other"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("lang=en"));
        // Raw UTF-8 is read; a pair that is not UTF-8 (Latin-1 here) loses only
        // itself, and so does a header value.
        headers.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"city=Z\xc3\xbcrich; bad=caf\xe9; ok=1").unwrap(),
        );
        headers.append("x-tenant", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.append("x-tenant", HeaderValue::from_static("acme"));
        headers.append("x-tenant", HeaderValue::from_static("beta"));
        headers.append("x-secret", HeaderValue::from_static("hidden"));
        let request = ConnectRequest {
            transport: Transport::Sse,
            identity: None,
            headers,
        };
        let allowed = [
            HeaderName::from_static("x-tenant"),
            HeaderName::from_static("user-agent"),
        ];
        let body: Value = serde_json::from_slice(&request_body(&request, &allowed)).unwrap();
        assert_eq!(
            body,
            json!({
                "transport": "sse", "user": null, "roles": null, "metadata": null,
                "cookies": {"sid": "abc", "theme": "dark", "lang": "en", "city": "Zürich", "ok": "1"},
                "headers": {"x-tenant": "acme, beta"},
            })
        );
    }
}
