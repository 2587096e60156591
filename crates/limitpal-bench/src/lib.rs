//! Shared setups for the criterion benches and the `compare` binary: every case builds ours
//! and the peer's from the same inputs, so both measure the same thing.

pub mod alloc;
pub mod drive;
pub mod http;
pub mod http_client;
pub mod layers;
pub mod limiters;
pub mod timing;
pub mod waiting;
pub mod workloads;
