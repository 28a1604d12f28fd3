//! The network server: every core accepts on the main port (SO_REUSEPORT) and on its own shard
//! port, reads frames (docs/PROTOCOL.md), and answers each request on the core that owns the
//! request's disk: directly when that is this core, otherwise through the owner's inbox
//! ([`ioengine::CoreHandle::send`]) with the reply coming back the same way.
//!
//! - [`Settings`]: the limits and timeouts of `[server]`, resolved from the config.
//! - [`Directory`]: what every core knows of every disk (owner, shard port, state, counters),
//!   kept current by the owning core after each request.
//! - `conn`: one connection (a reader task, a writer task, a task per request).
//! - `handler`: a request executed against the owning core's store, and the one mapping of
//!   store errors to wire statuses.
//! - `sync`: cross-core events and replies, the per-core byte budget.
//!
//! Files: one per piece above; `CoreServer` (this file) is a core's share of the server.

mod conn;
mod handler;
pub mod sync;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ioengine::CoreHandle;
use ioengine::device::{Device, Disk};
use ioengine::net::TcpListener;
use proto::auth::Secret;
use proto::messages::{DiskInfo, DiskState, DiskStatus};
use proto::wire::Limits;

use crate::metrics::{CoreMetrics, DiskMetrics, DiskStateGauges, StoreMetrics};
use crate::store::Store;
pub use handler::status_of;
use sync::{Budget, Event};

/// Requests a disk's owner core accepts at once (queued or running); more are answered BUSY.
pub const DISK_QUEUE_MAX: u32 = 4096;

/// How often each core copies its disks' free space into the [`Directory`] (HELLO and
/// DISK_STATUS report free bytes at most this old).
pub const SPACE_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a stopping server waits for requests in flight to finish before it closes their
/// connections anyway (their disks are closed cleanly either way).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The server's settings: `[server]` of the config, resolved.
#[derive(Debug)]
pub struct Settings {
    /// Main address; every core accepts here.
    pub listen: SocketAddr,
    /// Core i also listens on base + i; 0: no shard ports.
    pub shard_port_base: u16,
    /// Value and frame size limits.
    pub limits: Limits,
    /// Connections at once, over all cores.
    pub max_connections: u32,
    /// Requests read from one connection before it is answered.
    pub max_in_flight: u32,
    /// Bytes of value buffers one core holds at once.
    pub max_in_flight_bytes: u64,
    /// Close a connection with nothing in flight and no bytes received for this long.
    pub idle_timeout: Duration,
    /// A started frame must be complete within this.
    pub read_timeout: Duration,
    /// A request not answered by then is answered TIMEOUT.
    pub request_timeout: Duration,
    /// The shared secret, when authentication is on.
    pub secret: Option<Secret>,
}

impl Settings {
    /// Resolves `config`'s `[server]` (reads the secret file: an unreadable or unsafe file
    /// stops the daemon before any disk is opened).
    pub fn from_config(config: &config::Config) -> anyhow::Result<Settings> {
        use anyhow::Context as _;
        let server = &config.server;
        let value_bytes_max =
            u32::try_from(config.store.value_bytes_max.0).context("store.value_bytes_max")?;
        let limits = Limits::new(value_bytes_max, server.max_frame_bytes.0)
            .context("server.max_frame_bytes")?;
        let secret = match &server.auth_secret_file {
            Some(path) => Some(Secret::read_file(path).context("server.auth_secret_file")?),
            None => None,
        };
        Ok(Settings {
            listen: server.listen,
            shard_port_base: server.shard_port_base,
            limits,
            max_connections: server.max_connections,
            max_in_flight: server.max_in_flight_per_connection,
            max_in_flight_bytes: server.max_in_flight_bytes.0,
            idle_timeout: server.idle_timeout(),
            read_timeout: server.read_timeout(),
            request_timeout: server.request_timeout(),
            secret,
        })
    }

    /// Core `core`'s shard port, if shard ports are on.
    pub fn shard_port(&self, core: usize) -> Option<u16> {
        if self.shard_port_base == 0 {
            return None;
        }
        u16::try_from(usize::from(self.shard_port_base) + core).ok()
    }
}

/// One disk as every core sees it. The owning core writes; any core reads.
#[derive(Debug)]
pub struct DiskSlot {
    /// The disk id requests use.
    pub id: u16,
    /// The owning core.
    pub core: usize,
    /// The owning core's shard port (0: none).
    pub shard_port: u16,
    state: AtomicU8,
    capacity_bytes: AtomicU64,
    free_bytes: AtomicU64,
    live_keys: AtomicU64,
    live_value_bytes: AtomicU64,
    checksum_errors: AtomicU64,
    uuid: Mutex<[u8; 16]>,
    state_gauges: DiskStateGauges,
}

impl DiskSlot {
    /// The lifecycle state.
    pub fn state(&self) -> DiskState {
        DiskState::ALL
            .get(usize::from(self.state.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(DiskState::Failed)
    }

    fn set_state(&self, state: DiskState) {
        if self.state.swap(state as u8, Ordering::Relaxed) != state as u8 {
            self.state_gauges.set(state);
        }
    }

    /// Copies the store's counters and state in: O(1), called by the owning core after each
    /// request.
    pub fn publish_counts<D: Device + 'static>(&self, store: &Store<D>) {
        self.live_keys.store(store.len() as u64, Ordering::Relaxed);
        self.live_value_bytes.store(store.stats().live_value_bytes.get(), Ordering::Relaxed);
        self.checksum_errors.store(store.stats().checksum_errors.get(), Ordering::Relaxed);
        let state = if store.read_only_reason().is_some() {
            DiskState::ReadOnly
        } else {
            DiskState::Active
        };
        self.set_state(state);
    }

    /// Copies the store's capacity and free space in (a walk over the zone table: called at
    /// open and every [`SPACE_PUBLISH_INTERVAL`], not per request).
    pub fn publish_space<D: Device + 'static>(&self, store: &Store<D>) {
        self.capacity_bytes.store(store.capacity_bytes(), Ordering::Relaxed);
        self.free_bytes.store(store.free_bytes(), Ordering::Relaxed);
    }

    fn open(&self, uuid: [u8; 16]) {
        *self.uuid.lock().unwrap_or_else(|p| p.into_inner()) = uuid;
    }

    /// What HELLO says about the disk.
    pub fn info(&self) -> DiskInfo {
        let capacity_bytes = self.capacity_bytes.load(Ordering::Relaxed);
        DiskInfo {
            disk_id: self.id,
            state: self.state(),
            shard: u16::try_from(self.core).unwrap_or(u16::MAX),
            shard_port: self.shard_port,
            capacity_bytes,
            free_bytes: self.free_bytes.load(Ordering::Relaxed).min(capacity_bytes),
            disk_uuid: *self.uuid.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// What DISK_STATUS says about the disk.
    pub fn status(&self) -> DiskStatus {
        DiskStatus {
            info: self.info(),
            live_keys: self.live_keys.load(Ordering::Relaxed),
            live_value_bytes: self.live_value_bytes.load(Ordering::Relaxed),
            checksum_errors: self.checksum_errors.load(Ordering::Relaxed),
        }
    }
}

/// Every disk of the node, by ascending id, and the node-wide counters.
#[derive(Debug)]
pub struct Directory {
    disks: Vec<DiskSlot>,
    connections: AtomicU32,
}

impl Directory {
    /// The directory for `disks`: (id, owning core) pairs. Every disk starts failed until its
    /// core opens it.
    pub fn new(disks: &[(u16, usize)], settings: &Settings) -> Directory {
        let mut slots: Vec<DiskSlot> = disks
            .iter()
            .map(|&(id, core)| DiskSlot {
                id,
                core,
                shard_port: settings.shard_port(core).unwrap_or(0),
                state: AtomicU8::new(DiskState::Failed as u8),
                capacity_bytes: AtomicU64::new(0),
                free_bytes: AtomicU64::new(0),
                live_keys: AtomicU64::new(0),
                live_value_bytes: AtomicU64::new(0),
                checksum_errors: AtomicU64::new(0),
                uuid: Mutex::new([0; 16]),
                state_gauges: DiskStateGauges::new(id, DiskState::Failed),
            })
            .collect();
        slots.sort_by_key(|slot| slot.id);
        Directory { disks: slots, connections: AtomicU32::new(0) }
    }

    /// The disk with id `id`.
    pub fn disk(&self, id: u16) -> Option<&DiskSlot> {
        self.disks.binary_search_by_key(&id, |slot| slot.id).ok().map(|i| &self.disks[i])
    }

    /// Every disk, by ascending id.
    pub fn disks(&self) -> &[DiskSlot] {
        &self.disks
    }

    /// Open connections over all cores.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A core's disks, opened (or not) before the core starts serving.
#[derive(Debug, Default)]
pub struct CoreDisks {
    /// Stores this core serves, by disk id.
    pub stores: HashMap<u16, Rc<Store<Disk>>>,
}

/// A core's share of the server.
pub struct CoreServer {
    index: usize,
    settings: Arc<Settings>,
    directory: Arc<Directory>,
    cores: Arc<[CoreHandle]>,
    stores: HashMap<u16, LocalDisk>,
    budget: Rc<Budget>,
    metrics: CoreMetrics,
    connections: RefCell<HashMap<u64, Rc<conn::Conn>>>,
    next_connection: Cell<u64>,
    stop: Arc<Event>,
    /// `stop`, relayed to this core's tasks (which wait on it once per receive).
    stopping: sync::LocalEvent,
    /// Connection tasks still running (the stop waits for them).
    live_connections: Cell<usize>,
    connections_gone: RefCell<Option<std::task::Waker>>,
}

/// A store served by this core, its request queue depth and its metrics.
struct LocalDisk {
    store: Rc<Store<Disk>>,
    queued: Cell<u32>,
    metrics: Rc<DiskMetrics>,
}

impl std::fmt::Debug for CoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreServer").field("index", &self.index).finish_non_exhaustive()
    }
}

thread_local! {
    /// The server of the core running on this thread (for requests forwarded here).
    static CURRENT: RefCell<Option<Rc<CoreServer>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<CoreServer>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A core's listeners, bound before the core serves (binding errors stop the daemon).
#[derive(Debug)]
pub struct Listeners {
    main: TcpListener,
    shard: Option<TcpListener>,
}

impl Listeners {
    /// Binds the main port (shared by every core) and this core's shard port. A port still
    /// held by a process that just exited (io_uring releases its sockets asynchronously, a few
    /// milliseconds after the exit) is waited for, up to [`BIND_WAIT`].
    pub async fn bind(settings: &Settings, core: usize) -> anyhow::Result<Listeners> {
        use anyhow::Context as _;
        let main = bind_waiting(settings.listen, true)
            .await
            .with_context(|| format!("cannot listen on server.listen = {}", settings.listen))?;
        let shard = match settings.shard_port(core) {
            Some(port) => {
                let addr = SocketAddr::new(settings.listen.ip(), port);
                Some(bind_waiting(addr, false).await.with_context(|| {
                    format!(
                        "cannot listen on shard port {addr} of core {core} \
                         (server.shard_port_base + {core}; pick a free range or 0 to turn shard ports off)"
                    )
                })?)
            }
            None => None,
        };
        Ok(Listeners { main, shard })
    }

    /// The shard listener's address.
    pub fn shard_addr(&self) -> Option<SocketAddr> {
        self.shard.as_ref().map(TcpListener::local_addr)
    }
}

/// How long binding a port in use is retried.
pub const BIND_WAIT: Duration = Duration::from_secs(5);

async fn bind_waiting(addr: SocketAddr, reuse_port: bool) -> ioengine::Result<TcpListener> {
    let deadline = std::time::Instant::now() + BIND_WAIT;
    let mut logged = false;
    loop {
        match TcpListener::bind(addr, reuse_port) {
            Err(ioengine::Error::Network { errno_name: "EADDRINUSE", .. })
                if std::time::Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(%addr, "port in use; waiting for it to be released");
                    logged = true;
                }
                let _ = ioengine::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

impl CoreServer {
    /// This core's server over the stores it opened.
    pub fn new(
        index: usize,
        settings: Arc<Settings>,
        directory: Arc<Directory>,
        cores: Arc<[CoreHandle]>,
        disks: CoreDisks,
        stop: Arc<Event>,
    ) -> Rc<CoreServer> {
        let stores = disks
            .stores
            .into_iter()
            .map(|(id, store)| {
                if let Some(slot) = directory.disk(id) {
                    slot.open(store.superblock().disk_uuid);
                    slot.publish_counts(&*store);
                    slot.publish_space(&*store);
                }
                let metrics = DiskMetrics::new(id);
                store.attach_metrics(StoreMetrics::new(metrics.disk()));
                metrics.publish_recovery(store.recovery_report());
                metrics.publish_counts(store.len() as u64, store.stats().live_value_bytes.get());
                metrics.publish_space(&*store);
                (id, LocalDisk { store, queued: Cell::new(0), metrics })
            })
            .collect();
        let metrics = CoreMetrics::new(index);
        let budget = Budget::with_gauge(settings.max_in_flight_bytes, metrics.budget_used.clone());
        let server = Rc::new(CoreServer {
            index,
            settings,
            directory,
            cores,
            stores,
            budget,
            metrics,
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(0),
            stop,
            stopping: sync::LocalEvent::default(),
            live_connections: Cell::new(0),
            connections_gone: RefCell::new(None),
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(server.clone()));
        server
    }

    /// Accepts on `listeners` until the stop event, then lets open connections finish what
    /// they have in flight (at most [`STOP_GRACE`]), tells them SHUTTING_DOWN and closes them.
    pub async fn serve(self: &Rc<Self>, listeners: Listeners) {
        let relay = self.clone();
        ioengine::spawn(async move {
            relay.stop.wait().await;
            relay.stopping.raise();
        })
        .detach();
        let publisher = ioengine::spawn_background(self.clone().publish_space_loop());
        let mut accepts = vec![ioengine::spawn(self.clone().accept_loop(listeners.main))];
        if let Some(shard) = listeners.shard {
            accepts.push(ioengine::spawn(self.clone().accept_loop(shard)));
        }
        for accept in accepts {
            accept.await;
        }
        // Stopping: every reader saw the stop event too; each connection answers what it
        // has in flight, says SHUTTING_DOWN and closes.
        let drained = ioengine::time::timeout(STOP_GRACE, self.connections_closed()).await;
        if drained.is_err() {
            let left = self.live_connections.get();
            tracing::warn!(
                core = self.index,
                connections = left,
                "stop grace period over; closing connections with requests in flight"
            );
            for conn in self.connections.borrow().values() {
                conn.abort();
            }
        }
        publisher.await;
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    async fn publish_space_loop(self: Rc<Self>) {
        loop {
            for (id, disk) in &self.stores {
                if let Some(slot) = self.directory.disk(*id) {
                    slot.publish_space(&*disk.store);
                }
                disk.metrics.publish_space(&*disk.store);
            }
            let tick = ioengine::time::sleep(SPACE_PUBLISH_INTERVAL);
            if let sync::Either::Right(()) = sync::race(tick, self.stopping.wait()).await {
                return;
            }
        }
    }

    /// Forgets this core's server without serving (the daemon stopped during start-up).
    pub fn unregister(&self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    async fn connections_closed(&self) {
        std::future::poll_fn(|cx| {
            if self.live_connections.get() == 0 {
                return std::task::Poll::Ready(());
            }
            *self.connections_gone.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await;
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        let mut last_error_log: Option<std::time::Instant> = None;
        loop {
            let accepted = match sync::race(listener.accept(), self.stopping.wait()).await {
                sync::Either::Left(accepted) => accepted,
                sync::Either::Right(()) => return,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: log once a second, back off.
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(core = self.index, error = %err, "accept failed");
                        last_error_log = Some(std::time::Instant::now());
                    }
                    let _ = ioengine::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let count = self.directory.connections.fetch_add(1, Ordering::SeqCst) + 1;
            if count > self.settings.max_connections {
                self.directory.connections.fetch_sub(1, Ordering::SeqCst);
                self.metrics.refused.increment(1);
                ioengine::spawn(conn::refuse(stream, self.settings.max_connections)).detach();
                continue;
            }
            let id = self.next_connection.get();
            self.next_connection.set(id + 1);
            let conn = conn::Conn::new(id, stream, self.clone());
            self.connections.borrow_mut().insert(id, conn.clone());
            self.live_connections.set(self.live_connections.get() + 1);
            self.metrics.connections.increment(1.0);
            let server = self.clone();
            ioengine::spawn(async move {
                conn.run().await;
                server.connections.borrow_mut().remove(&id);
                server.directory.connections.fetch_sub(1, Ordering::SeqCst);
                server.live_connections.set(server.live_connections.get() - 1);
                server.metrics.connections.decrement(1.0);
                if server.live_connections.get() == 0 {
                    if let Some(waker) = server.connections_gone.borrow_mut().take() {
                        waker.wake();
                    }
                }
            })
            .detach();
        }
    }

    fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The `disk` metric label of a disk id a client sent (bounded: ids this node does not
    /// have share one label).
    fn disk_label(&self, id: u16) -> String {
        match self.directory.disk(id) {
            Some(_) => id.to_string(),
            None => crate::metrics::DISK_UNKNOWN.to_string(),
        }
    }
}
