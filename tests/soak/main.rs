//! Soak under real load on loopback: an axum server with a per-client-IP limit (client
//! addresses from `X-Forwarded-For`, set by one trusted proxy) takes requests from 100 000
//! rotating client addresses over keep-alive connections for `LIMITPAL_SOAK_SECS` seconds
//! (default 60). Checked: every answer is 200 or 429, each address is admitted exactly its
//! quota, and the process's resident memory stays flat (within 10 %) once every address has
//! been seen.
//!
//! Ignored by default (it takes real time); `.ci/soak SECONDS` runs it, and `.ci/run` calls
//! that with a short duration.

#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use limitpal::tower::http::{ForwardedIp, HttpRateLimitLayer};
use limitpal::{Clock, MonotonicClock, RateLimiter, TokenBucket};

const ADDRESSES: u32 = 100_000;
/// Each address's quota: a burst of 2 and one more per 1 000 s, so within a soak run every
/// address is admitted exactly twice (or as often as it asked, if fewer).
const QUOTA: u32 = 2;
const TASKS: u32 = 32;

fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0A00_0000 + i) // 10.0.0.0/8, one per client
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real load for LIMITPAL_SOAK_SECS seconds; run by .ci/soak"]
async fn soak_per_ip_limits_over_100_000_rotating_addresses() {
    let seconds: u64 = std::env::var("LIMITPAL_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let limiter = RateLimiter::builder(TokenBucket::new(QUOTA, 0.001).unwrap())
        .max_keys(2 * ADDRESSES as usize)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/api", get(|| async { "ok" }))
        .layer(HttpRateLimitLayer::new(
            limiter.clone(),
            ForwardedIp::x_forwarded_for(1),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let admitted: Arc<Vec<AtomicU32>> =
        Arc::new((0..ADDRESSES).map(|_| AtomicU32::new(0)).collect());
    let asked: Arc<Vec<AtomicU32>> = Arc::new((0..ADDRESSES).map(|_| AtomicU32::new(0)).collect());
    let next = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clock = MonotonicClock;
    let start = clock.now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (client, admitted, asked) = (client.clone(), Arc::clone(&admitted), Arc::clone(&asked));
        let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut other = 0_u32;
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) % ADDRESSES;
                let request = Request::get(format!("http://{server}/api"))
                    .header("x-forwarded-for", address(i).to_string())
                    .body(Empty::new())
                    .unwrap();
                asked[i as usize].fetch_add(1, Ordering::Relaxed);
                match client.request(request).await.map(|r| r.status()) {
                    Ok(StatusCode::OK) => {
                        admitted[i as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(StatusCode::TOO_MANY_REQUESTS) => {}
                    _ => other += 1,
                }
            }
            other
        }));
    }

    // RSS once every address has been seen (the table holds them all), then its peak
    let mut baseline = None;
    let mut peak = 0;
    while clock.now() - start < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = rss_kib();
        if baseline.is_none() && next.load(Ordering::Relaxed) >= ADDRESSES {
            baseline = Some(rss);
        } else if baseline.is_some() {
            peak = peak.max(rss);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut other = 0;
    for task in tasks {
        other += task.await.unwrap();
    }
    let requests = next.load(Ordering::Relaxed);
    println!(
        "soak: {requests} requests in {seconds} s ({:.0}/s), RSS {baseline:?} KiB once every address was seen, peak {peak} KiB after",
        f64::from(requests) / seconds as f64
    );
    assert_eq!(other, 0, "every answer is a 200 or a 429");
    for (i, (admitted, asked)) in (0..ADDRESSES).zip(admitted.iter().zip(asked.iter())) {
        let (a, n) = (
            admitted.load(Ordering::Relaxed),
            asked.load(Ordering::Relaxed),
        );
        assert_eq!(a, n.min(QUOTA), "address {} asked {n} times", address(i));
    }
    assert!(limiter.len() <= 2 * ADDRESSES as usize);
    let refused: u32 = (0..ADDRESSES as usize)
        .map(|i| asked[i].load(Ordering::Relaxed) - admitted[i].load(Ordering::Relaxed))
        .sum();
    if requests > QUOTA * ADDRESSES {
        assert!(refused > 0, "the limit refused nothing");
    }
    println!("soak: {refused} answered 429");
    let baseline = baseline.expect("the run was long enough to see every address");
    assert!(peak > 0, "the run went on after every address was seen");
    assert!(
        peak * 10 <= baseline * 11,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
}
