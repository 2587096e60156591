//! Configuration files: TOML and JSON into the same objects the builders make.

#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use limitpal::config::{BreakerConfig, PipelineConfig, RetryConfig};
use limitpal::rand::SeedableRng;
use limitpal::rand::rngs::StdRng;
use limitpal::{CircuitState, Error};

const TOML: &str = r#"
name = "payments"
attempt_timeout = "2s"
deadline = "1m 30s"

[limiter]
capacity = 2
refill_per_sec = 0.5
idle_ttl = "10m"
max_keys = 10000

[breaker]
failure_threshold = 3
recovery_timeout = "45s"
failure_rate = { ratio = 0.5, min_calls = 20, window = "30s" }

[retry]
max_attempts = 4
base_delay = "250ms"
max_delay = "5s"
backoff = { exponential = { factor = 3.0 } }
jitter = "none"

[budget]
ttl = "10s"
min_per_sec = 5
retry_ratio = 0.2
"#;

#[test]
fn a_toml_file_builds_a_working_pipeline() {
    let config: PipelineConfig = toml::from_str(TOML).unwrap();
    assert_eq!(config.deadline, Some(Duration::from_secs(90)));
    let retry = config.retry.as_ref().unwrap().build().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let delays: Vec<_> = (1..4).map(|n| retry.delay(n, &mut rng)).collect();
    assert_eq!(
        delays,
        [
            Duration::from_millis(250),
            Duration::from_millis(750),
            Duration::from_millis(2250)
        ]
    );
    let exec = config.executor::<&str>().unwrap();
    assert_eq!(exec.run(&"k", || Ok::<_, ()>(1)), Ok(1));
    assert_eq!(exec.run(&"k", || Ok::<_, ()>(2)), Ok(2));
    assert!(matches!(
        exec.run(&"k", || Ok::<_, ()>(3)),
        Err(Error::RateLimited(_))
    ));
}

#[test]
fn defaults_are_the_builders_defaults() {
    let breaker: BreakerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(breaker.failure_threshold, 5);
    assert_eq!(breaker.recovery_timeout, Duration::from_secs(30));
    let breaker = breaker.build().unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    let retry: RetryConfig = serde_json::from_str("{}").unwrap();
    let policy = retry.build().unwrap();
    assert_eq!(policy.max_attempts(), 3);
    assert_eq!(policy.max_delay(), Duration::from_secs(10));
    let empty: PipelineConfig = serde_json::from_str("{}").unwrap();
    assert!(empty.executor::<()>().is_ok());
}

#[test]
fn rejected_values_name_their_path() {
    let config: PipelineConfig =
        serde_json::from_str(r#"{ "breaker": { "failure_threshold": 0 } }"#).unwrap();
    let err = config.executor::<()>().unwrap_err();
    assert_eq!(err.path, "breaker.failure_threshold");
    assert_eq!(
        err.to_string(),
        "`breaker.failure_threshold` must be greater than zero"
    );

    let config: PipelineConfig =
        serde_json::from_str(r#"{ "retry": { "base_delay": "2s", "max_delay": "1s" } }"#).unwrap();
    assert_eq!(config.executor::<()>().unwrap_err().path, "retry.max_delay");

    let config: PipelineConfig =
        serde_json::from_str(r#"{ "limiter": { "capacity": 5, "refill_per_sec": -1 } }"#).unwrap();
    assert_eq!(
        config.executor::<()>().unwrap_err().path,
        "limiter.refill_per_sec"
    );

    let config: PipelineConfig = serde_json::from_str(r#"{ "deadline": "0s" }"#).unwrap();
    assert_eq!(config.executor::<()>().unwrap_err().path, "deadline");
}

#[test]
fn unknown_fields_and_bad_durations_are_refused_when_parsing() {
    let typo = toml::from_str::<PipelineConfig>("[breaker]\nfailure_treshold = 3\n").unwrap_err();
    assert!(typo.to_string().contains("failure_treshold"), "{typo}");
    let bad = serde_json::from_str::<PipelineConfig>(r#"{ "attempt_timeout": "two seconds" }"#)
        .unwrap_err();
    let message = bad.to_string();
    assert!(
        message.contains(r#"invalid duration "two seconds""#),
        "{message}"
    );
    assert!(
        message.contains("line 1 column"),
        "the format reports where: {message}"
    );
}

#[test]
fn bulkheads_and_adaptive_limits_come_from_configuration_too() {
    let config: PipelineConfig = toml::from_str(
        r#"
[bulkhead]
max_concurrent = 2
max_waiting = 4
max_wait = "50ms"
"#,
    )
    .unwrap();
    let bulkhead = config.bulkhead.as_ref().unwrap().build().unwrap();
    assert_eq!(
        (bulkhead.limit(), bulkhead.max_wait()),
        (2, Duration::from_millis(50))
    );
    let exec = config.executor::<()>().unwrap();
    assert_eq!(exec.run(&(), || Ok::<_, ()>(3)), Ok(3));

    let adaptive: PipelineConfig = serde_json::from_str(
        r#"{ "adaptive_limit": { "algorithm": "gradient2", "initial_limit": 8, "max_limit": 64 } }"#,
    )
    .unwrap();
    let limit = adaptive.adaptive_limit.as_ref().unwrap().build().unwrap();
    assert_eq!(limit.limit(), 8);

    let no_wait: PipelineConfig =
        toml::from_str("[bulkhead]\nmax_concurrent = 1\nmax_waiting = 1\n").unwrap();
    let err = no_wait.executor::<()>().unwrap_err();
    assert_eq!(err.path, "bulkhead.max_wait");
    assert_eq!(
        err.to_string(),
        "`bulkhead.max_wait` must be greater than zero"
    );

    let both: PipelineConfig =
        toml::from_str("[bulkhead]\nmax_concurrent = 1\n[adaptive_limit]\nalgorithm = \"aimd\"\n")
            .unwrap();
    assert_eq!(both.executor::<()>().unwrap_err().path, "adaptive_limit");
}

#[test]
fn an_error_budget_comes_from_configuration_and_bad_ones_name_their_path() {
    let config: BreakerConfig = toml::from_str(
        "failure_threshold = 1000\nerror_budget = { max_failures = 2, window = \"10s\" }\n",
    )
    .unwrap();
    let breaker = config.build().unwrap();
    breaker.try_acquire().unwrap().failure();
    breaker.try_acquire().unwrap().success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), CircuitState::Open, "two failures spend it");
    let open = breaker.try_acquire().unwrap_err();
    assert!(
        open.retry_after > Duration::from_secs(4) && open.retry_after <= Duration::from_secs(5),
        "one failure comes back every 5 s: {:?}",
        open.retry_after
    );

    let config: PipelineConfig = serde_json::from_str(
        r#"{ "breaker": { "error_budget": { "max_failures": 0, "window": "1s" } } }"#,
    )
    .unwrap();
    assert_eq!(
        config.executor::<()>().unwrap_err().path,
        "breaker.error_budget"
    );
    let typo =
        toml::from_str::<BreakerConfig>("error_budget = { max_failure = 2, window = \"1s\" }")
            .unwrap_err();
    assert!(typo.to_string().contains("max_failure"), "{typo}");
}

/// The keyed stages from configuration: a breaker per host, a bulkhead per tenant and an
/// adaptive limit per host, each with its store's bound; bad values name their path.
#[test]
fn keyed_breakers_bulkheads_and_adaptive_limits_come_from_configuration() {
    use limitpal::config::{KeyedAdaptiveLimitConfig, KeyedBreakerConfig, KeyedBulkheadConfig};

    let breakers: KeyedBreakerConfig = toml::from_str(
        r#"
max_keys = 1000
idle_ttl = "1m"
[breaker]
failure_threshold = 2
recovery_timeout = "5s"
"#,
    )
    .unwrap();
    let per_host = breakers.build::<String>().unwrap();
    for _ in 0..2 {
        per_host.try_acquire("b").unwrap().failure();
    }
    assert_eq!(per_host.state("b"), CircuitState::Open);
    assert_eq!(per_host.state("a"), CircuitState::Closed);
    assert!(per_host.try_acquire("a").is_ok());

    let tenants: KeyedBulkheadConfig = serde_json::from_str(
        r#"{ "max_keys": 100, "bulkhead": { "max_concurrent": 1, "max_waiting": 2, "max_wait": "50ms" } }"#,
    )
    .unwrap();
    let per_tenant = tenants.build::<String>().unwrap();
    let _held = per_tenant.try_acquire("t1").unwrap();
    assert!(per_tenant.try_acquire("t1").is_err());
    assert!(per_tenant.try_acquire("t2").is_ok());
    assert_eq!(per_tenant.max_wait(), Duration::from_millis(50));

    let limits: KeyedAdaptiveLimitConfig = toml::from_str(
        r#"
forget_after = "10m"
[adaptive_limit]
algorithm = "aimd"
initial_limit = 10
"#,
    )
    .unwrap();
    let per_host = limits.build::<String>().unwrap();
    assert_eq!(per_host.limit("a"), 10);
    per_host.try_acquire("a").unwrap().failure();
    assert_eq!(per_host.limit("a"), 9);

    let zero: KeyedBreakerConfig = toml::from_str("max_keys = 0\n").unwrap();
    assert_eq!(zero.build::<u64>().unwrap_err().path, "max_keys");
    let bad: KeyedBreakerConfig = toml::from_str("[breaker]\nfailure_threshold = 0\n").unwrap();
    assert_eq!(
        bad.build::<u64>().unwrap_err().path,
        "breaker.failure_threshold"
    );
    let bad: KeyedAdaptiveLimitConfig =
        toml::from_str("forget_after = \"0s\"\n[adaptive_limit]\nalgorithm = \"gradient2\"\n")
            .unwrap();
    assert_eq!(bad.build::<u64>().unwrap_err().path, "forget_after");
    let bad: KeyedAdaptiveLimitConfig =
        toml::from_str("[adaptive_limit]\nalgorithm = \"aimd\"\nmin_limit = 0\n").unwrap();
    assert_eq!(
        bad.build::<u64>().unwrap_err().path,
        "adaptive_limit.min_limit"
    );
    let unknown =
        toml::from_str::<KeyedBulkheadConfig>("max_key = 3\n[bulkhead]\nmax_concurrent = 1\n");
    assert!(unknown.is_err(), "unknown fields are refused");
}
