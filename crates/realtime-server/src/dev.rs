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
        " DEVELOPMENT MODE: no REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY".into(),
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
