//! The presence options (`presence_node_timeout`, `presence_offline_grace`) and the
//! webhook options (`webhook_*`), checked and turned into the engine's
//! [`PresenceSettings`] and the sender's [`WebhookSettings`].

use std::fmt;
use std::time::Duration;

use realtime::presence::PresenceSettings;
use realtime_core::LeaseRules;

/// Where webhook events go and how hard the sender tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The receiver and the signing key; `None`: no webhook is configured.
    pub endpoint: Option<WebhookEndpoint>,
    /// Longest one attempt may take.
    pub timeout: Duration,
    /// Attempts per event in all, at least 1.
    pub max_attempts: u32,
}

impl WebhookSettings {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
}

/// A receiver URL and the HMAC key its deliveries are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `http://` or `https://`, checked.
    pub url: String,
    /// At least [`MIN_SECRET_LEN`] bytes.
    pub secret: String,
}

/// Shorter keys make the signature guessable offline.
pub const MIN_SECRET_LEN: usize = 16;

/// The longest grace: an hour already hides a real departure from the backend.
pub const MAX_OFFLINE_GRACE: Duration = Duration::from_secs(3600);

// The secret stays out of `{:?}` of the settings.
impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("secret", &"<set>")
            .finish()
    }
}

/// The webhook options as given.
pub(super) struct WebhookOptions {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
}

/// Checks the webhook options: a URL needs a secret of at least 16 bytes and the
/// reverse; the URL is `http://` or `https://` with a host.
pub(super) fn webhook_settings(o: WebhookOptions) -> Result<WebhookSettings, String> {
    let endpoint = match (o.url, o.secret) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(
                "REALTIME_WEBHOOK_URL needs REALTIME_WEBHOOK_SECRET to sign the events".into(),
            );
        }
        (None, Some(_)) => {
            return Err("REALTIME_WEBHOOK_SECRET is set but REALTIME_WEBHOOK_URL is not".into());
        }
        (Some(url), Some(secret)) => {
            check_url("REALTIME_WEBHOOK_URL", &url)?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(format!(
                    "REALTIME_WEBHOOK_SECRET must be at least {MIN_SECRET_LEN} bytes, not {}",
                    secret.len()
                ));
            }
            Some(WebhookEndpoint { url, secret })
        }
    };
    let timeout = o.timeout.unwrap_or(WebhookSettings::DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err("REALTIME_WEBHOOK_TIMEOUT must be above zero".into());
    }
    let max_attempts = o
        .max_attempts
        .unwrap_or(WebhookSettings::DEFAULT_MAX_ATTEMPTS);
    if max_attempts == 0 {
        return Err("REALTIME_WEBHOOK_MAX_ATTEMPTS must be at least 1".into());
    }
    Ok(WebhookSettings {
        endpoint,
        timeout,
        max_attempts,
    })
}

/// Checks that `url` (the option `name`) is `http://` or `https://` with a host.
pub(super) fn check_url(name: &str, url: &str) -> Result<(), String> {
    let invalid = |why: &str| format!("{name} {url:?} is not usable: {why}");
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("it must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(())
}

/// The presence options as given.
pub(super) struct PresenceOptions {
    pub node_timeout: Option<Duration>,
    pub offline_grace: Option<Duration>,
    pub queue_size: Option<usize>,
    /// Whether a webhook is configured: only then are events queued.
    pub events: bool,
}

/// The engine's presence settings: the lease from the node timeout (3 s to 1 h),
/// the grace (0 to 1 h) and the event queue (at least 1).
pub(super) fn presence_settings(o: PresenceOptions) -> Result<PresenceSettings, String> {
    let bound = o
        .node_timeout
        .unwrap_or(PresenceSettings::DEFAULT_NODE_TIMEOUT);
    let lease = LeaseRules::new(bound).map_err(|_| {
        format!(
            "REALTIME_PRESENCE_NODE_TIMEOUT must be between 3s and 1h, not {}",
            humantime::format_duration(bound)
        )
    })?;
    let offline_grace = o
        .offline_grace
        .unwrap_or(PresenceSettings::DEFAULT_OFFLINE_GRACE);
    if offline_grace > MAX_OFFLINE_GRACE {
        return Err(format!(
            "REALTIME_PRESENCE_OFFLINE_GRACE must be at most 1h, not {}",
            humantime::format_duration(offline_grace)
        ));
    }
    let event_queue = o
        .queue_size
        .unwrap_or(PresenceSettings::DEFAULT_EVENT_QUEUE);
    if event_queue == 0 {
        return Err("REALTIME_WEBHOOK_QUEUE_SIZE must be at least 1".into());
    }
    Ok(PresenceSettings {
        lease,
        offline_grace,
        events: o.events,
        event_queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: Option<&str>, secret: Option<&str>) -> Result<WebhookSettings, String> {
        webhook_settings(WebhookOptions {
            url: url.map(str::to_owned),
            secret: secret.map(str::to_owned),
            timeout: None,
            max_attempts: None,
        })
    }

    const KEY: &str = "0123456789abcdef";

    #[test]
    fn a_webhook_needs_a_usable_url_and_a_long_secret() {
        let none = webhook(None, None).unwrap();
        assert_eq!(none.endpoint, None);
        assert_eq!(
            (none.timeout, none.max_attempts),
            (Duration::from_secs(5), 10)
        );
        let ok = webhook(Some("https://hooks.example/rt"), Some(KEY)).unwrap();
        assert_eq!(ok.endpoint.unwrap().url, "https://hooks.example/rt");
        assert!(webhook(Some("http://127.0.0.1:9/x"), Some(KEY)).is_ok());
        for url in [
            "ftp://hooks.example",
            "hooks.example/rt",
            "http://",
            "mailto:a@b.example",
        ] {
            let e = webhook(Some(url), Some(KEY)).unwrap_err();
            assert!(e.starts_with("REALTIME_WEBHOOK_URL"), "{url}: {e}");
        }
        let short = webhook(Some("https://h.example"), Some("fifteen-bytes!!")).unwrap_err();
        assert_eq!(
            short,
            "REALTIME_WEBHOOK_SECRET must be at least 16 bytes, not 15"
        );
        assert!(
            webhook(Some("https://h.example"), None)
                .unwrap_err()
                .contains("needs")
        );
        assert!(webhook(None, Some(KEY)).is_err());
        let debug = format!(
            "{:?}",
            webhook(Some("https://h.example"), Some(KEY)).unwrap()
        );
        assert!(!debug.contains(KEY), "{debug}");
    }

    #[test]
    fn attempts_and_timeout_must_be_usable() {
        let with = |timeout, max_attempts| {
            webhook_settings(WebhookOptions {
                url: None,
                secret: None,
                timeout,
                max_attempts,
            })
        };
        assert!(with(Some(Duration::ZERO), None).is_err());
        assert!(with(None, Some(0)).is_err());
        let s = with(Some(Duration::from_millis(300)), Some(1)).unwrap();
        assert_eq!((s.timeout, s.max_attempts), (Duration::from_millis(300), 1));
    }

    #[test]
    fn presence_settings_come_from_the_bound_and_the_grace() {
        let with = |node_timeout, offline_grace, queue_size| {
            presence_settings(PresenceOptions {
                node_timeout,
                offline_grace,
                queue_size,
                events: true,
            })
        };
        assert_eq!(
            with(None, None, None).unwrap(),
            PresenceSettings {
                events: true,
                ..PresenceSettings::default()
            }
        );
        let s = with(Some(Duration::from_secs(3)), Some(Duration::ZERO), Some(1)).unwrap();
        assert_eq!(s.lease.heartbeat(), Duration::from_millis(600));
        assert_eq!((s.offline_grace, s.event_queue), (Duration::ZERO, 1));
        assert!(
            with(
                Some(Duration::from_secs(3600)),
                Some(MAX_OFFLINE_GRACE),
                None
            )
            .is_ok()
        );
        for bad in [Duration::from_millis(2999), Duration::from_secs(3601)] {
            let e = with(Some(bad), None, None).unwrap_err();
            assert!(e.contains("between 3s and 1h"), "{e}");
        }
        assert!(with(None, Some(Duration::from_secs(3601)), None).is_err());
        assert!(with(None, None, Some(0)).is_err());
    }
}
