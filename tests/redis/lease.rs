//! Leased quota against a real `redis-server`: three OS processes on one key (and on 1 000
//! keys) stay within the limit's allowance and close to it, a process killed mid-lease does
//! not stop the others, leased slots outlive a Redis restart, the cluster keeps each key in
//! its slot, a hot key costs a few round trips per 1 000 decisions.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use limitpal::redis::{FailurePolicy, RedisRateLimiter};
use limitpal::{AsyncLimiter, Clock, MonotonicClock, TokenBucket};

use crate::fleet::{Reported, Work, fleet};
use crate::server::{RedisCluster, RedisServer};

/// The `redis_fleet` example's binary, built by `cargo test` next to this test's binary.
fn fleet_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("examples").join("redis_fleet");
    assert!(
        path.exists(),
        "{} is missing: `cargo test --all-features` builds it",
        path.display()
    );
    path
}

fn work(server: &RedisServer, prefix: &str, keys: u32, max_batch: u32) -> Work {
    Work {
        url: server.url.clone(),
        prefix: prefix.to_owned(),
        keys,
        seconds: 3,
        max_batch,
        max_hold: Duration::from_millis(200),
        capacity: 100,
        rate: 1_000.0,
    }
}

/// The wall time of `f`, in seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let clock = MonotonicClock::new();
    let start = clock.now();
    let out = f();
    (out, clock.now().saturating_sub(start).as_secs_f64())
}

#[test]
fn three_processes_on_one_leased_key_stay_within_the_allowance_and_near_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let work = work(&server, "one", 1, 32);
    let (reports, wall) = timed(|| fleet(&fleet_exe(), &work, 3).unwrap());
    let admitted: u64 = reports.iter().map(Reported::admitted).sum();
    // every slot spent was granted by Redis first: at most burst + rate × the run's span
    #[allow(clippy::cast_precision_loss)]
    let most = 100.0 + 1_000.0 * wall;
    #[allow(clippy::cast_precision_loss)]
    let admitted_f = admitted as f64;
    assert!(
        admitted_f <= most,
        "{admitted} admitted, allowance {most:.0}"
    );
    // each process hammers for 3 s: the key is saturated at least that long, less what
    // the three leases may strand
    assert!(
        admitted >= 100 + 3_000 - 3 * 32,
        "{admitted} admitted, {reports:?}"
    );
    let decisions: u64 = reports.iter().map(|r| r.decisions).sum();
    let trips: u64 = reports.iter().map(|r| r.round_trips).sum();
    assert!(
        trips * 1000 <= decisions * 10,
        "{trips} round trips for {decisions} decisions"
    );
    // saturated, a refused process asks again once a batch has accrued (a quarter of the
    // burst: 25 slots, 25 ms), not at each slot: fewer trips than slots (about 400 a
    // second for the fleet; one per slot per process, 2 900, before)
    #[allow(clippy::cast_precision_loss)]
    let per_second = trips as f64 / wall;
    eprintln!("{trips} round trips in {wall:.2} s, {admitted} admitted, {decisions} decisions");
    assert!(
        per_second <= 1_000.0,
        "{per_second:.0} round trips a second at a saturated key"
    );
}

#[test]
fn three_processes_on_a_thousand_leased_keys_stay_within_each_allowance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // 1 000 keys, each 10/s with a burst of 10; leases of up to 4
    let work = Work {
        capacity: 10,
        rate: 10.0,
        ..work(&server, "many", 1_000, 4)
    };
    let (reports, wall) = timed(|| fleet(&fleet_exe(), &work, 3).unwrap());
    let admitted: u64 = reports.iter().map(Reported::admitted).sum();
    #[allow(clippy::cast_precision_loss)]
    let most = 1_000.0 * (10.0 + 10.0 * wall);
    #[allow(clippy::cast_precision_loss)]
    let admitted_f = admitted as f64;
    assert!(
        admitted_f <= most,
        "{admitted} admitted, allowance {most:.0}"
    );
    assert!(
        admitted >= 1_000 * (10 + 30) - 3 * 4 * 1_000,
        "{admitted} admitted, {reports:?}"
    );
}

#[test]
fn a_process_killed_mid_lease_leaves_the_others_working_within_the_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let work = work(&server, "killed", 1, 32);
    let spawn = || {
        Command::new(fleet_exe())
            .args(work.args())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut victim, a, b) = (spawn(), spawn(), spawn());
    std::thread::sleep(Duration::from_millis(1_200));
    victim.kill().unwrap(); // SIGKILL: no give-back, its lease is stranded
    let victim = Reported::parse(&String::from_utf8_lossy(
        &victim.wait_with_output().unwrap().stdout,
    ));
    let a = Reported::parse(&String::from_utf8_lossy(
        &a.wait_with_output().unwrap().stdout,
    ));
    let b = Reported::parse(&String::from_utf8_lossy(
        &b.wait_with_output().unwrap().stdout,
    ));
    assert_eq!(a.per_second.len(), 3, "{a:?}");
    assert_eq!(b.per_second.len(), 3, "{b:?}");
    // the last second, after the kill: the two survivors take the whole rate, less at most
    // the victim's stranded batch
    let last = a.per_second[2] + b.per_second[2];
    assert!(
        last >= 1_000 - 32,
        "survivors admitted {last} in the last second"
    );
    assert!(
        last <= 1_000 + 100,
        "survivors admitted {last} in the last second"
    );
    // what the fleet admitted (the victim's reported seconds included) is within the limit
    let admitted = a.admitted() + b.admitted() + victim.admitted();
    assert!(admitted <= 100 + 1_000 * 4, "{admitted}");
}

async fn leased(url: &str, max_batch: u32, max_hold: Duration) -> RedisRateLimiter<String> {
    RedisRateLimiter::builder(url, TokenBucket::new(1_000_000, 1_000_000.0).unwrap())
        .lease(max_batch, max_hold)
        .on_error(FailurePolicy::Deny(Duration::from_millis(50)))
        .timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap()
}

async fn check(limiter: &RedisRateLimiter<String>, key: &String) -> bool {
    match limiter.check_now(key) {
        Some(answer) => answer.is_ok(),
        None => limiter.check(key).await.is_ok(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_seen_once_costs_one_round_trip_and_a_hot_key_a_few_per_thousand() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limiter = leased(&server.url, 256, Duration::from_secs(5)).await;
    assert!(check(&limiter, &"cold".to_owned()).await);
    let stats = limiter.lease_stats().unwrap();
    assert_eq!(
        (stats.leases, stats.granted),
        (1, 1),
        "a batch of 1: {stats:?}"
    );
    let hot = "hot".to_owned();
    for _ in 0..100_000 {
        assert!(check(&limiter, &hot).await);
    }
    let stats = limiter.lease_stats().unwrap();
    assert!(
        stats.leases <= 1 + 1_000,
        "{} round trips for 100 000 decisions",
        stats.leases
    );
    assert!(stats.local >= 99_000, "{stats:?}");
    // leased mode refuses bad input like the rest of the builder
    let err = RedisRateLimiter::<String>::builder(&server.url, TokenBucket::new(1, 1.0).unwrap())
        .lease(0, Duration::from_secs(1))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_batch"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_slots_are_given_back_and_another_process_gets_them() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // a burst of 10, no refill to speak of
    let limiter = |url: String| async move {
        RedisRateLimiter::<String>::builder(&url, TokenBucket::new(10, 0.001).unwrap())
            .lease(8, Duration::from_millis(100))
            .timeout(Duration::from_millis(500))
            .connect()
            .await
            .unwrap()
    };
    let (a, b) = (
        limiter(server.url.clone()).await,
        limiter(server.url.clone()).await,
    );
    let key = "k".to_owned();
    // a's batches grow 1, 2, 4: it holds slots it does not spend
    for _ in 0..4 {
        assert!(check(&a, &key).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // let a refill land
    let held = 10 - 4 - {
        let mut b_got = 0;
        while check(&b, &key).await {
            b_got += 1;
        }
        b_got
    };
    assert!(held > 0, "a holds some of the burst");
    // a's lease lapses after 100 ms: its next look finds nothing to spend and gives the
    // rest back (a `check` would then lease again; `check_now` only looks)
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(a.check_now(&key).is_none(), "lapsed slots are not spent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let returned = a.lease_stats().unwrap().returned;
    assert!(returned > 0, "{:?}", a.lease_stats());
    let mut b_more = 0;
    while check(&b, &key).await {
        b_more += 1;
    }
    assert!(b_more >= 1, "b got the returned slots");
    // never more than the burst in total
    let total = 4 + (10 - 4 - held) + b_more;
    assert!(total <= 10 + 1, "{total}");
    // a limiter dropped with slots in hand gives them back too
    let c = limiter(server.url.clone()).await;
    let other = "other".to_owned();
    for _ in 0..4 {
        assert!(check(&c, &other).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b_other = 0;
    while check(&b, &other).await {
        b_other += 1;
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut after_drop = 0;
    while check(&b, &other).await {
        after_drop += 1;
    }
    assert!(after_drop >= 1, "c's slots came back when it was dropped");
    assert!(4 + b_other + after_drop <= 10 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_slots_outlive_a_redis_restart_and_leases_resume() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limiter = leased(&server.url, 64, Duration::from_secs(30)).await;
    let key = "k".to_owned();
    // warm the key's batch up to 64
    for _ in 0..200 {
        assert!(check(&limiter, &key).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.kill();
    // slots already leased are spent with Redis down
    let mut spent = 0;
    while limiter.check_now(&key).is_some_and(|a| a.is_ok()) {
        spent += 1;
    }
    assert!(spent > 0, "the lease held slots");
    // then the failure policy answers (deny), also for callers queued behind the key's
    // trip: they take its failure rather than time out in turn (20 × 100 ms)
    let clock = MonotonicClock::new();
    let before = clock.now();
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let (limiter, key) = (limiter.clone(), key.clone());
            tokio::spawn(async move { limiter.check(&key).await })
        })
        .collect();
    for answer in queued {
        assert!(answer.await.unwrap().is_err());
    }
    let waited = clock.now().saturating_sub(before);
    assert!(
        waited < Duration::from_millis(700),
        "{waited:?} for 20 queued callers"
    );
    server.restart();
    let back = clock.now();
    loop {
        if check(&limiter, &key).await {
            break;
        }
        assert!(
            clock.now().saturating_sub(back) < Duration::from_secs(1),
            "leases resume within 1 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_on_a_cluster_keep_each_key_in_its_slot_and_its_count_exact() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let nodes: Vec<&str> = cluster.urls.iter().map(String::as_str).collect();
    let limiter: RedisRateLimiter<String> =
        RedisRateLimiter::cluster_builder(&nodes, TokenBucket::new(20, 0.001).unwrap())
            .lease(8, Duration::from_secs(10))
            .on_error(FailurePolicy::Deny(Duration::from_secs(1)))
            .timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap();
    for tenant in 0..100 {
        let key = format!("tenant-{tenant}");
        let mut admitted = 0;
        for _ in 0..40 {
            admitted += u32::from(check(&limiter, &key).await);
        }
        // a refill may still be on its way with the last slots: let it land, spend them
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10 {
            admitted += u32::from(check(&limiter, &key).await);
        }
        assert_eq!(admitted, 20, "exactly the burst for {key}");
    }
    assert_eq!(limiter.errors(), 0);
    let per_node = cluster.keys_per_node();
    assert_eq!(
        per_node.iter().sum::<u64>(),
        100,
        "one key each: {per_node:?}"
    );
    assert!(per_node.iter().all(|&n| n > 10), "{per_node:?}");
}
