//! `timeout_coarse`: deadlines without a kernel timer each, checked by one task per core.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::time::{Duration, Instant};

use ioengine::Core;
use ioengine::time::{COARSE_TICK, Elapsed, timeout_coarse};

#[test]
fn a_pending_future_times_out_within_a_tick_of_its_deadline() {
    let core = Core::new(64).unwrap();
    core.block_on(async {
        let started = Instant::now();
        let never = std::future::pending::<()>();
        let out = timeout_coarse(Duration::from_millis(100), never).await;
        let waited = started.elapsed();
        assert_eq!(out, Err(Elapsed(Duration::from_millis(100))));
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_millis(100) + COARSE_TICK * 10, "{waited:?}");
    });
}

#[test]
fn futures_that_finish_first_are_unaffected_and_many_deadlines_coexist() {
    let core = Core::new(64).unwrap();
    core.block_on(async {
        for i in 0..10_000u32 {
            assert_eq!(timeout_coarse(Duration::from_secs(30), async { i }).await, Ok(i));
        }
        // Several pending at once, with different deadlines: each fires at its own.
        let short = ioengine::spawn(timeout_coarse(
            Duration::from_millis(50),
            std::future::pending::<()>(),
        ));
        let long = ioengine::spawn(timeout_coarse(
            Duration::from_millis(300),
            std::future::pending::<()>(),
        ));
        let started = Instant::now();
        assert!(short.await.is_err());
        let short_at = started.elapsed();
        assert!(long.await.is_err());
        let long_at = started.elapsed();
        assert!(short_at < Duration::from_millis(250), "{short_at:?}");
        assert!(long_at >= Duration::from_millis(300), "{long_at:?}");
    });
}

#[test]
fn each_core_on_a_thread_gets_its_own_table() {
    for _ in 0..2 {
        let core = Core::new(64).unwrap();
        core.block_on(async {
            let out = timeout_coarse(Duration::from_millis(30), std::future::pending::<()>()).await;
            assert!(out.is_err());
        });
    }
}
