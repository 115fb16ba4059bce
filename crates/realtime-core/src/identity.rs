//! From verified JWT claims to an [`Identity`]: the claim rules (exp, nbf, iat, iss,
//! aud, sub, roles) applied at a given time, and the typed rejections.

use serde_json::{Map, Value};

/// Who a connection is, as established by its token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user_id: String,
    pub roles: Vec<String>,
    /// Every claim that is not one of the registered ones below.
    pub metadata: Map<String, Value>,
    /// `exp` as Unix seconds.
    pub expires_at: Option<i64>,
}

/// Why a handshake was rejected. `reason()` is the stable code sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token in the `token` query parameter or an `Authorization: Bearer` header")]
    MissingToken,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token algorithm {found} is not the configured {expected}")]
    InvalidAlgorithm { found: String, expected: String },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token `kid` names no configured key")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not the configured issuer")]
    InvalidIssuer,
    #[error("token audience does not include the configured audience")]
    InvalidAudience,
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    /// Stable, machine-readable reason code.
    pub const fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed",
            AuthError::InvalidAlgorithm { .. } => "invalid_algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::InvalidIssuer => "invalid_issuer",
            AuthError::InvalidAudience => "invalid_audience",
            AuthError::InvalidClaims(_) => "invalid_claims",
        }
    }

    /// Every reason code, for metrics labels and documentation.
    pub const REASONS: [&'static str; 10] = [
        "missing_token",
        "malformed",
        "invalid_algorithm",
        "bad_signature",
        "unknown_key",
        "expired",
        "not_yet_valid",
        "invalid_issuer",
        "invalid_audience",
        "invalid_claims",
    ];
}

/// The configurable part of claim checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

const REGISTERED: [&str; 7] = ["sub", "exp", "nbf", "iat", "iss", "aud", "roles"];

impl Identity {
    /// Applies the claim rules at time `now` (Unix seconds) to claims whose
    /// signature has already been verified.
    pub fn from_claims(
        mut claims: Map<String, Value>,
        now: i64,
        rules: &ClaimRules,
    ) -> Result<Identity, AuthError> {
        let leeway = i64::try_from(rules.leeway_secs).unwrap_or(i64::MAX);
        let exp = match claims.get("exp") {
            None => return Err(AuthError::InvalidClaims("`exp` is required".into())),
            Some(v) => numeric_date(v, "exp")?,
        };
        if now.saturating_sub(leeway) >= exp {
            return Err(AuthError::Expired);
        }
        for name in ["nbf", "iat"] {
            if let Some(v) = claims.get(name)
                && numeric_date(v, name)? > now.saturating_add(leeway)
            {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(expected) = &rules.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(expected.as_str())
        {
            return Err(AuthError::InvalidIssuer);
        }
        if let Some(expected) = &rules.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == expected,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(expected)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::InvalidAudience);
            }
        }
        let user_id = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(AuthError::InvalidClaims("`sub` is empty".into()));
            }
            Some(_) => return Err(AuthError::InvalidClaims("`sub` must be a string".into())),
            None => return Err(AuthError::InvalidClaims("`sub` is required".into())),
        };
        let roles = match claims.get("roles") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    AuthError::InvalidClaims("`roles` must be an array of strings".into())
                })?,
            Some(_) => {
                return Err(AuthError::InvalidClaims(
                    "`roles` must be an array of strings".into(),
                ));
            }
        };
        for name in REGISTERED {
            claims.remove(name);
        }
        Ok(Identity {
            user_id,
            roles,
            metadata: claims,
            expires_at: Some(exp),
        })
    }
}

/// A JWT NumericDate: seconds since the epoch, possibly fractional.
fn numeric_date(v: &Value, name: &str) -> Result<i64, AuthError> {
    match v.as_f64() {
        // `as` saturates, so absurd values become i64::MIN/MAX instead of wrapping.
        Some(f) if f.is_finite() => Ok(f.floor() as i64),
        _ => Err(AuthError::InvalidClaims(format!(
            "`{name}` must be a number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn ok(v: Value) -> Identity {
        Identity::from_claims(claims(v), NOW, &ClaimRules::default()).unwrap()
    }

    fn err(v: Value, rules: &ClaimRules) -> AuthError {
        Identity::from_claims(claims(v), NOW, rules).unwrap_err()
    }

    #[test]
    fn extracts_user_roles_and_metadata() {
        let id =
            ok(json!({"sub":"u1","exp":NOW+60,"roles":["admin","user"],"email":"a@b","jti":"x"}));
        assert_eq!(id.user_id, "u1");
        assert_eq!(id.roles, vec!["admin", "user"]);
        assert_eq!(id.metadata.get("email"), Some(&json!("a@b")));
        assert_eq!(id.metadata.get("jti"), Some(&json!("x")));
        assert!(!id.metadata.contains_key("exp"));
        assert!(!id.metadata.contains_key("roles"));
        assert_eq!(id.expires_at, Some(NOW + 60));
    }

    #[test]
    fn roles_default_to_empty() {
        assert!(ok(json!({"sub":"u","exp":NOW+1})).roles.is_empty());
    }

    #[test]
    fn expiry_is_exclusive_and_honours_leeway() {
        let r = ClaimRules::default();
        assert_eq!(err(json!({"sub":"u","exp":NOW}), &r), AuthError::Expired);
        assert_eq!(
            err(json!({"sub":"u","exp":NOW-100}), &r),
            AuthError::Expired
        );
        let lenient = ClaimRules {
            leeway_secs: 30,
            ..Default::default()
        };
        assert!(
            Identity::from_claims(claims(json!({"sub":"u","exp":NOW-10})), NOW, &lenient).is_ok()
        );
    }

    #[test]
    fn exp_is_required_and_numeric() {
        let r = ClaimRules::default();
        assert_eq!(err(json!({"sub":"u"}), &r).reason(), "invalid_claims");
        assert_eq!(
            err(json!({"sub":"u","exp":"soon"}), &r).reason(),
            "invalid_claims"
        );
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_not_yet_valid() {
        let r = ClaimRules::default();
        assert_eq!(
            err(json!({"sub":"u","exp":NOW+99,"nbf":NOW+10}), &r),
            AuthError::NotYetValid
        );
        assert_eq!(
            err(json!({"sub":"u","exp":NOW+99,"iat":NOW+10}), &r),
            AuthError::NotYetValid
        );
        assert!(ok(json!({"sub":"u","exp":NOW+99,"nbf":NOW,"iat":NOW-5})).user_id == "u");
    }

    #[test]
    fn issuer_and_audience_checked_when_configured() {
        let r = ClaimRules {
            issuer: Some("me".into()),
            audience: Some("rt".into()),
            leeway_secs: 0,
        };
        let base = |iss: Value, aud: Value| json!({"sub":"u","exp":NOW+9,"iss":iss,"aud":aud});
        assert!(Identity::from_claims(claims(base(json!("me"), json!("rt"))), NOW, &r).is_ok());
        assert!(
            Identity::from_claims(claims(base(json!("me"), json!(["x", "rt"]))), NOW, &r).is_ok()
        );
        assert_eq!(
            err(base(json!("you"), json!("rt")), &r),
            AuthError::InvalidIssuer
        );
        assert_eq!(
            err(base(json!("me"), json!("other")), &r),
            AuthError::InvalidAudience
        );
        assert_eq!(
            err(json!({"sub":"u","exp":NOW+9,"iss":"me"}), &r),
            AuthError::InvalidAudience
        );
    }

    #[test]
    fn sub_must_be_a_non_empty_string() {
        let r = ClaimRules::default();
        for bad in [
            json!({"exp":NOW+9}),
            json!({"sub":"","exp":NOW+9}),
            json!({"sub":7,"exp":NOW+9}),
        ] {
            assert_eq!(err(bad, &r).reason(), "invalid_claims");
        }
    }

    #[test]
    fn roles_must_be_strings() {
        let r = ClaimRules::default();
        assert_eq!(
            err(json!({"sub":"u","exp":NOW+9,"roles":"admin"}), &r).reason(),
            "invalid_claims"
        );
        assert_eq!(
            err(json!({"sub":"u","exp":NOW+9,"roles":[1]}), &r).reason(),
            "invalid_claims"
        );
    }

    #[test]
    fn absurd_numbers_do_not_overflow() {
        let r = ClaimRules::default();
        assert!(ok(json!({"sub":"u","exp":1e300})).expires_at.is_some());
        assert_eq!(err(json!({"sub":"u","exp":-1e300}), &r), AuthError::Expired);
    }
}
