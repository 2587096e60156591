//! Per-IP limits on real traffic: returning clients, a flood of made-up addresses, and the
//! memory the limiter holds through both.
//!
//! ```sh
//! cargo run --example per_ip
//! ```
//!
//! Each address may send 10 requests per second, with a burst of 20. 1 000 regular clients
//! send one every 200 ms (never limited), 10 scrapers send 20 every 200 ms (100 per second,
//! so they are held to 10), and a flood of 1 000 000 never-repeating addresses (50 000 a
//! second) arrives meanwhile. `max_keys` caps what the limiter holds; when it is full, the limiter drops an
//! idle address or the least recently used of a sample, so the flood pushes out flood
//! addresses, never a scraper's spent quota. Time is a `ManualClock`, so the 20 simulated
//! seconds run at once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use limitpal::{ManualClock, RateLimiter, TokenBucket};

/// 200 ms steps: 20 simulated seconds.
const TICKS: u32 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = ManualClock::new(); // leave `.clock(..)` out in production
    let per_ip = RateLimiter::builder(TokenBucket::new(20, 10.0)?) // burst 20, 10 per second
        .max_keys(20_000) // a hard bound: at most 20 000 addresses held
        .clock(clock.clone())
        .build()?;

    let regular = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)); // 10.0.x.x
    let scraper = |i: u32| IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)); // 192.0.2.x
    let flood = |i: u32| IpAddr::V4(Ipv4Addr::from(0x6400_0000 + i)); // 100.x.x.x

    let (mut regular_denied, mut scraper_allowed, mut flood_checks) = (0_u32, 0_u32, 0_u32);
    let mut peak_bytes = 0;
    for tick in 0..TICKS {
        // every 200 ms: each regular client once, each scraper 20 times, 10 000 new addresses
        for i in 0..1_000 {
            if per_ip.check(&regular(i)).is_err() {
                regular_denied += 1;
            }
        }
        for i in 0..10 {
            for _ in 0..20 {
                if per_ip.check(&scraper(i)).is_ok() {
                    scraper_allowed += 1;
                }
            }
        }
        for i in 0..10_000 {
            let _ = per_ip.check(&flood(tick * 10_000 + i));
            flood_checks += 1;
        }
        peak_bytes = peak_bytes.max(per_ip.table_bytes());
        clock.advance(Duration::from_millis(200));
    }

    // a burst of 20, then 2 more every 200 ms (10 per second), for each of 10 scrapers
    let scraper_quota = 10 * (20 + 2 * (TICKS - 1));
    println!("flood addresses checked: {flood_checks}");
    println!(
        "regular requests denied: {regular_denied} of {}",
        TICKS * 1_000
    );
    println!(
        "scraper requests allowed: {scraper_allowed} of {} (their quota: {scraper_quota})",
        TICKS * 200
    );
    println!(
        "keys held now: {} (max_keys 20000), table at its peak: {:.1} MB",
        per_ip.len(),
        mb(peak_bytes)
    );
    assert_eq!(regular_denied, 0, "regular clients stay under their quota");
    assert_eq!(
        scraper_allowed, scraper_quota,
        "the flood never reset a scraper's quota"
    );
    assert!(per_ip.len() <= 20_000);
    Ok(())
}

#[allow(clippy::cast_precision_loss)] // a figure for people
fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}
