//! Runs fio-style jobs ([`JobSpec`]) against a shingled node for `shingle-bench`: every job's
//! `numjobs` clients are threads, each with its own [`Client`] (its own connections) and its
//! own [`CompletionQueue`], keeping `iodepth` requests in flight and taking answers in the order
//! they arrive. Jobs that read first PUT their keys (the preload, not measured); then all jobs
//! run at once, as fio runs the jobs of a file. Every answer is checked: a PUT must be newly
//! stored, a GET must return exactly the bytes PUT under its key (the client also checks their
//! crc32c). Failures are counted by status; the first one stops the run unless the job says
//! `continue_on_error=all`. A progress line like fio's goes to stderr while it runs.
//!
//! Keys: `measure::key_of(salt + (job << 40) + n)`: preloaded keys are `n` in `0..preload_keys`,
//! new keys count up from there. A key's value size is drawn from the job's `bs` by a hash of
//! its number, so a reader knows the size it must get back; its disk is chosen the same way.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use proto::client::{Client, ClientError, ClientOptions, Completion, CompletionQueue, Reply};
use proto::messages::{DiskState, GetRequest, PutOutcome, PutRequest, RequestBody, ResponseBody};
use proto::wire::{self, Status};

use crate::fiojob::{JobSpec, RwMode};
use crate::fioreport::DirRecorder;
use crate::load::Values;

use crate::measure::{XorShift64Star, key_of, splitmix64, user_system_ticks};

/// Bits of a key number left to one job's keys.
const JOB_KEY_BITS: u32 = 40;
/// Salt of the value-size hash (apart from the disk choice's).
const SIZE_SALT: u64 = 0x005E_ED0F_B10C_5123;
/// How long a client sleeps in its queue at most before it looks at the clock again.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// The progress line's period.
const PROGRESS_PERIOD: Duration = Duration::from_secs(1);

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Disks to spread keys over; empty: every active disk the node lists.
    pub disks: Vec<u16>,
    pub options: ClientOptions,
}

/// A whole invocation's jobs.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub jobs: Vec<JobSpec>,
    pub target: Target,
    /// Makes this run's keys differ from every other run's (the node may keep old ones).
    pub salt: u64,
    /// Print the progress line.
    pub progress: bool,
    /// CPUs the client threads are pinned to, round-robin; empty: not pinned.
    pub cpus: Vec<usize>,
}

/// What one job did (all its clients).
#[derive(Debug)]
pub struct JobOutcome {
    pub read: DirRecorder,
    pub write: DirRecorder,
    /// From the end of the ramp to the last client's end.
    pub runtime: Duration,
    /// The job's client threads' user and system CPU seconds over the measured phase.
    pub usr_s: f64,
    pub sys_s: f64,
    /// Failed requests by status name (client-side failures have names of their own).
    pub errors: Vec<(String, u64)>,
    /// The first failure, in words.
    pub first_error: Option<String>,
    pub preload_keys: u64,
}

/// What [`run`] returns.
#[derive(Debug)]
pub struct RunOutcome<S> {
    pub jobs: Vec<JobOutcome>,
    /// `sample()` when the measured phase starts and ends (server CPU, ...).
    pub before: S,
    pub after: S,
    /// From the measured phase's start (ramp included) to its end.
    pub wall: Duration,
    pub preload: Duration,
}

/// The node's answer to the load before it starts: disks, value cap, in-flight limit.
#[derive(Debug, Clone)]
struct Node {
    disks: Vec<u16>,
}

/// Runs `plan`: preload, then every job at once. `sample` runs at the measured phase's start
/// and end.
pub fn run<S>(plan: &RunPlan, mut sample: impl FnMut() -> Result<S>) -> Result<RunOutcome<S>> {
    let node = check_node(plan)?;
    let shared: Vec<JobShared> = plan
        .jobs
        .iter()
        .enumerate()
        .map(|(index, job)| JobShared::new(plan, index, job))
        .collect::<Result<_>>()?;
    let preload_started = Instant::now();
    preload(plan, &node, &shared)?;
    let preload = preload_started.elapsed();
    measured(plan, &node, &shared, preload, &mut sample)
}

/// Connects once to check that the node takes this load, with errors that say why not.
fn check_node(plan: &RunPlan) -> Result<Node> {
    let addr = plan.target.addr;
    let client = Client::connect(addr, plan.target.options.clone()).map_err(|err| {
        anyhow::anyhow!(
            "cannot reach shingled at {addr}: {err}. Is it running there? (shingle-bench \
             --spawn PATH starts one)"
        )
    })?;
    let hello = client.hello();
    let listed: Vec<u16> = hello.disks.iter().map(|d| d.disk_id).collect();
    let disks = if plan.target.disks.is_empty() {
        hello.disks.iter().filter(|d| d.state == DiskState::Active).map(|d| d.disk_id).collect()
    } else {
        plan.target.disks.clone()
    };
    ensure!(!disks.is_empty(), "shingled at {addr} has no active disk (it lists {listed:?})");
    for &disk in &disks {
        let info = hello.disks.iter().find(|d| d.disk_id == disk).with_context(|| {
            format!("shingled at {addr} has no disk {disk} (it lists {listed:?})")
        })?;
        ensure!(
            info.state == DiskState::Active,
            "disk {disk} of shingled at {addr} is {:?}, not active: it would refuse the load",
            info.state
        );
    }
    for job in &plan.jobs {
        ensure!(
            job.bs.max_bytes <= u64::from(hello.value_bytes_max),
            "job {}: values of up to {} bytes, but shingled at {addr} takes at most {} \
             (store.value_bytes_max)",
            job.name,
            job.bs.max_bytes,
            hello.value_bytes_max
        );
        ensure!(
            job.iodepth <= hello.requests_in_flight_max as usize,
            "job {}: iodepth={} but shingled at {addr} reads at most {} requests in flight per \
             connection (server.max_in_flight_per_connection): the rest would wait in the client",
            job.name,
            job.iodepth,
            hello.requests_in_flight_max
        );
    }
    Ok(Node { disks })
}

/// What a job's clients share.
struct JobShared {
    index: usize,
    job: JobSpec,
    values: Values,
    salt: u64,
    preload_keys: u64,
    /// The next new key (`n`).
    next_key: AtomicU64,
}

impl JobShared {
    fn new(plan: &RunPlan, index: usize, job: &JobSpec) -> Result<JobShared> {
        let bs_max = usize::try_from(job.bs.max_bytes).context("bs")?;
        let salt = plan.salt.wrapping_add((index as u64) << JOB_KEY_BITS);
        let mut shared = JobShared {
            index,
            job: job.clone(),
            values: Values::new(splitmix64(salt), bs_max),
            salt,
            preload_keys: 0,
            next_key: AtomicU64::new(0),
        };
        shared.preload_keys = shared.keys_for(job.preload_bytes());
        ensure!(
            shared.preload_keys < 1 << (JOB_KEY_BITS - 1),
            "job {}: too many keys to preload",
            job.name
        );
        shared.next_key.store(shared.preload_keys, Ordering::Relaxed);
        Ok(shared)
    }

    fn number(&self, n: u64) -> u64 {
        self.salt.wrapping_add(n)
    }

    fn value_len(&self, n: u64) -> usize {
        self.job.bs.size_for(splitmix64(self.number(n) ^ SIZE_SALT)) as usize
    }

    /// Keys whose values add up to at least `bytes`.
    fn keys_for(&self, bytes: u64) -> u64 {
        let (mut keys, mut total) = (0u64, 0u64);
        while total < bytes {
            total += self.value_len(keys) as u64;
            keys += 1;
        }
        keys
    }
}

fn disk_of(node: &Node, number: u64) -> u16 {
    node.disks[(splitmix64(number) % node.disks.len() as u64) as usize]
}

/// PUTs every reading job's keys, each job's clients taking a share, all jobs at once.
fn preload(plan: &RunPlan, node: &Node, shared: &[JobShared]) -> Result<()> {
    let total: u64 = shared.iter().map(|s| s.preload_keys).sum();
    if total == 0 {
        return Ok(());
    }
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for s in shared.iter().filter(|s| s.preload_keys > 0) {
            for clone in 0..s.job.numjobs {
                let (first, end) = share_of(s.preload_keys, clone, s.job.numjobs);
                let (done, stop) = (&done, &stop);
                let handle = std::thread::Builder::new()
                    .name(format!("preload-{}", s.job.name))
                    .spawn_scoped(scope, move || {
                        let result = preload_range(plan, node, s, first..end, done, stop);
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        result
                    })
                    .context("starting a preload thread")?;
                handles.push(handle);
            }
        }
        let mut last = Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if plan.progress && last.elapsed() >= PROGRESS_PERIOD {
                last = Instant::now();
                let d = done.load(Ordering::Relaxed);
                eprint!(
                    "\rpreload: {d}/{total} keys ({:.0}%) in {:.0} s   ",
                    d as f64 * 100.0 / total as f64,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if plan.progress {
            eprintln!(
                "\rpreload: {total} keys in {:.1} s                    ",
                started.elapsed().as_secs_f64()
            );
        }
        for handle in handles {
            match handle.join() {
                Ok(result) => result.context("preloading")?,
                Err(_) => bail!("a preload thread panicked"),
            }
        }
        Ok(())
    })
}

/// Share `clone` of `count` things split over `clones`: `[first, end)`.
fn share_of(count: u64, clone: usize, clones: usize) -> (u64, u64) {
    let (clone, clones) = (clone as u64, clones as u64);
    (count * clone / clones, count * (clone + 1) / clones)
}

fn preload_range(
    plan: &RunPlan,
    node: &Node,
    s: &JobShared,
    keys: std::ops::Range<u64>,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    let client = connect(&plan.target)?;
    let mut preloader = Preloader { s, keys, done, stop };
    keep_in_flight(&client, node, s, &mut preloader)
}

/// What [`keep_in_flight`] asks of a load: the next request, and what to do with an answer.
trait Load {
    /// The next request (a PUT's value built in `value`), or `None` when no more may be sent.
    fn next(&mut self, value: &mut Vec<u8>) -> Result<Option<Op>>;
    /// An answer came at `now`.
    fn done(&mut self, sent: Sent, result: Result<Reply, ClientError>, now: Instant) -> Result<()>;
}

/// Keeps `iodepth` requests of `load` in flight until it has no more and all are answered:
/// each time answers arrive, the freed slots' next requests go out together in one
/// [`proto::client::Batch`].
fn keep_in_flight(client: &Client, node: &Node, s: &JobShared, load: &mut impl Load) -> Result<()> {
    let depth = s.job.iodepth;
    let queue = CompletionQueue::new();
    let mut slots: Vec<Option<Sent>> = vec![None; depth];
    let mut free: Vec<usize> = (0..depth).rev().collect();
    // A value buffer per slot: a batch borrows every value until it is sent.
    let mut values: Vec<Vec<u8>> = vec![Vec::new(); depth];
    let mut next: Vec<(usize, Op)> = Vec::with_capacity(depth);
    let mut out: Vec<Completion> = Vec::with_capacity(depth);
    loop {
        while let Some(&slot) = free.last() {
            let Some(op) = load.next(&mut values[slot])? else { break };
            free.pop();
            next.push((slot, op));
        }
        send_batch(client, &queue, node, s, &next, &values, &mut slots)?;
        next.clear();
        if free.len() == depth {
            return Ok(());
        }
        queue.wait(&mut out, WAIT_SLICE);
        let now = Instant::now();
        for completion in out.drain(..) {
            let slot = completion.tag as usize;
            let sent = slots[slot].take().context("an answer for no request")?;
            free.push(slot);
            load.done(sent, completion.result, now)?;
        }
    }
}

/// PUTs one client's share of a job's preloaded keys.
struct Preloader<'a> {
    s: &'a JobShared,
    keys: std::ops::Range<u64>,
    done: &'a AtomicU64,
    stop: &'a AtomicBool,
}

impl Load for Preloader<'_> {
    fn next(&mut self, value: &mut Vec<u8>) -> Result<Option<Op>> {
        if self.keys.is_empty() || self.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let (s, n) = (self.s, self.keys.start);
        self.keys.start += 1;
        s.values.sized_into(s.number(n), s.value_len(n), value);
        Ok(Some(Op { kind: OpKind::Put, n, bytes: value.len() as u64 }))
    }

    fn done(&mut self, sent: Sent, result: Result<Reply, ClientError>, _: Instant) -> Result<()> {
        check(self.s, sent.op, result)
            .map_err(|failure| anyhow::anyhow!("preload: {}", failure.message))?;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn connect(target: &Target) -> Result<Client> {
    Client::connect(target.addr, target.options.clone())
        .with_context(|| format!("connecting to shingled at {}", target.addr))
}

/// Sends `ops` (slot, request) in one batch, tagged with their slots; a PUT's value is
/// `values[slot]`. Records when each was sent in `slots`.
fn send_batch(
    client: &Client,
    queue: &CompletionQueue,
    node: &Node,
    s: &JobShared,
    ops: &[(usize, Op)],
    values: &[Vec<u8>],
    slots: &mut [Option<Sent>],
) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut batch = client.batch(queue);
    for &(slot, op) in ops {
        let number = s.number(op.n);
        let (disk, key) = (disk_of(node, number), key_of(number));
        let issued = Instant::now();
        let submitted = match op.kind {
            OpKind::Get => {
                let get = RequestBody::Get(GetRequest { range: None });
                batch
                    .submit(slot as u64, disk, key, get, None)
                    .map_err(|e| refused("GET", number, &e))
            }
            OpKind::Put => {
                let value = &values[slot];
                let put = PutRequest {
                    value_len: u32::try_from(value.len()).context("a value over 4 GiB")?,
                    value_crc32c: wire::crc32c(value),
                };
                let body = RequestBody::Put(put);
                batch
                    .submit(slot as u64, disk, key, body, Some(value))
                    .map_err(|e| refused("PUT", number, &e))
            }
        };
        submitted?;
        slots[slot] = Some(Sent { op, issued, submitted: issued });
    }
    batch.send();
    let sent = Instant::now();
    for &(slot, _) in ops {
        if let Some(request) = slots[slot].as_mut() {
            request.submitted = sent;
        }
    }
    Ok(())
}

/// A request that could not even be sent: the load cannot go on.
fn refused(op: &str, number: u64, err: &ClientError) -> anyhow::Error {
    anyhow::anyhow!("{op} of key #{number} could not be sent: {err}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Get,
    Put,
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Op {
    kind: OpKind,
    n: u64,
    bytes: u64,
}

/// A failed request: the status name it counts under, and what happened.
struct Failure {
    status: String,
    message: String,
}

/// Checks an answer: a PUT newly stored, a GET with the key's exact value.
fn check(s: &JobShared, op: Op, result: Result<Reply, ClientError>) -> Result<(), Failure> {
    let number = s.number(op.n);
    let what = if op.kind == OpKind::Put { "PUT" } else { "GET" };
    let reply = result.map_err(|err| Failure {
        status: error_name(&err),
        message: format!("{what} of key #{number} failed: {err}{}", hint(&err)),
    })?;
    let fail = |status: &str, message: String| Err(Failure { status: status.to_owned(), message });
    match (op.kind, &reply.response.body) {
        (OpKind::Put, ResponseBody::Put(PutOutcome::Stored)) => Ok(()),
        (OpKind::Put, ResponseBody::Put(PutOutcome::AlreadyStored)) => fail(
            "ALREADY_STORED",
            format!("PUT of key #{number} was answered \"already stored\": keys collide"),
        ),
        (OpKind::Get, ResponseBody::Get(_))
            if reply.data.len() == s.value_len(op.n)
                && s.values.matches_sized(number, &reply.data) =>
        {
            Ok(())
        }
        (OpKind::Get, ResponseBody::Get(_)) => fail(
            "WRONG_DATA",
            format!(
                "GET of key #{number} returned {} bytes that are not the {} bytes PUT",
                reply.data.len(),
                s.value_len(op.n)
            ),
        ),
        (_, other) => fail("BAD_RESPONSE", format!("{what} of key #{number} answered {other:?}")),
    }
}

/// The name a failure is counted under: the node's status, or what failed in the client.
fn error_name(err: &ClientError) -> String {
    match err {
        ClientError::Status { status, .. } => status.name().to_owned(),
        ClientError::Timeout => "TIMEOUT (client)".to_owned(),
        ClientError::Disconnected => "DISCONNECTED".to_owned(),
        ClientError::Io { .. } => "IO (client)".to_owned(),
        ClientError::Integrity(_) => "INTEGRITY".to_owned(),
        ClientError::Protocol(_) => "PROTOCOL".to_owned(),
        _ => "CLIENT".to_owned(),
    }
}

/// What to do about the statuses with which a node refuses a load.
fn hint(err: &ClientError) -> &'static str {
    match err.status() {
        Some(Status::NoSpace) => {
            ": the disk is full (the store keeps every value until it is deleted); give it more \
             room (--spawn-size) or write less (size=, runtime=)"
        }
        Some(Status::Busy) => ": the node is overloaded (connection limit or a full disk queue)",
        Some(Status::DiskReadOnly | Status::DiskFailed) => ": the disk does not take writes",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The measured phase.

/// Live counts of one client, read by the progress line.
#[derive(Debug, Default)]
struct Live {
    read_ios: AtomicU64,
    read_bytes: AtomicU64,
    write_ios: AtomicU64,
    write_bytes: AtomicU64,
    done: AtomicBool,
}

/// One client's result.
struct ClientTally {
    job: usize,
    read: DirRecorder,
    write: DirRecorder,
    end: Instant,
    usr_ticks: u64,
    sys_ticks: u64,
    errors: Vec<(String, u64)>,
    first_error: Option<String>,
}

struct Phase<'a> {
    plan: &'a RunPlan,
    node: &'a Node,
    stop: AtomicBool,
    barrier: Barrier,
    lives: Vec<Live>,
    first_error: Mutex<Option<String>>,
}

fn measured<S>(
    plan: &RunPlan,
    node: &Node,
    shared: &[JobShared],
    preload: Duration,
    sample: &mut impl FnMut() -> Result<S>,
) -> Result<RunOutcome<S>> {
    let clients: Vec<(usize, usize)> =
        shared.iter().flat_map(|s| (0..s.job.numjobs).map(move |clone| (s.index, clone))).collect();
    let phase = Phase {
        plan,
        node,
        stop: AtomicBool::new(false),
        // Every client, and this thread.
        barrier: Barrier::new(clients.len() + 1),
        lives: clients.iter().map(|_| Live::default()).collect(),
        first_error: Mutex::new(None),
    };
    std::thread::scope(|scope| -> Result<RunOutcome<S>> {
        let mut handles = Vec::with_capacity(clients.len());
        for (global, &(job, clone)) in clients.iter().enumerate() {
            let (phase, s) = (&phase, &shared[job]);
            let handle = std::thread::Builder::new()
                .name(format!("{}.{clone}", s.job.name))
                .spawn_scoped(scope, move || {
                    let result = run_client(phase, s, clone, global);
                    phase.lives[global].done.store(true, Ordering::Relaxed);
                    if result.is_err() {
                        phase.stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .context("starting a client thread")?;
            handles.push(handle);
        }
        // The clients connect, then all start together.
        phase.barrier.wait();
        let started = Instant::now();
        let before = sample();
        progress_until_done(&phase, shared, started, &handles);
        let after = sample();
        let wall = started.elapsed();
        let mut tallies = Vec::new();
        for handle in handles {
            match handle.join() {
                Ok(result) => tallies.push(result?),
                Err(_) => bail!("a client thread panicked"),
            }
        }
        let jobs =
            shared.iter().map(|s| job_outcome(s, &tallies, started)).collect::<Result<Vec<_>>>()?;
        Ok(RunOutcome { jobs, before: before?, after: after?, wall, preload })
    })
}

/// Prints the progress line until every client is done.
fn progress_until_done<T>(
    phase: &Phase<'_>,
    shared: &[JobShared],
    started: Instant,
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
) {
    let total = shared
        .iter()
        .map(|s| s.job.ramp_time + s.job.runtime.unwrap_or_default())
        .max()
        .unwrap_or_default();
    let mut last = (Instant::now(), 0u64, 0u64, 0u64, 0u64);
    let mut printed = false;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if !phase.plan.progress || last.0.elapsed() < PROGRESS_PERIOD {
            continue;
        }
        let sum = |f: fn(&Live) -> &AtomicU64| -> u64 {
            phase.lives.iter().map(|l| f(l).load(Ordering::Relaxed)).sum()
        };
        let now = (
            Instant::now(),
            sum(|l| &l.read_ios),
            sum(|l| &l.read_bytes),
            sum(|l| &l.write_ios),
            sum(|l| &l.write_bytes),
        );
        let dt = (now.0 - last.0).as_secs_f64();
        let rate = |a: u64, b: u64| (a - b) as f64 / dt;
        let running = phase.lives.iter().filter(|l| !l.done.load(Ordering::Relaxed)).count();
        let elapsed = started.elapsed();
        let (percent, eta) = if total.is_zero() {
            (String::from("-.-%"), String::from("--m:--s"))
        } else {
            let left = total.saturating_sub(elapsed).as_secs();
            (
                format!("{:.1}%", (elapsed.as_secs_f64() / total.as_secs_f64() * 100.0).min(100.0)),
                format!("{:02}m:{:02}s", left / 60, left % 60),
            )
        };
        eprint!(
            "\rJobs: {running} (f={running}): [{}][{percent}][r={}/s,w={}/s][r={},w={} IOPS][eta {eta}]   ",
            modes(shared),
            crate::fioreport::binary_bytes(rate(now.2, last.2)),
            crate::fioreport::binary_bytes(rate(now.4, last.4)),
            crate::fioreport::short_count(rate(now.1, last.1)),
            crate::fioreport::short_count(rate(now.3, last.3)),
        );
        let _ = std::io::stderr().flush();
        printed = true;
        last = now;
    }
    if printed {
        eprintln!();
    }
}

/// fio's run-state letters: R read, W write, r randread, w randwrite, M rw, m randrw.
fn modes(shared: &[JobShared]) -> String {
    shared
        .iter()
        .map(|s| {
            let letter = match s.job.rw {
                RwMode::Read => 'R',
                RwMode::Write => 'W',
                RwMode::RandRead => 'r',
                RwMode::RandWrite => 'w',
                RwMode::Rw => 'M',
                RwMode::RandRw => 'm',
            };
            format!("{letter}({})", s.job.numjobs)
        })
        .collect()
}

fn job_outcome(s: &JobShared, tallies: &[ClientTally], started: Instant) -> Result<JobOutcome> {
    let mine: Vec<&ClientTally> = tallies.iter().filter(|t| t.job == s.index).collect();
    let mut read = DirRecorder::new()?;
    let mut write = DirRecorder::new()?;
    let mut errors: Vec<(String, u64)> = Vec::new();
    let (mut usr, mut sys) = (0, 0);
    let mut end = started;
    for t in &mine {
        read.merge(&t.read)?;
        write.merge(&t.write)?;
        usr += t.usr_ticks;
        sys += t.sys_ticks;
        end = end.max(t.end);
        for (status, count) in &t.errors {
            match errors.iter_mut().find(|(s, _)| s == status) {
                Some((_, total)) => *total += count,
                None => errors.push((status.clone(), *count)),
            }
        }
    }
    errors.sort();
    let ramp_end = started + s.job.ramp_time;
    Ok(JobOutcome {
        read,
        write,
        runtime: end.saturating_duration_since(ramp_end),
        usr_s: crate::measure::ticks_s(usr),
        sys_s: crate::measure::ticks_s(sys),
        errors,
        first_error: mine.iter().find_map(|t| t.first_error.clone()),
        preload_keys: s.preload_keys,
    })
}

/// One client of job `s`: connects, waits for the others, runs until its job ends.
fn run_client(
    phase: &Phase<'_>,
    s: &JobShared,
    clone: usize,
    global: usize,
) -> Result<ClientTally> {
    let plan = phase.plan;
    // Pinned before connecting: the connections' reader threads inherit the CPU.
    let pinned = match plan.cpus.get(global % plan.cpus.len().max(1)) {
        Some(&cpu) => ioengine::sys::pin_current_thread(cpu)
            .with_context(|| format!("pinning client {global} to CPU {cpu}")),
        None => Ok(()),
    };
    let connected = pinned.and_then(|()| connect(&plan.target));
    // Every client reaches the barrier, even one that failed, or the others would wait forever.
    phase.barrier.wait();
    let client = connected?;
    let mut worker = ClientWorker::new(phase, s, clone, global)?;
    let cpu_before = user_system_ticks("/proc/thread-self/stat")?;
    keep_in_flight(&client, phase.node, s, &mut worker)?;
    let cpu_after = user_system_ticks("/proc/thread-self/stat")?;
    Ok(ClientTally {
        job: s.index,
        read: worker.read,
        write: worker.write,
        end: worker.end,
        usr_ticks: cpu_after.0 - cpu_before.0,
        sys_ticks: cpu_after.1 - cpu_before.1,
        errors: worker.errors,
        first_error: worker.first_error,
    })
}

struct ClientWorker<'a> {
    phase: &'a Phase<'a>,
    s: &'a JobShared,
    live: &'a Live,
    rng: XorShift64Star,
    /// Sequential reads: the next preloaded key.
    next_read: u64,
    ramp_end: Instant,
    end_at: Option<Instant>,
    /// Bytes sent after the ramp (a job that is not time-based ends at `size`).
    measured_bytes: u64,
    read: DirRecorder,
    write: DirRecorder,
    end: Instant,
    errors: Vec<(String, u64)>,
    first_error: Option<String>,
}

/// A request in flight and when it was sent.
#[derive(Debug, Clone, Copy)]
struct Sent {
    op: Op,
    issued: Instant,
    submitted: Instant,
}

impl<'a> ClientWorker<'a> {
    fn new(
        phase: &'a Phase<'a>,
        s: &'a JobShared,
        clone: usize,
        global: usize,
    ) -> Result<ClientWorker<'a>> {
        let now = Instant::now();
        let ramp_end = now + s.job.ramp_time;
        Ok(ClientWorker {
            phase,
            s,
            live: &phase.lives[global],
            rng: XorShift64Star::new(phase.plan.salt ^ ((global as u64 + 1) << 20)),
            next_read: share_of(s.preload_keys, clone, s.job.numjobs).0,
            ramp_end,
            end_at: s.job.runtime.map(|runtime| ramp_end + runtime),
            measured_bytes: 0,
            read: DirRecorder::new()?,
            write: DirRecorder::new()?,
            end: now,
            errors: Vec::new(),
            first_error: None,
        })
    }

    fn may_submit(&self) -> bool {
        if self.phase.stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if self.end_at.is_some_and(|end| now >= end) {
            return false;
        }
        match self.s.job.size_bytes {
            Some(size) if !self.s.job.time_based && now >= self.ramp_end => {
                self.measured_bytes < size
            }
            _ => true,
        }
    }

    /// The next request: a GET of a preloaded key or a PUT of a new key (its value built in
    /// `value`).
    fn next_op(&mut self, value: &mut Vec<u8>) -> Result<Op> {
        let s = self.s;
        let read = match s.job.rw {
            RwMode::Read | RwMode::RandRead => true,
            RwMode::Write | RwMode::RandWrite => false,
            RwMode::Rw | RwMode::RandRw => self.rng.below(100) < u64::from(s.job.rwmixread),
        };
        let op = if read {
            let n = if s.job.rw.random() {
                self.rng.below(s.preload_keys)
            } else {
                let n = self.next_read;
                self.next_read = (self.next_read + 1) % s.preload_keys;
                n
            };
            Op { kind: OpKind::Get, n, bytes: s.value_len(n) as u64 }
        } else {
            let n = s.next_key.fetch_add(1, Ordering::Relaxed);
            ensure!(n < 1 << JOB_KEY_BITS, "job {}: out of key numbers", s.job.name);
            s.values.sized_into(s.number(n), s.value_len(n), value);
            Op { kind: OpKind::Put, n, bytes: value.len() as u64 }
        };
        if Instant::now() >= self.ramp_end {
            self.measured_bytes += op.bytes;
        }
        Ok(op)
    }

    /// Counts a failure (stopping the run unless the job continues on errors), or records a
    /// measured answer.
    fn completed(&mut self, sent: Sent, result: Result<Reply, ClientError>, now: Instant) {
        let op = sent.op;
        if let Err(failure) = check(self.s, op, result) {
            match self.errors.iter_mut().find(|(status, _)| *status == failure.status) {
                Some((_, count)) => *count += 1,
                None => self.errors.push((failure.status, 1)),
            }
            if self.first_error.is_none() {
                self.first_error = Some(failure.message.clone());
                let mut first =
                    self.phase.first_error.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(failure.message);
            }
            if !self.s.job.continue_on_error {
                self.phase.stop.store(true, Ordering::Relaxed);
            }
            return;
        }
        let (recorder, ios, bytes) = match op.kind {
            OpKind::Get => (&mut self.read, &self.live.read_ios, &self.live.read_bytes),
            OpKind::Put => (&mut self.write, &self.live.write_ios, &self.live.write_bytes),
        };
        ios.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(op.bytes, Ordering::Relaxed);
        if sent.issued >= self.ramp_end {
            recorder.record(op.bytes, sent.submitted - sent.issued, now - sent.submitted);
            self.end = now;
        }
    }
}

impl Load for ClientWorker<'_> {
    fn next(&mut self, value: &mut Vec<u8>) -> Result<Option<Op>> {
        if !self.may_submit() {
            return Ok(None);
        }
        self.next_op(value).map(Some)
    }

    fn done(&mut self, sent: Sent, result: Result<Reply, ClientError>, now: Instant) -> Result<()> {
        self.completed(sent, result, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_key_once() {
        let shares: Vec<(u64, u64)> = (0..3).map(|c| share_of(10, c, 3)).collect();
        assert_eq!(shares, [(0, 3), (3, 6), (6, 10)]);
        assert_eq!(share_of(5, 0, 1), (0, 5));
    }

    #[test]
    fn statuses_name_the_failure() {
        let err = ClientError::Status { status: Status::NoSpace, message: String::new() };
        assert_eq!(error_name(&err), "NO_SPACE");
        assert!(hint(&err).contains("--spawn-size"));
        assert_eq!(error_name(&ClientError::Timeout), "TIMEOUT (client)");
    }
}
