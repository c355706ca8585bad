use super::*;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::oneshot;
use tokio::time::sleep;

#[derive(Debug, PartialEq, Eq)]
enum Downstream {
    NotFound,
    Unavailable,
}

fn config(failure_threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold,
        open_for: Duration::from_secs(5),
        call_timeout: Duration::from_secs(2),
    }
}

async fn fail(breaker: &CircuitBreaker) {
    let result = breaker.call(async { Err::<(), _>(Downstream::Unavailable) }).await;
    assert!(matches!(result, Err(BreakerError::Inner(Downstream::Unavailable))));
}

async fn succeed(breaker: &CircuitBreaker) {
    let result = breaker.call(async { Ok::<_, Downstream>(7) }).await;
    assert!(matches!(result, Ok(7)));
}

/// Opens the breaker and waits out `open_for` so it is half-open.
async fn half_open(breaker: &CircuitBreaker) {
    for _ in 0..breaker.config().failure_threshold {
        fail(breaker).await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    sleep(breaker.config().open_for).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[test]
fn default_config_matches_the_documented_values() {
    let config = BreakerConfig::default();
    assert_eq!(config.failure_threshold, 5);
    assert_eq!(config.open_for, Duration::from_secs(5));
    assert_eq!(config.call_timeout, Duration::from_secs(2));
}

#[test]
fn states_encode_as_gauge_values_and_names() {
    assert_eq!(BreakerState::Closed.as_gauge(), 0);
    assert_eq!(BreakerState::HalfOpen.as_gauge(), 1);
    assert_eq!(BreakerState::Open.as_gauge(), 2);
    assert_eq!(BreakerState::Closed.as_str(), "closed");
    assert_eq!(BreakerState::Open.as_str(), "open");
    assert_eq!(BreakerState::HalfOpen.as_str(), "half-open");
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let breaker = CircuitBreaker::new("catalog", config(3));
    fail(&breaker).await;
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_failure_count() {
    let breaker = CircuitBreaker::new("catalog", config(3));
    fail(&breaker).await;
    fail(&breaker).await;
    succeed(&breaker).await;
    fail(&breaker).await;
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_immediately_without_running_the_call() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Open);

    let runs = AtomicU32::new(0);
    let before = Instant::now();
    let result = breaker
        .call(async {
            runs.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_secs(1)).await;
            Ok::<_, Downstream>(())
        })
        .await;

    match result {
        Err(BreakerError::Open(name)) => assert_eq!(name, "catalog"),
        other => panic!("expected open rejection, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(Instant::now(), before);
}

#[tokio::test(start_paused = true)]
async fn stays_open_until_open_for_has_elapsed() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    fail(&breaker).await;
    sleep(Duration::from_millis(4_999)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_one_probe_and_rejects_concurrent_callers() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    half_open(&breaker).await;

    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let probe = tokio::spawn({
        let breaker = breaker.clone();
        async move {
            breaker
                .call(async move {
                    let _ = started_tx.send(());
                    let _ = finish_rx.await;
                    Ok::<_, Downstream>("probed")
                })
                .await
        }
    });
    started_rx.await.expect("probe should start");

    let runs = AtomicU32::new(0);
    let rejected = breaker
        .call(async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Downstream>("second")
        })
        .await;
    assert!(matches!(rejected, Err(BreakerError::Open(_))));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    finish_tx.send(()).expect("probe should be waiting");
    let probed = probe.await.expect("probe task should not panic");
    assert!(matches!(probed, Ok("probed")));
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes() {
    let breaker = CircuitBreaker::new("catalog", config(2));
    half_open(&breaker).await;
    succeed(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);

    // The failure count starts afresh after closing.
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_for_another_open_for() {
    let breaker = CircuitBreaker::new("catalog", config(3));
    half_open(&breaker).await;

    // A single failed probe is enough, whatever the threshold.
    fail(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    sleep(Duration::from_millis(4_999)).await;
    assert_eq!(breaker.state(), BreakerState::Open);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn timeout_counts_as_failure_and_returns_timeout() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    let before = Instant::now();
    let result = breaker
        .call(async {
            sleep(Duration::from_secs(10)).await;
            Ok::<_, Downstream>(())
        })
        .await;

    match result {
        Err(BreakerError::Timeout { name, after }) => {
            assert_eq!(name, "catalog");
            assert_eq!(after, Duration::from_secs(2));
        }
        other => panic!("expected timeout, got {other:?}"),
    }
    assert_eq!(before.elapsed(), Duration::from_secs(2));
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn call_with_ignores_errors_that_are_not_failures() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    let only_outages = |error: &Downstream| *error == Downstream::Unavailable;

    let answer = breaker.call_with(async { Err::<(), _>(Downstream::NotFound) }, only_outages).await;
    assert!(matches!(answer, Err(BreakerError::Inner(Downstream::NotFound))));
    assert_eq!(breaker.state(), BreakerState::Closed);

    let outage = breaker.call_with(async { Err::<(), _>(Downstream::Unavailable) }, only_outages).await;
    assert!(matches!(outage, Err(BreakerError::Inner(Downstream::Unavailable))));
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_the_slot() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    half_open(&breaker).await;

    let abandoned =
        timeout(Duration::from_millis(10), breaker.call(std::future::pending::<Result<(), Downstream>>()))
            .await;
    assert!(abandoned.is_err(), "the probe should have been cancelled");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    succeed(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_failure_from_an_earlier_closed_period_is_ignored() {
    let breaker =
        CircuitBreaker::new("catalog", BreakerConfig { call_timeout: Duration::from_secs(60), ..config(1) });
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let slow = tokio::spawn({
        let breaker = breaker.clone();
        async move {
            breaker
                .call(async move {
                    let _ = started_tx.send(());
                    let _ = finish_rx.await;
                    Err::<(), _>(Downstream::Unavailable)
                })
                .await
        }
    });
    started_rx.await.expect("slow call should start");

    // Trip, wait out the open period and close again through a probe.
    fail(&breaker).await;
    sleep(Duration::from_secs(5)).await;
    succeed(&breaker).await;
    assert_eq!(breaker.state(), BreakerState::Closed);

    finish_tx.send(()).expect("slow call should be waiting");
    let late = slow.await.expect("slow call should not panic");
    assert!(matches!(late, Err(BreakerError::Inner(Downstream::Unavailable))));
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_transition() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    breaker.on_transition({
        let seen = Arc::clone(&seen);
        move |name, state| {
            seen.lock().expect("observer log lock").push((name.to_owned(), state));
        }
    });

    fail(&breaker).await; // closed -> open
    sleep(Duration::from_secs(5)).await;
    fail(&breaker).await; // open -> half-open -> open
    sleep(Duration::from_secs(5)).await;
    succeed(&breaker).await; // open -> half-open -> closed

    let seen = seen.lock().expect("observer log lock").clone();
    let states: Vec<BreakerState> = seen.iter().map(|(_, state)| *state).collect();
    assert_eq!(
        states,
        [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed,
        ]
    );
    assert!(seen.iter().all(|(name, _)| name == "catalog"));
}

#[tokio::test(start_paused = true)]
async fn a_later_observer_replaces_the_earlier_one() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    let first = Arc::new(AtomicU32::new(0));
    let second = Arc::new(AtomicU32::new(0));
    breaker.on_transition({
        let first = Arc::clone(&first);
        move |_, _| {
            first.fetch_add(1, Ordering::SeqCst);
        }
    });
    breaker.on_transition({
        let second = Arc::clone(&second);
        move |_, _| {
            second.fetch_add(1, Ordering::SeqCst);
        }
    });

    fail(&breaker).await;
    assert_eq!(first.load(Ordering::SeqCst), 0);
    assert_eq!(second.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_observer_may_query_the_breaker() {
    let breaker = CircuitBreaker::new("catalog", config(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    breaker.on_transition({
        let observed = breaker.clone();
        let seen = Arc::clone(&seen);
        move |_, _| {
            seen.lock().expect("observer log lock").push(observed.state());
        }
    });
    fail(&breaker).await;
    assert_eq!(*seen.lock().expect("observer log lock"), [BreakerState::Open]);
}
