//! Thread per core: starts one pinned thread per configured CPU, each with its own ring and
//! executor ([`Core`]), hands every core the handles of all the others, and runs the same
//! main future on each. Startup fails as a whole, with the first core's error, if any core
//! cannot pin itself or set up its ring.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::error::{Error, OpKind, Result};
use crate::executor::{Core, CoreHandle};
use crate::reactor::RING_ENTRIES_DEFAULT;

/// How to start the cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// One core per entry: the CPU it is pinned to. Empty: one per CPU this process may use.
    pub cpus: Vec<usize>,
    /// Pin each core's thread to its CPU (sched_setaffinity). Off only for tests that run
    /// more cores than CPUs.
    pub pin: bool,
    /// Submission-queue entries per ring.
    pub ring_entries: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cpus: Vec::new(), pin: true, ring_entries: RING_ENTRIES_DEFAULT }
    }
}

/// What a core's main future is told about its place.
#[derive(Debug, Clone)]
pub struct CoreInfo {
    /// Index of this core (0..cores).
    pub index: usize,
    /// CPU the core is pinned to, if pinned.
    pub cpu: Option<usize>,
    /// Handles of every core, this one included, by index.
    pub cores: Arc<[CoreHandle]>,
}

/// The running cores.
#[derive(Debug)]
pub struct Runtime {
    handles: Arc<[CoreHandle]>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts the cores and runs `main(info)` on each until it returns.
    pub fn start<F, Fut>(config: RuntimeConfig, main: F) -> Result<Runtime>
    where
        F: Fn(CoreInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = if config.cpus.is_empty() {
            crate::sys::allowed_cpus().map_err(|e| Error::from_io(OpKind::Affinity, 0, &e))?
        } else {
            config.cpus.clone()
        };
        let main = Arc::new(main);
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<CoreHandle>)>();
        let mut go_txs = Vec::with_capacity(cpus.len());
        let mut threads = Vec::with_capacity(cpus.len());
        for (index, &cpu) in cpus.iter().enumerate() {
            let (go_tx, go_rx) = mpsc::channel::<Option<Arc<[CoreHandle]>>>();
            go_txs.push(go_tx);
            let ready_tx = ready_tx.clone();
            let main = main.clone();
            let pin = config.pin;
            let ring_entries = config.ring_entries;
            let thread = std::thread::Builder::new()
                .name(format!("shingle-core-{index}"))
                .spawn(move || {
                    let core = match start_core(pin.then_some(cpu), ring_entries) {
                        Ok(core) => core,
                        Err(err) => {
                            let _ = ready_tx.send((index, Err(err)));
                            return;
                        }
                    };
                    if ready_tx.send((index, Ok(core.handle()))).is_err() {
                        return;
                    }
                    drop(ready_tx);
                    let Ok(Some(cores)) = go_rx.recv() else { return };
                    let info = CoreInfo { index, cpu: pin.then_some(cpu), cores };
                    core.block_on(main(info));
                })
                .map_err(|e| Error::from_io(OpKind::Affinity, 0, &e))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut handles: Vec<Option<CoreHandle>> = vec![None; cpus.len()];
        let mut first_error = None;
        for (index, result) in ready_rx.iter() {
            match result {
                Ok(handle) => handles[index] = Some(handle),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            for go in &go_txs {
                let _ = go.send(None);
            }
            for thread in threads {
                let _ = thread.join();
            }
            return Err(err);
        }
        let handles: Arc<[CoreHandle]> =
            handles.into_iter().map(|h| h.expect("every core reported")).collect();
        for go in &go_txs {
            let _ = go.send(Some(handles.clone()));
        }
        Ok(Runtime { handles, threads })
    }

    /// Handles of the cores, by index.
    pub fn cores(&self) -> &Arc<[CoreHandle]> {
        &self.handles
    }

    /// Waits until every core's main future has returned. A core that panicked is reported.
    pub fn join(self) -> std::thread::Result<()> {
        let mut outcome = Ok(());
        for thread in self.threads {
            if let Err(panic) = thread.join() {
                outcome = Err(panic);
            }
        }
        outcome
    }
}

fn start_core(cpu: Option<usize>, ring_entries: u32) -> Result<Core> {
    if let Some(cpu) = cpu {
        crate::sys::pin_current_thread(cpu).map_err(|e| Error::from_io(OpKind::Affinity, 0, &e))?;
    }
    Core::new(ring_entries)
}
