//! `cargo fuzz run --fuzz-dir crates/limitpal-fuzz config`: see `limitpal_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limitpal_fuzz::config(data));
