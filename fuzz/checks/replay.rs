//! Replays a committed seed corpus through a target's checks on the stable
//! toolchain; included with `#[path]` by the two `fuzz_seeds` tests.

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>`; fails naming the first
/// seed that panics, and when the corpus is suspiciously small.
pub fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let dir = Path::new(manifest_dir)
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed corpus directory") {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("a readable seed");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "seed {} fails the checks", path.display());
        seeds += 1;
    }
    assert!(seeds >= 10, "only {seeds} seeds in {}", dir.display());
}
