//! Prometheus metrics: the name, type, unit, labels and meaning of every metric ([`METRICS`];
//! docs/METRICS.md says the same for operators), the recorder ([`install`]), the handles the
//! data path records into (`handles`), and the scrape endpoint ([`serve`], `http`).
//!
//! # Use
//!
//! ```no_run
//! # fn run(listen: std::net::SocketAddr) -> anyhow::Result<()> {
//! // First, before the Directory is built and before any core starts: a handle made before a
//! // recorder is installed stays a no-op for good (the `metrics` facade binds a handle to the
//! // recorder installed when the handle is made).
//! let handle = shingle_daemon::metrics::install()?;
//! // Binds `[metrics] listen` (an error naming `metrics.listen` if the port is taken) and
//! // answers `GET /metrics` from one thread of its own.
//! let server = shingle_daemon::metrics::serve(listen, handle)?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! // ... serve ...
//! server.stop(); // dropping it stops it too
//! # Ok(())
//! # }
//! ```
//!
//! # Cost on the data path
//!
//! The cores never look a metric up by name on the request path: each core registers its
//! handles once (per disk when it starts serving the disk, per core when it starts) and then
//! touches only atomics. A counter increment is two uncontended atomic adds (the value and the
//! exporter's generation); a gauge set is an atomic store; a histogram sample is appended to a
//! lock-free bucket (metrics-util's `AtomicBucket`: an epoch pin, a clock read and an atomic
//! append; every 64th sample allocates the next 1 KiB block). No lock is taken on a core. The
//! scrape thread drains the buckets into fixed-bucket histograms under the exporter's own lock,
//! at every scrape and every [`UPKEEP_INTERVAL`] without one, so a bucket holds at most about a
//! second of samples. docs/METRICS.md has the measured costs.
//!
//! Label cardinality is bounded: `disk` is a configured disk id (or `node` for HELLO and
//! DISK_STATUS, `unknown` for a disk id this node does not have), `op` one of eight opcodes,
//! `status` one of the wire's 22 statuses, `core` a configured core.

mod handles;
mod http;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use proto::wire::{Opcode, Status};

pub use handles::{
    CoreMetrics, DiskMetrics, DiskStateGauges, Protocol, RequestRecord, StoreMetrics, count_request,
};
pub use http::{MetricsServer, REQUEST_BYTES_MAX, serve};
pub use metrics_exporter_prometheus::PrometheusHandle;

/// How often the scrape thread drains histogram samples when nobody scrapes (bounds the memory
/// the lock-free sample buckets hold).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Upper bounds of the latency histograms, in seconds: 25 µs (an NVMe read) to 10 s (an SMR
/// disk busy with a zone reset), about ×2–2.5 apart, and 30 s (the default request timeout).
pub const LATENCY_BUCKETS_SECONDS: [f64; 19] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the records-per-batch histogram: 1 to 4096, powers of 2.
pub const BATCH_RECORDS_BUCKETS: [f64; 13] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// Upper bounds of the bytes-per-batch histogram: 4 KiB to 32 MiB, powers of 2 (a batch is at
/// most 2 MiB, or one record of the largest value).
pub const BATCH_BYTES_BUCKETS: [f64; 14] = [
    4096.0, 8192.0, 16384.0, 32768.0, 65536.0, 131072.0, 262144.0, 524288.0, 1048576.0, 2097152.0,
    4194304.0, 8388608.0, 16777216.0, 33554432.0,
];

const _: () = assert!(LATENCY_BUCKETS_SECONDS[0] > 0.0);

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Fixed-bucket histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric: what docs/METRICS.md documents and [`install`] describes.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Unit (`metrics::Unit::Count` for plain numbers).
    pub unit: ::metrics::Unit,
    /// Label names.
    pub labels: &'static [&'static str],
    /// The HELP text.
    pub help: &'static str,
}

macro_rules! metric_names {
    ($($const:ident = $name:literal;)*) => {
        $(#[doc = concat!("`", $name, "`")] pub const $const: &str = $name;)*
    };
}

metric_names! {
    REQUESTS_TOTAL = "shingle_requests_total";
    REQUEST_DURATION_SECONDS = "shingle_request_duration_seconds";
    VALUE_RECEIVED_BYTES_TOTAL = "shingle_value_received_bytes_total";
    VALUE_SENT_BYTES_TOTAL = "shingle_value_sent_bytes_total";
    BATCHES_TOTAL = "shingle_batches_total";
    BATCH_WRITE_ERRORS_TOTAL = "shingle_batch_write_errors_total";
    BATCH_RECORDS = "shingle_batch_records";
    BATCH_BYTES = "shingle_batch_bytes";
    SYNC_DURATION_SECONDS = "shingle_sync_duration_seconds";
    CHECKPOINTS_TOTAL = "shingle_checkpoints_total";
    CHECKSUM_ERRORS_TOTAL = "shingle_checksum_errors_total";
    DISK_STATE = "shingle_disk_state";
    CAPACITY_BYTES = "shingle_capacity_bytes";
    FREE_BYTES = "shingle_free_bytes";
    LIVE_BYTES = "shingle_live_bytes";
    LIVE_KEYS = "shingle_live_keys";
    ZONES = "shingle_zones";
    INDEX_ENTRIES = "shingle_index_entries";
    INDEX_HEAP_BYTES = "shingle_index_heap_bytes";
    DISK_QUEUE_DEPTH = "shingle_disk_queue_depth";
    RECOVERY_DURATION_SECONDS = "shingle_recovery_duration_seconds";
    RECOVERY_TAIL_RECORDS = "shingle_recovery_tail_records";
    RECOVERY_CHECKPOINT_ENTRIES = "shingle_recovery_checkpoint_entries";
    RECOVERY_SCANNED_BYTES = "shingle_recovery_scanned_bytes";
    RECOVERY_DAMAGED_REGIONS = "shingle_recovery_damaged_regions";
    IN_FLIGHT_REQUESTS = "shingle_in_flight_requests";
    CONNECTIONS = "shingle_connections";
    CONNECTIONS_REFUSED_TOTAL = "shingle_connections_refused_total";
    CONNECTIONS_CLOSED_TOTAL = "shingle_connections_closed_total";
    BUDGET_USED_BYTES = "shingle_budget_used_bytes";
    FORWARDED_REQUESTS_TOTAL = "shingle_forwarded_requests_total";
    PROTOCOL_ERRORS_TOTAL = "shingle_protocol_errors_total";
    BUILD_INFO = "shingle_build_info";
}

use ::metrics::Unit;

const DISK: &str = "disk";
const OP: &str = "op";
const STATUS: &str = "status";
const CORE: &str = "core";

/// Every metric the daemon exports.
pub const METRICS: &[Metric] = &[
    // Requests, per disk and op, counted on the disk's owning core.
    Metric {
        name: REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[DISK, OP, STATUS],
        help: "Requests answered, by disk, opcode and wire status (disk=\"node\" for HELLO and DISK_STATUS, \"unknown\" for a disk id this node does not have).",
    },
    Metric {
        name: REQUEST_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[DISK, OP],
        help: "Time from the owning core taking a request to its reply being ready (excludes the network and forwarding between cores).",
    },
    Metric {
        name: VALUE_RECEIVED_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Bytes,
        labels: &[DISK, OP],
        help: "Value bytes of PUTs answered OK (stored, or already stored).",
    },
    Metric {
        name: VALUE_SENT_BYTES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Bytes,
        labels: &[DISK, OP],
        help: "Data bytes of GETs answered OK.",
    },
    // The store's write path.
    Metric {
        name: BATCHES_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Group-commit batches written durably.",
    },
    Metric {
        name: BATCH_WRITE_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Batch writes that failed (their requests failed; the zone takes no more writes).",
    },
    Metric {
        name: BATCH_RECORDS,
        kind: Kind::Histogram,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Records (PUTs and DELETEs) per batch written.",
    },
    Metric {
        name: BATCH_BYTES,
        kind: Kind::Histogram,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Bytes per batch written, padding to the block included.",
    },
    Metric {
        name: SYNC_DURATION_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        labels: &[DISK],
        help: "Time to make one batch durable (the RWF_DSYNC write, or the write and the fdatasync).",
    },
    Metric {
        name: CHECKPOINTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Index checkpoints written (periodic and at clean close).",
    },
    Metric {
        name: CHECKSUM_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Stored records that failed verification on read (header or chunk checksum).",
    },
    // A disk's state and space, published by its owning core.
    Metric {
        name: DISK_STATE,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK, "state"],
        help: "1 for the disk's current state (active, read_only, draining, retired, failed), 0 for the others.",
    },
    Metric {
        name: CAPACITY_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Bytes of the disk's log zones (what records can ever use).",
    },
    Metric {
        name: FREE_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Bytes of log zones not yet written (refreshed every second).",
    },
    Metric {
        name: LIVE_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Bytes of live values.",
    },
    Metric {
        name: LIVE_KEYS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Live keys.",
    },
    Metric {
        name: ZONES,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK, "condition"],
        help: "Zones of the device by condition (refreshed every second).",
    },
    Metric {
        name: INDEX_ENTRIES,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK, "kind"],
        help: "Index entries: kind=\"tag\" (20 bytes each) or \"overflow\" (keys whose tag collides, stored whole).",
    },
    Metric {
        name: INDEX_HEAP_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Heap bytes the disk's index holds (refreshed every second).",
    },
    Metric {
        name: DISK_QUEUE_DEPTH,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Requests queued or running on the disk's owning core (BUSY beyond 4096).",
    },
    Metric {
        name: RECOVERY_DURATION_SECONDS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: &[DISK],
        help: "How long opening the disk took at start (checkpoint load, tail scan, index rebuild).",
    },
    Metric {
        name: RECOVERY_TAIL_RECORDS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Records recovered from the log written after the checkpoint, at start.",
    },
    Metric {
        name: RECOVERY_CHECKPOINT_ENTRIES,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK],
        help: "Index entries loaded from the checkpoint at start.",
    },
    Metric {
        name: RECOVERY_SCANNED_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[DISK],
        help: "Log bytes scanned after the checkpoint at start.",
    },
    Metric {
        name: RECOVERY_DAMAGED_REGIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[DISK, "kind"],
        help: "Regions recovery found at start: kind=\"torn\" (never acknowledged, cut off) or \"corrupt\" (acknowledged data damaged).",
    },
    // Per core.
    Metric {
        name: IN_FLIGHT_REQUESTS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[CORE],
        help: "Requests read from this core's connections and not yet answered.",
    },
    Metric {
        name: CONNECTIONS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[CORE],
        help: "Open client connections on this core.",
    },
    Metric {
        name: CONNECTIONS_REFUSED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[CORE],
        help: "Connections turned away at the connection limit (a BUSY notice, then close).",
    },
    Metric {
        name: CONNECTIONS_CLOSED_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[CORE, "reason"],
        help: "Connections ended, by why reading stopped: eof, stop, timeout (idle or read), protocol (bad bytes), error (socket).",
    },
    Metric {
        name: BUDGET_USED_BYTES,
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        labels: &[CORE],
        help: "Bytes of value buffers this core holds (limit: server.max_in_flight_bytes).",
    },
    Metric {
        name: FORWARDED_REQUESTS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[CORE],
        help: "Requests this core sent to the core owning their disk (clients not using shard ports).",
    },
    Metric {
        name: PROTOCOL_ERRORS_TOTAL,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[CORE, "kind"],
        help: "Malformed frames: kind=\"rejected\" (answered, connection kept), \"rejected_closed\" (answered, then closed), \"closed\" (closed without an answer).",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &["version"],
        help: "Always 1; the daemon's version as a label.",
    },
];

/// Installs the Prometheus recorder as the process's global recorder, describes every metric,
/// and returns the handle [`serve`] renders from. Call it once, before any metric handle is
/// made (before the Directory and the cores).
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = builder()?
        .install_recorder()
        .context("installing the metrics recorder (was it installed twice?)")?;
    describe_all();
    ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The exporter's configuration: fixed buckets for every histogram (never summaries, which
/// cannot be aggregated across disks or nodes).
fn builder() -> anyhow::Result<PrometheusBuilder> {
    let builder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS_SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_RECORDS.into()), &BATCH_RECORDS_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_BYTES.into()), &BATCH_BYTES_BUCKETS)
        })
        .context("configuring histogram buckets")?;
    Ok(builder)
}

/// A recorder that is not installed globally, with the daemon's configuration (for tests and
/// benchmarks: `metrics::with_local_recorder`).
pub fn local_recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusRecorder> {
    Ok(builder()?.build_recorder())
}

/// Describes every metric of [`METRICS`] to the installed recorder (HELP lines).
pub fn describe_all() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => ::metrics::describe_counter!(metric.name, metric.unit, metric.help),
            Kind::Gauge => ::metrics::describe_gauge!(metric.name, metric.unit, metric.help),
            Kind::Histogram => {
                ::metrics::describe_histogram!(metric.name, metric.unit, metric.help)
            }
        }
    }
}

/// The `disk` label of HELLO and DISK_STATUS (node-wide requests).
pub const DISK_NODE: &str = "node";
/// The `disk` label of a request for a disk id this node does not have.
pub const DISK_UNKNOWN: &str = "unknown";

/// The `op` label of an opcode.
pub fn op_label(op: Opcode) -> &'static str {
    match op {
        Opcode::Hello => "hello",
        Opcode::Put => "put",
        Opcode::Get => "get",
        Opcode::Delete => "delete",
        Opcode::Stat => "stat",
        Opcode::Exists => "exists",
        Opcode::List => "list",
        Opcode::DiskStatus => "disk_status",
    }
}

/// The `status` label of a wire status: its PROTOCOL.md name in lowercase.
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::NotFound => "not_found",
        Status::ExistsWithOtherContent => "exists_with_other_content",
        Status::ChecksumMismatch => "checksum_mismatch",
        Status::StoredChecksumError => "stored_checksum_error",
        Status::StoredCorrupt => "stored_corrupt",
        Status::NoSpace => "no_space",
        Status::DiskReadOnly => "disk_read_only",
        Status::DiskFailed => "disk_failed",
        Status::IoError => "io_error",
        Status::NoSuchDisk => "no_such_disk",
        Status::ValueTooLarge => "value_too_large",
        Status::BadRange => "bad_range",
        Status::BadRequest => "bad_request",
        Status::UnknownOpcode => "unknown_opcode",
        Status::UnsupportedVersion => "unsupported_version",
        Status::AuthRequired => "auth_required",
        Status::Unauthorized => "unauthorized",
        Status::Busy => "busy",
        Status::ShuttingDown => "shutting_down",
        Status::Internal => "internal",
        Status::Timeout => "timeout",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn status_labels_are_the_protocol_names_in_lowercase() {
        for status in Status::ALL {
            assert_eq!(status_label(status), status.name().to_lowercase());
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for metric in METRICS {
            assert!(seen.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("shingle_"), "{}", metric.name);
            assert_eq!(
                metric.kind == Kind::Counter,
                metric.name.ends_with("_total"),
                "{}",
                metric.name
            );
            let unit_suffix = match metric.unit {
                Unit::Seconds => Some("_seconds"),
                Unit::Bytes => Some("_bytes"),
                _ => None,
            };
            if let Some(suffix) = unit_suffix {
                let base = metric.name.trim_end_matches("_total");
                assert!(base.ends_with(suffix), "{} should end in {suffix}", metric.name);
            }
        }
    }

    #[test]
    fn every_metric_is_documented_for_operators() {
        let doc = include_str!("../../../docs/METRICS.md");
        for metric in METRICS {
            assert!(
                doc.contains(&format!("`{}`", metric.name)),
                "{} not in docs/METRICS.md",
                metric.name
            );
        }
    }

    #[test]
    fn the_alert_rules_in_the_docs_are_docs_alerts_yml() {
        let doc = include_str!("../../../docs/METRICS.md");
        let rules = include_str!("../../../docs/alerts.yml");
        let block = doc.split("```yaml\n").last().and_then(|b| b.split("```").next()).unwrap();
        assert_eq!(block, rules, "copy docs/alerts.yml into the last yaml block of METRICS.md");
    }

    #[test]
    fn buckets_ascend() {
        for buckets in
            [&LATENCY_BUCKETS_SECONDS[..], &BATCH_RECORDS_BUCKETS[..], &BATCH_BYTES_BUCKETS[..]]
        {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
