//! The systemd notification protocol (sd_notify(3)), for `Type=notify` units: datagrams of
//! `KEY=VALUE` lines sent to the unix socket named by `NOTIFY_SOCKET` (a path, or an abstract
//! socket written with a leading `@`). `READY=1` when every disk is recovered and the listeners
//! are up, `STATUS=` lines while starting and stopping, `WATCHDOG=1` pings (see
//! [`Watchdog`]), `STOPPING=1` on shutdown, `EXTEND_TIMEOUT_USEC=` while a long recovery runs.
//! Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends notifications to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, and the watchdog interval of `WATCHDOG_USEC`
    /// (when `WATCHDOG_PID` is unset or this process). A socket that cannot be used is an
    /// error: a unit that waits for READY=1 would otherwise time out with no explanation.
    pub fn from_env() -> anyhow::Result<Notifier> {
        let watchdog = watchdog_from_env();
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(Notifier { socket: None, watchdog });
        };
        let path = path.to_string_lossy().into_owned();
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path)
        }
        .map_err(|err| anyhow::anyhow!("NOTIFY_SOCKET={path} is not a usable address: {err}"))?;
        let socket = UnixDatagram::unbound()
            .map_err(|err| anyhow::anyhow!("cannot create a socket for NOTIFY_SOCKET: {err}"))?;
        Ok(Notifier { socket: Some((socket, addr)), watchdog })
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval systemd expects pings within, if it set one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `message` (lines of `KEY=VALUE`). Failures are logged, never fatal: the daemon
    /// serves whether or not the manager hears it.
    pub fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.socket else { return };
        if let Err(err) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::warn!(error = %err, message, "cannot notify the service manager");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A `STATUS=` line.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// Asks for more time to start or stop (`EXTEND_TIMEOUT_USEC`).
    pub fn extend_timeout(&self, by: Duration) {
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }
}

/// Status text on one line (a newline would start another field).
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Liveness of the data-plane cores, for the systemd watchdog. Each core bumps its own counter
/// from a task on its executor ([`Heartbeats::beat`]); the watchdog thread pings systemd only
/// while every core's counter moved since the last check. A core whose executor is stuck (a
/// task that blocks its thread, a wedged ring) stops the pings, and systemd restarts the
/// service after `WatchdogSec`.
#[derive(Debug)]
pub struct Heartbeats {
    beats: Vec<AtomicU64>,
}

impl Heartbeats {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Arc<Heartbeats> {
        Arc::new(Heartbeats { beats: (0..cores).map(|_| AtomicU64::new(0)).collect() })
    }

    /// Core `core` made progress.
    pub fn beat(&self, core: usize) {
        if let Some(beat) = self.beats.get(core) {
            beat.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.beats.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// How often each core beats, for a watchdog `interval` (systemd's `WatchdogSec`): four beats
/// per ping period, so a ping is never missed for a core that is merely busy.
pub fn beat_period(interval: Duration) -> Duration {
    (interval / 8).max(Duration::from_millis(10))
}

/// The watchdog thread: every half interval, pings if every core beat since the last check.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging through `notifier` every `interval / 2` while all cores beat.
    pub fn start(
        notifier: Arc<Notifier>,
        heartbeats: Arc<Heartbeats>,
        interval: Duration,
    ) -> Watchdog {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let period = interval / 2;
                let mut last = heartbeats.snapshot();
                let mut stuck_since: Option<Instant> = None;
                loop {
                    let (lock, cvar) = &*stopped;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = cvar
                        .wait_timeout_while(guard, period, |stop| !*stop)
                        .unwrap_or_else(|p| p.into_inner());
                    if *guard {
                        return;
                    }
                    drop(guard);
                    let now = heartbeats.snapshot();
                    let stuck: Vec<usize> =
                        (0..now.len()).filter(|&core| now[core] == last[core]).collect();
                    if stuck.is_empty() {
                        notifier.send("WATCHDOG=1");
                        stuck_since = None;
                    } else {
                        let since = *stuck_since.get_or_insert_with(Instant::now);
                        tracing::error!(cores = ?stuck, for_ms = since.elapsed().as_millis() as u64, "cores made no progress; not pinging the watchdog");
                    }
                    last = now;
                }
            })
            .ok();
        Watchdog { stop, thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cvar.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn messages_reach_a_real_datagram_socket_and_abstract_names_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let notifier =
            Notifier { socket: Some((UnixDatagram::unbound().unwrap(), addr)), watchdog: None };
        notifier.ready("serving 2 disks\non 2 cores");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving 2 disks on 2 cores");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("shingle-notify-test-{}", std::process::id());
        let abstract_addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let notifier = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), abstract_addr)),
            watchdog: None,
        };
        notifier.stopping("stopping");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn the_watchdog_pings_only_while_every_core_beats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        let addr = std::os::unix::net::SocketAddr::from_pathname(&path).unwrap();
        let notifier = Arc::new(Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), addr)),
            watchdog: Some(Duration::from_millis(100)),
        });
        let heartbeats = Heartbeats::new(2);
        let beating = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (h, b) = (heartbeats.clone(), beating.clone());
        let beater = std::thread::spawn(move || {
            for _ in 0..400 {
                h.beat(0);
                if b.load(Ordering::SeqCst) {
                    h.beat(1);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let watchdog = Watchdog::start(notifier, heartbeats, Duration::from_millis(100));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        // Core 1 wedges: the pings stop.
        beating.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        listener.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        while listener.recv(&mut buf).is_ok() {}
        listener.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        assert!(listener.recv(&mut buf).is_err(), "no ping while a core is stuck");
        drop(watchdog);
        beater.join().unwrap();
    }
}
