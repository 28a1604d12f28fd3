//! The scrape endpoint: `GET /metrics` over a minimal HTTP/1.1 server on one std thread of its
//! own, so neither a second async runtime nor TLS comes into the daemon and a scrape never runs
//! on a data-plane core. One connection at a time: the request head is read with a size cap
//! ([`REQUEST_BYTES_MAX`]) and a deadline ([`REQUEST_TIMEOUT`]), answered (200 with the text
//! exposition format for `/metrics`, 404 for other paths, 405 for other methods) and closed.
//!
//! The listener is non-blocking and polled every [`ACCEPT_POLL_INTERVAL`]: the same thread runs
//! the exporter's upkeep every [`super::UPKEEP_INTERVAL`] (std has no accept with a timeout,
//! and the daemon has no unsafe code to set one), and notices [`MetricsServer::stop`].

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{PrometheusHandle, UPKEEP_INTERVAL};

/// Bytes of a request head (request line and headers) read at most; a longer one is answered
/// 431 and closed.
pub const REQUEST_BYTES_MAX: usize = 8 << 10;
/// A request head must arrive within this, and the answer be taken within it again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After a 431, bytes of the rest of the request taken and dropped at most ...
const DISCARD_BYTES_MAX: usize = 64 << 10;
/// ... and for at most this long.
const DISCARD_TIME_MAX: Duration = Duration::from_millis(500);
/// How often the idle listener is polled (the most a scrape waits before it is accepted).
pub const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running scrape endpoint. Dropping it (or [`MetricsServer::stop`]) ends its thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the bound port when `metrics.listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread (at most one poll interval, or the scrape it is
    /// answering).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the metrics thread panicked");
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Binds `addr` (`[metrics] listen`) and answers scrapes from `handle` on a thread of its own.
pub fn serve(addr: SocketAddr, handle: PrometheusHandle) -> anyhow::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).with_context(|| {
        format!(
            "cannot listen on metrics.listen = {addr} (another process may hold the port; \
             pick a free one in [metrics] listen)"
        )
    })?;
    listener.set_nonblocking(true).context("metrics.listen: making the listener non-blocking")?;
    let local = listener.local_addr().context("metrics.listen: reading the bound address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("shingle-metrics".into())
        .spawn(move || {
            // SIGINT/SIGTERM are for main's signal wait, whenever this thread was started.
            if let Err(err) = ioengine::sys::block_signals(&ioengine::sys::TERMINATION_SIGNALS) {
                tracing::warn!(error = %err, "metrics thread: cannot block SIGINT/SIGTERM");
            }
            accept_loop(&listener, &handle, &thread_stop)
        })
        .context("starting the metrics thread")?;
    tracing::info!(%local, "metrics at http://{local}/metrics");
    Ok(MetricsServer { addr: local, stop, thread: Some(thread) })
}

fn accept_loop(listener: &TcpListener, handle: &PrometheusHandle, stop: &AtomicBool) {
    let mut last_upkeep = Instant::now();
    let mut last_error_log: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(err) = answer(stream, handle) {
                    tracing::debug!(%peer, error = %err, "metrics request failed");
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL_INTERVAL);
            }
            Err(err) => {
                // Out of file descriptors and the like: log once a minute, back off.
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %err, "metrics accept failed");
                    last_error_log = Some(Instant::now());
                }
                std::thread::sleep(ACCEPT_POLL_INTERVAL);
            }
        }
        if last_upkeep.elapsed() >= UPKEEP_INTERVAL {
            handle.run_upkeep();
            last_upkeep = Instant::now();
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    /// GET or HEAD of /metrics (`true`: HEAD, no body).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    BadMethod,
    /// Not an HTTP/1.x request line.
    Malformed,
}

/// Parses a request line (`GET /metrics HTTP/1.1`).
fn parse_request_line(line: &str) -> Asked {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Malformed;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Asked::Malformed;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Asked::BadMethod,
    };
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path == "/metrics" { Asked::Metrics { head } } else { Asked::NotFound }
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let head = match read_head(&mut stream, deadline)? {
        Some(head) => head,
        None => {
            let response = response("431 Request Header Fields Too Large", "", b"too long\n");
            send(&mut stream, &response)?;
            discard_rest(&mut stream);
            return Ok(());
        }
    };
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let response = match parse_request_line(line.trim_end_matches('\r')) {
        Asked::Metrics { head } => {
            let body = handle.render();
            let mut out = response("200 OK", "", body.as_bytes());
            if head {
                out.truncate(out.len() - body.len());
            }
            out
        }
        Asked::NotFound => response("404 Not Found", "", b"not found; try /metrics\n"),
        Asked::BadMethod => {
            response("405 Method Not Allowed", "Allow: GET, HEAD\r\n", b"GET /metrics\n")
        }
        Asked::Malformed => response("400 Bad Request", "", b"not an HTTP/1.x request\n"),
    };
    send(&mut stream, &response)
}

/// Reads until the end of the request head (a blank line). `None`: longer than
/// [`REQUEST_BYTES_MAX`]. The head is read whole so that closing the socket after the answer
/// does not reset the connection under unread bytes.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > REQUEST_BYTES_MAX {
            return Ok(None);
        }
    }
}

fn response(status: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn send(stream: &mut TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream.write_all(response)?;
    stream.flush()?;
    stream.shutdown(Shutdown::Write)
}

/// After answering a request that was not read whole: takes what the client still sends (up
/// to [`DISCARD_BYTES_MAX`], for at most [`DISCARD_TIME_MAX`]) so that closing does not reset
/// the connection before the client has read the answer.
fn discard_rest(stream: &mut TcpStream) {
    let deadline = Instant::now() + DISCARD_TIME_MAX;
    let mut chunk = [0u8; 4096];
    let mut discarded = 0;
    while discarded < DISCARD_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(parse_request_line("GET /metrics HTTP/1.1"), Asked::Metrics { head: false });
        assert_eq!(parse_request_line("HEAD /metrics HTTP/1.0"), Asked::Metrics { head: true });
        assert_eq!(parse_request_line("GET /metrics?x=1 HTTP/1.1"), Asked::Metrics { head: false });
        assert_eq!(parse_request_line("GET / HTTP/1.1"), Asked::NotFound);
        assert_eq!(parse_request_line("GET /metricsx HTTP/1.1"), Asked::NotFound);
        assert_eq!(parse_request_line("POST /metrics HTTP/1.1"), Asked::BadMethod);
        assert_eq!(parse_request_line("GET /metrics"), Asked::Malformed);
        assert_eq!(parse_request_line("GET /metrics SPDY/3"), Asked::Malformed);
        assert_eq!(parse_request_line("GET  /metrics HTTP/1.1"), Asked::Malformed);
        assert_eq!(parse_request_line(""), Asked::Malformed);
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_404_405_431_and_stops() {
        let recorder = super::super::local_recorder().unwrap();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            ::metrics::counter!("shingle_test_total").increment(3);
        });
        let server = serve("127.0.0.1:0".parse().unwrap(), handle).unwrap();
        let addr = server.local_addr();
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("Connection: close"));
        assert!(ok.contains("shingle_test_total 3"));
        let head = get(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(get(addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get(addr, b"PUT /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        assert!(get(addr, b"hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
        let long = vec![b'a'; REQUEST_BYTES_MAX + 2048];
        assert!(get(addr, &long).starts_with("HTTP/1.1 431 "));
        // A client that sends nothing does not keep the next one waiting past the timeout.
        let _silent = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        assert!(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        assert!(started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2));
        server.stop();
        assert!(TcpStream::connect(addr).is_err(), "the port is released after stop");
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_field() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let recorder = super::super::local_recorder().unwrap();
        let err = serve(taken.local_addr().unwrap(), recorder.handle()).unwrap_err();
        assert!(format!("{err:#}").contains("metrics.listen"), "{err:#}");
    }
}
