//! The `X-Realtime-Signature` of a webhook body: `sha256=` and the lowercase hex
//! HMAC-SHA256 of the exact bytes POSTed, keyed with `webhook_secret`.

use std::fmt::Write;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a receiver recomputes and compares in constant time.
pub const SIGNATURE_HEADER: &str = "x-realtime-signature";

/// `sha256=<hex>` for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity("sha256=".len() + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn matches_the_rfc_4231_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn depends_on_every_byte_of_key_and_body() {
        let base = signature(b"0123456789abcdef", b"{\"id\":\"1\"}");
        assert_ne!(base, signature(b"0123456789abcdeF", b"{\"id\":\"1\"}"));
        assert_ne!(base, signature(b"0123456789abcdef", b"{\"id\":\"2\"}"));
        assert_eq!(base.len(), "sha256=".len() + 64);
    }
}
