//! Token verification: the [`TokenVerifier`] port and its JWT adapter.
//!
//! The JWT adapter verifies the signature with `jsonwebtoken` for exactly one pinned
//! algorithm, then hands the claims to `realtime_core::Identity::from_claims`, which
//! applies exp/nbf/iat/iss/aud at the time given by the caller.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use realtime_core::{AuthError, ClaimRules, Identity, token};
use serde_json::{Map, Value};

/// Turns a token into an [`Identity`] or a typed rejection.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` as of `now`.
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, AuthError>;
}

/// Which algorithm tokens must use. Anything else, `none` included, is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl JwtAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

impl std::str::FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "ES256" => Ok(JwtAlgorithm::Es256),
            other => Err(format!(
                "unsupported JWT algorithm {other:?} (HS256, RS256 or ES256)"
            )),
        }
    }
}

/// A key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the JWT secret is empty")]
    EmptySecret,
    #[error("the public key is not a valid {algorithm} PEM key: {source}")]
    BadPem {
        algorithm: &'static str,
        source: jsonwebtoken::errors::Error,
    },
}

/// Verifies compact JWTs signed with one pinned algorithm.
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    rules: ClaimRules,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is deliberately not printed.
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8], rules: ClaimRules) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Self::with_key(
            JwtAlgorithm::Hs256,
            DecodingKey::from_secret(secret),
            rules,
        ))
    }

    /// RS256 or ES256 with a PEM-encoded public key.
    pub fn from_public_pem(
        algorithm: JwtAlgorithm,
        pem: &[u8],
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
            JwtAlgorithm::Hs256 => return Self::hs256(pem, rules),
        }
        .map_err(|source| KeyError::BadPem {
            algorithm: algorithm.as_str(),
            source,
        })?;
        Ok(Self::with_key(algorithm, key, rules))
    }

    fn with_key(algorithm: JwtAlgorithm, key: DecodingKey, rules: ClaimRules) -> Self {
        let mut validation = Validation::new(algorithm.jsonwebtoken());
        // Time and audience rules live in realtime-core, applied with an explicit `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        JwtVerifier {
            algorithm,
            key,
            validation,
            rules,
        }
    }

    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, AuthError> {
        let alg = token::header_algorithm(token)?;
        if alg != self.algorithm.as_str() {
            return Err(AuthError::InvalidAlgorithm {
                found: alg,
                expected: self.algorithm.as_str().into(),
            });
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(map_jwt_error)?;
        Identity::from_claims(data.claims, unix_seconds(now), &self.rules)
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::InvalidAlgorithm {
                found: "other".into(),
                expected: "configured".into(),
            }
        }
        ErrorKind::Json(_) => AuthError::Malformed("claims are not a JSON object".into()),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            AuthError::Malformed("token is not a well-formed JWT".into())
        }
        // Key problems surface as a signature that cannot be checked.
        _ => AuthError::BadSignature,
    }
}

/// Seconds since the Unix epoch (negative before it, which never verifies).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
