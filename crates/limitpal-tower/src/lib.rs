//! The tokio and tower face of [limitpal](https://docs.rs/limitpal).
//!
//! This crate adapts the rules of `limitpal-core` to tower services; it holds no rule of its
//! own. For now it provides [`TokioClock`], the clock to use under
//! `#[tokio::test(start_paused = true)]`.

mod clock;

pub use clock::TokioClock;
