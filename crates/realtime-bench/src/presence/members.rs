//! Who the presence benchmarks' connections are: which user each connection
//! authenticates as (some users hold two connections, as a user with two tabs
//! does) and the tokens, with a metadata claim that becomes the member's `info`.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use crate::servers::JWT_SECRET;

/// The user of connection `index` of a group named `group`: every tenth
/// connection shares its user with the connection before it.
pub fn user_of(group: &str, index: usize) -> String {
    format!("{group}-{}", index - (index + 1) / 10)
}

/// Distinct users among connections `0..count` of a group.
pub fn users_in(count: usize) -> usize {
    count - count / 10
}

/// HS256 tokens for connections `0..count` of `group`, valid for an hour, each
/// with a `name` claim (kept by the server as the connection's metadata).
pub fn tokens(group: &str, count: usize) -> Vec<String> {
    let key = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (0..count)
        .map(|i| {
            let user = user_of(group, i);
            let claims = json!({
                "sub": user,
                "name": format!("Benchmark user {user}"),
                "iat": now,
                "exp": now + 3600,
            });
            encode(&Header::default(), &claims, &key).expect("HS256 signing cannot fail")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_tenth_connection_shares_the_previous_ones_user() {
        assert_eq!(user_of("m", 0), "m-0");
        assert_eq!(user_of("m", 8), "m-8");
        assert_eq!(user_of("m", 9), "m-8");
        assert_eq!(user_of("m", 10), "m-9");
        for count in [0, 1, 9, 10, 11, 100, 15_000] {
            let distinct: HashSet<String> = (0..count).map(|i| user_of("m", i)).collect();
            assert_eq!(distinct.len(), users_in(count), "{count} connections");
        }
    }
}
