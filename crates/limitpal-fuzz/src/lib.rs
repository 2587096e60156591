//! The fuzz targets' entry points: each takes arbitrary bytes and must never panic, hang or
//! break an invariant. `fuzz_targets/*.rs` call them under libFuzzer (`cargo fuzz`), and the
//! workspace's tests/fuzz replays every committed corpus file through the very same
//! functions on stable, so CI checks the corpus without the fuzzer.
//!
//! This file uses only `limitpal` (features `http` and `serde`), `http`, `serde_json` and
//! `toml`, so both builds can compile it.

use std::time::Duration;

use limitpal::config::PipelineConfig;
use limitpal::fault::FaultPlan;
use limitpal::tower::KeyExtractor;
use limitpal::tower::http::{ForwardedIp, GrpcClassifier, HttpClassifier, pushback, retry_after};
use limitpal::{
    CircuitBreaker, Classify, Clock, Jitter, LeakyBucket, ManualClock, RateLimiter, RetryBudget,
    RetryPolicy, SlidingWindow, TokenBucket,
};

/// Configuration files: any text, as TOML and as JSON; what deserializes must build (or
/// name the field it refuses) and run.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = [
        toml::from_str::<PipelineConfig>(&text).ok(),
        serde_json::from_str::<PipelineConfig>(&text).ok(),
    ];
    for config in parsed.into_iter().flatten() {
        match config.executor::<u64>() {
            Ok(executor) => {
                // retries would sleep their backoff in real time: run only what cannot wait
                if config.retry.is_none() {
                    let _ = executor.run(&1, || Ok::<_, ()>(()));
                }
            }
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
}

/// Header values, split at `\n`: `Retry-After` and `Date` (seconds, the HTTP-date forms,
/// garbage), `X-Forwarded-For` and `Forwarded` chains, `grpc-retry-pushback-ms`, two
/// current-draft `RateLimit` lines, through the parsers, the extractors and both classifiers.
pub fn headers(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let mut next = || {
        lines
            .next()
            .and_then(|v| http::HeaderValue::from_bytes(v).ok())
    };
    let mut response = http::Response::builder().status(429);
    let mut request = http::Request::builder();
    for name in ["retry-after", "date", "grpc-retry-pushback-ms"] {
        if let Some(value) = next() {
            response = response.header(name, value);
        }
    }
    for name in ["x-forwarded-for", "forwarded", "x-forwarded-for"] {
        if let Some(value) = next() {
            request = request.header(name, value);
        }
    }
    let (Ok(mut response), Ok(request)) = (response.body(()), request.body(())) else {
        return;
    };
    // then up to two `RateLimit` field lines (Structured Field lists)
    for _ in 0..2 {
        if let Some(value) = next() {
            response.headers_mut().append("ratelimit", value);
        }
    }
    let _ = retry_after(response.headers());
    let _ = pushback(response.headers());
    let _ = HttpClassifier.classify(Ok::<_, &()>(&response));
    let _ = GrpcClassifier.classify(Ok::<_, &()>(&response));
    let depth = usize::from(data.first().copied().unwrap_or(1) % 8);
    for extractor in [
        ForwardedIp::x_forwarded_for(depth),
        ForwardedIp::forwarded(depth),
        ForwardedIp::x_forwarded_for(depth).ipv6_prefix(data.last().copied().unwrap_or(64)),
    ] {
        let _ = extractor.extract(&request);
    }
}

/// Builder arguments and what is built from them: every bad argument a `ConfigError`, every
/// built object sound at clock readings taken from the input.
pub fn builders(data: &[u8]) {
    let mut bytes = Input(data);
    let clock = ManualClock::new();
    let capacity = bytes.u32();
    let rate = bytes.f64();
    let window = Duration::from_nanos(bytes.u64());
    if let Ok(bucket) = TokenBucket::new(capacity, rate) {
        exercise(bucket, &clock, &mut bytes);
    }
    if let Ok(bucket) = LeakyBucket::new(capacity, rate) {
        exercise(bucket, &clock, &mut bytes);
    }
    if let Ok(sliding) = SlidingWindow::new(capacity % 4096, window) {
        exercise(sliding, &clock, &mut bytes);
    }
    let breaker = CircuitBreaker::builder()
        .failure_threshold(bytes.u32())
        .failure_rate(bytes.f64(), bytes.u32(), Duration::from_nanos(bytes.u64()))
        .recovery_timeout(Duration::from_nanos(bytes.u64()))
        .half_open_max_calls(bytes.u32())
        .clock(clock.clone())
        .build();
    if let Ok(breaker) = breaker {
        for _ in 0..8 {
            clock.set(Duration::from_nanos(bytes.u64()));
            if let Ok(permit) = breaker.try_acquire() {
                if bytes.u32() % 2 == 0 {
                    permit.failure();
                } else {
                    permit.success();
                }
            }
        }
    }
    let policy = RetryPolicy::builder()
        .max_attempts(bytes.u32())
        .base_delay(Duration::from_nanos(bytes.u64()))
        .max_delay(Duration::from_nanos(bytes.u64()))
        .jitter(match bytes.u32() % 4 {
            0 => Jitter::None,
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::Decorrelated,
        })
        .build();
    if let Ok(policy) = policy {
        let mut rng = policy.new_rng();
        for _ in 0..4 {
            assert!(policy.delay(bytes.u32(), &mut rng) <= policy.max_delay());
        }
    }
    if let Ok(budget) =
        RetryBudget::new(Duration::from_nanos(bytes.u64()), bytes.u32(), bytes.f64())
    {
        for _ in 0..4 {
            let now = Duration::from_nanos(bytes.u64());
            budget.deposit(now);
            let _ = budget.withdraw(now);
        }
    }
    let plan = FaultPlan::builder()
        .seed(bytes.u64())
        .latency_between(
            bytes.f64(),
            Duration::from_nanos(bytes.u64()),
            Duration::from_nanos(bytes.u64()),
        )
        .error(bytes.f64())
        .timeout(bytes.f64())
        .build();
    if let Ok(plan) = plan {
        let _ = plan.next(Duration::from_nanos(bytes.u64()));
    }
}

/// Checks, reservations, holds and quota reads at clock readings from the input.
fn exercise<A: limitpal::Algorithm>(algorithm: A, clock: &ManualClock, bytes: &mut Input<'_>) {
    let built: Result<RateLimiter<u64, A, ManualClock>, _> = RateLimiter::builder(algorithm)
        .clock(clock.clone())
        .max_keys(4)
        .build();
    let Ok(limiter) = built else {
        return;
    };
    for _ in 0..8 {
        clock.set(Duration::from_nanos(bytes.u64()));
        let key = u64::from(bytes.u32() % 8);
        let _ = limiter.check_n(&key, bytes.u32());
        if let Ok(reservation) = limiter.reserve(&key, Duration::from_nanos(bytes.u64())) {
            if bytes.u32() % 2 == 0 {
                reservation.cancel();
            } else {
                reservation.commit();
            }
        }
        limiter.hold(&key, Duration::from_nanos(bytes.u64()));
        let _ = limiter.quota(&key);
        assert!(limiter.len() <= 4);
    }
    let _ = clock.now();
}

/// Reads numbers from the input, zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.take())
    }
}
