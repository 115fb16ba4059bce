//! The JSON error responses the server writes on the raw socket, where no router
//! runs: the refusal of a connection over the cap, and the stand-ins for the
//! responses hyper writes itself when a request head cannot be parsed.

use serde_json::json;

/// The statuses hyper answers by itself when a request head cannot be parsed
/// (see `hyper::proto::h1::role::Server::on_error`), with our code and message.
fn parse_error(status: u16) -> Option<(&'static str, &'static str, &'static str)> {
    match status {
        400 => Some(("Bad Request", "bad_request", "malformed HTTP request")),
        414 => Some(("URI Too Long", "uri_too_long", "request target too long")),
        431 => Some((
            "Request Header Fields Too Large",
            "headers_too_large",
            "request headers too large or too many",
        )),
        _ => None,
    }
}

/// A complete `HTTP/1.1` response with a JSON `{"error", "message"}` body that
/// closes the connection.
pub(crate) fn response(status: u16, reason: &str, code: &str, message: &str) -> Vec<u8> {
    let body = json!({"error": code, "message": message}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to a connection over `max_connections`.
pub(crate) fn too_many_connections() -> Vec<u8> {
    let body = json!({
        "error": "too_many_connections",
        "message": "the server is at its connection limit; retry later",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// If `head` is the start of an error response hyper wrote itself for a request
/// it could not parse (always `connection: close`, no body), the JSON response to
/// send instead.
pub(crate) fn replace_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
    let (reason, code, message) = parse_error(status)?;
    let closes = head
        .windows(b"connection: close\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"connection: close\r\n"));
    closes.then(|| response(status, reason, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_parse_errors_are_replaced() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let replaced = String::from_utf8(replace_parse_error(hyper).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(
            replaced.ends_with(r#"{"error":"uri_too_long","message":"request target too long"}"#)
        );
        // The app's own responses, and anything that keeps the connection, pass.
        assert!(replace_parse_error(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\n").is_none());
        assert!(
            replace_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 9\r\n").is_none()
        );
        assert!(replace_parse_error(b"{\"error\":1}").is_none());
    }
}
