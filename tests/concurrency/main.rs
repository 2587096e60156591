//! Bulkhead and adaptive concurrency limits: slots, the FIFO queue and its cancel safety,
//! the limit algorithms' convergence on a simulated upstream, and both as pipeline stages
//! (executors and tower layers).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod adaptive;
mod bulkhead;
mod keyed;
#[cfg(feature = "tower")]
mod layer;
