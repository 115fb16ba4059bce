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
    /// 1009: an inbound message exceeded the configured size limit.
    MessageTooBig,
    /// 1011: an unexpected server-side failure on this connection.
    InternalError,
    /// 3008: the connection's outbound queue overflowed (slow consumer).
    SlowConsumer,
    /// 3012: the client did not answer pings in time.
    NoPong,
    /// 3503: the backend or an operator disconnected this connection.
    ForceDisconnect,
}

impl CloseCode {
    /// The numeric code carried in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ServerShutdown => 1001,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::SlowConsumer => 3008,
            CloseCode::NoPong => 3012,
            CloseCode::ForceDisconnect => 3503,
        }
    }

    /// The reason text sent in the close frame (always well under the 123-byte limit).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::ServerShutdown => "server shutting down",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::NoPong => "no pong",
            CloseCode::ForceDisconnect => "disconnected by server",
        }
    }

    /// Whether a client should reconnect after receiving this code.
    pub const fn should_reconnect(self) -> bool {
        match self {
            CloseCode::MessageTooBig | CloseCode::ForceDisconnect => false,
            CloseCode::Normal
            | CloseCode::ServerShutdown
            | CloseCode::InternalError
            | CloseCode::SlowConsumer
            | CloseCode::NoPong => true,
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [CloseCode; 7] = [
        CloseCode::Normal,
        CloseCode::ServerShutdown,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::SlowConsumer,
        CloseCode::NoPong,
        CloseCode::ForceDisconnect,
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
