//! WebSocket close codes the server uses, and which of them invite a reconnect.
//!
//! Scheme (documented in docs/PROTOCOL.md): standard codes where they fit, then
//! application codes in two ranges modelled on Centrifugo's so existing client logic
//! applies: 3000–3499 "reconnect", 3500–3999 "do not reconnect". 4000–4999 are left
//! to applications.

/// A close code sent by the server, with the reason text that accompanies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (answer to a client's own close).
    Normal,
    /// 1001: the server is shutting down; reconnect (to another node) shortly.
    ServerShutdown,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1009: an inbound message exceeded the configured size limit.
    MessageTooBig,
    /// 1011: an unexpected server-side failure on this connection.
    InternalError,
    /// 3005: the connection's token expired without a `refresh`; reconnect with a
    /// fresh token.
    TokenExpired,
    /// 3008: the connection's outbound queue overflowed (slow consumer).
    SlowConsumer,
    /// 3012: the client did not answer pings in time.
    NoPong,
    /// 3013: the client kept sending commands well past its rate limit.
    TooManyRequests,
    /// 3503: the backend or an operator disconnected this connection.
    ForceDisconnect,
    /// 3504: the user already has as many connections as this node allows.
    ConnectionLimit,
}

impl CloseCode {
    /// The numeric code carried in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ServerShutdown => 1001,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TokenExpired => 3005,
            CloseCode::SlowConsumer => 3008,
            CloseCode::NoPong => 3012,
            CloseCode::TooManyRequests => 3013,
            CloseCode::ForceDisconnect => 3503,
            CloseCode::ConnectionLimit => 3504,
        }
    }

    /// The reason text sent in the close frame (always well under the 123-byte limit).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::ServerShutdown => "server shutting down",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::TokenExpired => "token expired",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::NoPong => "no pong",
            CloseCode::TooManyRequests => "too many requests",
            CloseCode::ForceDisconnect => "disconnected by server",
            CloseCode::ConnectionLimit => "connection limit",
        }
    }

    /// A snake_case name for metrics labels and logs.
    pub const fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::ServerShutdown => "server_shutdown",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::NoPong => "no_pong",
            CloseCode::TooManyRequests => "too_many_requests",
            CloseCode::ForceDisconnect => "force_disconnect",
            CloseCode::ConnectionLimit => "connection_limit",
        }
    }

    /// Whether a client should reconnect after receiving this code.
    pub const fn should_reconnect(self) -> bool {
        match self {
            CloseCode::InvalidPayload
            | CloseCode::MessageTooBig
            | CloseCode::ForceDisconnect
            | CloseCode::ConnectionLimit => false,
            CloseCode::Normal
            | CloseCode::ServerShutdown
            | CloseCode::InternalError
            | CloseCode::TokenExpired
            | CloseCode::SlowConsumer
            | CloseCode::NoPong
            | CloseCode::TooManyRequests => true,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [CloseCode; 11] = [
        CloseCode::Normal,
        CloseCode::ServerShutdown,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::TokenExpired,
        CloseCode::SlowConsumer,
        CloseCode::NoPong,
        CloseCode::TooManyRequests,
        CloseCode::ForceDisconnect,
        CloseCode::ConnectionLimit,
    ];

    /// Looks a code up by number.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_codes_follow_the_reconnect_ranges() {
        for c in CloseCode::ALL {
            let n = c.code();
            if (3000..3500).contains(&n) {
                assert!(c.should_reconnect(), "{n} is in the reconnect range");
            }
            if (3500..4000).contains(&n) {
                assert!(!c.should_reconnect(), "{n} is in the terminal range");
            }
            assert!(c.reason().len() < 123);
            assert_eq!(CloseCode::from_code(n), Some(c));
        }
        assert_eq!(CloseCode::from_code(4242), None);
    }
}
