//! `shingle`: the command-line client of a shingle node, built on `proto::client`. One command
//! per protocol operation; keys are 64 hex digits; failures print one line on stderr, starting
//! with `shingle: `, and exit with status 1 (usage errors exit with status 2).
//!
//! ```text
//! shingle [--server HOST:PORT] [--secret-file FILE] [--timeout-ms N] <command>
//!
//!   --server HOST:PORT   the node's main address (default 127.0.0.1:7700, env SHINGLE_SERVER)
//!   --secret-file FILE   shared secret, for nodes that require authentication
//!                        (env SHINGLE_SECRET_FILE)
//!   --timeout-ms N       request timeout in milliseconds (default 30000)
//!
//!   put [--disk N] [--key HEX] FILE|-        store FILE (or stdin) and print its key: by
//!                                            default the SHA-256 of the content; by default
//!                                            on the lowest-numbered active disk
//!   get KEY [--disk N] [--range OFFSET:LENGTH] [-o FILE|-]
//!                                            write the value (or a range) to stdout or FILE;
//!                                            without --disk, find the disk that holds KEY
//!   delete KEY [--disk N]                    delete KEY (found as for get)
//!   stat KEY [--disk N]                      print disk, length, crc32c and sequence number
//!   list --disk N [--limit N]                print the disk's keys, one per line
//!   status                                   print state, space and counters of every disk
//! ```
//!
//! Examples:
//!
//! ```text
//! key=$(shingle put photo.jpg)
//! shingle get "$key" -o copy.jpg
//! shingle --server node7:7700 --secret-file /etc/shingle/secret status
//! ```

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use proto::auth::Secret;
use proto::client::{Client, ClientError, ClientOptions, key_hex};
use proto::messages::{ByteRange, DiskState, PutOutcome};
use proto::wire::{KEY_BYTES, Key, LIST_KEYS_MAX, Status};
use sha2::{Digest as _, Sha256};

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "shingle", version, about = "Command-line client of a shingle storage node")]
struct Cli {
    /// The node's main address.
    #[arg(
        long,
        env = "SHINGLE_SERVER",
        default_value = "127.0.0.1:7700",
        value_name = "HOST:PORT"
    )]
    server: String,
    /// File holding the shared secret, for nodes that require authentication.
    #[arg(long, env = "SHINGLE_SECRET_FILE", value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Request timeout in milliseconds [default: 30000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a file (or stdin) and print its key.
    Put {
        /// Disk to store on [default: the lowest-numbered active disk].
        #[arg(long)]
        disk: Option<u16>,
        /// Key to store under (64 hex digits) [default: the SHA-256 of the content].
        #[arg(long, value_name = "HEX", value_parser = parse_key)]
        key: Option<Key>,
        /// File to store, or - for stdin.
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
    },
    /// Write a value (or a range of it) to stdout or a file.
    Get {
        /// The key (64 hex digits).
        #[arg(value_parser = parse_key)]
        key: Key,
        /// Disk to read from [default: the disk that holds the key].
        #[arg(long)]
        disk: Option<u16>,
        /// Bytes to read instead of the whole value.
        #[arg(long, value_name = "OFFSET:LENGTH", value_parser = parse_range)]
        range: Option<ByteRange>,
        /// Output file, or - for stdout [default: stdout].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a key.
    Delete {
        /// The key (64 hex digits).
        #[arg(value_parser = parse_key)]
        key: Key,
        /// Disk to delete from [default: the disk that holds the key].
        #[arg(long)]
        disk: Option<u16>,
    },
    /// Print a key's disk, length, crc32c and sequence number.
    Stat {
        /// The key (64 hex digits).
        #[arg(value_parser = parse_key)]
        key: Key,
        /// Disk to ask [default: every disk until one holds the key].
        #[arg(long)]
        disk: Option<u16>,
    },
    /// Print a disk's keys, one per line.
    List {
        /// The disk.
        #[arg(long)]
        disk: u16,
        /// Print at most this many keys [default: all].
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Print the state, space and counters of every disk.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context, then its causes.
            eprintln!("shingle: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = connect(&cli)?;
    match cli.command {
        Command::Put { disk, key, file } => put(&client, disk, key, &file),
        Command::Get { key, disk, range, output } => get(&client, &key, disk, range, output),
        Command::Delete { key, disk } => {
            let disk = match disk {
                Some(disk) => disk,
                None => find_disk(&client, &key)?,
            };
            client.delete(disk, &key).map_err(|err| explain(err, &key, disk))
        }
        Command::Stat { key, disk } => stat(&client, &key, disk),
        Command::List { disk, limit } => list(&client, disk, limit),
        Command::Status => status(&client),
    }
}

fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let mut options = ClientOptions::default();
    if let Some(path) = &cli.secret_file {
        options.secret = Some(Arc::new(Secret::read_file(path)?));
    }
    if let Some(timeout_ms) = cli.timeout_ms {
        options.request_timeout = Duration::from_millis(timeout_ms);
        options.connect_timeout = options.connect_timeout.min(options.request_timeout);
    }
    // The client's errors name the address.
    Ok(Client::connect(cli.server.as_str(), options)?)
}

fn put(client: &Client, disk: Option<u16>, key: Option<Key>, file: &Path) -> anyhow::Result<()> {
    let value_bytes_max = client.hello().value_bytes_max;
    let value = read_value(file, value_bytes_max)?;
    let key = key.unwrap_or_else(|| Sha256::digest(&value).into());
    let disk = match disk {
        Some(disk) => disk,
        None => client
            .disks()
            .iter()
            .find(|disk| disk.state == DiskState::Active)
            .map(|disk| disk.disk_id)
            .context("the node has no active disk; choose one with --disk")?,
    };
    let outcome = client
        .put(disk, &key, &value)
        .with_context(|| format!("storing {} bytes on disk {disk}", value.len()))?;
    if outcome == PutOutcome::AlreadyStored {
        eprintln!("already stored on disk {disk}");
    }
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", key_hex(&key)).and_then(|()| stdout.flush()).context("writing to stdout")
}

/// The value to store: the whole file (or stdin, for `-`), 1..=`value_bytes_max` bytes.
fn read_value(file: &Path, value_bytes_max: u32) -> anyhow::Result<Vec<u8>> {
    let max = u64::from(value_bytes_max);
    let too_large = || anyhow!("the value is larger than the node's limit of {max} bytes");
    let (what, mut input): (String, Box<dyn Read>) = if file == Path::new("-") {
        ("stdin".into(), Box::new(io::stdin().lock()))
    } else {
        let what = file.display().to_string();
        let opened = File::open(file).with_context(|| format!("opening {what}"))?;
        let metadata = opened.metadata().with_context(|| format!("reading {what}"))?;
        // Refused before reading; pipes and devices are bounded while they are read.
        if metadata.is_file() && metadata.len() > max {
            return Err(too_large().context(format!("{what} has {} bytes", metadata.len())));
        }
        (what, Box::new(opened))
    };
    let mut value = Vec::new();
    // One byte past the limit tells a value over it from one at it.
    input
        .by_ref()
        .take(max + 1)
        .read_to_end(&mut value)
        .with_context(|| format!("reading {what}"))?;
    if value.len() as u64 > max {
        return Err(too_large().context(format!("reading {what}")));
    }
    if value.is_empty() {
        bail!("{what} is empty; a value has at least 1 byte");
    }
    Ok(value)
}

fn get(
    client: &Client,
    key: &Key,
    disk: Option<u16>,
    range: Option<ByteRange>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let disk = match disk {
        Some(disk) => disk,
        None => find_disk(client, key)?,
    };
    let result = client.get(disk, key, range).map_err(|err| explain(err, key, disk))?;
    // Opened only once the value is in hand, so a failed GET leaves an existing file alone.
    match output.filter(|path| path != Path::new("-")) {
        Some(path) => {
            let what = || format!("writing {}", path.display());
            let mut file = File::create(&path).with_context(what)?;
            file.write_all(&result.data).and_then(|()| file.flush()).with_context(what)
        }
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&result.data)
                .and_then(|()| stdout.flush())
                .context("writing to stdout")
        }
    }
}

fn stat(client: &Client, key: &Key, disk: Option<u16>) -> anyhow::Result<()> {
    let disks: Vec<u16> = match disk {
        Some(disk) => vec![disk],
        None => client.disks().iter().map(|disk| disk.disk_id).collect(),
    };
    let mut first_error = None;
    for disk in disks.iter().copied() {
        match client.stat(disk, key) {
            Ok(stat) => {
                let mut stdout = io::stdout().lock();
                return writeln!(
                    stdout,
                    "disk={disk} length={} crc32c={:08x} seq={}",
                    stat.value_len, stat.value_crc32c, stat.seq
                )
                .and_then(|()| stdout.flush())
                .context("writing to stdout");
            }
            Err(err) if err.status() == Some(Status::NotFound) && disks.len() > 1 => {}
            Err(err) if disks.len() > 1 => {
                first_error.get_or_insert_with(|| explain(err, key, disk));
            }
            Err(err) => return Err(explain(err, key, disk)),
        }
    }
    Err(not_found_anywhere(key, first_error))
}

/// The disk that holds `key`: the first whose EXISTS says so.
fn find_disk(client: &Client, key: &Key) -> anyhow::Result<u16> {
    let mut first_error = None;
    for disk in client.disks() {
        match client.exists(disk.disk_id, key) {
            Ok(true) => return Ok(disk.disk_id),
            Ok(false) => {}
            Err(err) => {
                first_error.get_or_insert_with(|| explain(err, key, disk.disk_id));
            }
        }
    }
    Err(not_found_anywhere(key, first_error))
}

fn not_found_anywhere(key: &Key, first_error: Option<anyhow::Error>) -> anyhow::Error {
    let hex = key_hex(key);
    match first_error {
        None => anyhow!("key {hex} not found on any disk"),
        Some(err) => anyhow!("key {hex} not found on any disk that answered ({err:#})"),
    }
}

/// A client error for one key on one disk, in the words of the command line.
fn explain(err: ClientError, key: &Key, disk: u16) -> anyhow::Error {
    match err {
        _ if err.status() == Some(Status::NotFound) => {
            anyhow!("key {} not found on disk {disk}", key_hex(key))
        }
        ClientError::NoSuchDisk(_) => err.into(),
        _ => anyhow::Error::new(err).context(format!("disk {disk}")),
    }
}

fn list(client: &Client, disk: u16, limit: Option<u64>) -> anyhow::Result<()> {
    let mut left = limit.unwrap_or(u64::MAX);
    let mut cursor = None;
    let mut out = BufWriter::new(io::stdout().lock());
    while left > 0 {
        let keys_max = left.min(u64::from(LIST_KEYS_MAX)) as u32;
        let page =
            client.list(disk, cursor, keys_max).with_context(|| format!("listing disk {disk}"))?;
        for key in page.keys.iter().take(usize::try_from(left).unwrap_or(usize::MAX)) {
            writeln!(out, "{}", key_hex(key)).context("writing to stdout")?;
            left -= 1;
        }
        match page.next {
            None => break,
            // A cursor that does not move would list forever.
            Some(next) if Some(next) == cursor => {
                bail!("listing disk {disk}: the node returned the same cursor twice")
            }
            Some(next) => cursor = Some(next),
        }
    }
    out.flush().context("writing to stdout")
}

fn status(client: &Client) -> anyhow::Result<()> {
    let disks = client.disk_status(None).context("asking for the disks' status")?;
    let mut out = BufWriter::new(io::stdout().lock());
    writeln!(
        out,
        "{:>5} {:<9} {:>5} {:>5} {:>16} {:>16} {:>12} {:>16} {:>15}",
        "disk",
        "state",
        "shard",
        "port",
        "capacity_bytes",
        "free_bytes",
        "live_keys",
        "live_bytes",
        "checksum_errors"
    )
    .context("writing to stdout")?;
    for disk in &disks {
        let info = &disk.info;
        writeln!(
            out,
            "{:>5} {:<9} {:>5} {:>5} {:>16} {:>16} {:>12} {:>16} {:>15}",
            info.disk_id,
            state_name(info.state),
            info.shard,
            info.shard_port,
            info.capacity_bytes,
            info.free_bytes,
            disk.live_keys,
            disk.live_value_bytes,
            disk.checksum_errors
        )
        .context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")
}

fn state_name(state: DiskState) -> &'static str {
    match state {
        DiskState::Active => "active",
        DiskState::ReadOnly => "read-only",
        DiskState::Draining => "draining",
        DiskState::Retired => "retired",
        DiskState::Failed => "failed",
    }
}

/// A key: exactly 64 hex digits (either case).
fn parse_key(text: &str) -> Result<Key, String> {
    let digits = 2 * KEY_BYTES;
    if text.len() != digits {
        return Err(format!(
            "a key is exactly {digits} hex digits; this has {} characters",
            text.chars().count()
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("a key is exactly {digits} hex digits; {text:?} has other characters"));
    }
    let mut key = [0u8; KEY_BYTES];
    for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = (hex_digit(pair[0]) << 4) | hex_digit(pair[1]);
    }
    Ok(key)
}

/// The value of an ASCII hex digit (checked by the caller).
fn hex_digit(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.to_ascii_lowercase() - b'a' + 10,
    }
}

/// `OFFSET:LENGTH`, both in bytes, LENGTH at least 1.
fn parse_range(text: &str) -> Result<ByteRange, String> {
    let usage = || format!("expected OFFSET:LENGTH in bytes, e.g. 0:4096; got {text:?}");
    let (offset, len) = text.split_once(':').ok_or_else(usage)?;
    let offset = offset.parse().map_err(|_| usage())?;
    let len: u32 = len.parse().map_err(|_| usage())?;
    if len == 0 {
        return Err("the range's LENGTH must be at least 1".into());
    }
    Ok(ByteRange { offset, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_64_hex_digits() {
        let hex = "00ff".repeat(16);
        let key = parse_key(&hex).unwrap();
        assert_eq!(key[..2], [0x00, 0xff]);
        assert_eq!(parse_key(&hex.to_uppercase()).unwrap(), key);
        assert!(parse_key(&hex[..62]).unwrap_err().contains("62 characters"));
        assert!(parse_key(&format!("{}zz", &hex[..62])).unwrap_err().contains("other characters"));
        assert!(parse_key(&format!("{}+1", &hex[..62])).is_err(), "from_str_radix takes signs");
        // Multi-byte characters that make 64 bytes are not 64 digits.
        assert!(parse_key(&format!("é{}", &hex[..62])).is_err());
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("10:20").unwrap(), ByteRange { offset: 10, len: 20 });
        assert!(parse_range("10:0").is_err());
        assert!(parse_range("10").is_err());
        assert!(parse_range("-1:5").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
