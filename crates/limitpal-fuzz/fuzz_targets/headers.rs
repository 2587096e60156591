//! `cargo fuzz run --fuzz-dir crates/limitpal-fuzz headers`: see `limitpal_fuzz::headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limitpal_fuzz::headers(data));
