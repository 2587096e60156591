//! Waiting for quota: reservations in core (exact under `ManualClock`), `until_ready` and the
//! waiting layers under paused tokio time, the pipeline's wait and pushback semantics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[cfg(feature = "tower")]
mod pipeline;
#[cfg(feature = "http")]
mod pushback;
mod reserve;
#[cfg(feature = "tower")]
mod until_ready;
