//! `cargo fuzz run --fuzz-dir crates/limitpal-fuzz builders`: see `limitpal_fuzz::builders`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limitpal_fuzz::builders(data));
