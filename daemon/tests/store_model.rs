//! Model tests: random sequences of PUT / GET / DELETE / checkpoint / crash+restart run
//! against the production store on a simulated disk with seeded faults, checked against a
//! `BTreeMap` model.
//!
//! After every restart: every acknowledged PUT reads back byte-exact, every acknowledged DELETE
//! stays deleted, an operation in flight at the crash shows its old or its new state (never a
//! third), a flipped bit is a checksum error (never data), and recovery after plain crashes
//! reports no damage. With misdirected writes only the weakest promise is checked: never wrong
//! bytes.
//!
//! `cargo test -p shingle-daemon --test store_model` runs a bounded number of seeds.
//! A longer run: `SHINGLE_MODEL_SEEDS=5000 cargo test --release -p shingle-daemon --test store_model`.
//! Replay one seed: `SHINGLE_MODEL_SEED=1234 cargo test -p shingle-daemon --test store_model -- --nocapture`.

#![allow(clippy::unwrap_used, reason = "tests: a failed step should panic with its error")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use ioengine::Core;
use ioengine::device::Device;
use ioengine::device::sim::{
    CrashMode, FaultPlan, Misdirect, MisdirectTarget, SimConfig, SimDisk, SimModel, TearShape,
    Trigger,
};
use shingle_daemon::store::format;
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, StoreError, SyncMode};

const SEEDS_DEFAULT: u64 = 120;
const EPOCHS: usize = 6;
const WAVES_PER_EPOCH: usize = 6;
const KEYS: u32 = 48;
const VALUE_BYTES_MAX: u32 = 96 << 10;

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Crashes that lose or keep in-flight writes.
    Crashes,
    /// Crashes that tear in-flight writes at block granularity.
    TornCrashes,
    /// EIO on some writes and reads, plus crashes.
    IoErrors,
    /// Bit flips in stored values, plus crashes.
    BitFlips,
    /// Misdirected writes: only "never wrong bytes" is promised.
    Misdirected,
}

/// What the model knows about a key.
#[derive(Clone, PartialEq, Eq)]
enum State {
    Present(Vec<u8>),
    Absent,
    /// An operation that was not acknowledged may or may not have happened.
    Either(Option<Vec<u8>>, Option<Vec<u8>>),
    /// Its stored value has a flipped bit: reads must fail (or, after a restart, the record
    /// may be gone), never return bytes.
    Damaged(Vec<u8>),
    /// No promise beyond "never wrong bytes" (misdirected writes).
    Unknown(Vec<Vec<u8>>),
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |v: &Vec<u8>| hex_digest(v);
        let o = |v: &Option<Vec<u8>>| v.as_ref().map_or("absent".to_string(), d);
        match self {
            State::Present(v) => write!(f, "Present({})", d(v)),
            State::Absent => write!(f, "Absent"),
            State::Either(a, b) => write!(f, "Either({}, {})", o(a), o(b)),
            State::Damaged(v) => write!(f, "Damaged({})", d(v)),
            State::Unknown(vs) => write!(f, "Unknown({:?})", vs.iter().map(d).collect::<Vec<_>>()),
        }
    }
}

fn key(i: u32) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[4] = 0xC3;
    k
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(12) {
        0 => 1 + rng.below(16) as usize,
        1..=6 => 1 + rng.below(8192) as usize,
        7 | 8 => 1 + rng.below(70_000) as usize,
        // Whole blocks: written with the value detached from its header.
        9 | 10 => 4096 * (1 + rng.below(4) as usize),
        _ => 1 + rng.below(u64::from(VALUE_BYTES_MAX)) as usize,
    };
    let seed = rng.next();
    (0..len).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 24) as u8).collect()
}

fn sim_config(rng: &mut Rng) -> SimConfig {
    let zoned = rng.chance(50);
    SimConfig {
        zone_size_bytes: 512 << 10,
        zone_capacity_bytes: if zoned { 384 << 10 } else { 512 << 10 },
        zone_count: 40,
        logical_block_bytes: 4096,
        max_io_bytes: 64 << 10,
        max_open_zones: if zoned { 6 } else { 0 },
        max_active_zones: if zoned { 8 } else { 0 },
        model: if zoned { SimModel::Zoned } else { SimModel::Emulated },
    }
}

fn fault_plan(scenario: Scenario, rng: &mut Rng) -> FaultPlan {
    let crash = match scenario {
        Scenario::TornCrashes => {
            CrashMode::Tear(if rng.chance(50) { TearShape::Prefix } else { TearShape::Subset })
        }
        _ if rng.chance(50) => CrashMode::LoseUnflushed,
        _ => CrashMode::KeepUnflushed,
    };
    let mut plan = FaultPlan { crash, ..FaultPlan::default() };
    match scenario {
        Scenario::IoErrors => {
            plan.write_errors = vec![Trigger::Probability(0.03)];
            plan.read_errors = vec![Trigger::Probability(0.01)];
        }
        Scenario::Misdirected => {
            plan.misdirected_writes = vec![Misdirect {
                when: Trigger::Probability(0.02),
                target: MisdirectTarget::SameZone,
            }];
        }
        _ => {}
    }
    plan
}

/// The model: each key's state, and every value ever given to a PUT of it (with misdirected
/// writes a lost tombstone can bring an older value back: allowed, it was stored; anything
/// else is not).
struct Model {
    states: BTreeMap<u32, State>,
    history: BTreeMap<u32, Vec<Vec<u8>>>,
    scenario: Scenario,
}

/// One operation of a wave and what came of it.
#[derive(Clone)]
enum Op {
    Put(u32, Vec<u8>),
    Delete(u32),
    Get(u32),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put(k, v) => write!(f, "Put({k}, {})", hex_digest(v)),
            Op::Delete(k) => write!(f, "Delete({k})"),
            Op::Get(k) => write!(f, "Get({k})"),
        }
    }
}

type Outcomes = Rc<RefCell<Vec<Option<Result<String, String>>>>>;

struct Failure(String);

fn run_seed(seed: u64) -> Result<(), Failure> {
    let mut rng = Rng(seed);
    let scenario = match seed % 5 {
        0 => Scenario::Crashes,
        1 => Scenario::TornCrashes,
        2 => Scenario::IoErrors,
        3 => Scenario::BitFlips,
        _ => Scenario::Misdirected,
    };
    let config = sim_config(&mut rng);
    let plan = fault_plan(scenario, &mut rng);
    let mut disk = SimDisk::new(config, seed).map_err(|e| Failure(format!("sim: {e}")))?;
    let mut model: Model = Model {
        states: (0..KEYS).map(|k| (k, State::Absent)).collect(),
        history: BTreeMap::new(),
        scenario,
    };
    let store_config = StoreConfig {
        value_bytes_max: VALUE_BYTES_MAX,
        checkpoint_interval_bytes: 2 << 20,
        checkpoint_interval_records: 200,
        sync: if rng.chance(30) { SyncMode::WriteThenFdatasync } else { SyncMode::Dsync },
    };

    // Format without faults.
    let (formatted, formatted_disk) = Core::new(64).unwrap().block_on(async move {
        let options =
            FormatOptions { value_bytes_max: VALUE_BYTES_MAX, checkpoint_zones_per_set: 1 };
        let result = store::format(&disk, &options, false).await.map(|_| ());
        (result, disk)
    });
    formatted.map_err(|e| Failure(format!("format: {e}")))?;
    disk = formatted_disk;

    for epoch in 0..EPOCHS {
        let core = Core::new(256).unwrap();
        let result = core.block_on(run_epoch(
            disk,
            plan.clone(),
            scenario,
            store_config.clone(),
            seed,
            epoch,
            rng.next(),
            model,
        ));
        drop(core);
        let (next_disk, next_model) = result?;
        disk = next_disk;
        model = next_model;
    }
    Ok(())
}

/// Opens the store, checks every key against the model, runs waves of concurrent operations,
/// and crashes in the middle of the last wave. Returns the crashed disk and the model.
#[expect(clippy::too_many_arguments, reason = "a test driver; the arguments are the case")]
async fn run_epoch(
    disk: SimDisk,
    plan: FaultPlan,
    scenario: Scenario,
    config: StoreConfig,
    seed: u64,
    epoch: usize,
    rng_seed: u64,
    mut model: Model,
) -> Result<(SimDisk, Model), Failure> {
    let mut rng = Rng(rng_seed);
    let fail = |what: String| Failure(format!("seed {seed} ({scenario:?}) epoch {epoch}: {what}"));
    let s = match Store::open(disk, config).await {
        Ok(s) => s,
        Err(err) => return Err(fail(format!("open failed: {err}"))),
    };
    // Faults are armed after recovery: a failed read at open is a failed start, retried by an
    // operator, not something the model describes. The crash mode applies from here on.
    s.device().set_faults(plan).map_err(|e| fail(format!("faults: {e}")))?;
    let report = s.recovery_report().clone();
    if std::env::var("SHINGLE_MODEL_TRACE").is_ok() {
        eprintln!("epoch {epoch} opened: {report:?}");
    }
    let plain = matches!(scenario, Scenario::Crashes | Scenario::TornCrashes);
    if plain && (report.corrupt_regions != 0 || report.lost_records_possible != 0) {
        return Err(fail(format!(
            "a plain crash was reported as damage: {report:?}\n{}",
            faults(&s)
        )));
    }
    for k in 0..KEYS {
        check_after_restart(&s, k, &mut model)
            .await
            .map_err(|e| fail(format!("{e}\n{report:?}\n{}", faults(&s))))?;
    }
    for wave in 0..WAVES_PER_EPOCH {
        let crash_now = wave == WAVES_PER_EPOCH - 1;
        let ops = pick_ops(&mut rng, &model.states);
        let outcomes: Outcomes = Rc::new(RefCell::new(vec![None; ops.len()]));
        for (i, op) in ops.iter().enumerate() {
            let s = s.clone();
            let op = op.clone();
            let outcomes = outcomes.clone();
            ioengine::spawn(async move {
                let outcome = run_op(&s, &op).await;
                outcomes.borrow_mut()[i] = Some(outcome);
            })
            .detach();
        }
        if crash_now {
            // Let a random part of the wave finish, then pull the plug.
            for _ in 0..rng.below(6) {
                ioengine::yield_now().await;
            }
        } else {
            while outcomes.borrow().iter().any(Option::is_none) {
                ioengine::time::sleep(std::time::Duration::from_micros(50)).await.unwrap();
            }
        }
        let outcomes = outcomes.borrow().clone();
        if std::env::var("SHINGLE_MODEL_TRACE").is_ok() {
            for (op, outcome) in ops.iter().zip(&outcomes) {
                let k = match op {
                    Op::Put(k, _) | Op::Delete(k) | Op::Get(k) => *k,
                };
                eprintln!(
                    "epoch {epoch} wave {wave}: {op:?} -> {outcome:?} at {:?}",
                    s.location_of(&key(k))
                );
            }
        }
        for (op, outcome) in ops.iter().zip(outcomes) {
            apply(&mut model, op, outcome, crash_now).map_err(fail)?;
        }
        if scenario == Scenario::BitFlips && rng.chance(40) && !crash_now {
            flip_a_value_bit(&s, &mut model, &mut rng);
        }
        if !crash_now && rng.chance(15) {
            if let Err(e) = s.write_checkpoint(false).await {
                if std::env::var("SHINGLE_MODEL_TRACE").is_ok() {
                    eprintln!("checkpoint failed: {e}");
                }
            }
        }
    }
    let crashed = s.device().crash();
    // Stop the store as a power cut would, and let every task still holding it finish, so the
    // old store is freed with its core.
    s.halt();
    for _ in 0..10_000 {
        if Rc::strong_count(&s) == 1 {
            break;
        }
        ioengine::time::sleep(std::time::Duration::from_micros(20)).await.unwrap();
    }
    Ok((crashed, model))
}

fn faults(s: &Store<SimDisk>) -> String {
    s.device().faults().iter().map(|f| format!("  {f}\n")).collect()
}

fn pick_ops(rng: &mut Rng, model: &BTreeMap<u32, State>) -> Vec<Op> {
    let n = 1 + rng.below(12) as usize;
    let mut used = std::collections::BTreeSet::new();
    let mut ops = Vec::new();
    for _ in 0..n {
        let k = rng.below(u64::from(KEYS)) as u32;
        if !used.insert(k) {
            continue;
        }
        let op = match (&model[&k], rng.below(10)) {
            (State::Either(..) | State::Unknown(_) | State::Damaged(_), _) => Op::Get(k),
            (State::Present(v), 0) => Op::Put(k, v.clone()),
            (State::Present(_), 1..=3) => Op::Delete(k),
            (State::Present(_), 4) => Op::Put(k, value(rng)),
            (State::Present(_), _) => Op::Get(k),
            (State::Absent, 0) => Op::Delete(k),
            (State::Absent, 1) => Op::Get(k),
            (State::Absent, _) => Op::Put(k, value(rng)),
        };
        ops.push(op);
    }
    ops
}

async fn run_op(s: &Rc<Store<SimDisk>>, op: &Op) -> Result<String, String> {
    let render = |r: Result<String, StoreError>| r.map_err(|e| error_kind(&e));
    match op {
        Op::Put(k, v) => render(s.put(&key(*k), v).await.map(|o| format!("{o:?}"))),
        Op::Delete(k) => render(s.delete(&key(*k)).await.map(|()| "Deleted".into())),
        Op::Get(k) => match s.get(&key(*k), None).await {
            Ok(v) => Ok(format!("Value:{}", hex_digest(v.as_slice()))),
            Err(e) => Err(error_kind(&e)),
        },
    }
}

fn error_kind(e: &StoreError) -> String {
    match e {
        StoreError::NotFound => "NotFound".into(),
        StoreError::ExistsWithOtherContent => "Exists".into(),
        StoreError::NoSpace { .. } => "NoSpace".into(),
        StoreError::Checksum { .. } => "Checksum".into(),
        other => format!("Other:{other}"),
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    format!("{:08x}/{}", ioengine::checksum::crc32c(bytes), bytes.len())
}

/// Updates the model with an operation's outcome (None: still in flight at the crash).
fn apply(
    model: &mut Model,
    op: &Op,
    outcome: Option<Result<String, String>>,
    crashed: bool,
) -> Result<(), String> {
    let (k, before) = match op {
        Op::Put(k, _) | Op::Delete(k) | Op::Get(k) => (*k, model.states[k].clone()),
    };
    if let Op::Put(k, v) = op {
        model.history.entry(*k).or_default().push(v.clone());
    }
    let scenario = model.scenario;
    let history = model.history.get(&k).cloned().unwrap_or_default();
    let next = match (op, &before, outcome.as_ref()) {
        (Op::Get(_), _, None) => before.clone(),
        (Op::Get(_), state, Some(result)) => {
            check_read(k, state, result, scenario, &history)?;
            state.clone()
        }
        (Op::Put(_, v), State::Absent, Some(Ok(o))) if o == "Stored" => State::Present(v.clone()),
        (Op::Put(_, v), State::Present(old), Some(Ok(o))) if o == "AlreadyStored" && old == v => {
            before.clone()
        }
        (Op::Put(_, v), State::Present(old), Some(Err(e))) if e == "Exists" && old != v => {
            before.clone()
        }
        (Op::Put(..), _, Some(Err(e))) if e == "NoSpace" => before.clone(),
        (Op::Delete(_), State::Present(_), Some(Ok(_))) => State::Absent,
        (Op::Delete(_), State::Absent, Some(Err(e))) if e == "NotFound" => State::Absent,
        // Not acknowledged: in flight at the crash, or failed by an injected fault.
        (Op::Put(_, v), State::Absent, None | Some(Err(_))) => State::Either(None, Some(v.clone())),
        (Op::Put(..), State::Present(_), None | Some(Err(_))) => before.clone(),
        (Op::Delete(_), State::Present(v), None | Some(Err(_))) => {
            State::Either(Some(v.clone()), None)
        }
        (Op::Delete(_), State::Absent, None | Some(Err(_))) => State::Absent,
        // Misdirected writes: only "never wrong bytes" is promised.
        (_, _, _) if scenario == Scenario::Misdirected => State::Unknown(history.clone()),
        (op, state, result) => {
            return Err(format!("key {k}: {op:?} on {state:?} gave {result:?} (crash: {crashed})"));
        }
    };
    model.states.insert(k, next);
    Ok(())
}

/// A read during an epoch: must agree with the model (an injected read error is allowed).
fn check_read(
    k: u32,
    state: &State,
    result: &Result<String, String>,
    scenario: Scenario,
    history: &[Vec<u8>],
) -> Result<(), String> {
    let digest = |v: &Vec<u8>| format!("Value:{}", hex_digest(v));
    let ok = match (state, result) {
        (_, Err(_)) if scenario == Scenario::Misdirected => true,
        (_, Ok(got)) if scenario == Scenario::Misdirected => {
            history.iter().any(|v| *got == digest(v))
        }
        (_, Err(e)) if e.starts_with("Other:I/O error") => true,
        (State::Present(v), Ok(got)) => *got == digest(v),
        (State::Absent, Err(e)) => e == "NotFound",
        (State::Either(a, b), Ok(got)) => {
            [a, b].iter().any(|x| x.as_ref().is_some_and(|v| *got == digest(v)))
        }
        (State::Either(a, b), Err(e)) => e == "NotFound" && (a.is_none() || b.is_none()),
        (State::Damaged(_), Err(e)) => e == "Checksum",
        (State::Unknown(values), Ok(got)) => values.iter().any(|v| *got == digest(v)),
        (State::Unknown(_), Err(_)) => true,
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("key {k}: read {result:?} but the model says {state:?}")) }
}

/// After a restart: reads the key and resolves what the model did not know.
async fn check_after_restart(
    s: &Rc<Store<SimDisk>>,
    k: u32,
    full: &mut Model,
) -> Result<(), String> {
    let scenario = full.scenario;
    let history = full.history.get(&k).cloned().unwrap_or_default();
    let model = &mut full.states;
    let got = s.get(&key(k), None).await;
    let state = model[&k].clone();
    let got_bytes = got.as_ref().ok().map(|v| v.as_slice().to_vec());
    let err = got.as_ref().err().map(error_kind);
    if scenario == Scenario::Misdirected || matches!(state, State::Unknown(_)) {
        // Only promise: never wrong bytes.
        let mut allowed: Vec<Vec<u8>> = match &state {
            _ if scenario == Scenario::Misdirected => history.clone(),
            State::Present(v) | State::Damaged(v) => vec![v.clone()],
            State::Either(a, b) => a.iter().chain(b.iter()).cloned().collect(),
            State::Unknown(values) => values.clone(),
            State::Absent => Vec::new(),
        };
        if let Some(bytes) = &got_bytes {
            if !allowed.contains(bytes) {
                return Err(format!(
                    "key {k}: returned {} bytes that were never stored for it",
                    bytes.len()
                ));
            }
            model.insert(k, State::Present(bytes.clone()));
        } else if err.as_deref() == Some("NotFound") {
            model.insert(
                k,
                if allowed.is_empty() {
                    State::Absent
                } else {
                    State::Unknown(std::mem::take(&mut allowed))
                },
            );
        } else {
            model.insert(k, State::Unknown(allowed));
        }
        return Ok(());
    }
    let io_error = err.as_deref().is_some_and(|e| e.starts_with("Other:I/O error"));
    let next = match (&state, &got_bytes, err.as_deref()) {
        (_, None, Some(_)) if io_error => state.clone(),
        (State::Present(v), Some(b), _) if b == v => state.clone(),
        (State::Absent, None, Some("NotFound")) => State::Absent,
        (State::Either(a, b), Some(got), _) if [a, b].iter().any(|x| x.as_ref() == Some(got)) => {
            State::Present(got.clone())
        }
        (State::Either(a, b), None, Some("NotFound")) if a.is_none() || b.is_none() => {
            State::Absent
        }
        (State::Damaged(_), None, Some("Checksum")) => state.clone(),
        // A damaged record in the last batch before a crash looks torn and is cut (FORMAT.md).
        (State::Damaged(_), None, Some("NotFound")) => State::Absent,
        _ => {
            return Err(format!(
                "key {k}: after restart read {:?} but the model says {state:?}",
                got_bytes.as_ref().map(|b| hex_digest(b)).ok_or(err)
            ));
        }
    };
    model.insert(k, next);
    Ok(())
}

/// Flips one bit inside a present key's stored value (durable image only).
fn flip_a_value_bit(s: &Rc<Store<SimDisk>>, model: &mut Model, rng: &mut Rng) {
    let model = &mut model.states;
    let present: Vec<u32> =
        model.iter().filter(|(_, st)| matches!(st, State::Present(_))).map(|(k, _)| *k).collect();
    if present.is_empty() {
        return;
    }
    let k = present[rng.below(present.len() as u64) as usize];
    let Some(location) = s.location_of(&key(k)) else { return };
    let block = u64::from(s.superblock().block_bytes);
    let value_start = s.device().geometry().zone_start(location.zone)
        + location.detached_value_offset(block).unwrap_or(
            u64::from(location.offset) + format::value_offset(location.value_len) as u64,
        );
    let at = value_start + rng.below(u64::from(location.value_len));
    s.device().flip_bit(at, rng.below(8) as u8).unwrap();
    let State::Present(v) = model[&k].clone() else { unreachable!() };
    model.insert(k, State::Damaged(v));
}

#[test]
fn random_operations_crashes_and_faults_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("SHINGLE_MODEL_SEED") {
        Ok(one) => vec![one.parse().expect("SHINGLE_MODEL_SEED is a number")],
        Err(_) => {
            let n = std::env::var("SHINGLE_MODEL_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(SEEDS_DEFAULT);
            (1..=n).collect()
        }
    };
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(Failure(message)) = run_seed(seed) {
            eprintln!(
                "FAILED {message}\nreplay: SHINGLE_MODEL_SEED={seed} cargo test -p shingle-daemon --test store_model -- --nocapture"
            );
            failures.push(seed);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed: {failures:?}",
        failures.len(),
        seeds.len()
    );
}
