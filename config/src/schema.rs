//! The resolved configuration: what the daemon runs with once a file (or the embedded default)
//! has been read and validated. Every field with a default holds it here, so the daemon never
//! handles defaults itself; the constants below are the defaults and the limits, and every
//! field's doc gives its default, range, unit and memory cost. The TOML keys are the field
//! names (the disk list is `[[disk]]`). Sizes are [`ByteSize`] (the unit is the type);
//! integers carry their unit last in the name (`idle_timeout_ms`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::size::ByteSize;

// ---- [server] ----

/// Default `server.listen`: loopback, so a default install is not reachable from the network.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7700));
/// Default `server.shard_port_base` (core i listens on base + i).
pub const SHARD_PORT_BASE_DEFAULT: u16 = 7710;
/// Default `server.max_connections`.
pub const MAX_CONNECTIONS_DEFAULT: u32 = 4096;
/// Largest `server.max_connections` (each connection holds a file descriptor).
pub const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;
/// Default `server.max_in_flight_per_connection`.
pub const MAX_IN_FLIGHT_PER_CONNECTION_DEFAULT: u32 = 128;
/// Largest `server.max_in_flight_per_connection`.
pub const MAX_IN_FLIGHT_PER_CONNECTION_LIMIT: u32 = 4096;
/// Room in a frame for the header and request fields around the largest value: the default
/// `server.max_frame_bytes` is `store.value_bytes_max` plus this, and a smaller setting is
/// refused (the largest PUT could not be sent).
pub const FRAME_HEADROOM_BYTES: u64 = 64 << 10;
/// Smallest `server.max_frame_bytes` (a LIST page of 10,000 keys of 32 B must fit).
pub const MAX_FRAME_BYTES_MIN: ByteSize = ByteSize::mib(1);
/// Largest `server.max_frame_bytes`.
pub const MAX_FRAME_BYTES_LIMIT: ByteSize =
    ByteSize(VALUE_BYTES_MAX_LIMIT.0 + FRAME_HEADROOM_BYTES);
/// Default `server.max_in_flight_bytes` (per core).
pub const MAX_IN_FLIGHT_BYTES_DEFAULT: ByteSize = ByteSize::mib(256);
/// Largest `server.max_in_flight_bytes` (per core).
pub const MAX_IN_FLIGHT_BYTES_LIMIT: ByteSize = ByteSize::gib(64);
/// Default `server.idle_timeout_ms` (5 minutes).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Range of `server.idle_timeout_ms` (1 s to 24 h).
pub const IDLE_TIMEOUT_MS_RANGE: (u64, u64) = (1_000, 86_400_000);
/// Default `server.read_timeout_ms`.
pub const READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Range of `server.read_timeout_ms` (100 ms to 1 h).
pub const READ_TIMEOUT_MS_RANGE: (u64, u64) = (100, 3_600_000);
/// Default `server.request_timeout_ms`.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Range of `server.request_timeout_ms` (100 ms to 1 h).
pub const REQUEST_TIMEOUT_MS_RANGE: (u64, u64) = (100, 3_600_000);

// ---- [metrics] ----

/// Default `metrics.listen`.
pub const METRICS_LISTEN_DEFAULT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9700));

// ---- [runtime] ----

/// Largest disk id (the wire's disk id is 16-bit and 65535 addresses every disk).
pub const DISK_ID_MAX: u16 = u16::MAX - 1;

/// Largest CPU id in `runtime.cores` (the kernel affinity mask the runtime uses, CPU_SETSIZE).
pub const CPU_ID_MAX: usize = 1023;
/// Default `runtime.ring_entries` (the ioengine's default).
pub const RING_ENTRIES_DEFAULT: u32 = 256;
/// Smallest `runtime.ring_entries`.
pub const RING_ENTRIES_MIN: u32 = 8;
/// Largest `runtime.ring_entries` (the ioengine's `RING_ENTRIES_MAX`).
pub const RING_ENTRIES_MAX: u32 = 4096;
/// Bytes of ring memory per submission entry: a 64 B SQE plus two 16 B CQEs (the completion
/// queue is twice the submission queue).
pub const RING_BYTES_PER_ENTRY: u64 = 64 + 2 * 16;
/// Default `runtime.pool_buffer_bytes`.
pub const POOL_BUFFER_BYTES_DEFAULT: ByteSize = ByteSize::kib(128);
/// Smallest `runtime.pool_buffer_bytes` (one 4 KiB block).
pub const POOL_BUFFER_BYTES_MIN: ByteSize = ByteSize::kib(4);
/// Largest `runtime.pool_buffer_bytes`.
pub const POOL_BUFFER_BYTES_MAX: ByteSize = ByteSize::mib(16);
/// Default `runtime.pool_buffer_count`.
pub const POOL_BUFFER_COUNT_DEFAULT: u32 = 64;
/// Largest `runtime.pool_buffer_count` (io_uring registers at most 16384 buffers).
pub const POOL_BUFFER_COUNT_MAX: u32 = 16_384;
/// Largest buffer pool per core (`pool_buffer_bytes * pool_buffer_count`).
pub const POOL_BYTES_PER_CORE_MAX: ByteSize = ByteSize::gib(4);

// ---- [store] ----

/// Default `store.value_bytes_max` (the design brief: values of 1 B to 16 MiB).
pub const VALUE_BYTES_MAX_DEFAULT: ByteSize = ByteSize::mib(16);
/// Largest `store.value_bytes_max` (what the on-disk format can describe).
pub const VALUE_BYTES_MAX_LIMIT: ByteSize = ByteSize::gib(1);
/// Default `store.checkpoint_interval`.
pub const CHECKPOINT_INTERVAL_DEFAULT: ByteSize = ByteSize::mib(256);
/// Smallest `store.checkpoint_interval`.
pub const CHECKPOINT_INTERVAL_MIN: ByteSize = ByteSize::mib(1);
/// Largest `store.checkpoint_interval`.
pub const CHECKPOINT_INTERVAL_MAX: ByteSize = ByteSize::tib(1);
/// Room in a zone for a record's header, its chunk checksums and its batch around the largest
/// value: a zone must hold `value_bytes_max + value_bytes_max / 1024 + this`.
pub const RECORD_HEADROOM_BYTES: u64 = 64 << 10;

// ---- [[disk]] ----

/// Sizes of disks and zones are multiples of this (the block size of file-backed disks, and a
/// multiple of every logical block size up to 4 KiB).
pub const BLOCK_BYTES: u64 = 4096;
/// Default `disk.zone_size` for emulated zones.
pub const ZONE_SIZE_DEFAULT: ByteSize = ByteSize::mib(256);
/// Smallest `disk.zone_size`.
pub const ZONE_SIZE_MIN: ByteSize = ByteSize::mib(1);
/// Largest `disk.zone_size`.
pub const ZONE_SIZE_MAX: ByteSize = ByteSize::gib(16);
/// Fewest zones on a disk: a superblock zone, two checkpoint zones and a log zone.
pub const ZONES_MIN: u64 = 4;
/// Smallest non-zero `max_open_zones` / `max_active_zones`: the store keeps a log zone, a
/// checkpoint zone and a garbage-collection target open at once.
pub const OPEN_ZONES_MIN: u32 = 3;
/// Largest `disk.max_open_zones` / `disk.max_active_zones`.
pub const OPEN_ZONES_MAX: u32 = 1 << 20;
/// Most `[[disk]]` entries.
pub const DISKS_MAX: usize = 1024;
/// Longest path, in bytes (PATH_MAX less the terminating NUL).
pub const PATH_BYTES_MAX: usize = 4095;

// ---- embedded default ----

/// Size of the embedded default's file-backed disk.
pub const EMBEDDED_DISK_SIZE: ByteSize = ByteSize::gib(1);
/// Zone size of the embedded default's disk.
pub const EMBEDDED_ZONE_SIZE: ByteSize = ByteSize::mib(64);
/// File name of the embedded default's disk inside the data folder.
pub const EMBEDDED_DISK_FILE: &str = "disk0.img";

const _: () = assert!(RING_ENTRIES_DEFAULT.is_power_of_two() && RING_ENTRIES_MAX.is_power_of_two());
const _: () =
    assert!(RING_ENTRIES_MIN <= RING_ENTRIES_DEFAULT && RING_ENTRIES_DEFAULT <= RING_ENTRIES_MAX);
const _: () = assert!(POOL_BUFFER_BYTES_DEFAULT.0 % BLOCK_BYTES == 0);
const _: () = assert!(
    POOL_BUFFER_BYTES_DEFAULT.0 * POOL_BUFFER_COUNT_DEFAULT as u64 <= POOL_BYTES_PER_CORE_MAX.0
);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT.0 <= VALUE_BYTES_MAX_LIMIT.0);
const _: () = assert!(VALUE_BYTES_MAX_DEFAULT.0 + FRAME_HEADROOM_BYTES >= MAX_FRAME_BYTES_MIN.0);
const _: () =
    assert!(VALUE_BYTES_MAX_DEFAULT.0 + FRAME_HEADROOM_BYTES <= MAX_IN_FLIGHT_BYTES_DEFAULT.0);
const _: () =
    assert!(ZONE_SIZE_DEFAULT.0 % BLOCK_BYTES == 0 && EMBEDDED_ZONE_SIZE.0 % BLOCK_BYTES == 0);
const _: () = assert!(EMBEDDED_DISK_SIZE.0 % EMBEDDED_ZONE_SIZE.0 == 0);
const _: () = assert!(EMBEDDED_DISK_SIZE.0 / EMBEDDED_ZONE_SIZE.0 >= ZONES_MIN);
const _: () = assert!(
    VALUE_BYTES_MAX_DEFAULT.0 + VALUE_BYTES_MAX_DEFAULT.0 / 1024 + RECORD_HEADROOM_BYTES
        <= EMBEDDED_ZONE_SIZE.0
);
const _: () = assert!(SHARD_PORT_BASE_DEFAULT > LISTEN_DEFAULT.port());

/// A validated shingled configuration, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[server]`: the client-facing ports and their limits. Default: every field's default.
    pub server: ServerConfig,
    /// `[metrics]`: the Prometheus endpoint. Default: every field's default.
    pub metrics: MetricsConfig,
    /// `[runtime]`: cores, rings and buffers. Default: every field's default.
    pub runtime: RuntimeConfig,
    /// `[store]`: defaults for every disk's store. Default: every field's default.
    pub store: StoreConfig,
    /// `[log]`: logging. Default: every field's default.
    pub log: LogConfig,
    /// `[[disk]]`: the disks, in the order of the file. Required: at least one, at most 1024.
    #[serde(rename = "disk")]
    pub disks: Vec<DiskConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    /// Main client address; every core accepts here (SO_REUSEPORT) and forwards requests for
    /// disks it does not own. An IP address and a port other than 0 (host names are not
    /// resolved). Default `127.0.0.1:7700`.
    pub listen: SocketAddr,
    /// Shard-aware port of core 0 on the `listen` IP; core i listens on `shard_port_base + i`
    /// and the handshake tells clients which port owns which disk. 0 turns shard ports off.
    /// The ports must not reach past 65535 nor cover the main or metrics port. Default 7710.
    pub shard_port_base: u16,
    /// Open client connections at most, over all cores and ports; further connections are
    /// accepted and closed at once. Each holds a file descriptor (raise LimitNOFILE above this
    /// plus the disks). Range 1..=1000000, default 4096.
    pub max_connections: u32,
    /// Requests one connection may have in flight (sent, not yet answered); the connection is
    /// not read further until one completes. Range 1..=4096, default 128.
    pub max_in_flight_per_connection: u32,
    /// Largest frame accepted or sent, header included; a larger frame is refused with an
    /// error status and the connection closed. At least `store.value_bytes_max` + 64 KiB (so
    /// the largest PUT fits) and 1 MiB; at most 1 GiB + 64 KiB. Default: the larger of
    /// `store.value_bytes_max` + 64 KiB and 1 MiB (16 MiB + 64 KiB with the default values).
    pub max_frame_bytes: ByteSize,
    /// Frame bytes one core holds in memory for requests being received or served; when full,
    /// the core stops reading requests until some complete. This bounds request memory:
    /// worst case per core is this value. At least `max_frame_bytes`, at most 64 GiB. Default:
    /// 256 MiB per core, or `max_frame_bytes` if that is larger.
    pub max_in_flight_bytes: ByteSize,
    /// A connection with no request in flight and no bytes received for this long is closed.
    /// Range 1000..=86400000 (1 s to 24 h), default 300000 (5 min).
    pub idle_timeout_ms: u64,
    /// Once a frame has started to arrive, all of it must arrive within this, or the
    /// connection is closed (slow or stuck senders). Range 100..=3600000, default 30000.
    pub read_timeout_ms: u64,
    /// A request not answered within this (e.g. behind a stuck disk) fails with a timeout
    /// status. Range 100..=3600000, default 30000.
    pub request_timeout_ms: u64,
    /// File holding the shared secret for HMAC challenge-response authentication; absent:
    /// no authentication. An absolute path, or a relative one (resolved against the config
    /// file's folder by [`crate::load`]). Only the path is checked here; the daemon reads the
    /// file. Default: absent.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_opt_path")]
    pub auth_secret_file: Option<PathBuf>,
}

impl ServerConfig {
    /// The shard-aware port of core `core`, or `None` when shard ports are off.
    pub fn shard_port(&self, core: usize) -> Option<u16> {
        if self.shard_port_base == 0 {
            return None;
        }
        let port = u64::from(self.shard_port_base) + core as u64;
        Some(u16::try_from(port).expect("shard ports were validated against the core count"))
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `read_timeout_ms` as a duration.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: LISTEN_DEFAULT,
            shard_port_base: SHARD_PORT_BASE_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            max_in_flight_per_connection: MAX_IN_FLIGHT_PER_CONNECTION_DEFAULT,
            max_frame_bytes: default_max_frame_bytes(VALUE_BYTES_MAX_DEFAULT),
            max_in_flight_bytes: MAX_IN_FLIGHT_BYTES_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            read_timeout_ms: READ_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            auth_secret_file: None,
        }
    }
}

/// The default `server.max_frame_bytes` for a value cap: the cap plus [`FRAME_HEADROOM_BYTES`],
/// and at least [`MAX_FRAME_BYTES_MIN`].
pub const fn default_max_frame_bytes(value_bytes_max: ByteSize) -> ByteSize {
    let bytes = value_bytes_max.0.saturating_add(FRAME_HEADROOM_BYTES);
    if bytes < MAX_FRAME_BYTES_MIN.0 { MAX_FRAME_BYTES_MIN } else { ByteSize(bytes) }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`). An IP address and a port other
    /// than 0; must differ from `server.listen`. Default `127.0.0.1:9700`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: METRICS_LISTEN_DEFAULT }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeConfig {
    /// CPUs to run a core (a pinned thread with its own io_uring) on: `"all"` (every CPU the
    /// process may use, from its affinity mask) or a list of distinct CPU ids `[0, 2, 4]`
    /// (0..=1023). Core i runs on the i-th CPU. Default `"all"`.
    pub cores: Cores,
    /// Submission-queue entries of each core's io_uring: a power of two, 8..=4096. Default 256.
    /// Memory: 96 B per entry per core (64 B SQE, two 16 B CQEs), 24 KiB at the default.
    pub ring_entries: u32,
    /// Bytes of each buffer in a core's I/O buffer pool: a multiple of 4 KiB, 4 KiB..=16 MiB.
    /// Default 128 KiB.
    pub pool_buffer_bytes: ByteSize,
    /// Buffers in each core's pool, 1..=16384. Memory per core: `pool_buffer_bytes *
    /// pool_buffer_count` (default 8 MiB), at most 4 GiB; locked when registered with
    /// io_uring, which needs RLIMIT_MEMLOCK (LimitMEMLOCK=) above the sum over all cores,
    /// or the pools stay unregistered and the daemon says so. Default 64.
    pub pool_buffer_count: u32,
}

impl RuntimeConfig {
    /// Memory of one core's buffer pool.
    pub fn pool_bytes_per_core(&self) -> ByteSize {
        ByteSize(self.pool_buffer_bytes.0.saturating_mul(u64::from(self.pool_buffer_count)))
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: Cores::All,
            ring_entries: RING_ENTRIES_DEFAULT,
            pool_buffer_bytes: POOL_BUFFER_BYTES_DEFAULT,
            pool_buffer_count: POOL_BUFFER_COUNT_DEFAULT,
        }
    }
}

/// Which CPUs run cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every CPU in the process's affinity mask (known only at startup: see
    /// [`Config::placement`]).
    All,
    /// These CPU ids, one core each, in this order.
    List(Vec<usize>),
}

impl Serialize for Cores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Cores::All => serializer.serialize_str("all"),
            Cores::List(cpus) => cpus.serialize(serializer),
        }
    }
}

/// `[store]`: defaults for every disk's store (a disk may override `checkpoint_interval` and
/// `sync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    /// Largest value a PUT may carry, 1 B..=1 GiB. Default 16 MiB. Every zone must hold a
    /// record of this size, and `server.max_frame_bytes` must carry it.
    pub value_bytes_max: ByteSize,
    /// Log bytes written between two index checkpoints: smaller means faster restarts (less
    /// log to scan) and more checkpoint writes. 1 MiB..=1 TiB, default 256 MiB.
    pub checkpoint_interval: ByteSize,
    /// How a batch is made durable before it is acknowledged. Default `"dsync"`.
    pub sync: SyncMode,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            checkpoint_interval: CHECKPOINT_INTERVAL_DEFAULT,
            sync: SyncMode::Dsync,
        }
    }
}

/// How a batch is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// `"dsync"`: one write with RWF_DSYNC (FUA where the device has it).
    Dsync,
    /// `"fdatasync"`: a plain write, then fdatasync (a device cache flush).
    Fdatasync,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    /// Least severe level logged: `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`.
    /// Default `"info"`. (RUST_LOG, if set, overrides it.)
    pub level: LogLevel,
    /// `"text"` (human-readable lines) or `"json"` (one JSON object per line, for log
    /// collectors). Default `"text"`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: LogLevel::Info, format: LogFormat::Text }
    }
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level's name as written in the config (and as `tracing` filters spell it).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[[disk]]`: one disk. Zone fields apply to emulated zones (regular files and conventional
/// block devices); a zoned block device (SMR, ZNS) takes its zones from the kernel and ignores
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskConfig {
    /// The disk's id on the wire and in metrics, unique, 0..=65534. Required.
    pub id: u16,
    /// A regular file, a block device or a zoned block device. Paths under `/dev/` (except
    /// `/dev/shm/`) are taken for block devices. Relative paths are resolved against the
    /// config file's folder by [`crate::load`]. Required.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Regular files only: the size to create the file with (space reserved with fallocate)
    /// when it does not exist; an existing file keeps its size. A multiple of `zone_size`
    /// holding at least 4 zones. Absent: the file must exist. Not allowed for `/dev/` paths
    /// (a device's size is the device's). Default: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// Emulated zones: bytes per zone, a multiple of 4 KiB, 1 MiB..=16 GiB. Default 256 MiB.
    pub zone_size: ByteSize,
    /// Emulated zones: writable bytes per zone (as on ZNS, where capacity can be below the
    /// size), a multiple of 4 KiB, at most `zone_size`. Default: `zone_size`.
    pub zone_capacity: ByteSize,
    /// Emulated zones: zones open for writing at once, 0 (no limit) or 3..=1048576. Set it to
    /// mimic a zoned device's limit. Default 0.
    pub max_open_zones: u32,
    /// Emulated zones: zones open or closed-but-not-full at once, 0 (no limit) or
    /// 3..=1048576, at least `max_open_zones`. Default 0.
    pub max_active_zones: u32,
    /// Index of the core that owns this disk (0..cores); absent: disks are spread over the
    /// cores, see [`Config::placement`]. Default: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<usize>,
    /// This disk's `store.checkpoint_interval`. Default: the `[store]` value.
    pub checkpoint_interval: ByteSize,
    /// This disk's `store.sync`. Default: the `[store]` value.
    pub sync: SyncMode,
}

impl DiskConfig {
    /// A disk with every optional field at its default, taking the store defaults from `store`.
    pub fn new(id: u16, path: PathBuf, store: &StoreConfig) -> DiskConfig {
        DiskConfig {
            id,
            path,
            size: None,
            zone_size: ZONE_SIZE_DEFAULT,
            zone_capacity: ZONE_SIZE_DEFAULT,
            max_open_zones: 0,
            max_active_zones: 0,
            core: None,
            checkpoint_interval: store.checkpoint_interval,
            sync: store.sync,
        }
    }

    /// Whether the path names a block device (it is under `/dev/` but not `/dev/shm/`). The
    /// config does no I/O, so this is by name only; the daemon checks the real file type.
    pub fn looks_like_block_device(&self) -> bool {
        looks_like_block_device(&self.path)
    }
}

pub(crate) fn looks_like_block_device(path: &Path) -> bool {
    path.starts_with("/dev") && !path.starts_with("/dev/shm")
}

impl Config {
    /// The configuration the daemon serves with when it is given no config file: one
    /// file-backed disk `<data_dir>/disk0.img` (id 0, 1 GiB, created when missing, 64 MiB
    /// zones), clients on 127.0.0.1:7700 with shard ports from 7710, metrics on
    /// 127.0.0.1:9700, every other field at its default.
    pub fn embedded_default(data_dir: &Path) -> Config {
        let store = StoreConfig::default();
        let mut disk = DiskConfig::new(0, data_dir.join(EMBEDDED_DISK_FILE), &store);
        disk.size = Some(EMBEDDED_DISK_SIZE);
        disk.zone_size = EMBEDDED_ZONE_SIZE;
        disk.zone_capacity = EMBEDDED_ZONE_SIZE;
        Config {
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            runtime: RuntimeConfig::default(),
            store,
            log: LogConfig::default(),
            disks: vec![disk],
        }
    }

    /// The configuration as a TOML document with every field spelled out (defaults
    /// included), in the schema [`crate::parse`] reads: for `shingled --print-config` and logs.
    /// Parsing it gives this configuration back (paths that are not UTF-8 are printed lossily).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every config field serializes to TOML")
    }
}

fn serialize_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

fn serialize_opt_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serialize_path(path, serializer),
        None => serializer.serialize_none(),
    }
}
