//! Which browser origins may open a WebSocket: the protection against cross-site
//! WebSocket hijacking, as a pure rule over the `Origin` and `Host` headers.
//!
//! Browsers always send `Origin` on a WebSocket upgrade; backends and native
//! clients usually do not, and a missing `Origin` is accepted (it cannot come from
//! a page on another site). With no allow-list, a page may connect only from the
//! server's own host; with one, only from the listed origins.

/// The origin rule of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Listed origins, normalized (`scheme://host[:port]`, lowercase). Empty means
    /// "the server's own host only".
    allowed: Vec<String>,
    /// `*` was listed: every origin is accepted.
    any: bool,
    /// Also accept pages served from localhost (development mode).
    localhost: bool,
}

impl OriginPolicy {
    /// Pages of the server's own host only (the default).
    pub fn same_host() -> Self {
        Self::default()
    }

    /// Pages of the listed origins only, e.g. `https://app.example.com`; `*`
    /// accepts every origin. An empty list means [`OriginPolicy::same_host`].
    pub fn allow<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = Self::default();
        for origin in origins {
            let origin = normalize(origin.as_ref());
            if origin == "*" {
                policy.any = true;
            } else if !origin.is_empty() {
                policy.allowed.push(origin);
            }
        }
        policy
    }

    /// Also accepts pages served from `localhost`, `127.0.0.1` or `[::1]` on any
    /// port and scheme (development mode).
    pub fn with_localhost(mut self, yes: bool) -> Self {
        self.localhost = yes;
        self
    }

    /// Whether every origin is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Whether an upgrade with this `Origin` (if any) to this `Host` is allowed.
    pub fn permits(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = normalize(origin);
        let Some(authority) = authority(&origin) else {
            // `null` (sandboxed frames, file: pages) or garbage: never allowed
            // unless every origin is.
            return self.any;
        };
        if self.any || self.allowed.contains(&origin) {
            return true;
        }
        if self.localhost && is_localhost(authority) {
            return true;
        }
        self.allowed.is_empty() && host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority))
    }
}

/// Lowercase, without surrounding spaces or a trailing `/`.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The `host[:port]` of `scheme://host[:port]`, if the origin has that shape.
fn authority(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    let valid = !scheme.is_empty()
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    valid.then_some(rest)
}

fn is_localhost(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        // `[::1]:8080` → `::1`
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_origin_every_upgrade_is_allowed() {
        assert!(OriginPolicy::same_host().permits(None, Some("rt.example.com")));
        assert!(OriginPolicy::allow(["https://a.example"]).permits(None, None));
    }

    #[test]
    fn same_host_accepts_only_the_servers_own_host() {
        let p = OriginPolicy::same_host();
        let host = Some("rt.example.com:8080");
        assert!(p.permits(Some("https://rt.example.com:8080"), host));
        assert!(p.permits(Some("HTTPS://RT.Example.com:8080/"), host));
        assert!(
            !p.permits(Some("https://rt.example.com"), host),
            "other port"
        );
        assert!(!p.permits(Some("https://evil.example"), host));
        assert!(!p.permits(Some("https://rt.example.com:8080"), None));
        assert!(!p.permits(Some("null"), Some("null")));
        assert!(!p.permits(Some("http://localhost:3000"), Some("rt.example.com")));
    }

    #[test]
    fn an_allow_list_replaces_the_same_host_rule() {
        let p = OriginPolicy::allow(["https://app.example.com/", " https://admin.example.com"]);
        let host = Some("rt.example.com");
        assert!(p.permits(Some("https://app.example.com"), host));
        assert!(p.permits(Some("https://admin.example.com"), host));
        assert!(
            !p.permits(Some("http://app.example.com"), host),
            "scheme counts"
        );
        assert!(
            !p.permits(Some("https://rt.example.com"), host),
            "own host not listed"
        );
        assert!(!p.permits(Some("https://app.example.com.evil.example"), host));
    }

    #[test]
    fn a_star_accepts_everything_and_localhost_is_for_development() {
        let any = OriginPolicy::allow(["*"]);
        assert!(any.permits(Some("https://anything.example"), None));
        assert!(any.permits(Some("null"), None));
        let dev = OriginPolicy::same_host().with_localhost(true);
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            assert!(
                dev.permits(Some(origin), Some("rt.example.com")),
                "{origin}"
            );
        }
        assert!(!dev.permits(Some("http://localhost.evil.example"), Some("x")));
        assert!(!dev.permits(Some("http://evil.example/localhost"), Some("x")));
    }

    #[test]
    fn malformed_origins_are_refused() {
        let p = OriginPolicy::same_host().with_localhost(true);
        for bad in [
            "",
            "localhost",
            "://localhost",
            "http://",
            "http://user@localhost",
            "ht tp://localhost",
        ] {
            assert!(!p.permits(Some(bad), Some("localhost")), "{bad:?}");
        }
    }
}
