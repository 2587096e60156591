//! The pipeline's scenarios: the sync executor under `ManualClock`, the async executor and
//! `ResilienceLayer` under paused tokio time, with the same counts and times.

#![cfg(feature = "tower")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod layer;
mod sync;
