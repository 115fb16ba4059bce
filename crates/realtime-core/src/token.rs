//! Finding the token in a handshake and reading its header before verification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::identity::AuthError;

/// Picks the token from an `Authorization` header value or the `token` query
/// parameter. The header wins when both are present.
pub fn select_token<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Result<&'a str, AuthError> {
    let from_header = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match from_header.or(query_token.map(str::trim)) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(AuthError::MissingToken),
    }
}

/// What a verifier reads from a token's header before touching a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// `alg`: checked against the one configured algorithm.
    pub alg: String,
    /// `kid`: picks the key when several are configured (JWKS).
    pub kid: Option<String>,
}

/// The `alg` named in a compact JWT's header, read without verifying anything.
/// Lets the verifier reject `none` or any algorithm other than the configured one
/// with a precise reason before any key is touched.
pub fn header_algorithm(token: &str) -> Result<String, AuthError> {
    read_header(token).map(|h| h.alg)
}

/// A compact JWT's header (`alg` and `kid`), read without verifying anything.
pub fn read_header(token: &str) -> Result<TokenHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let value: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
    let alg = value
        .get("alg")
        .and_then(|a| a.as_str())
        .map(str::to_owned)
        .ok_or_else(|| AuthError::Malformed("header has no string `alg`".into()))?;
    let kid = match value.get("kid") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed("header `kid` is not a string".into())),
    };
    Ok(TokenHeader { alg, kid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_beats_query_and_blank_is_missing() {
        assert_eq!(select_token(Some("Bearer abc"), Some("q")), Ok("abc"));
        assert_eq!(select_token(Some("bearer  abc "), None), Ok("abc"));
        assert_eq!(select_token(None, Some("q")), Ok("q"));
        assert_eq!(select_token(Some("Basic xyz"), Some("q")), Ok("q"));
        assert_eq!(select_token(None, None), Err(AuthError::MissingToken));
        assert_eq!(
            select_token(Some("Bearer "), Some("")),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn reads_alg_from_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(header_algorithm(&format!("{header}.e30.")).unwrap(), "none");
    }

    #[test]
    fn reads_kid_from_header() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let h = read_header(&format!("{header}.e30.x")).unwrap();
        assert_eq!(h.kid.as_deref(), Some("k1"));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":7}"#);
        assert_eq!(
            read_header(&format!("{header}.e30.x"))
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.x"] {
            assert_eq!(
                header_algorithm(bad).unwrap_err().reason(),
                "malformed",
                "{bad}"
            );
        }
    }
}
