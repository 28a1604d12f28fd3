//! `shingled`, the storage-node daemon. This first cut brings up what exists: one pinned core
//! per CPU with its io_uring and buffer pool, and the embedded default disk (a file-backed disk
//! under ./shingle-data); it reports what it found and runs until SIGINT or SIGTERM. The store
//! and the protocol come in the next steps (see the issues and docs/ARCHITECTURE.md).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::Context as _;
use ioengine::buf::{BufPool, PoolConfig};
use ioengine::device::{Device, Disk, DiskOptions};
use ioengine::{Runtime, RuntimeConfig};

/// The embedded default disk: size and zone size.
const DEFAULT_DISK_BYTES: u64 = 1 << 30;
const DEFAULT_ZONE_BYTES: u64 = 64 << 20;
/// Per-core buffer pool of the first cut: 64 buffers of 128 KiB (8 MiB per core).
const POOL: PoolConfig = PoolConfig { buf_bytes: 128 << 10, count: 64, align_bytes: 4096 };

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
    let runtime = Runtime::start(RuntimeConfig::default(), move |info| {
        let disk_path = disk_path.clone();
        async move {
            let core = info.index;
            let pool = BufPool::new(POOL);
            let registration = ioengine::executor::current_reactor_features()
                .map(|features| (features, ioengine::executor::register_pool(&pool)));
            if let Some((features, registration)) = registration {
                tracing::info!(core, cpu = ?info.cpu, ?features, ?registration, "core up");
            }
            if core != 0 {
                return;
            }
            let options = DiskOptions {
                zone_size_bytes: DEFAULT_ZONE_BYTES,
                create_size_bytes: Some(DEFAULT_DISK_BYTES),
                fresh,
                ..DiskOptions::default()
            };
            match Disk::open(&disk_path, &options) {
                Ok(disk) => {
                    let disk = Rc::new(disk);
                    let g = disk.geometry();
                    tracing::info!(
                        path = %disk_path.display(),
                        kind = ?g.kind,
                        zones = g.zone_count,
                        zone_size_bytes = g.zone_size_bytes,
                        block_bytes = g.logical_block_bytes,
                        "disk 0 opened (the store and the protocol arrive in the next steps)"
                    );
                }
                Err(err) => {
                    tracing::error!(path = %disk_path.display(), error = %err, "disk 0 failed")
                }
            }
        }
    })
    .context("cannot start the cores")?;
    tracing::info!(cores = runtime.cores().len(), "shingled running; Ctrl-C or SIGTERM stops it");
    let signal = ioengine::sys::wait_for_signal(&ioengine::sys::TERMINATION_SIGNALS)
        .context("waiting for a termination signal")?;
    tracing::info!(signal, "stopping");
    Ok(())
}
