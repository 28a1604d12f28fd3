//! `shingled`, the storage-node daemon. This build brings up what exists: one pinned core per
//! CPU with its io_uring, and the embedded default disk (a file-backed disk under
//! ./shingle-data), formatted on first start and recovered on every later one, with its store
//! served by core 0. SIGINT or SIGTERM closes the store cleanly (a checkpoint, so the next
//! start scans no log) and exits. The protocol and the config file come with the next step.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use anyhow::Context as _;
use ioengine::device::{Device, Disk, DiskOptions};
use ioengine::{Runtime, RuntimeConfig};
use shingle_daemon::store::{self, FormatOptions, Store, StoreConfig};

/// The embedded default disk: size and zone size.
const DEFAULT_DISK_BYTES: u64 = 1 << 30;
const DEFAULT_ZONE_BYTES: u64 = 64 << 20;

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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(arg) = std::env::args().nth(1) {
        anyhow::bail!("unknown argument {arg:?}: this build of shingled takes no arguments yet");
    }
    let data_dir = PathBuf::from("shingle-data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data folder {}", data_dir.display()))?;
    let disk_path = data_dir.join("disk0.img");
    let fresh = !disk_path.exists();

    // Cores inherit the mask: termination signals are taken here, never inside a core.
    ioengine::sys::block_signals(&ioengine::sys::TERMINATION_SIGNALS)
        .context("cannot block SIGINT/SIGTERM")?;
    let shutdown = Arc::new(Shutdown::default());
    let for_cores = shutdown.clone();
    let runtime = Runtime::start(RuntimeConfig::default(), move |info| {
        let disk_path = disk_path.clone();
        let shutdown = for_cores.clone();
        async move {
            if info.index == 0 {
                if let Err(err) = serve_default_disk(disk_path, fresh, &shutdown).await {
                    tracing::error!(error = %format!("{err:#}"), "disk 0 failed");
                }
            }
            shutdown.wait().await;
        }
    })
    .context("cannot start the cores")?;
    tracing::info!(cores = runtime.cores().len(), "shingled running; Ctrl-C or SIGTERM stops it");
    let signal = ioengine::sys::wait_for_signal(&ioengine::sys::TERMINATION_SIGNALS)
        .context("waiting for a termination signal")?;
    tracing::info!(signal, "stopping");
    shutdown.raise();
    if runtime.join().is_err() {
        anyhow::bail!("a core panicked while stopping");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens (formatting on first start) the embedded default disk, reports what recovery found,
/// and closes the store cleanly when shutdown is raised.
async fn serve_default_disk(path: PathBuf, fresh: bool, shutdown: &Shutdown) -> anyhow::Result<()> {
    let options = DiskOptions {
        zone_size_bytes: DEFAULT_ZONE_BYTES,
        create_size_bytes: Some(DEFAULT_DISK_BYTES),
        fresh,
        ..DiskOptions::default()
    };
    let disk =
        Disk::open(&path, &options).with_context(|| format!("opening {}", path.display()))?;
    if fresh {
        store::format(&disk, &FormatOptions::default(), false).await?;
        tracing::info!(path = %path.display(), zones = disk.geometry().zone_count, "formatted a new disk");
    }
    let store = Store::open(disk, StoreConfig::default()).await?;
    let report = store.recovery_report();
    tracing::info!(
        path = %path.display(),
        disk = %store::uuid_hex(&store.superblock().disk_uuid),
        keys = store.len(),
        free_bytes = store.free_bytes(),
        clean_checkpoint = report.checkpoint_clean,
        recovery_ms = report.duration_ms,
        "disk 0 ready (the protocol that serves it arrives with the next step)"
    );
    shutdown.wait().await;
    store.close().await?;
    tracing::info!(path = %path.display(), "disk 0 closed with a clean checkpoint");
    Ok(())
}
