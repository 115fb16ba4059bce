//! Token verification: the [`TokenVerifier`] port and its JWT adapter.
//!
//! The JWT adapter verifies the signature with `jsonwebtoken` for exactly one pinned
//! algorithm, then hands the claims to `realtime_core::Identity::from_claims`, which
//! applies exp/nbf/iat/iss/aud at the time given by the caller. It may hold several
//! keys: a previous HMAC secret during a rotation, or every key of a JWKS file
//! (picked by the token's `kid`).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
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
    /// A public key was given for an HMAC algorithm. Verifying HS256 with the
    /// key's bytes as the secret would accept any token signed with the (public)
    /// key: the algorithm-confusion attack.
    #[error(
        "{0} verifies with a shared secret, not a public key: use RS256 or ES256 with a PEM key, or an HMAC secret"
    )]
    PublicKeyForHmac(&'static str),
    #[error("a previous secret only applies to HS256")]
    PreviousSecretNeedsHs256,
    #[error("the JWKS document is not valid: {0}")]
    BadJwks(String),
    #[error("the JWKS document has no key usable for {0} signatures")]
    NoUsableJwk(&'static str),
}

/// One verification key, with the `kid` it answers to (JWKS keys).
struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// Verifies compact JWTs signed with one pinned algorithm.
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    /// Tried in order; the first is the current key.
    keys: Vec<VerifyKey>,
    validation: Validation,
    rules: ClaimRules,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is deliberately not printed.
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.len())
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

    /// RS256 or ES256 with a PEM-encoded public key. HS256 is refused with
    /// [`KeyError::PublicKeyForHmac`]: a public key is no secret.
    pub fn from_public_pem(
        algorithm: JwtAlgorithm,
        pem: &[u8],
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
            JwtAlgorithm::Hs256 => return Err(KeyError::PublicKeyForHmac(algorithm.as_str())),
        }
        .map_err(|source| KeyError::BadPem {
            algorithm: algorithm.as_str(),
            source,
        })?;
        Ok(Self::with_key(algorithm, key, rules))
    }

    /// Also accepts tokens signed with `previous` (HS256 only), for a secret
    /// rotation: deploy the new secret with the old one as previous, move token
    /// issuers to the new secret, then drop the previous one.
    pub fn with_previous_secret(mut self, previous: &[u8]) -> Result<Self, KeyError> {
        if self.algorithm != JwtAlgorithm::Hs256 {
            return Err(KeyError::PreviousSecretNeedsHs256);
        }
        if previous.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        self.keys.push(VerifyKey {
            kid: None,
            key: DecodingKey::from_secret(previous),
        });
        Ok(self)
    }

    /// Every key of a JWKS document (`{"keys": [...]}`) that can verify
    /// `algorithm` signatures: RSA keys for RS256, P-256 keys for ES256, `oct`
    /// keys for HS256. Keys marked for encryption or for another `alg` are skipped.
    /// A token whose `kid` matches a key is checked against that key only.
    pub fn from_jwks(
        algorithm: JwtAlgorithm,
        jwks: &[u8],
        rules: ClaimRules,
    ) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(jwks).map_err(|e| KeyError::BadJwks(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in set.keys.iter().filter(|k| usable(k, algorithm)) {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::BadJwks(e.to_string()))?;
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableJwk(algorithm.as_str()));
        }
        let mut verifier = Self::with_key(algorithm, keys[0].key.clone(), rules);
        verifier.keys = keys;
        Ok(verifier)
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
            keys: vec![VerifyKey { kid: None, key }],
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
        let header = token::read_header(token)?;
        if header.alg != self.algorithm.as_str() {
            return Err(AuthError::InvalidAlgorithm {
                found: header.alg.chars().take(16).collect(),
                expected: self.algorithm.as_str().into(),
            });
        }
        // A `kid` that names a key selects it alone; otherwise every key without a
        // `kid` is a candidate (a token without `kid` tries them all).
        let named = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)));
        let candidates: Vec<&VerifyKey> = match (named, &header.kid) {
            (Some(key), _) => vec![key],
            (None, Some(_)) => self.keys.iter().filter(|k| k.kid.is_none()).collect(),
            (None, None) => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let mut outcome = Err(AuthError::BadSignature);
        for candidate in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &candidate.key,
                &self.validation,
            ) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    outcome = Err(map_jwt_error(e));
                    if outcome != Err(AuthError::BadSignature) {
                        break;
                    }
                }
            }
        }
        Identity::from_claims(outcome?, unix_seconds(now), &self.rules)
    }
}

/// Whether a JWK can verify `algorithm` signatures.
fn usable(jwk: &Jwk, algorithm: JwtAlgorithm) -> bool {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return false;
    }
    if let Some(alg) = jwk.common.key_algorithm
        && format!("{alg:?}") != algorithm.as_str()
    {
        return false;
    }
    match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::RSA(_), JwtAlgorithm::Rs256) => true,
        (AlgorithmParameters::EllipticCurve(p), JwtAlgorithm::Es256) => {
            p.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::OctetKey(_), JwtAlgorithm::Hs256) => true,
        _ => false,
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
        // The header (e.g. a non-string `typ`) or the claims do not have the
        // expected JSON shape.
        ErrorKind::Json(_) => {
            AuthError::Malformed("header or claims are not the expected JSON".into())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSA public key in PEM form (any PEM: the point is that none is a secret).
    const PUBLIC_PEM: &[u8] = b"-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n\
-----END PUBLIC KEY-----\n";

    #[test]
    fn a_public_key_never_becomes_an_hmac_secret() {
        for pem in [PUBLIC_PEM, b"not even a key".as_slice()] {
            let refused =
                JwtVerifier::from_public_pem(JwtAlgorithm::Hs256, pem, ClaimRules::default());
            assert!(
                matches!(refused, Err(KeyError::PublicKeyForHmac("HS256"))),
                "{refused:?}"
            );
        }
        // The asymmetric algorithms still parse their PEM (and refuse a bad one).
        assert!(matches!(
            JwtVerifier::from_public_pem(JwtAlgorithm::Rs256, b"junk", ClaimRules::default()),
            Err(KeyError::BadPem {
                algorithm: "RS256",
                ..
            })
        ));
    }

    #[test]
    fn a_jwks_gives_hs256_only_symmetric_keys() {
        // An RSA key in a JWKS is not usable as an HMAC secret either: HS256 takes
        // only `oct` keys from it.
        let rsa_only = br#"{"keys":[{"kty":"RSA","n":"u1SU1LfVLPHCozMxH2Mo","e":"AQAB"}]}"#;
        assert!(matches!(
            JwtVerifier::from_jwks(JwtAlgorithm::Hs256, rsa_only, ClaimRules::default()),
            Err(KeyError::NoUsableJwk("HS256"))
        ));
        let oct = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        let verifier = JwtVerifier::from_jwks(JwtAlgorithm::Hs256, oct, ClaimRules::default())
            .expect("an oct key verifies HS256");
        assert_eq!(verifier.algorithm(), JwtAlgorithm::Hs256);
        // And a previous secret is refused for a public-key verifier.
        let ec_jwks = br#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let es = JwtVerifier::from_jwks(JwtAlgorithm::Es256, ec_jwks, ClaimRules::default())
            .expect("a P-256 key verifies ES256");
        assert!(matches!(
            es.with_previous_secret(b"old"),
            Err(KeyError::PreviousSecretNeedsHs256)
        ));
    }
}
