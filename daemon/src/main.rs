//! `shingled`, the storage-node daemon. This build brings up what exists: it reads and
//! validates the config (or serves the embedded default: one file-backed disk under
//! ./shingle-data), starts one pinned core per configured CPU, and has each core open the disks
//! placed on it (a new file-backed disk is formatted; every other disk is recovered) and serve
//! their stores. SIGINT or SIGTERM closes every store cleanly (a checkpoint, so the next start
//! scans no log) and exits. The network protocol arrives with the server (step 3).
//!
//! ```text
//! shingled [--config FILE]        run
//! shingled check-config FILE      validate FILE, print the resolved config, exit 1 on problems
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use config::{Config, DiskConfig};
use ioengine::device::{Device, Disk, DiskOptions};
use ioengine::{Runtime, RuntimeConfig};
use shingle_daemon::notify::{Heartbeats, Notifier, Watchdog, beat_period};
use shingle_daemon::server::sync::{Either, Event, race};
use shingle_daemon::server::{CoreDisks, CoreServer, Directory, Listeners, Settings};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, SyncMode};

/// The data folder of the embedded default config.
const DEFAULT_DATA_DIR: &str = "shingle-data";

const USAGE: &str = "shingled [--config FILE] | shingled check-config FILE | \
    shingled format|inspect|check PATH [OPTIONS] (shingled format --help, ...)";

enum Command {
    Run { config: Option<PathBuf> },
    CheckConfig(PathBuf),
    Admin(Vec<String>),
    Help,
}

fn parse_args() -> anyhow::Result<Command> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Ok(Command::Run { config: None }),
        ["--config", path] => Ok(Command::Run { config: Some(PathBuf::from(path)) }),
        ["check-config", path] => Ok(Command::CheckConfig(PathBuf::from(path))),
        ["--help" | "-h"] => Ok(Command::Help),
        [command, ..] if shingle_daemon::admin::is_command(command) => Ok(Command::Admin(args)),
        _ => bail!("unknown arguments {args:?}; usage: {USAGE}"),
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One readable message, the causes after it; no backtrace for an operator error.
            eprintln!("shingled: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match parse_args()? {
        Command::Help => {
            eprintln!("usage: {USAGE}");
            Ok(())
        }
        Command::CheckConfig(path) => check_config(&path),
        Command::Admin(args) => std::process::exit(shingle_daemon::admin::main(&args)),
        Command::Run { config } => run(config),
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    config::load(path)
        .map_err(|errors| anyhow::anyhow!("{} is not valid:\n{errors}", path.display()))
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let cpus = ioengine::sys::allowed_cpus().context("reading the CPU affinity mask")?;
    let placement = config.placement(&cpus).map_err(|errors| {
        anyhow::anyhow!("{} does not fit this host:\n{errors}", path.display())
    })?;
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    writeln!(
        out,
        "{}: valid; {} disk(s) on {} core(s)",
        path.display(),
        config.disks.len(),
        placement.core_count()
    )?;
    write!(out, "{}", config.to_toml())?;
    Ok(())
}

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let embedded = path.is_none();
    let config = match &path {
        Some(path) => load(path)?,
        None => {
            let dir = PathBuf::from(DEFAULT_DATA_DIR);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
            tracing::info!(folder = %dir.display(), "no --config: serving the embedded default");
            Config::embedded_default(&dir)
        }
    };
    let cpus = ioengine::sys::allowed_cpus().context("reading the CPU affinity mask")?;
    let placement = config
        .placement(&cpus)
        .map_err(|errors| anyhow::anyhow!("the config does not fit this host:\n{errors}"))?;
    // Everything that can be refused is refused before a disk is touched.
    let settings = Arc::new(Settings::from_config(&config)?);
    // The recorder comes before anything that creates metric handles (the directory does);
    // the exporter's port is bound before any disk is touched.
    let metrics = shingle_daemon::metrics::install()?;
    let metrics_server = shingle_daemon::metrics::serve(config.metrics.listen, metrics)?;
    let per_core: Vec<Vec<DiskConfig>> = (0..placement.core_count())
        .map(|core| placement.disks_of(core).map(|i| config.disks[i].clone()).collect())
        .collect();
    let owners: Vec<(u16, usize)> = per_core
        .iter()
        .enumerate()
        .flat_map(|(core, disks)| disks.iter().map(move |d| (d.id, core)))
        .collect();
    let directory = Arc::new(Directory::new(&owners, &settings));
    let per_core = Arc::new(per_core);
    let store_defaults = Arc::new(config.store.clone());
    let core_count = placement.core_count();

    // Cores inherit the mask: termination signals are taken here, never inside a core.
    ioengine::sys::block_signals(&ioengine::sys::TERMINATION_SIGNALS)
        .context("cannot block SIGINT/SIGTERM")?;
    let notifier = Arc::new(Notifier::from_env()?);
    notifier.status(&format!("opening {} disk(s) on {core_count} core(s)", config.disks.len()));
    let heartbeats = Heartbeats::new(core_count);
    let beat_every = notifier.watchdog_interval().map_or(Duration::from_secs(1), beat_period);
    let wedge = test_hook_wedge_core();
    let startup = Arc::new(Startup::new(core_count));
    let go = Arc::new(Event::default());
    let stop = Arc::new(Event::default());
    let runtime_config = RuntimeConfig {
        cpus: placement.cpus().to_vec(),
        pin: true,
        ring_entries: config.runtime.ring_entries,
    };
    let (for_cores_startup, for_cores_go, for_cores_stop) =
        (startup.clone(), go.clone(), stop.clone());
    let for_cores_heartbeats = heartbeats.clone();
    let runtime = Runtime::start(runtime_config, move |info| {
        let disks = per_core[info.index].clone();
        let store_defaults = store_defaults.clone();
        let settings = settings.clone();
        let directory = directory.clone();
        let (startup, go, stop) =
            (for_cores_startup.clone(), for_cores_go.clone(), for_cores_stop.clone());
        let heartbeats = for_cores_heartbeats.clone();
        async move {
            // Liveness for the watchdog: a task on this core's executor, so a stuck core stops it.
            ioengine::spawn(beat(heartbeats, info.index, beat_every, stop.clone())).detach();
            if let Some((core, after)) = wedge {
                if core == info.index {
                    ioengine::spawn(wedge_after(after, go.clone())).detach();
                }
            }
            let listeners = match Listeners::bind(&settings, info.index).await {
                Ok(listeners) => listeners,
                Err(err) => {
                    startup.report(info.index, Err(format!("{err:#}")));
                    return;
                }
            };
            let mut core_disks = CoreDisks::default();
            for disk in &disks {
                match open_disk(disk, &store_defaults).await {
                    Ok(store) => {
                        core_disks.stores.insert(disk.id, store);
                    }
                    // One disk failing never takes down the others.
                    Err(err) => tracing::error!(disk = disk.id, path = %disk.path.display(), error = %format!("{err:#}"), "disk not served"),
                }
            }
            let stores: Vec<(u16, Rc<Store<Disk>>)> =
                core_disks.stores.iter().map(|(id, s)| (*id, s.clone())).collect();
            // The server exists before the core reports: once every core has reported, a
            // request forwarded to any of them finds its server.
            let server =
                CoreServer::new(info.index, settings, directory, info.cores.clone(), core_disks, stop.clone());
            startup.report(info.index, Ok(listeners.shard_addr()));
            if let Either::Left(()) = race(go.wait(), stop.wait()).await {
                server.serve(listeners).await;
            } else {
                server.unregister();
            }
            for (id, store) in stores {
                match store.close().await {
                    Ok(()) => tracing::info!(disk = id, "closed with a clean checkpoint"),
                    Err(err) => tracing::error!(disk = id, error = %err, "close failed"),
                }
            }
        }
    })
    .context("cannot start the cores")?;
    let shard_addrs = match startup.wait(&notifier) {
        Ok(addrs) => addrs,
        Err(err) => {
            notifier.stopping(&format!("failed to start: {err}"));
            stop.raise();
            let _ = runtime.join();
            bail!("{err}");
        }
    };
    go.raise();
    let listen = config.server.listen;
    let shard_ports: Vec<String> =
        shard_addrs.iter().flatten().map(|a| a.port().to_string()).collect();
    tracing::info!(
        %listen,
        shard_ports = %if shard_ports.is_empty() { "off".to_string() } else { shard_ports.join(",") },
        cores = runtime.cores().len(),
        disks = config.disks.len(),
        "shingled serving; Ctrl-C or SIGTERM stops it"
    );
    if embedded {
        tracing::info!(
            "try: echo hello | shingle --server {listen} put -   (then: shingle --server {listen} get KEY)"
        );
    }
    notifier.ready(&format!(
        "serving {} disk(s) on {} core(s); listening on {listen}",
        config.disks.len(),
        runtime.cores().len()
    ));
    let watchdog = notifier
        .watchdog_interval()
        .map(|interval| Watchdog::start(notifier.clone(), heartbeats.clone(), interval));
    let signal = ioengine::sys::wait_for_signal(&ioengine::sys::TERMINATION_SIGNALS)
        .context("waiting for a termination signal")?;
    tracing::info!(
        signal,
        "stopping: finishing requests in flight, then a clean checkpoint per disk (a second signal exits at once)"
    );
    notifier.stopping("stopping: finishing requests in flight, writing checkpoints");
    // A second signal: exit now. Every acknowledged write is already durable; only the clean
    // checkpoint is skipped, so the next start scans the log tail.
    std::thread::Builder::new()
        .name("second-signal".into())
        .spawn(|| {
            if let Ok(signal) = ioengine::sys::wait_for_signal(&ioengine::sys::TERMINATION_SIGNALS)
            {
                tracing::warn!(signal, "second signal: exiting now, without the clean checkpoint");
                std::process::exit(1);
            }
        })
        .context("cannot start the signal thread")?;
    stop.raise();
    // Stopping cores do not beat; the watchdog must not fire while they flush.
    drop(watchdog);
    if runtime.join().is_err() {
        bail!("a core panicked while stopping");
    }
    metrics_server.stop();
    tracing::info!("stopped");
    Ok(())
}

/// A core's start-up outcome: its shard address (if shard ports are on), or why it failed.
type CoreStarted = Result<Option<SocketAddr>, String>;

/// How often the main thread reports start-up progress to the service manager.
const STARTUP_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Bumps this core's heartbeat every `period` until the stop event.
async fn beat(heartbeats: Arc<Heartbeats>, core: usize, period: Duration, stop: Arc<Event>) {
    loop {
        heartbeats.beat(core);
        if let Either::Right(()) = race(ioengine::time::sleep(period), stop.wait()).await {
            return;
        }
    }
}

/// Test hook (`SHINGLE_TEST_WEDGE_CORE=CORE:MS`): that core's thread blocks for good MS
/// milliseconds after the daemon starts serving, so a test can see the watchdog pings stop.
/// Nothing else reads it; an operator never sets it.
fn test_hook_wedge_core() -> Option<(usize, Duration)> {
    let value = std::env::var("SHINGLE_TEST_WEDGE_CORE").ok()?;
    let (core, ms) = value.split_once(':')?;
    Some((core.parse().ok()?, Duration::from_millis(ms.parse().ok()?)))
}

async fn wedge_after(after: Duration, go: Arc<Event>) {
    go.wait().await;
    let _ = ioengine::time::sleep(after).await;
    tracing::warn!("SHINGLE_TEST_WEDGE_CORE: blocking this core's thread (test hook)");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Each core's start-up outcome (listeners bound, disks opened), awaited by the main thread
/// before any core serves: a port in use stops the daemon with its error.
struct Startup {
    reports: Mutex<Vec<Option<CoreStarted>>>,
    reported: Condvar,
}

impl Startup {
    fn new(cores: usize) -> Startup {
        Startup { reports: Mutex::new(vec![None; cores]), reported: Condvar::new() }
    }

    fn report(&self, core: usize, outcome: CoreStarted) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = reports.get_mut(core) {
            *slot = Some(outcome);
        }
        self.reported.notify_all();
    }

    /// Waits for every core; the first error, or each core's shard address.
    fn wait(&self, notifier: &Notifier) -> Result<Vec<Option<SocketAddr>>, String> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let ready = reports.iter().filter(|r| r.is_some()).count();
            notifier
                .status(&format!("recovering disks: {ready} of {} core(s) ready", reports.len()));
            notifier.extend_timeout(STARTUP_PROGRESS_INTERVAL * 3);
            if let Some(Some(Err(err))) = reports.iter().find(|r| matches!(r, Some(Err(_)))) {
                return Err(err.clone());
            }
            if reports.iter().all(Option::is_some) {
                return Ok(reports
                    .iter()
                    .map(|r| r.clone().and_then(Result::ok).flatten())
                    .collect());
            }
            reports = self
                .reported
                .wait_timeout(reports, STARTUP_PROGRESS_INTERVAL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How long a disk still held by a process that just exited is waited for.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// `Disk::open`, waiting up to [`OPEN_WAIT`] while the disk is in use: a restarted daemon can
/// find its file's lock (or a block device's exclusive open) still held for a few milliseconds
/// by the previous process, whose io_uring releases its files from a kernel worker after exit.
async fn open_waiting(path: &Path, options: &DiskOptions) -> ioengine::Result<Disk> {
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    let mut logged = false;
    loop {
        match Disk::open(path, options) {
            Err(ioengine::Error::DeviceInUse { .. }) if std::time::Instant::now() < deadline => {
                if !logged {
                    tracing::info!(path = %path.display(), "disk in use; waiting for it to be released");
                    logged = true;
                }
                let _ = ioengine::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

/// Opens one configured disk: creates and formats a new file-backed disk, recovers every other.
async fn open_disk(
    disk: &DiskConfig,
    defaults: &config::StoreConfig,
) -> anyhow::Result<Rc<Store<Disk>>> {
    let new_file = disk.size.is_some() && !disk.path.exists();
    let options = DiskOptions {
        zone_size_bytes: disk.zone_size.0,
        zone_capacity_bytes: Some(disk.zone_capacity.0),
        max_open_zones: disk.max_open_zones,
        max_active_zones: disk.max_active_zones,
        max_io_bytes: None,
        create_size_bytes: disk.size.map(|s| s.0),
        fresh: new_file,
    };
    let device = open_waiting(&disk.path, &options)
        .await
        .with_context(|| format!("opening {}", disk.path.display()))?;
    let value_bytes_max =
        u32::try_from(defaults.value_bytes_max.0).context("store.value_bytes_max")?;
    if new_file {
        store::format(
            &device,
            &FormatOptions { value_bytes_max, checkpoint_zones_per_set: 0 },
            false,
        )
        .await?;
        tracing::info!(disk = disk.id, path = %disk.path.display(), zones = device.geometry().zone_count, "formatted a new disk");
    }
    let store_config = StoreConfig {
        value_bytes_max,
        checkpoint_interval_bytes: disk.checkpoint_interval.0,
        checkpoint_interval_records: store::CHECKPOINT_INTERVAL_RECORDS_DEFAULT,
        sync: match disk.sync {
            config::SyncMode::Dsync => SyncMode::Dsync,
            config::SyncMode::Fdatasync => SyncMode::WriteThenFdatasync,
        },
    };
    let store = Store::open(device, store_config).await?;
    let report = store.recovery_report();
    tracing::info!(
        disk = disk.id,
        path = %disk.path.display(),
        uuid = %store::uuid_hex(&store.superblock().disk_uuid),
        keys = store.len(),
        free_bytes = store.free_bytes(),
        clean_checkpoint = report.checkpoint_clean,
        recovery_ms = report.duration_ms,
        "disk ready"
    );
    Ok(store)
}
