//! The handles the data path records into, registered once per disk or core so that a request
//! touches only atomics: [`DiskMetrics`] (requests, space and zones of one disk, on its owning
//! core), [`StoreMetrics`] (a store's batches, syncs, checkpoints, checksum errors),
//! [`CoreMetrics`] (a core's connections, queues and protocol errors) and [`DiskStateGauges`].
//! Rare events recorded off the owning core go through [`count_request`], which looks the
//! counter up by name.

use std::cell::OnceCell;
use std::rc::Rc;

use ::metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use ioengine::device::{Device, ZoneCondition};
use proto::messages::DiskState;
use proto::wire::{Opcode, Status};
use quanta::Instant;

use super::*;
use crate::store::{RecoveryReport, Store};

/// The opcodes a disk executes (HELLO and DISK_STATUS are answered by the connection).
const DISK_OPS: [Opcode; 6] =
    [Opcode::Put, Opcode::Get, Opcode::Delete, Opcode::Stat, Opcode::Exists, Opcode::List];

fn disk_op_slot(op: Opcode) -> Option<usize> {
    DISK_OPS.iter().position(|o| *o == op)
}

/// Every zone condition, with its `condition` label.
const CONDITIONS: [(ZoneCondition, &str); 8] = [
    (ZoneCondition::NotWritePointer, "conventional"),
    (ZoneCondition::Empty, "empty"),
    (ZoneCondition::ImplicitOpen, "implicit_open"),
    (ZoneCondition::ExplicitOpen, "explicit_open"),
    (ZoneCondition::Closed, "closed"),
    (ZoneCondition::Full, "full"),
    (ZoneCondition::ReadOnly, "read_only"),
    (ZoneCondition::Offline, "offline"),
];

/// The `state` label of a disk state.
fn state_label(state: DiskState) -> &'static str {
    match state {
        DiskState::Active => "active",
        DiskState::ReadOnly => "read_only",
        DiskState::Draining => "draining",
        DiskState::Retired => "retired",
        DiskState::Failed => "failed",
    }
}

/// Counts one request answered away from its disk's owning core (HELLO, DISK_STATUS, a
/// request refused before it reached the disk). Looks the counter up by name: for rare paths.
pub fn count_request(disk: &str, op: Opcode, status: Status) {
    counter!(REQUESTS_TOTAL, DISK => disk.to_string(), OP => op_label(op), STATUS => status_label(status))
        .increment(1);
}

/// One opcode's metrics on one disk.
struct OpMetrics {
    op: Opcode,
    duration: Histogram,
    /// Value bytes received (PUT) or sent (GET); a no-op handle for the other opcodes.
    value_bytes: Counter,
    /// `requests_total` by status, registered the first time a status occurs.
    statuses: [OnceCell<Counter>; Status::ALL.len()],
}

/// The metrics of one disk, held and written by its owning core.
#[derive(Debug)]
pub struct DiskMetrics {
    disk: String,
    ops: [OpMetrics; DISK_OPS.len()],
    /// Requests queued or running (see [`DISK_QUEUE_DEPTH`]).
    pub queue_depth: Gauge,
    capacity: Gauge,
    free: Gauge,
    live_bytes: Gauge,
    live_keys: Gauge,
    zones: [Gauge; CONDITIONS.len()],
    index_tag_entries: Gauge,
    index_overflow_entries: Gauge,
    index_heap: Gauge,
}

impl std::fmt::Debug for OpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpMetrics").field("op", &self.op).finish_non_exhaustive()
    }
}

impl DiskMetrics {
    /// Registers disk `id`'s handles (on the core that owns the disk).
    pub fn new(id: u16) -> Rc<DiskMetrics> {
        let disk = id.to_string();
        let ops = DISK_OPS.map(|op| {
            let value_bytes = match op {
                Opcode::Put => counter!(VALUE_RECEIVED_BYTES_TOTAL, DISK => disk.clone(), OP => op_label(op)),
                Opcode::Get => counter!(VALUE_SENT_BYTES_TOTAL, DISK => disk.clone(), OP => op_label(op)),
                _ => Counter::noop(),
            };
            OpMetrics {
                op,
                duration: histogram!(REQUEST_DURATION_SECONDS, DISK => disk.clone(), OP => op_label(op)),
                value_bytes,
                statuses: std::array::from_fn(|_| OnceCell::new()),
            }
        });
        let gauge = |name: &'static str| gauge!(name, DISK => disk.clone());
        let metrics = DiskMetrics {
            ops,
            queue_depth: gauge(DISK_QUEUE_DEPTH),
            capacity: gauge(CAPACITY_BYTES),
            free: gauge(FREE_BYTES),
            live_bytes: gauge(LIVE_BYTES),
            live_keys: gauge(LIVE_KEYS),
            zones: CONDITIONS
                .map(|(_, label)| gauge!(ZONES, DISK => disk.clone(), "condition" => label)),
            index_tag_entries: gauge!(INDEX_ENTRIES, DISK => disk.clone(), "kind" => "tag"),
            index_overflow_entries: gauge!(INDEX_ENTRIES, DISK => disk.clone(), "kind" => "overflow"),
            index_heap: gauge(INDEX_HEAP_BYTES),
            disk,
        };
        // Every disk op shows up with status ok from the start (rates of 0, not absent series).
        for slot in &metrics.ops {
            metrics.requests(slot, Status::Ok);
        }
        Rc::new(metrics)
    }

    /// The `disk` label.
    pub fn disk(&self) -> &str {
        &self.disk
    }

    fn requests<'a>(&self, slot: &'a OpMetrics, status: Status) -> &'a Counter {
        slot.statuses[status as usize].get_or_init(|| {
            counter!(REQUESTS_TOTAL, DISK => self.disk.clone(), OP => op_label(slot.op), STATUS => status_label(status))
        })
    }

    /// Starts timing a request of `op`; the record counts it when finished, or as TIMEOUT when
    /// dropped unfinished (the request timeout cancelled it).
    pub fn start(self: &Rc<Self>, op: Opcode) -> RequestRecord {
        RequestRecord { metrics: self.clone(), op, started: Instant::now(), finished: false }
    }

    fn record(&self, op: Opcode, started: Instant, status: Status, value_bytes: u64) {
        let Some(slot) = disk_op_slot(op).map(|i| &self.ops[i]) else {
            count_request(&self.disk, op, status);
            return;
        };
        slot.duration.record(started.elapsed().as_secs_f64());
        self.requests(slot, status).increment(1);
        if status == Status::Ok && value_bytes > 0 {
            slot.value_bytes.increment(value_bytes);
        }
    }

    /// Live keys and bytes (O(1); after each request).
    pub fn publish_counts(&self, live_keys: u64, live_bytes: u64) {
        self.live_keys.set(live_keys as f64);
        self.live_bytes.set(live_bytes as f64);
    }

    /// Space, zones and index size: walks the zone table (every second, not per request).
    pub fn publish_space<D: Device + 'static>(&self, store: &Store<D>) {
        self.capacity.set(store.capacity_bytes() as f64);
        self.free.set(store.free_bytes() as f64);
        let mut counts = [0u64; CONDITIONS.len()];
        for zone in store.device().zones() {
            if let Some(i) = CONDITIONS.iter().position(|(c, _)| *c == zone.condition) {
                counts[i] += 1;
            }
        }
        for (gauge, count) in self.zones.iter().zip(counts) {
            gauge.set(count as f64);
        }
        let (entries, overflow) = (store.len(), store.index_overflow_len());
        self.index_tag_entries.set(entries.saturating_sub(overflow) as f64);
        self.index_overflow_entries.set(overflow as f64);
        self.index_heap.set(store.index_heap_bytes() as f64);
    }

    /// What recovery found when the disk opened (once, at start).
    pub fn publish_recovery(&self, report: &RecoveryReport) {
        let disk = || self.disk.clone();
        gauge!(RECOVERY_DURATION_SECONDS, DISK => disk()).set(report.duration_ms as f64 / 1000.0);
        gauge!(RECOVERY_TAIL_RECORDS, DISK => disk()).set(report.tail_records as f64);
        gauge!(RECOVERY_CHECKPOINT_ENTRIES, DISK => disk()).set(report.checkpoint_entries as f64);
        gauge!(RECOVERY_SCANNED_BYTES, DISK => disk()).set(report.scanned_bytes as f64);
        gauge!(RECOVERY_DAMAGED_REGIONS, DISK => disk(), "kind" => "torn")
            .set(report.torn_regions as f64);
        gauge!(RECOVERY_DAMAGED_REGIONS, DISK => disk(), "kind" => "corrupt")
            .set(report.corrupt_regions as f64);
    }
}

/// A request being executed on its disk's owning core (see [`DiskMetrics::start`]).
#[derive(Debug)]
pub struct RequestRecord {
    metrics: Rc<DiskMetrics>,
    op: Opcode,
    started: Instant,
    finished: bool,
}

impl RequestRecord {
    /// Counts the request with the status it was answered with; `value_bytes` are the value
    /// bytes a PUT stored or a GET returned (counted when the status is OK).
    pub fn finish(mut self, status: Status, value_bytes: u64) {
        self.finished = true;
        self.metrics.record(self.op, self.started, status, value_bytes);
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics.record(self.op, self.started, Status::Timeout, 0);
        }
    }
}

/// A disk's state as one gauge per state (1 for the current one). Any core may hold it; only
/// the disk's owning core sets it.
#[derive(Debug)]
pub struct DiskStateGauges {
    states: [Gauge; DiskState::ALL.len()],
}

impl DiskStateGauges {
    /// Registers disk `id`'s state gauges, showing `state`.
    pub fn new(id: u16, state: DiskState) -> DiskStateGauges {
        let states = DiskState::ALL
            .map(|s| gauge!(DISK_STATE, DISK => id.to_string(), "state" => state_label(s)));
        let gauges = DiskStateGauges { states };
        gauges.set(state);
        gauges
    }

    /// Shows `state`.
    pub fn set(&self, state: DiskState) {
        for (gauge, s) in self.states.iter().zip(DiskState::ALL) {
            gauge.set(if s == state { 1.0 } else { 0.0 });
        }
    }
}

/// A store's metrics, recorded by the store itself (on its core). No-op handles until the
/// server attaches real ones ([`Store::attach_metrics`]).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// [`BATCHES_TOTAL`].
    pub batches: Counter,
    /// [`BATCH_WRITE_ERRORS_TOTAL`].
    pub batch_write_errors: Counter,
    /// [`BATCH_RECORDS`].
    pub batch_records: Histogram,
    /// [`BATCH_BYTES`].
    pub batch_bytes: Histogram,
    /// [`SYNC_DURATION_SECONDS`].
    pub sync_seconds: Histogram,
    /// [`CHECKPOINTS_TOTAL`].
    pub checkpoints: Counter,
    /// [`CHECKSUM_ERRORS_TOTAL`].
    pub checksum_errors: Counter,
}

impl StoreMetrics {
    /// Registers the handles of disk `disk` (its `disk` label).
    pub fn new(disk: &str) -> StoreMetrics {
        let disk = || disk.to_string();
        StoreMetrics {
            batches: counter!(BATCHES_TOTAL, DISK => disk()),
            batch_write_errors: counter!(BATCH_WRITE_ERRORS_TOTAL, DISK => disk()),
            batch_records: histogram!(BATCH_RECORDS, DISK => disk()),
            batch_bytes: histogram!(BATCH_BYTES, DISK => disk()),
            sync_seconds: histogram!(SYNC_DURATION_SECONDS, DISK => disk()),
            checkpoints: counter!(CHECKPOINTS_TOTAL, DISK => disk()),
            checksum_errors: counter!(CHECKSUM_ERRORS_TOTAL, DISK => disk()),
        }
    }

    /// Handles that record nothing.
    pub const fn noop() -> StoreMetrics {
        StoreMetrics {
            batches: Counter::noop(),
            batch_write_errors: Counter::noop(),
            batch_records: Histogram::noop(),
            batch_bytes: Histogram::noop(),
            sync_seconds: Histogram::noop(),
            checkpoints: Counter::noop(),
            checksum_errors: Counter::noop(),
        }
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics::noop()
    }
}

/// How a malformed frame was dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Answered with an error status; the connection goes on.
    Rejected,
    /// Answered with an error status, then the connection was closed.
    RejectedClosed,
    /// The connection was closed without an answer (the bytes cannot be trusted).
    Closed,
}

/// The reasons a connection stops reading, as `reason` labels.
const CLOSE_REASONS: [&str; 5] = ["eof", "stop", "timeout", "protocol", "error"];

/// One core's metrics, held and written by that core.
#[derive(Debug)]
pub struct CoreMetrics {
    /// [`IN_FLIGHT_REQUESTS`].
    pub in_flight: Gauge,
    /// [`CONNECTIONS`].
    pub connections: Gauge,
    /// [`BUDGET_USED_BYTES`].
    pub budget_used: Gauge,
    /// [`FORWARDED_REQUESTS_TOTAL`].
    pub forwarded: Counter,
    /// [`CONNECTIONS_REFUSED_TOTAL`].
    pub refused: Counter,
    protocol: [Counter; 3],
    closed: [Counter; CLOSE_REASONS.len()],
}

impl CoreMetrics {
    /// Registers core `core`'s handles.
    pub fn new(core: usize) -> CoreMetrics {
        let core = core.to_string();
        let label = || core.clone();
        CoreMetrics {
            in_flight: gauge!(IN_FLIGHT_REQUESTS, CORE => label()),
            connections: gauge!(CONNECTIONS, CORE => label()),
            budget_used: gauge!(BUDGET_USED_BYTES, CORE => label()),
            forwarded: counter!(FORWARDED_REQUESTS_TOTAL, CORE => label()),
            refused: counter!(CONNECTIONS_REFUSED_TOTAL, CORE => label()),
            protocol: ["rejected", "rejected_closed", "closed"]
                .map(|kind| counter!(PROTOCOL_ERRORS_TOTAL, CORE => label(), "kind" => kind)),
            closed: CLOSE_REASONS.map(
                |reason| counter!(CONNECTIONS_CLOSED_TOTAL, CORE => label(), "reason" => reason),
            ),
        }
    }

    /// Counts a malformed frame.
    pub fn protocol_error(&self, kind: Protocol) {
        self.protocol[kind as usize].increment(1);
    }

    /// Counts a connection that stopped reading for `reason` (one of `eof`, `stop`, `timeout`,
    /// `protocol`, `error`).
    pub fn connection_closed(&self, reason: &str) {
        if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == reason) {
            self.closed[i].increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn rendered(f: impl FnOnce()) -> String {
        let recorder = local_recorder().unwrap();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    #[test]
    fn a_finished_request_is_counted_with_its_status_and_bytes() {
        let text = rendered(|| {
            let disk = DiskMetrics::new(3);
            disk.start(Opcode::Put).finish(Status::Ok, 100);
            disk.start(Opcode::Put).finish(Status::ExistsWithOtherContent, 100);
            disk.start(Opcode::Get).finish(Status::Ok, 7);
        });
        assert!(
            text.contains(r#"shingle_requests_total{disk="3",op="put",status="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"shingle_requests_total{disk="3",op="put",status="exists_with_other_content"} 1"#
        ));
        assert!(text.contains(r#"shingle_value_received_bytes_total{disk="3",op="put"} 100"#));
        assert!(text.contains(r#"shingle_value_sent_bytes_total{disk="3",op="get"} 7"#));
        assert!(text.contains(r#"shingle_request_duration_seconds_count{disk="3",op="put"} 2"#));
        assert!(text.contains(r#"shingle_requests_total{disk="3",op="list",status="ok"} 0"#));
    }

    #[test]
    fn a_request_dropped_unfinished_counts_as_a_timeout() {
        let text = rendered(|| {
            let disk = DiskMetrics::new(0);
            drop(disk.start(Opcode::Delete));
        });
        assert!(
            text.contains(r#"shingle_requests_total{disk="0",op="delete",status="timeout"} 1"#)
        );
    }

    #[test]
    fn disk_state_shows_one_state() {
        let text = rendered(|| {
            let gauges = DiskStateGauges::new(1, DiskState::Failed);
            gauges.set(DiskState::ReadOnly);
        });
        assert!(text.contains(r#"shingle_disk_state{disk="1",state="read_only"} 1"#), "{text}");
        assert!(text.contains(r#"shingle_disk_state{disk="1",state="failed"} 0"#));
    }

    #[test]
    fn protocol_errors_and_closes_are_counted_by_kind() {
        let text = rendered(|| {
            let core = CoreMetrics::new(1);
            core.protocol_error(Protocol::RejectedClosed);
            core.connection_closed("timeout");
        });
        assert!(
            text.contains(r#"shingle_protocol_errors_total{core="1",kind="rejected_closed"} 1"#)
        );
        assert!(text.contains(r#"shingle_connections_closed_total{core="1",reason="timeout"} 1"#));
    }
}
