//! Replays the committed seed corpus of the `token` fuzz target on the stable
//! toolchain, with the very checks the fuzz target runs (`fuzz/checks/token.rs`).

#[path = "../../../fuzz/checks/token.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_token_seed_passes_the_fuzz_checks() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "token", checks::check);
}
