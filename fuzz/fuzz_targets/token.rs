//! Fuzz target for the handshake token path: `select_token`, `header_algorithm`, the `JwtVerifier`s and `Identity::from_claims`.
//!
//! The input format and the invariants live in `fuzz/checks/token.rs`, shared with the
//! stable seed-replay test `crates/realtime/tests/fuzz_seeds.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/token.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
