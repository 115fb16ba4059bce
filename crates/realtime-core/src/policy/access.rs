//! Access rules: who may subscribe to or publish on a namespace's topics, and how
//! they are written in configuration.
//!
//! In TOML (and any serde format) an [`Access`] is one of the strings
//! `"authenticated"`, `"owner"`, `"nobody"`, or a table `{ roles = ["admin", "ops"] }`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Who may do something on a namespace's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated connection.
    Authenticated,
    /// The connection the pattern's placeholders name: every `{sub}` segment is its
    /// user id and every `{role}` segment is one of its roles. Needs a pattern with
    /// at least one placeholder.
    Owner,
    /// Connections holding at least one of these roles.
    Roles(Vec<String>),
    /// No client connection (server-side sends and subscriptions still work).
    Nobody,
}

/// What a client asks to do on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Access {
    /// The configuration spelling, e.g. `"owner"` or `{ roles = ["admin"] }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Authenticated => f.write_str("\"authenticated\""),
            Access::Owner => f.write_str("\"owner\""),
            Access::Nobody => f.write_str("\"nobody\""),
            Access::Roles(roles) => {
                let list: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
                write!(f, "{{ roles = [{}] }}", list.join(", "))
            }
        }
    }
}

const EXPECTED: &str = "\"authenticated\", \"owner\", \"nobody\" or { roles = [...] }";

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AccessVisitor)
    }
}

struct AccessVisitor;

impl<'de> Visitor<'de> for AccessVisitor {
    type Value = Access;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, word: &str) -> Result<Access, E> {
        match word {
            "authenticated" => Ok(Access::Authenticated),
            "owner" => Ok(Access::Owner),
            "nobody" => Ok(Access::Nobody),
            other => Err(E::custom(format!(
                "unknown access {other:?}, expected {EXPECTED}"
            ))),
        }
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Access, M::Error> {
        let mut roles: Option<Vec<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "roles" || roles.is_some() {
                return Err(de::Error::custom(format!(
                    "unexpected key {key:?} in an access table, expected {{ roles = [...] }}"
                )));
            }
            roles = Some(map.next_value()?);
        }
        roles
            .map(Access::Roles)
            .ok_or_else(|| de::Error::custom("an access table needs `roles = [...]`"))
    }
}

impl Serialize for Access {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Access::Authenticated => s.serialize_str("authenticated"),
            Access::Owner => s.serialize_str("owner"),
            Access::Nobody => s.serialize_str("nobody"),
            Access::Roles(roles) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("roles", roles)?;
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Access, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_spelling() {
        assert_eq!(parse(json!("authenticated")), Ok(Access::Authenticated));
        assert_eq!(parse(json!("owner")), Ok(Access::Owner));
        assert_eq!(parse(json!("nobody")), Ok(Access::Nobody));
        assert_eq!(
            parse(json!({"roles": ["admin", "ops"]})),
            Ok(Access::Roles(vec!["admin".into(), "ops".into()]))
        );
    }

    #[test]
    fn rejects_anything_else_with_the_expected_spellings() {
        let e = parse(json!("everyone")).unwrap_err();
        assert!(e.contains("unknown access \"everyone\""), "{e}");
        assert!(e.contains("{ roles = [...] }"), "{e}");
        assert!(parse(json!({"role": ["admin"]})).is_err());
        assert!(parse(json!({})).is_err());
        assert!(parse(json!({"roles": "admin"})).is_err());
        assert!(parse(json!(["admin"])).is_err());
        assert!(parse(json!(true)).is_err());
    }

    #[test]
    fn round_trips_and_displays_the_config_spelling() {
        for access in [
            Access::Authenticated,
            Access::Owner,
            Access::Nobody,
            Access::Roles(vec!["admin".into()]),
        ] {
            let value = serde_json::to_value(&access).unwrap();
            assert_eq!(parse(value), Ok(access));
        }
        assert_eq!(
            Access::Roles(vec!["admin".into(), "ops".into()]).to_string(),
            r#"{ roles = ["admin", "ops"] }"#
        );
        assert_eq!(Access::Owner.to_string(), "\"owner\"");
    }
}
