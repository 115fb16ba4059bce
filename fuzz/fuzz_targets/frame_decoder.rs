//! Fuzz target for the inbound frame decoder: `decode_command` (every command kind, `refresh` included) and `Topic::parse`.
//!
//! The invariants live in `fuzz/checks/frame_decoder.rs`, shared with the stable
//! seed-replay test `crates/realtime-core/tests/fuzz_seeds.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/frame_decoder.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check(data));
