//! JWTs for generator connections, signed with the secret our server is started
//! with. Minted before a measurement so signing never counts against the server.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use crate::servers::JWT_SECRET;

/// `count` HS256 tokens for users `bench-0` ... valid for an hour.
pub fn mint(count: usize) -> Vec<String> {
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (0..count)
        .map(|i| {
            let claims = json!({"sub": format!("bench-{i}"), "iat": now, "exp": now + 3600});
            encode(&Header::default(), &claims, &key).expect("HS256 signing cannot fail")
        })
        .collect()
}
