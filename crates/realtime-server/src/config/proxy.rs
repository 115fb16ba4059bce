//! The proxy options (the `[proxy]` table: `connect_proxy_url`,
//! `connect_proxy_headers`, `subscribe_proxy_url`, `publish_proxy_url`,
//! `proxy_secret`, `proxy_timeout`, `proxy_max_concurrency`), checked and turned
//! into [`ProxySettings`]; and the check that every namespace naming a proxy
//! has its URL.

use std::fmt;
use std::time::Duration;

use axum::http::HeaderName;
use realtime_core::TopicPolicy;

use super::ProxyOptions;
use super::presence::{MIN_SECRET_LEN, check_url};

/// The longest proxy timeout: a handshake waiting longer has long been given
/// up on by its client.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The most calls in flight to one hook: far above what one backend serves,
/// and within what a semaphore can count.
pub const MAX_CONCURRENCY: usize = 65_536;

/// Which backend proxy hooks are called, where, and how hard.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `http://` or `https://`, checked; `None`: no such hook.
    pub connect_url: Option<String>,
    /// Header names forwarded to the connect proxy, lowercase and valid.
    pub connect_headers: Vec<String>,
    pub subscribe_url: Option<String>,
    pub publish_url: Option<String>,
    /// The HMAC key, at least [`MIN_SECRET_LEN`] bytes; set exactly when a URL is.
    pub secret: Option<String>,
    /// Longest one call may take, waiting for a slot included.
    pub timeout: Duration,
    /// Calls in flight to each hook at once, at least 1.
    pub max_concurrency: usize,
}

impl ProxySettings {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

    /// Whether any hook is configured.
    pub fn any(&self) -> bool {
        self.connect_url.is_some() || self.subscribe_url.is_some() || self.publish_url.is_some()
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            connect_url: None,
            connect_headers: Vec::new(),
            subscribe_url: None,
            publish_url: None,
            secret: None,
            timeout: Self::DEFAULT_TIMEOUT,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
        }
    }
}

// The secret stays out of `{:?}` of the settings.
impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("connect_url", &self.connect_url)
            .field("connect_headers", &self.connect_headers)
            .field("subscribe_url", &self.subscribe_url)
            .field("publish_url", &self.publish_url)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// Checks the proxy options: each URL `http://` or `https://` with a host; any
/// URL needs a secret of at least 16 bytes and a secret needs a URL; forwarded
/// headers need the connect proxy and must be header names; the timeout is
/// above zero and the concurrency at least 1.
pub(super) fn proxy_settings(o: ProxyOptions) -> Result<ProxySettings, String> {
    for (name, url) in [
        ("REALTIME_CONNECT_PROXY_URL", &o.connect_proxy_url),
        ("REALTIME_SUBSCRIBE_PROXY_URL", &o.subscribe_proxy_url),
        ("REALTIME_PUBLISH_PROXY_URL", &o.publish_proxy_url),
    ] {
        if let Some(url) = url {
            check_url(name, url)?;
        }
    }
    let mut settings = ProxySettings {
        connect_url: o.connect_proxy_url,
        subscribe_url: o.subscribe_proxy_url,
        publish_url: o.publish_proxy_url,
        ..ProxySettings::default()
    };
    settings.secret = match (settings.any(), o.proxy_secret) {
        (false, None) => None,
        (true, None) => {
            return Err("a proxy URL needs REALTIME_PROXY_SECRET to sign its requests".into());
        }
        (false, Some(_)) => {
            return Err("REALTIME_PROXY_SECRET is set but no proxy URL is".into());
        }
        (true, Some(secret)) if secret.len() < MIN_SECRET_LEN => {
            return Err(format!(
                "REALTIME_PROXY_SECRET must be at least {MIN_SECRET_LEN} bytes, not {}",
                secret.len()
            ));
        }
        (true, Some(secret)) => Some(secret),
    };
    for name in o.connect_proxy_headers {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            format!("REALTIME_CONNECT_PROXY_HEADERS: {name:?} is not a header name")
        })?;
        let lower = parsed.as_str().to_owned();
        if !settings.connect_headers.contains(&lower) {
            settings.connect_headers.push(lower);
        }
    }
    if !settings.connect_headers.is_empty() && settings.connect_url.is_none() {
        return Err(
            "REALTIME_CONNECT_PROXY_HEADERS is set but REALTIME_CONNECT_PROXY_URL is not".into(),
        );
    }
    if let Some(timeout) = o.proxy_timeout {
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(format!(
                "REALTIME_PROXY_TIMEOUT must be above zero and at most 1m, not {}",
                humantime::format_duration(timeout)
            ));
        }
        settings.timeout = timeout;
    }
    if let Some(n) = o.proxy_max_concurrency {
        if n == 0 || n > MAX_CONCURRENCY {
            return Err(format!(
                "REALTIME_PROXY_MAX_CONCURRENCY must be between 1 and {MAX_CONCURRENCY}, not {n}"
            ));
        }
        settings.max_concurrency = n;
    }
    Ok(settings)
}

/// A namespace that names a proxy hook whose URL is not configured would refuse
/// (or, worse, silently allow) every subscribe or publish: refused at start.
pub(super) fn check_namespaces(policy: &TopicPolicy, proxy: &ProxySettings) -> Result<(), String> {
    for ns in &policy.namespaces {
        let uses = ns.proxy();
        for (used, url, key, option) in [
            (
                uses.subscribe,
                &proxy.subscribe_url,
                "subscribe_proxy",
                "REALTIME_SUBSCRIBE_PROXY_URL",
            ),
            (
                uses.publish,
                &proxy.publish_url,
                "publish_proxy",
                "REALTIME_PUBLISH_PROXY_URL",
            ),
        ] {
            if used && url.is_none() {
                return Err(format!(
                    "topic policy: namespace {:?}: {key} = true needs {option}",
                    ns.pattern().as_str()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef";

    fn options() -> ProxyOptions {
        ProxyOptions::default()
    }

    fn with_url() -> ProxyOptions {
        ProxyOptions {
            connect_proxy_url: Some("http://127.0.0.1:9/connect".into()),
            proxy_secret: Some(KEY.into()),
            ..options()
        }
    }

    #[test]
    fn nothing_configured_is_no_hook_with_the_defaults() {
        let s = proxy_settings(options()).unwrap();
        assert!(!s.any());
        assert_eq!(s, ProxySettings::default());
        assert_eq!((s.timeout, s.max_concurrency), (Duration::from_secs(1), 64));
    }

    #[test]
    fn every_url_must_be_http_and_any_url_needs_a_long_secret() {
        for field in ["connect", "subscribe", "publish"] {
            let mut o = ProxyOptions {
                proxy_secret: Some(KEY.into()),
                ..options()
            };
            let url = Some("ftp://backend.example/x".to_owned());
            match field {
                "connect" => o.connect_proxy_url = url,
                "subscribe" => o.subscribe_proxy_url = url,
                _ => o.publish_proxy_url = url,
            }
            let e = proxy_settings(o).unwrap_err();
            assert!(
                e.starts_with(&format!("REALTIME_{}_PROXY_URL", field.to_uppercase())),
                "{e}"
            );
        }
        let no_secret = ProxyOptions {
            proxy_secret: None,
            ..with_url()
        };
        assert!(
            proxy_settings(no_secret)
                .unwrap_err()
                .contains("needs REALTIME_PROXY_SECRET")
        );
        let short = ProxyOptions {
            proxy_secret: Some("fifteen-bytes!!".into()),
            ..with_url()
        };
        assert_eq!(
            proxy_settings(short).unwrap_err(),
            "REALTIME_PROXY_SECRET must be at least 16 bytes, not 15"
        );
        let secret_alone = ProxyOptions {
            proxy_secret: Some(KEY.into()),
            ..options()
        };
        assert!(proxy_settings(secret_alone).is_err());
        let s = proxy_settings(with_url()).unwrap();
        assert!(s.any());
        assert!(!format!("{s:?}").contains(KEY));
    }

    #[test]
    fn forwarded_headers_are_lowercase_names_for_the_connect_proxy() {
        let s = proxy_settings(ProxyOptions {
            connect_proxy_headers: vec![
                "X-Tenant".into(),
                " user-agent ".into(),
                "x-tenant".into(),
                "".into(),
            ],
            ..with_url()
        })
        .unwrap();
        assert_eq!(s.connect_headers, ["x-tenant", "user-agent"]);
        let bad = proxy_settings(ProxyOptions {
            connect_proxy_headers: vec!["x tenant".into()],
            ..with_url()
        })
        .unwrap_err();
        assert!(bad.contains("not a header name"), "{bad}");
        let without_connect = ProxyOptions {
            connect_proxy_url: None,
            subscribe_proxy_url: Some("https://backend.example/s".into()),
            connect_proxy_headers: vec!["x-tenant".into()],
            ..with_url()
        };
        assert!(
            proxy_settings(without_connect)
                .unwrap_err()
                .contains("REALTIME_CONNECT_PROXY_URL is not")
        );
    }

    #[test]
    fn timeout_and_concurrency_must_be_usable() {
        let zero = ProxyOptions {
            proxy_timeout: Some(Duration::ZERO),
            ..options()
        };
        assert!(proxy_settings(zero).unwrap_err().contains("above zero"));
        let long = ProxyOptions {
            proxy_timeout: Some(Duration::from_secs(61)),
            ..options()
        };
        assert!(
            proxy_settings(long)
                .unwrap_err()
                .contains("at most 1m, not 1m 1s")
        );
        let none = ProxyOptions {
            proxy_max_concurrency: Some(0),
            ..options()
        };
        assert!(
            proxy_settings(none)
                .unwrap_err()
                .contains("between 1 and 65536")
        );
        let huge = ProxyOptions {
            proxy_max_concurrency: Some(usize::MAX),
            ..options()
        };
        assert!(proxy_settings(huge).is_err());
        let s = proxy_settings(ProxyOptions {
            proxy_timeout: Some(Duration::from_millis(250)),
            proxy_max_concurrency: Some(1),
            ..with_url()
        })
        .unwrap();
        assert_eq!(
            (s.timeout, s.max_concurrency),
            (Duration::from_millis(250), 1)
        );
    }
}
