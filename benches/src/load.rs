//! A closed-loop load generator on the blocking client (`proto::client`), the seed of a later
//! fio-style `shingle-bench`: a few threads, each keeping its share of the requests in flight
//! with `Client::submit` and collecting the answers in the order it sent them, every answer
//! checked (a PUT must be newly stored, a GET must return the exact bytes PUT under its key).
//! Operations are counted by completion time inside the measured window (after a warm-up);
//! latencies go to per-thread HDR histograms merged at the end. The caller's `sample` runs at
//! the window's start and end (the daemon's CPU time, the device's counters).
//!
//! Keys are `measure::key_of(n)` of key numbers; a value is a random buffer (one per seed) with
//! its key number in its first 8 bytes, so every value differs and a GET can tell whose it got.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use proto::client::{Client, ClientError, Pending, Reply};
use proto::messages::{GetRequest, PutOutcome, PutRequest, RequestBody, ResponseBody};
use proto::wire::{self, Status};

use crate::measure::{XorShift64Star, key_of, latency_histogram, record_latency};

/// Bytes of a value's key-number stamp.
pub const STAMP_BYTES: usize = 8;
/// Bounds of a plan: threads, requests in flight.
pub const THREADS_MAX: usize = 256;
pub const IN_FLIGHT_MAX: usize = 4096;

/// PUT or GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// PUT new keys: key numbers `first_key`, `first_key + 1`, ... in order.
    Put,
    /// GET keys drawn uniformly from `first_key..first_key + key_count`, PUT before with the
    /// same value seed and size.
    Get,
}

/// When a load ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// PUT every key of the range once; everything is measured (a preload).
    AfterKeys,
    /// Run `warmup` unmeasured, then measure for `runtime`.
    Timed { warmup: Duration, runtime: Duration },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub kind: OpKind,
    pub disk: u16,
    /// Bytes of every value (at least 8: the key-number stamp).
    pub value_bytes: usize,
    /// Requests in flight over all threads, split as evenly as possible.
    pub in_flight: usize,
    pub threads: usize,
    pub first_key: u64,
    /// GET: keys to draw from. PUT with [`Stop::AfterKeys`]: keys to PUT.
    pub key_count: u64,
    /// Seed of the values' bytes.
    pub value_seed: u64,
    pub stop: Stop,
    /// PUT: log bytes the PUTs may take, `log_bytes_per_put` each (an upper bound of a PUT's
    /// record, batch share and padding). The load ends early ([`LoadOutcome::ended_early`]),
    /// before the disk answers NO_SPACE, when the next PUT would go past it.
    pub log_budget_bytes: u64,
    pub log_bytes_per_put: u64,
    /// CPUs the threads are pinned to, round-robin (the connections' reader threads, started
    /// by the first request on them, inherit their starter's CPU); empty: not pinned.
    pub cpus: Vec<usize>,
}

/// What one load did.
#[derive(Debug)]
pub struct LoadOutcome<S> {
    /// Requests completed inside the window, and their value bytes.
    pub ops: u64,
    pub bytes: u64,
    /// The measured window: from the end of the warm-up to `runtime` later, or to the early end.
    pub window: Duration,
    /// Latency of the requests counted, from before `submit` to the answer collected, in ns.
    pub latency_ns: Histogram<u64>,
    /// `sample()` at the window's start and end.
    pub before: S,
    pub after: S,
    /// The log budget ran out: the window ended before `runtime`.
    pub ended_early: bool,
    /// Every request answered, warm-up and drain included (all were checked).
    pub requests: u64,
}

/// The values of one seed: a random buffer, stamped with the key number.
#[derive(Debug, Clone)]
pub struct Values {
    base: Vec<u8>,
}

impl Values {
    pub fn new(seed: u64, value_bytes: usize) -> Values {
        let mut base = vec![0u8; value_bytes];
        XorShift64Star::new(seed).fill(&mut base);
        Values { base }
    }

    /// Writes key number `n`'s value into `out` (a copy of the base buffer).
    fn stamp(out: &mut [u8], n: u64) {
        out[..STAMP_BYTES].copy_from_slice(&n.to_le_bytes());
    }

    /// Key number `n`'s value of `len` bytes (at most the base's), for values of several sizes:
    /// the first `len` bytes of the base buffer, stamped.
    pub fn sized_into(&self, n: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.base[..len]);
        Values::stamp(out, n);
    }

    /// Whether `data` is key number `n`'s value of its length ([`Values::sized_into`]).
    pub fn matches_sized(&self, n: u64, data: &[u8]) -> bool {
        (STAMP_BYTES..=self.base.len()).contains(&data.len())
            && data[..STAMP_BYTES] == n.to_le_bytes()
            && data[STAMP_BYTES..] == self.base[STAMP_BYTES..data.len()]
    }

    /// Whether `data` is key number `n`'s value.
    pub fn matches(&self, n: u64, data: &[u8]) -> bool {
        data.len() == self.base.len()
            && data[..STAMP_BYTES] == n.to_le_bytes()
            && data[STAMP_BYTES..] == self.base[STAMP_BYTES..]
    }
}

/// Runs `plan` against `client`, calling `sample` at the start and end of the measured window.
pub fn run<S>(
    client: &Client,
    plan: &LoadPlan,
    mut sample: impl FnMut() -> Result<S>,
) -> Result<LoadOutcome<S>> {
    check_plan(plan)?;
    let origin = Instant::now();
    let (warmup, runtime) = match plan.stop {
        Stop::Timed { warmup, runtime } => (warmup, Some(runtime)),
        Stop::AfterKeys => (Duration::ZERO, None),
    };
    let window_end = runtime.map(|r| warmup + r);
    let shared = Shared::new(origin, warmup, window_end);
    let values = Values::new(plan.value_seed, plan.value_bytes);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.threads)
            .map(|t| {
                let share =
                    plan.in_flight / plan.threads + usize::from(t < plan.in_flight % plan.threads);
                let worker =
                    Worker { client, plan, shared: &shared, values: &values, index: t, share };
                std::thread::Builder::new()
                    .name(format!("load-{t}"))
                    .spawn_scoped(scope, move || worker.run())
                    .context("starting a load thread")
            })
            .collect();
        if workers.iter().any(Result::is_err) {
            // The coordinator waits for every thread to exit or for a failure: this is one.
            shared.stop.store(true, Ordering::Relaxed);
            shared.update(|state| state.failed = true);
        }
        let coordinated = coordinate(&shared, plan.threads, &mut sample);
        shared.stop.store(true, Ordering::Relaxed);
        let mut latency_ns = latency_histogram()?;
        let (mut ops, mut requests, mut first_error) = (0, 0, None);
        for worker in workers {
            match worker?.join() {
                Ok(Ok(tally)) => {
                    ops += tally.ops;
                    requests += tally.requests;
                    latency_ns.add(&tally.latency_ns).context("merging latency histograms")?;
                }
                Ok(Err(err)) => {
                    first_error.get_or_insert(err);
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("a load thread panicked"));
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        let (before, after, window) = coordinated?;
        Ok(LoadOutcome {
            ops,
            bytes: ops * plan.value_bytes as u64,
            window,
            latency_ns,
            before,
            after,
            ended_early: shared.ended_early.load(Ordering::Relaxed),
            requests,
        })
    })
}

fn check_plan(plan: &LoadPlan) -> Result<()> {
    ensure!(plan.value_bytes >= STAMP_BYTES, "values must be at least {STAMP_BYTES} bytes");
    ensure!(
        (1..=THREADS_MAX).contains(&plan.threads)
            && (plan.threads..=IN_FLIGHT_MAX).contains(&plan.in_flight),
        "{} threads with {} requests in flight: need 1..={THREADS_MAX} threads and threads..={IN_FLIGHT_MAX} in flight",
        plan.threads,
        plan.in_flight
    );
    ensure!(plan.kind == OpKind::Put || plan.key_count > 0, "GET needs preloaded keys");
    ensure!(
        plan.kind == OpKind::Put || plan.stop != Stop::AfterKeys,
        "a GET load needs a time limit"
    );
    Ok(())
}

/// Samples at the window's start and end; returns them and the window's length.
fn coordinate<S>(
    shared: &Shared,
    threads: usize,
    sample: &mut impl FnMut() -> Result<S>,
) -> Result<(S, S, Duration)> {
    let start = shared.origin + shared.window_start;
    drop(shared.wait(|state| state.failed || Instant::now() >= start, Some(start)));
    let before = sample()?;
    let end_at = shared.window_end.map(|end| shared.origin + end);
    let state = shared.wait(
        |state| {
            state.failed
                || state.exited == threads
                || state.early_end.is_some()
                || end_at.is_some_and(|end| Instant::now() >= end)
        },
        end_at,
    );
    let failed = state.failed;
    drop(state);
    let after = sample()?;
    ensure!(!failed, "a load thread failed");
    let end_ns = shared.end_ns.load(Ordering::Relaxed);
    let end =
        if end_ns == u64::MAX { shared.origin.elapsed() } else { Duration::from_nanos(end_ns) };
    Ok((before, after, end.saturating_sub(shared.window_start)))
}

/// What the threads and the coordinator share.
struct Shared {
    origin: Instant,
    /// Offsets from `origin`: the window starts after the warm-up, and ends `runtime` later
    /// (`None`: when the keys are done).
    window_start: Duration,
    window_end: Option<Duration>,
    /// Where the window ends, ns from `origin` (u64::MAX: not known yet): `window_end`, or
    /// earlier if the log budget ran out.
    end_ns: AtomicU64,
    stop: AtomicBool,
    ended_early: AtomicBool,
    next_key: AtomicU64,
    charged_bytes: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    exited: usize,
    failed: bool,
    early_end: Option<Instant>,
}

impl Shared {
    fn new(origin: Instant, window_start: Duration, window_end: Option<Duration>) -> Shared {
        let end_ns = window_end.map_or(u64::MAX, nanos);
        Shared {
            origin,
            window_start,
            window_end,
            end_ns: AtomicU64::new(end_ns),
            stop: AtomicBool::new(false),
            ended_early: AtomicBool::new(false),
            next_key: AtomicU64::new(0),
            charged_bytes: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done(state)`, re-checking at `deadline` (time-based conditions).
    fn wait(
        &self,
        done: impl Fn(&State) -> bool,
        deadline: Option<Instant>,
    ) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while !done(&state) {
            state = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0
                }
                None => self.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
            };
        }
        state
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// The log budget ran out: no more requests, and the window ends now.
    fn end_early(&self) {
        let now = Instant::now();
        self.end_ns.fetch_min(nanos(now - self.origin), Ordering::Relaxed);
        self.ended_early.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.update(|state| {
            state.early_end.get_or_insert(now);
        });
    }

    fn in_window(&self, done: Instant) -> bool {
        let at = done.saturating_duration_since(self.origin);
        at >= self.window_start && nanos(at) < self.end_ns.load(Ordering::Relaxed)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One thread's counts.
struct Tally {
    ops: u64,
    requests: u64,
    latency_ns: Histogram<u64>,
}

/// A request in flight.
struct InFlight {
    issued: Instant,
    key_number: u64,
    pending: Pending,
}

struct Worker<'a> {
    client: &'a Client,
    plan: &'a LoadPlan,
    shared: &'a Shared,
    values: &'a Values,
    index: usize,
    /// Requests this thread keeps in flight.
    share: usize,
}

impl Worker<'_> {
    fn run(self) -> Result<Tally> {
        let result = self.run_inner();
        self.shared.update(|state| {
            state.exited += 1;
            state.failed |= result.is_err();
        });
        if result.is_err() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        result
    }

    fn run_inner(&self) -> Result<Tally> {
        if !self.plan.cpus.is_empty() {
            let cpu = self.plan.cpus[self.index % self.plan.cpus.len()];
            ioengine::sys::pin_current_thread(cpu)
                .with_context(|| format!("pinning load thread {} to CPU {cpu}", self.index))?;
        }
        let mut tally = Tally { ops: 0, requests: 0, latency_ns: latency_histogram()? };
        let mut window = VecDeque::with_capacity(self.share);
        let mut value = self.values.base.clone();
        let mut rng = XorShift64Star::new(self.plan.value_seed ^ ((self.index as u64 + 1) << 32));
        loop {
            while window.len() < self.share && self.may_submit() {
                match self.submit(&mut value, &mut rng)? {
                    Some(request) => window.push_back(request),
                    None => break,
                }
            }
            let Some(request) = window.pop_front() else { return Ok(tally) };
            let reply = request.pending.wait();
            let done = Instant::now();
            self.check(request.key_number, reply)?;
            tally.requests += 1;
            if self.shared.in_window(done) {
                tally.ops += 1;
                record_latency(&mut tally.latency_ns, done - request.issued);
            }
        }
    }

    fn may_submit(&self) -> bool {
        if self.shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.shared.window_end {
            Some(end) => self.shared.origin.elapsed() < end,
            None => true,
        }
    }

    /// Sends the next request; `None` when there is none to send (keys done, budget spent).
    fn submit(&self, value: &mut [u8], rng: &mut XorShift64Star) -> Result<Option<InFlight>> {
        let plan = self.plan;
        let (key_number, body, data) = match plan.kind {
            OpKind::Put => {
                let index = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
                if plan.stop == Stop::AfterKeys && index >= plan.key_count {
                    return Ok(None);
                }
                let charged =
                    self.shared.charged_bytes.fetch_add(plan.log_bytes_per_put, Ordering::Relaxed);
                if charged + plan.log_bytes_per_put > plan.log_budget_bytes {
                    self.shared.end_early();
                    return Ok(None);
                }
                let key_number = plan.first_key + index;
                Values::stamp(value, key_number);
                let put = PutRequest {
                    value_len: u32::try_from(value.len()).context("a value over 4 GiB")?,
                    value_crc32c: wire::crc32c(value),
                };
                (key_number, RequestBody::Put(put), Some(&*value))
            }
            OpKind::Get => {
                let key_number = plan.first_key + rng.below(plan.key_count);
                (key_number, RequestBody::Get(GetRequest { range: None }), None)
            }
        };
        let issued = Instant::now();
        let pending = self
            .client
            .submit(plan.disk, key_of(key_number), body, data)
            .map_err(|err| request_error(plan.kind, key_number, err))?;
        Ok(Some(InFlight { issued, key_number, pending }))
    }

    /// Checks an answer: a PUT newly stored, a GET with the key's exact value.
    fn check(&self, key_number: u64, reply: Result<Reply, ClientError>) -> Result<()> {
        let kind = self.plan.kind;
        let reply = reply.map_err(|err| request_error(kind, key_number, err))?;
        match (kind, &reply.response.body) {
            (OpKind::Put, ResponseBody::Put(PutOutcome::Stored)) => Ok(()),
            (OpKind::Put, ResponseBody::Put(PutOutcome::AlreadyStored)) => bail!(
                "PUT of key #{key_number} was answered \"already stored\": the benchmark's keys collide"
            ),
            (OpKind::Get, ResponseBody::Get(_)) if self.values.matches(key_number, &reply.data) => {
                Ok(())
            }
            (OpKind::Get, ResponseBody::Get(get)) => bail!(
                "GET of key #{key_number} returned {} bytes (value of {}) that are not the value PUT",
                reply.data.len(),
                get.value_len
            ),
            (_, other) => bail!("{kind:?} of key #{key_number} was answered {other:?}"),
        }
    }
}

/// A failed request, with what it was; NO_SPACE says what to change.
fn request_error(kind: OpKind, key_number: u64, err: ClientError) -> anyhow::Error {
    let hint = if err.status() == Some(Status::NoSpace) {
        ": the disk is full although the log budget should have stopped the PUTs first \
         (the budget overestimates what fits); give the disk more room (--size)"
    } else {
        ""
    };
    anyhow::anyhow!("{kind:?} of key #{key_number} failed: {err}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_key_number() {
        let values = Values::new(7, 64);
        let mut value = values.base.clone();
        Values::stamp(&mut value, 42);
        assert!(values.matches(42, &value));
        assert!(!values.matches(41, &value));
        value[63] ^= 1;
        assert!(!values.matches(42, &value));
        assert!(!values.matches(42, &value[..32]));
    }

    #[test]
    fn the_window_starts_after_the_warmup() {
        let origin = Instant::now();
        let shared = Shared::new(origin, Duration::from_secs(1), Some(Duration::from_secs(3)));
        assert!(!shared.in_window(origin + Duration::from_millis(999)));
        assert!(shared.in_window(origin + Duration::from_secs(2)));
        assert!(!shared.in_window(origin + Duration::from_secs(3)));
        shared.end_early();
        assert!(shared.stop.load(Ordering::Relaxed));
        assert!(!shared.in_window(origin + Duration::from_secs(2)), "ended before 2 s");
    }
}
