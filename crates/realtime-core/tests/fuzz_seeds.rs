//! Replays the committed seed corpus of the `frame_decoder` fuzz target on the stable
//! toolchain, with the very checks the fuzz target runs (`fuzz/checks/frame_decoder.rs`).

#[path = "../../../fuzz/checks/frame_decoder.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn every_frame_decoder_seed_passes_the_fuzz_checks() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "frame_decoder", checks::check);
}
