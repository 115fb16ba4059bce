//! Development mode: generated secrets and a banner with a ready-to-use token and
//! example commands, so a first run works with no configuration at all.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{EncodingKey, Header};
use rand::RngCore;
use serde_json::json;

use crate::config::{Settings, TokenKey};

/// A random 256-bit value as 64 hex characters.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HS256 token for `sub` with `roles`, valid for `ttl`.
pub fn mint_token(
    secret: &str,
    sub: &str,
    roles: &[&str],
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = realtime::unix_seconds(SystemTime::now());
    let exp = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let claims = json!({"sub": sub, "roles": roles, "iat": now, "exp": exp});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// The development-mode banner, printed once at start.
pub fn banner(settings: &Settings, local_addr: std::net::SocketAddr) -> String {
    let TokenKey::Secret {
        current: secret, ..
    } = &settings.key
    else {
        return String::new();
    };
    let token = mint_token(
        secret,
        "dev-user",
        &["admin"],
        Duration::from_secs(24 * 3600),
    )
    .unwrap_or_else(|e| format!("<could not mint a token: {e}>"));
    let api = &settings.api_key;
    let rule = "=".repeat(69);
    [
        String::new(),
        rule.clone(),
        " DEVELOPMENT MODE: no JWT key and no API key are configured".into(),
        " A random JWT secret and API key were generated for this run only.".into(),
        " Do not use this mode in production.".into(),
        rule.clone(),
        format!(" JWT secret (HS256): {secret}"),
        format!(" API key:            {api}"),
        " Token for user \"dev-user\" (role admin, valid 24 h):".into(),
        format!("   {token}"),
        String::new(),
        " Connect a client:".into(),
        format!("   websocat 'ws://{local_addr}/ws?token={token}'"),
        " Publish to everyone:".into(),
        format!("   curl -X POST http://{local_addr}/api/broadcast \\"),
        format!("     -H 'Authorization: Bearer {api}' \\"),
        "     -d '{\"type\":\"hello\",\"text\":\"hi from curl\"}'".into(),
        " Health and metrics:".into(),
        format!("   curl http://{local_addr}/health"),
        format!("   curl http://{local_addr}/metrics"),
        rule,
    ]
    .join("\n")
}

/// Whether a request's `Host` (name or address, with or without a port) names this
/// machine's loopback interface. Development pages answer only such requests: a
/// page on another site that rebinds its own name to 127.0.0.1 still sends its
/// own name as `Host`.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port)) if port.strip_prefix(':').is_some_and(is_port) => inside,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    // Browsers resolve `localhost` and every `*.localhost` name to loopback
    // themselves (RFC 6761), so no DNS answer can point them elsewhere.
    name == "localhost" || name.ends_with(".localhost")
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine() {
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "[::2]:8080",
            "[::1]x",
            "[::1]8080",
            "localhost:http",
            "::1",
            "0.0.0.0:8080",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
