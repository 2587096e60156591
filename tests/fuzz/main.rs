//! The fuzz corpus, replayed on stable: every file under `crates/limitpal-fuzz/corpus/<target>/`
//! goes through the same entry point the fuzzer calls (`crates/limitpal-fuzz/src/lib.rs`),
//! so a committed input that once crashed stays fixed, and CI checks the corpus without
//! libFuzzer. Grow the corpus with `.ci/fuzz TARGET SECONDS`.

#![cfg(all(feature = "http", feature = "serde"))]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../crates/limitpal-fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/limitpal-fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target}: {} panicked", file.display());
    }
    // and the edges every target must take
    for data in [&b""[..], &[0xff; 64], &[0; 1]] {
        entry(data);
    }
}

#[test]
fn the_config_corpus_replays_clean() {
    replay("config", targets::config);
}

#[test]
fn the_headers_corpus_replays_clean() {
    replay("headers", targets::headers);
}

#[test]
fn the_builders_corpus_replays_clean() {
    replay("builders", targets::builders);
}
