//! What must hold for any token a client can present: the checks of the `token` fuzz
//! target, shared with the seed-replay test `crates/realtime/tests/fuzz_seeds.rs`
//! (both include this file with `#[path]`, so the two can never drift apart).
//!
//! An input is text in one of these forms, so that hand-written seeds stay readable
//! and the fuzzer can still mutate JSON rather than base64:
//!
//! - `jwt\n<header JSON>\n<claims JSON>\n<signature>`: header and claims are
//!   base64url-encoded and joined with dots; a signature of exactly `hs256` is
//!   replaced by the correct HS256 signature with [`SECRET`] (so the fuzzer gets past
//!   the signature into claim validation), anything else is the third segment as is.
//! - `claims\n<claims JSON>`: the claims go straight to `Identity::from_claims`
//!   under several clocks and rule sets.
//! - `auth\n<Authorization header>\n<token query parameter>`, `header\n<Authorization
//!   header>`, `query\n<token query parameter>`: the handshake's `select_token`.
//! - anything else: the whole input (lossily UTF-8) is one compact token.
//!
//! Every token that comes out of these goes through `header_algorithm` and the
//! HS256 (two rule sets), RS256 and ES256 verifiers. [`check`] panics when an
//! invariant breaks: every error's `reason()` is one of `AuthError::REASONS`, no
//! error's text contains the token, an accepted token yields a sane identity, and a
//! correctly signed token is judged exactly as `Identity::from_claims` judges its
//! claims.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use realtime::{JwtAlgorithm, JwtVerifier, TokenVerifier, unix_seconds};
use realtime_core::token::{header_algorithm, select_token};
use realtime_core::{AuthError, ClaimRules, Identity};
use serde_json::{Map, Value};

/// The HS256 secret of the verifiers under test.
pub const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef";

/// The clock the seeds are written against (2027-01-15); seeds with `exp` above it
/// verify.
pub const NOW: i64 = 1_800_000_000;

const RSA_PUBLIC_PEM: &[u8] =
    include_bytes!("../../crates/realtime-server/tests/fixtures/rsa-public.pem");
const EC_PUBLIC_PEM: &[u8] =
    include_bytes!("../../crates/realtime-server/tests/fixtures/ec-public.pem");
/// An EC key (`kid` `ec-1`), the RSA key of the PEM above (`rsa-2026`) and the same
/// RSA key marked for encryption (`rsa-enc`).
const JWKS: &[u8] = include_bytes!("../../crates/realtime-server/tests/fixtures/jwks.json");

/// The claims that never end up in `Identity::metadata`.
const REGISTERED: [&str; 7] = ["sub", "exp", "nbf", "iat", "iss", "aud", "roles"];

/// Reasons that can only come from claim validation, i.e. after the signature verified.
const CLAIM_REASONS: [&str; 5] = [
    "expired",
    "not_yet_valid",
    "invalid_issuer",
    "invalid_audience",
    "invalid_claims",
];

struct Subject {
    verifier: JwtVerifier,
    rules: ClaimRules,
    /// Whether tokens signed with [`SECRET`] verify under it.
    uses_secret: bool,
}

fn strict_rules() -> ClaimRules {
    ClaimRules {
        issuer: Some("https://issuer.example".into()),
        audience: Some("realtime".into()),
        leeway_secs: 30,
    }
}

fn subjects() -> &'static [Subject] {
    static SUBJECTS: OnceLock<Vec<Subject>> = OnceLock::new();
    SUBJECTS.get_or_init(|| {
        let hs = |rules: ClaimRules| Subject {
            verifier: JwtVerifier::hs256(SECRET, rules.clone()).expect("HS256 verifier"),
            rules,
            uses_secret: true,
        };
        let pem = |algorithm, pem: &[u8]| Subject {
            verifier: JwtVerifier::from_public_pem(algorithm, pem, ClaimRules::default())
                .expect("fixture public key"),
            rules: ClaimRules::default(),
            uses_secret: false,
        };
        // A rotation: a new current secret, with the fuzz secret as the previous one.
        let rotating = Subject {
            verifier: JwtVerifier::hs256(b"another-current-secret", ClaimRules::default())
                .and_then(|v| v.with_previous_secret(SECRET))
                .expect("rotating HS256 verifier"),
            rules: ClaimRules::default(),
            uses_secret: true,
        };
        let jwks = |algorithm| Subject {
            verifier: JwtVerifier::from_jwks(algorithm, JWKS, ClaimRules::default())
                .expect("fixture JWKS"),
            rules: ClaimRules::default(),
            uses_secret: false,
        };
        vec![
            hs(ClaimRules::default()),
            hs(strict_rules()),
            rotating,
            pem(JwtAlgorithm::Rs256, RSA_PUBLIC_PEM),
            pem(JwtAlgorithm::Es256, EC_PUBLIC_PEM),
            jwks(JwtAlgorithm::Rs256),
            jwks(JwtAlgorithm::Es256),
        ]
    })
}

/// The clocks tokens are verified at: the seeds' `NOW` and a time before the epoch.
fn clocks() -> [SystemTime; 2] {
    let now = UNIX_EPOCH + Duration::from_secs(NOW as u64);
    let before_epoch = UNIX_EPOCH
        .checked_sub(Duration::from_secs(86_400))
        .unwrap_or(UNIX_EPOCH);
    [now, before_epoch]
}

/// Runs every check on one fuzz input.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (kind, rest) = text.split_once('\n').unwrap_or((&text, ""));
    match kind {
        "jwt" => check_jwt(rest),
        "claims" => {
            if let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(rest) {
                check_claims(&claims);
            }
        }
        "auth" => {
            let (authorization, query) = rest.split_once('\n').unwrap_or((rest, ""));
            check_selected(Some(authorization), Some(query));
        }
        "header" => check_selected(Some(rest), None),
        "query" => check_selected(None, Some(rest)),
        _ => {
            check_token(&text);
        }
    }
}

fn check_selected(authorization: Option<&str>, query: Option<&str>) {
    match select_token(authorization, query) {
        Ok(token) => {
            assert!(!token.is_empty(), "selected an empty token");
            assert_eq!(token, token.trim(), "selected token is not trimmed");
            assert!(
                authorization.is_some_and(|a| a.contains(token))
                    || query.is_some_and(|q| q.contains(token)),
                "selected token comes from neither source"
            );
            check_token(token);
        }
        Err(e) => {
            assert_eq!(e, AuthError::MissingToken);
            for source in [authorization, query].into_iter().flatten() {
                assert_no_leak(source, &e);
            }
        }
    }
}

/// Builds `base64url(header).base64url(claims).signature` and checks it; a
/// correctly signed token must be judged exactly as its claims are.
fn check_jwt(rest: &str) {
    let mut parts = rest.splitn(3, '\n');
    let header = parts.next().unwrap_or("");
    let claims = parts.next().unwrap_or("");
    let signature = parts.next().unwrap_or("");
    let signing_input = format!(
        "{}.{}",
        base64url(header.as_bytes()),
        base64url(claims.as_bytes())
    );
    let signed = signature == "hs256";
    let signature = if signed {
        jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("HMAC signing cannot fail")
    } else {
        signature.to_owned()
    };
    let token = format!("{signing_input}.{signature}");
    let results = check_token(&token);
    if !signed {
        return;
    }
    let claims = match serde_json::from_str::<Value>(claims) {
        Ok(Value::Object(claims)) => Some(claims),
        _ => None,
    };
    for (subject, clock, result) in results {
        if !subject.uses_secret {
            continue;
        }
        let judged = |claims: &Option<Map<String, Value>>| {
            let claims = claims
                .clone()
                .expect("a token whose claims are not a JSON object passed claim validation");
            Identity::from_claims(claims, unix_seconds(clock), &subject.rules)
        };
        match &result {
            Ok(identity) => assert_eq!(Ok(identity), judged(&claims).as_ref()),
            Err(e) if CLAIM_REASONS.contains(&e.reason()) => {
                assert_eq!(Err(e), judged(&claims).as_ref())
            }
            Err(_) => {}
        }
    }
}

/// Claims straight into `Identity::from_claims`, under extreme clocks and each rule set.
fn check_claims(claims: &Map<String, Value>) {
    let rule_sets = [
        ClaimRules::default(),
        strict_rules(),
        ClaimRules {
            leeway_secs: u64::MAX,
            ..ClaimRules::default()
        },
    ];
    for rules in &rule_sets {
        for now in [NOW, 0, i64::MIN, i64::MAX] {
            match Identity::from_claims(claims.clone(), now, rules) {
                Ok(identity) => check_identity(&identity, Some(claims), now, rules),
                Err(e) => assert!(
                    CLAIM_REASONS.contains(&e.reason()),
                    "claim validation gave {e:?}"
                ),
            }
        }
    }
}

type Outcome = (&'static Subject, SystemTime, Result<Identity, AuthError>);

/// `header_algorithm` and every verifier at every clock; returns the verdicts.
fn check_token(token: &str) -> Vec<Outcome> {
    let alg = header_algorithm(token);
    if let Err(e) = &alg {
        assert_eq!(e.reason(), "malformed", "header_algorithm gave {e:?}");
        assert_no_leak(token, e);
    }
    let mut outcomes = Vec::new();
    for subject in subjects() {
        let expected_alg = subject.verifier.algorithm().as_str();
        for clock in clocks() {
            let result = subject.verifier.verify(token, clock);
            match &result {
                Ok(identity) => {
                    assert_eq!(
                        alg.as_deref(),
                        Ok(expected_alg),
                        "accepted a token whose header does not name {expected_alg}"
                    );
                    check_identity(identity, None, unix_seconds(clock), &subject.rules);
                }
                Err(e) => {
                    assert!(
                        AuthError::REASONS.contains(&e.reason()),
                        "unknown reason {:?}",
                        e.reason()
                    );
                    assert_no_leak(token, e);
                    match &alg {
                        Err(header_error) => assert_eq!(e, header_error),
                        Ok(a) if a != expected_alg => {
                            assert_eq!(e.reason(), "invalid_algorithm", "alg {a:?}: {e:?}")
                        }
                        Ok(_) => {}
                    }
                }
            }
            outcomes.push((subject, clock, result));
        }
    }
    outcomes
}

/// What any accepted identity satisfies; `claims`, when known, are the claims it was
/// made from.
fn check_identity(
    identity: &Identity,
    claims: Option<&Map<String, Value>>,
    now: i64,
    rules: &ClaimRules,
) {
    assert!(!identity.user_id.is_empty(), "identity without a user");
    let exp = identity
        .expires_at
        .expect("an accepted token has an expiry");
    let leeway = i64::try_from(rules.leeway_secs).unwrap_or(i64::MAX);
    assert!(
        now.saturating_sub(leeway) < exp,
        "accepted at {now} a token expiring at {exp} with leeway {leeway}"
    );
    for name in REGISTERED {
        assert!(
            !identity.metadata.contains_key(name),
            "registered claim `{name}` left in the metadata"
        );
    }
    let Some(claims) = claims else { return };
    assert_eq!(
        claims.get("sub").and_then(Value::as_str),
        Some(identity.user_id.as_str())
    );
    if let Some(issuer) = &rules.issuer {
        assert_eq!(
            claims.get("iss").and_then(Value::as_str),
            Some(issuer.as_str())
        );
    }
    let unregistered: BTreeSet<&String> = claims
        .keys()
        .filter(|k| !REGISTERED.contains(&k.as_str()))
        .collect();
    assert_eq!(
        unregistered,
        identity.metadata.keys().collect(),
        "metadata is not exactly the unregistered claims"
    );
}

/// A rejection's text must never contain the token: rejections are logged and sent
/// back in the 401 body. A short token without a dot could match the fixed text
/// of a message by chance (`token`, `JSON`), so only tokens with a dot or longer
/// than any fixed message are checked.
fn assert_no_leak(token: &str, error: &AuthError) {
    let text = error.to_string();
    let checkable = token.contains('.') || token.len() > 100;
    assert!(
        !(checkable && text.contains(token)),
        "the {} error text contains the token: {text}",
        error.reason()
    );
}

/// Unpadded base64url, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
