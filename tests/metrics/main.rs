//! Scrapes the Prometheus output after the example's scripted scenario. One test: the
//! recorder is global to the process.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[allow(dead_code)] // the example's `main` is not used here
#[path = "../../examples/prometheus.rs"]
mod example;

#[test]
fn the_scrape_counts_exactly_what_the_scenario_did() {
    let text = example::scenario().unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value(r#"limitpal_ratelimit_allowed_total{name="api"}"#),
        3.0
    );
    assert_eq!(value(r#"limitpal_ratelimit_denied_total{name="api"}"#), 1.0);
    assert_eq!(
        value(r#"limitpal_retry_retried_total{name="upstream"}"#),
        1.0
    );
    assert_eq!(
        value(r#"limitpal_retry_exhausted_total{name="upstream"}"#),
        1.0
    );
    assert_eq!(
        value(r#"limitpal_breaker_rejected_total{name="upstream"}"#),
        1.0
    );
    assert_eq!(
        value(r#"limitpal_breaker_state{name="upstream"}"#),
        1.0,
        "open"
    );
    assert_eq!(
        value(r#"limitpal_retry_delay_seconds_count{name="upstream"}"#),
        1.0
    );
    assert_eq!(
        value(r#"limitpal_fallback_total{name="catalog",reason="circuit_open"}"#),
        1.0
    );
    assert_eq!(
        value(r#"limitpal_retry_delay_seconds_sum{name="upstream"}"#),
        0.1
    );
    assert_eq!(value(r#"limitpal_bulkhead_limit{name="upstream"}"#), 8.0);
    assert_eq!(value(r#"limitpal_bulkhead_limit{name="db"}"#), 1.0);
    assert_eq!(value(r#"limitpal_bulkhead_rejected_total{name="db"}"#), 1.0);
}
