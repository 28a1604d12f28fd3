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

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use anyhow::{Context as _, bail};
use config::{Config, DiskConfig};
use ioengine::device::{Device, Disk, DiskOptions};
use ioengine::{Runtime, RuntimeConfig};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig, SyncMode};

/// The data folder of the embedded default config.
const DEFAULT_DATA_DIR: &str = "shingle-data";

enum Command {
    Run { config: Option<PathBuf> },
    CheckConfig(PathBuf),
    Help,
}

fn parse_args() -> anyhow::Result<Command> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Ok(Command::Run { config: None }),
        ["--config", path] => Ok(Command::Run { config: Some(PathBuf::from(path)) }),
        ["check-config", path] => Ok(Command::CheckConfig(PathBuf::from(path))),
        ["--help" | "-h"] => Ok(Command::Help),
        _ => bail!(
            "unknown arguments {args:?}; usage: shingled [--config FILE] | shingled check-config FILE"
        ),
    }
}

/// A stop request the main thread raises and every core awaits.
#[derive(Default)]
struct Shutdown {
    raised: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Shutdown {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in waiters {
            waker.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if self.raised.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
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
            eprintln!("usage: shingled [--config FILE] | shingled check-config FILE");
            Ok(())
        }
        Command::CheckConfig(path) => check_config(&path),
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
    let per_core: Vec<Vec<DiskConfig>> = (0..placement.core_count())
        .map(|core| placement.disks_of(core).map(|i| config.disks[i].clone()).collect())
        .collect();
    let per_core = Arc::new(per_core);
    let store_defaults = Arc::new(config.store.clone());

    // Cores inherit the mask: termination signals are taken here, never inside a core.
    ioengine::sys::block_signals(&ioengine::sys::TERMINATION_SIGNALS)
        .context("cannot block SIGINT/SIGTERM")?;
    let shutdown = Arc::new(Shutdown::default());
    let for_cores = shutdown.clone();
    let runtime_config = RuntimeConfig {
        cpus: placement.cpus().to_vec(),
        pin: true,
        ring_entries: config.runtime.ring_entries,
    };
    let runtime = Runtime::start(runtime_config, move |info| {
        let disks = per_core[info.index].clone();
        let store_defaults = store_defaults.clone();
        let shutdown = for_cores.clone();
        async move {
            let mut stores = Vec::new();
            for disk in &disks {
                match open_disk(disk, &store_defaults).await {
                    Ok(store) => stores.push(store),
                    // One disk failing never takes down the others.
                    Err(err) => tracing::error!(disk = disk.id, path = %disk.path.display(), error = %format!("{err:#}"), "disk not served"),
                }
            }
            shutdown.wait().await;
            for (store, disk) in stores.iter().zip(&disks) {
                match store.close().await {
                    Ok(()) => tracing::info!(disk = disk.id, "closed with a clean checkpoint"),
                    Err(err) => tracing::error!(disk = disk.id, error = %err, "close failed"),
                }
            }
        }
    })
    .context("cannot start the cores")?;
    tracing::info!(
        cores = runtime.cores().len(),
        disks = config.disks.len(),
        "shingled running; Ctrl-C or SIGTERM stops it"
    );
    let signal = ioengine::sys::wait_for_signal(&ioengine::sys::TERMINATION_SIGNALS)
        .context("waiting for a termination signal")?;
    tracing::info!(signal, "stopping");
    shutdown.raise();
    if runtime.join().is_err() {
        bail!("a core panicked while stopping");
    }
    tracing::info!("stopped");
    Ok(())
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
    let device = Disk::open(&disk.path, &options)
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
