//! What a proxy answer may be: exactly one of `{"result": ...}` or
//! `{"error": ...}`, each with exactly its documented fields, and a refusal's
//! `reason` of 1 to 64 `[a-z0-9_]`. Anything else is garbage, which refuses the
//! request as unavailable (never allows it).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call produced no decision. Each says which failure it was; the text a
/// client sees never carries the backend's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Every slot stayed taken for the whole timeout.
    Busy,
    /// No complete answer within the timeout.
    TimedOut,
    /// The request could not be sent (connection refused, DNS, TLS …); the
    /// detail is for the log.
    Unreachable(String),
    /// An answer other than 2xx.
    Status(u16),
    /// An answer larger than [`MAX_ANSWER`](super::client::MAX_ANSWER) bytes.
    TooLarge,
    /// An answer that is not JSON.
    NotJson(String),
    /// JSON, but not a documented answer.
    Shape(String),
}

impl Failure {
    /// For the client: which failure, without the backend's address.
    pub fn message(&self, hook: &str) -> String {
        match self {
            Failure::Busy => format!("the {hook} proxy is busy: no free slot within the timeout"),
            Failure::TimedOut => format!("the {hook} proxy did not answer within the timeout"),
            Failure::Unreachable(_) => format!("the {hook} proxy is unreachable"),
            Failure::Status(status) => format!("the {hook} proxy answered HTTP {status}"),
            Failure::TooLarge => format!("the {hook} proxy's answer is too large"),
            Failure::NotJson(e) => format!("the {hook} proxy's answer is not JSON: {e}"),
            Failure::Shape(e) => format!("the {hook} proxy's answer has the wrong shape: {e}"),
        }
    }

    /// For the log: the message and, for a transport error, its causes.
    pub fn detail(&self, hook: &str) -> String {
        match self {
            Failure::Unreachable(detail) => format!("{}: {detail}", self.message(hook)),
            _ => self.message(hook),
        }
    }
}

/// A well-formed answer: the backend's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<R, E> {
    Result(R),
    Error(E),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<R, E> {
    result: Option<R>,
    error: Option<E>,
}

/// Reads `{"result": R}` or `{"error": E}`.
pub fn answer<R: DeserializeOwned, E: DeserializeOwned>(
    value: Value,
) -> Result<Answer<R, E>, Failure> {
    let envelope: Envelope<R, E> =
        serde_json::from_value(value).map_err(|e| Failure::Shape(e.to_string()))?;
    match (envelope.result, envelope.error) {
        (Some(result), None) => Ok(Answer::Result(result)),
        (None, Some(error)) => Ok(Answer::Error(error)),
        (Some(_), Some(_)) => Err(Failure::Shape(
            "both `result` and `error`; give exactly one".into(),
        )),
        (None, None) => Err(Failure::Shape(
            "neither `result` nor `error`; give exactly one".into(),
        )),
    }
}

/// A subscribe or publish refusal: `{"reason", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl Refusal {
    /// The refusal, once its reason is checked.
    pub fn checked(self) -> Result<Refusal, Failure> {
        check_reason(&self.reason)?;
        Ok(self)
    }
}

/// A stable reason: 1 to 64 of `[a-z0-9_]`, so clients can match on it.
pub fn check_reason(reason: &str) -> Result<(), Failure> {
    let ok = (1..=64).contains(&reason.len())
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Failure::Shape(format!(
            "reason {reason:?} is not 1 to 64 of [a-z0-9_]"
        )))
    }
}

/// An empty result object: `{}` (allow).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: Value) -> Result<Answer<Empty, Refusal>, Failure> {
        answer(value)
    }

    #[test]
    fn exactly_one_of_result_and_error() {
        assert_eq!(read(json!({"result": {}})), Ok(Answer::Result(Empty {})));
        assert_eq!(
            read(json!({"error": {"reason": "banned", "message": "no"}})),
            Ok(Answer::Error(Refusal {
                reason: "banned".into(),
                message: "no".into()
            }))
        );
        for garbage in [
            json!({}),
            json!({"result": {}, "error": {"reason": "x"}}),
            json!({"result": null}),
            json!({"result": {}, "extra": 1}),
            json!({"result": {"allow": true}}),
            json!({"error": {"message": "no reason"}}),
            json!({"error": {"reason": "x", "code": 3}}),
            json!([1, 2]),
            json!("ok"),
            json!(null),
        ] {
            assert!(
                matches!(read(garbage.clone()), Err(Failure::Shape(_))),
                "{garbage}"
            );
        }
    }

    #[test]
    fn reasons_are_short_lowercase_words() {
        for good in ["banned", "not_a_member", "e2e", &"a".repeat(64)] {
            assert!(check_reason(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Banned",
            "not-a-member",
            "no way",
            "ünï",
            &"a".repeat(65),
        ] {
            assert!(check_reason(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_never_name_the_backend() {
        let f = Failure::Unreachable("tcp connect error: http://10.0.0.7:9000".into());
        assert_eq!(f.message("connect"), "the connect proxy is unreachable");
        assert!(f.detail("connect").contains("10.0.0.7"));
        assert_eq!(
            Failure::Status(502).message("publish"),
            "the publish proxy answered HTTP 502"
        );
    }
}
