//! The HTTP client the server calls the application backend with (webhook
//! deliveries, proxy hooks): one builder so every outbound call has the same
//! `User-Agent`, TLS (rustls), redirect policy and timeout handling, and one way
//! to describe a failed call.

use std::time::Duration;

/// The `User-Agent` of every call to the backend.
pub fn user_agent() -> String {
    format!("boundary-realtime/{}", env!("CARGO_PKG_VERSION"))
}

/// A client whose every request ends after `timeout`. Redirects are never
/// followed: a 3xx is an answer other than 2xx, never a reason to send the body
/// and its signature somewhere else.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(user_agent())
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// A transport error with its causes (connection refused, timed out …).
pub(crate) fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
