//! The executor and runtime: cross-thread wake-ups through the eventfd, messages between
//! pinned cores, the foreground/background policy for tasks and for ring entries.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use ioengine::blocking::unblock;
use ioengine::executor::{BACKGROUND_BATCH_BUSY, FOREGROUND_BATCH};
use ioengine::time::sleep;
use ioengine::{Core, Priority, Runtime, RuntimeConfig, spawn, spawn_background, yield_now};

#[test]
fn a_waker_on_another_thread_wakes_a_sleeping_core() {
    let core = Core::new(64).unwrap();
    let start = Instant::now();
    let value = core.block_on(async {
        // The core has nothing else to do: it sleeps in io_uring_enter until the helper
        // thread's wake goes through the remote queue and the eventfd.
        unblock(|| {
            std::thread::sleep(Duration::from_millis(50));
            41 + 1
        })
        .await
    });
    assert_eq!(value, 42);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn messages_reach_another_core_and_back() {
    let hits = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let hits2 = hits.clone();
    let finished2 = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runtime = Runtime::start(
        RuntimeConfig { cpus: vec![0, 1], pin: false, ..RuntimeConfig::default() },
        move |info| {
            let hits = hits2.clone();
            let done_tx = done_tx.clone();
            let finished = finished2.clone();
            async move {
                if info.index != 0 {
                    // Serve messages until core 0 is done.
                    while !finished.load(Ordering::SeqCst) {
                        sleep(Duration::from_millis(1)).await.unwrap();
                    }
                    return;
                }
                // Core 0 asks core 1 to count, 1000 times; core 1 replies to core 0 each time.
                let replies = Rc::new(Cell::new(0usize));
                for _ in 0..1000 {
                    let hits = hits.clone();
                    let back = info.cores[0].clone();
                    let (tx, rx) = mpsc::channel::<()>();
                    info.cores[1]
                        .send(move || {
                            hits.fetch_add(1, Ordering::SeqCst);
                            back.send(move || tx.send(()).unwrap()).unwrap();
                        })
                        .unwrap();
                    // Wait on this core (without blocking its ring) for the reply to land.
                    while rx.try_recv().is_err() {
                        sleep(Duration::from_micros(50)).await.unwrap();
                    }
                    replies.set(replies.get() + 1);
                }
                finished.store(true, Ordering::SeqCst);
                done_tx.send(replies.get()).unwrap();
            }
        },
    )
    .unwrap();
    assert_eq!(done_rx.recv_timeout(Duration::from_secs(30)).unwrap(), 1000);
    assert_eq!(hits.load(Ordering::SeqCst), 1000);
    runtime.join().unwrap();
}

#[test]
fn pinned_runtime_starts_one_thread_per_cpu() {
    let cpus = ioengine::sys::allowed_cpus().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let runtime = Runtime::start(RuntimeConfig::default(), move |info| {
        let seen = seen2.clone();
        async move {
            let mine = ioengine::sys::allowed_cpus().unwrap();
            seen.lock().unwrap().push((info.cpu, mine));
        }
    })
    .unwrap();
    runtime.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), cpus.len());
    for (cpu, mine) in seen.iter() {
        assert_eq!(mine, &vec![cpu.unwrap()], "core thread pinned to exactly its CPU");
    }
}

#[test]
fn background_tasks_get_a_bounded_share_while_foreground_is_busy() {
    let core = Core::new(64).unwrap();
    let (fg, bg) = core.block_on(async {
        let fg_steps = Rc::new(Cell::new(0u64));
        let bg_steps = Rc::new(Cell::new(0u64));
        let stop = Rc::new(Cell::new(false));
        for _ in 0..FOREGROUND_BATCH {
            let (steps, stop) = (fg_steps.clone(), stop.clone());
            spawn(async move {
                while !stop.get() {
                    steps.set(steps.get() + 1);
                    yield_now().await;
                }
            })
            .detach();
        }
        for _ in 0..FOREGROUND_BATCH {
            let (steps, stop) = (bg_steps.clone(), stop.clone());
            spawn_background(async move {
                assert_eq!(ioengine::executor::current_priority(), Priority::Background);
                while !stop.get() {
                    steps.set(steps.get() + 1);
                    yield_now().await;
                }
            })
            .detach();
        }
        sleep(Duration::from_millis(100)).await.unwrap();
        stop.set(true);
        (fg_steps.get(), bg_steps.get())
    });
    assert!(bg > 0, "background work must not starve");
    // Per loop iteration: FOREGROUND_BATCH foreground polls, BACKGROUND_BATCH_BUSY background.
    let max_bg = fg / (FOREGROUND_BATCH / BACKGROUND_BATCH_BUSY) as u64 + FOREGROUND_BATCH as u64;
    assert!(bg <= max_bg, "background ran {bg} steps against {fg} foreground (max {max_bg})");
}

#[test]
fn background_tasks_run_freely_when_the_core_is_idle() {
    let core = Core::new(64).unwrap();
    let steps = core.block_on(async {
        let steps = Rc::new(Cell::new(0u64));
        let s = steps.clone();
        let task = spawn_background(async move {
            for _ in 0..10_000 {
                s.set(s.get() + 1);
                yield_now().await;
            }
        });
        task.await;
        steps.get()
    });
    assert_eq!(steps, 10_000);
}

#[test]
fn background_ops_beyond_their_ring_share_wait_and_foreground_ops_do_not() {
    let core = Core::new(64).unwrap();
    let reactor = core.reactor().clone();
    let share = reactor.background_inflight_max() as usize;
    core.block_on(async move {
        let finished = Rc::new(Cell::new(0usize));
        for _ in 0..share * 3 {
            let finished = finished.clone();
            spawn_background(async move {
                sleep(Duration::from_millis(30)).await.unwrap();
                finished.set(finished.get() + 1);
            })
            .detach();
        }
        // Background tasks get a few polls per loop turn; wait until all have submitted.
        while reactor.in_flight() < share * 3 {
            yield_now().await;
        }
        assert_eq!(reactor.deferred(), share * 2, "background timers beyond the share wait");
        // A foreground op goes straight to the kernel even now.
        let start = Instant::now();
        sleep(Duration::from_millis(1)).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(25), "foreground op was held back");
        let deadline = Instant::now() + Duration::from_secs(10);
        while finished.get() < share * 3 {
            assert!(Instant::now() < deadline);
            sleep(Duration::from_millis(5)).await.unwrap();
        }
        assert_eq!(reactor.deferred(), 0);
    });
}

#[test]
fn a_full_inbox_answers_busy_instead_of_growing() {
    let core = Core::new(64).unwrap();
    let handle = core.handle();
    // The core is not running: its inbox fills up to the limit and then refuses.
    let mut sent = 0;
    loop {
        match handle.send(|| {}) {
            Ok(()) => sent += 1,
            Err(err) => {
                assert_eq!(err, ioengine::executor::SendError::Busy);
                break;
            }
        }
    }
    assert_eq!(sent, ioengine::executor::INBOX_MESSAGES_MAX);
    core.block_on(async {});
    assert!(handle.send(|| {}).is_ok(), "draining the inbox makes room again");
    drop(core);
    assert_eq!(handle.send(|| {}), Err(ioengine::executor::SendError::Stopped));
}
