//! What the server logs, with secrets kept out: request lines at `debug` with the
//! query string's `token` (and any credential-like parameter) redacted, no
//! headers, and the WebSocket crates capped below the level where they print
//! frame contents (a `refresh` frame carries a token).

use std::borrow::Cow;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;

/// Crates that print every frame (tokens and message contents included, as
/// text or hex) at `trace`, with their submodules.
const FRAME_LOGGERS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// The log filter for a `tracing` filter spec (`info`, `realtime=debug`, ...):
/// an invalid spec falls back to `info`, and the [`FRAME_LOGGERS`] never log
/// below `debug`, whatever the spec says.
///
/// The cap is a second filter that every event must also pass, not a directive
/// added to the spec's: a directive can be outranked by a more specific one
/// (`tungstenite::protocol=trace` beats `tungstenite=debug`), a separate filter
/// cannot.
pub fn log_filter<S>(spec: &str) -> impl Filter<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    filter.and(frame_cap())
}

/// Everything at any level, except the frame loggers above `debug`.
fn frame_cap() -> Targets {
    FRAME_LOGGERS.into_iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |cap, target| cap.with_target(target, LevelFilter::DEBUG),
    )
}

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Whether request lines would be logged; the filter is fixed at start, so the
/// router adds [`log_requests`] only when this holds and costs nothing otherwise.
pub fn enabled() -> bool {
    tracing::enabled!(target: "realtime_server::request_log", tracing::Level::DEBUG)
}

/// Logs each request's method, path, redacted query and status at `debug`.
pub async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = redact_query(request.uri().query().unwrap_or("")).into_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, %query, status = response.status().as_u16(), "request");
    response
}

/// `query` with the value of every credential-like parameter replaced by
/// [`REDACTED`]. Names are matched case-insensitively and are not
/// percent-decoded, so any name containing `%` is treated as a credential too.
pub fn redact_query(query: &str) -> Cow<'_, str> {
    if query.is_empty() {
        return Cow::Borrowed(query);
    }
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => Cow::Owned(format!("{name}={REDACTED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(redacted.join("&"))
}

/// Parameter names that may carry a credential.
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains('%')
        || [
            "token",
            "key",
            "secret",
            "password",
            "auth",
            "jwt",
            "signature",
        ]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_credentials_are_redacted() {
        assert_eq!(redact_query("token=eyJ.abc.def"), "token=[redacted]");
        assert_eq!(
            redact_query("scope=cluster&TOKEN=x&api_key=k&access_token=y"),
            "scope=cluster&TOKEN=[redacted]&api_key=[redacted]&access_token=[redacted]"
        );
        assert_eq!(redact_query("t%6fken=secret"), "t%6fken=[redacted]");
        assert_eq!(redact_query("scope=local"), "scope=local");
        assert_eq!(redact_query(""), "");
        assert_eq!(redact_query("token"), "token");
    }
}
