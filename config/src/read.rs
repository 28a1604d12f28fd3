//! Reading a TOML document into a [`Config`]: syntax, unknown keys, types, and values that do
//! not fit their field. Every problem is collected (with its field path, the value as written
//! and its line) instead of stopping at the first; a field that cannot be read takes its
//! default and is marked bad, so the checker can go on without reporting it twice. The TOML is
//! walked key by key (rather than through `#[serde(deny_unknown_fields)]` structs) because
//! serde stops at the first unknown or mistyped field, and because the spans give lines.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{Problem, ProblemKind};
use crate::rules::{self, IntRule};
use crate::schema::*;
use crate::size::ByteSize;

/// Longest value text quoted in a problem.
const SHOWN_VALUE_CHARS_MAX: usize = 60;

/// What the reader learned about fields, for the checker.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Field path → line and value text as written.
    pub(crate) written: HashMap<String, Written>,
    /// Fields already reported (their value in the config is a stand-in).
    pub(crate) bad: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) line: u32,
    pub(crate) text: String,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// One table being read: its path and the keys asked for (the accepted keys).
struct Section<'t, 'i> {
    path: String,
    table: Option<&'t DeTable<'i>>,
    accepted: Vec<&'static str>,
}

impl Section<'_, '_> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }
}

struct Reader<'i> {
    text: &'i str,
    line_starts: Vec<usize>,
    base_dir: Option<&'i Path>,
    problems: Vec<Problem>,
    notes: Notes,
}

/// Reads `text`. Relative paths are joined to `base_dir` when given. Returns the config (with
/// stand-ins for what could not be read; `None` on a syntax error), the problems, and notes.
pub(crate) fn read<'i>(
    text: &'i str,
    base_dir: Option<&'i Path>,
) -> (Option<Config>, Vec<Problem>, Notes) {
    let mut reader = Reader {
        text,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        base_dir,
        problems: Vec::new(),
        notes: Notes::default(),
    };
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            let line = error.span().map(|span| reader.line(span.start));
            let kind = ProblemKind::Syntax { message: error.message().trim().to_owned() };
            reader.problems.push(Problem { field: String::new(), value: None, line, kind });
        }
        return (None, reader.problems, reader.notes);
    }
    let mut root = Section { path: String::new(), table: Some(doc.get_ref()), accepted: vec![] };
    let config = reader.config(&mut root);
    reader.finish(root);
    (Some(config), reader.problems, reader.notes)
}

impl<'i> Reader<'i> {
    fn config(&mut self, root: &mut Section<'_, 'i>) -> Config {
        let mut section = self.section(root, "server");
        let (mut server, max_frame_bytes, max_in_flight_bytes) = self.server(&mut section);
        self.finish(section);
        let mut section = self.section(root, "metrics");
        let metrics = MetricsConfig {
            listen: self.addr(&mut section, "listen").unwrap_or(METRICS_LISTEN_DEFAULT),
        };
        self.finish(section);
        let mut section = self.section(root, "runtime");
        let runtime = self.runtime(&mut section);
        self.finish(section);
        let mut section = self.section(root, "store");
        let store = self.store(&mut section);
        self.finish(section);
        let mut section = self.section(root, "log");
        let log = self.log(&mut section);
        self.finish(section);
        let disks = self.disks(root, &store);
        // The frame limit's default follows the value cap, the in-flight budget's the frame's.
        server.max_frame_bytes =
            max_frame_bytes.unwrap_or(default_max_frame_bytes(store.value_bytes_max));
        if max_in_flight_bytes.is_none() {
            server.max_in_flight_bytes = server.max_in_flight_bytes.max(server.max_frame_bytes);
        }
        Config { server, metrics, runtime, store, log, disks }
    }

    /// `[server]`, and `max_frame_bytes` and `max_in_flight_bytes` if set (their defaults
    /// depend on `[store]`).
    fn server(
        &mut self,
        s: &mut Section<'_, 'i>,
    ) -> (ServerConfig, Option<ByteSize>, Option<ByteSize>) {
        let d = ServerConfig::default();
        let mut server = ServerConfig {
            listen: self.addr(s, "listen").unwrap_or(d.listen),
            shard_port_base: self
                .int(s, "shard_port_base", rules::SHARD_PORT_BASE)
                .unwrap_or(d.shard_port_base),
            max_connections: self
                .int(s, "max_connections", rules::MAX_CONNECTIONS)
                .unwrap_or(d.max_connections),
            max_in_flight_per_connection: self
                .int(s, "max_in_flight_per_connection", rules::MAX_IN_FLIGHT_PER_CONNECTION)
                .unwrap_or(d.max_in_flight_per_connection),
            max_frame_bytes: d.max_frame_bytes,
            max_in_flight_bytes: d.max_in_flight_bytes,
            idle_timeout_ms: self
                .int(s, "idle_timeout_ms", rules::IDLE_TIMEOUT_MS)
                .unwrap_or(d.idle_timeout_ms),
            read_timeout_ms: self
                .int(s, "read_timeout_ms", rules::READ_TIMEOUT_MS)
                .unwrap_or(d.read_timeout_ms),
            request_timeout_ms: self
                .int(s, "request_timeout_ms", rules::REQUEST_TIMEOUT_MS)
                .unwrap_or(d.request_timeout_ms),
            auth_secret_file: self.path(s, "auth_secret_file"),
        };
        let max_frame_bytes = self.size(s, "max_frame_bytes");
        let max_in_flight_bytes = self.size(s, "max_in_flight_bytes");
        if let Some(bytes) = max_in_flight_bytes {
            server.max_in_flight_bytes = bytes;
        }
        (server, max_frame_bytes, max_in_flight_bytes)
    }

    fn runtime(&mut self, s: &mut Section<'_, 'i>) -> RuntimeConfig {
        let d = RuntimeConfig::default();
        RuntimeConfig {
            cores: self.cores(s).unwrap_or(d.cores),
            ring_entries: self
                .int(s, "ring_entries", rules::RING_ENTRIES)
                .unwrap_or(d.ring_entries),
            pool_buffer_bytes: self.size(s, "pool_buffer_bytes").unwrap_or(d.pool_buffer_bytes),
            pool_buffer_count: self
                .int(s, "pool_buffer_count", rules::POOL_BUFFER_COUNT)
                .unwrap_or(d.pool_buffer_count),
        }
    }

    fn store(&mut self, s: &mut Section<'_, 'i>) -> StoreConfig {
        let d = StoreConfig::default();
        StoreConfig {
            value_bytes_max: self.size(s, "value_bytes_max").unwrap_or(d.value_bytes_max),
            checkpoint_interval: self
                .size(s, "checkpoint_interval")
                .unwrap_or(d.checkpoint_interval),
            sync: self.sync(s).unwrap_or(d.sync),
        }
    }

    fn log(&mut self, s: &mut Section<'_, 'i>) -> LogConfig {
        let d = LogConfig::default();
        let levels = [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ];
        let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
        LogConfig {
            level: self.choice(s, "level", &levels).unwrap_or(d.level),
            format: self.choice(s, "format", &formats).unwrap_or(d.format),
        }
    }

    fn sync(&mut self, s: &mut Section<'_, 'i>) -> Option<SyncMode> {
        self.choice(s, "sync", &[("dsync", SyncMode::Dsync), ("fdatasync", SyncMode::Fdatasync)])
    }

    /// `[[disk]]`: an array of tables.
    fn disks(&mut self, root: &mut Section<'_, 'i>, store: &StoreConfig) -> Vec<DiskConfig> {
        let Some((field, value)) = self.value(root, "disk") else { return Vec::new() };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(&field, value, "an array of tables, written as [[disk]] sections");
            return Vec::new();
        };
        let mut disks = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("disk[{i}]");
            self.note(&path, item, item.span().start);
            let DeValue::Table(table) = item.get_ref() else {
                self.wrong_type(&path, item, "a table, written as a [[disk]] section");
                // The list is not empty, just wrong: no "no disk" problem on top.
                self.notes.bad.insert("disk".to_owned());
                continue;
            };
            let mut section = Section { path, table: Some(table), accepted: Vec::new() };
            disks.push(self.disk(&mut section, store));
            self.finish(section);
        }
        disks
    }

    fn disk(&mut self, s: &mut Section<'_, 'i>, store: &StoreConfig) -> DiskConfig {
        let id = self.int(s, "id", rules::DISK_ID);
        let path = self.path(s, "path");
        for (key, present) in [("id", id.is_some()), ("path", path.is_some())] {
            let field = s.field(key);
            if !present && !self.notes.bad.contains(&field) {
                let hint = match key {
                    "id" => "every disk needs a unique id, e.g. id = 0",
                    _ => {
                        "name the disk's file or device, e.g. path = \"/var/lib/shingle/disk0.img\""
                    }
                };
                let line = self.notes.written.get(&s.path).map(|w| w.line);
                let kind = ProblemKind::Missing { hint: hint.to_owned() };
                self.notes.bad.insert(field.clone());
                self.problems.push(Problem { field, value: None, line, kind });
            }
        }
        let mut disk = DiskConfig::new(id.unwrap_or(u16::MAX), path.unwrap_or_default(), store);
        disk.size = self.size(s, "size");
        disk.zone_size = self.size(s, "zone_size").unwrap_or(disk.zone_size);
        disk.zone_capacity = self.size(s, "zone_capacity").unwrap_or(disk.zone_size);
        if self.notes.bad.contains(&s.field("zone_size")) {
            // A stand-in zone size says nothing about the capacity.
            self.notes.bad.insert(s.field("zone_capacity"));
        }
        disk.max_open_zones = self.int(s, "max_open_zones", rules::OPEN_ZONES).unwrap_or(0);
        disk.max_active_zones = self.int(s, "max_active_zones", rules::OPEN_ZONES).unwrap_or(0);
        disk.core = self.int(s, "core", rules::DISK_CORE);
        disk.checkpoint_interval =
            self.size(s, "checkpoint_interval").unwrap_or(store.checkpoint_interval);
        disk.sync = self.sync(s).unwrap_or(store.sync);
        disk
    }

    /// `runtime.cores`: `"all"` or a list of CPU ids.
    fn cores(&mut self, s: &mut Section<'_, 'i>) -> Option<Cores> {
        let (field, value) = self.value(s, "cores")?;
        let expected = "\"all\" or a list of CPU ids like [0, 1, 2, 3]";
        match value.get_ref() {
            DeValue::String(text) if text == "all" => Some(Cores::All),
            DeValue::String(_) => {
                self.invalid(&field, format!("must be {expected}"));
                None
            }
            DeValue::Array(items) => {
                let mut cpus = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_field = format!("{field}[{i}]");
                    self.note(&item_field, item, item.span().start);
                    cpus.extend(self.int_value::<usize>(&item_field, item, rules::CPU_ID));
                }
                (cpus.len() == items.len()).then_some(Cores::List(cpus))
            }
            _ => {
                self.wrong_type(&field, value, expected);
                None
            }
        }
    }

    // ---- typed fields ----

    fn int<T: TryFrom<i64>>(
        &mut self,
        s: &mut Section<'_, 'i>,
        key: &'static str,
        rule: IntRule,
    ) -> Option<T> {
        let (field, value) = self.value(s, key)?;
        self.int_value(&field, value, rule)
    }

    fn int_value<T: TryFrom<i64>>(
        &mut self,
        field: &str,
        value: &Value<'i>,
        rule: IntRule,
    ) -> Option<T> {
        let DeValue::Integer(_) = value.get_ref() else {
            self.wrong_type(field, value, "an integer");
            return None;
        };
        let parsed = i64::deserialize(ValueDeserializer::from(value.clone())).ok();
        match parsed.filter(|&v| rule.allows(i128::from(v))).and_then(|v| T::try_from(v).ok()) {
            Some(v) => Some(v),
            None => {
                self.invalid(field, rule.message());
                None
            }
        }
    }

    fn size(&mut self, s: &mut Section<'_, 'i>, key: &'static str) -> Option<ByteSize> {
        let (field, value) = self.value(s, key)?;
        let parsed = match value.get_ref() {
            DeValue::String(text) => ByteSize::parse(text).map_err(|e| e.to_string()),
            DeValue::Integer(_) => match i64::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(bytes) => u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| "sizes cannot be negative".to_owned()),
                Err(e) => Err(e.message().to_owned()),
            },
            _ => {
                self.wrong_type(
                    &field,
                    value,
                    "a size like \"256MiB\" or an integer number of bytes",
                );
                return None;
            }
        };
        parsed.map_err(|message| self.invalid(&field, message)).ok()
    }

    fn string(&mut self, s: &mut Section<'_, 'i>, key: &'static str) -> Option<(String, String)> {
        let (field, value) = self.value(s, key)?;
        match value.get_ref() {
            DeValue::String(text) => Some((field, text.to_string())),
            _ => {
                self.wrong_type(&field, value, "a string");
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        s: &mut Section<'_, 'i>,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let (field, text) = self.string(s, key)?;
        if let Some(&(_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(value);
        }
        let names: Vec<String> = choices.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        self.invalid(&field, format!("must be one of {}", names.join(", ")));
        None
    }

    fn addr(&mut self, s: &mut Section<'_, 'i>, key: &'static str) -> Option<SocketAddr> {
        let (field, text) = self.string(s, key)?;
        match text.trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.invalid(
                    &field,
                    "not an IP address and port; write e.g. \"127.0.0.1:7700\", \"0.0.0.0:7700\" \
                     or \"[::1]:7700\" (host names are not resolved)"
                        .to_owned(),
                );
                None
            }
        }
    }

    /// A path; checked for emptiness and NUL bytes here (before it is joined to the base
    /// folder, which would hide an empty one), for the rest by the checker.
    fn path(&mut self, s: &mut Section<'_, 'i>, key: &'static str) -> Option<PathBuf> {
        let (field, text) = self.string(s, key)?;
        if let Some(message) = crate::check::path_text_problem(&text) {
            self.invalid(&field, message);
            return None;
        }
        let path = PathBuf::from(text);
        Some(match self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        })
    }

    // ---- tables and keys ----

    fn section<'t>(&mut self, parent: &mut Section<'t, 'i>, key: &'static str) -> Section<'t, 'i> {
        let field = parent.field(key);
        let table = match self.value(parent, key) {
            Some((_, value)) => match value.get_ref() {
                DeValue::Table(table) => Some(table),
                _ => {
                    self.wrong_type(
                        &field,
                        value,
                        &format!("a table, written as a [{key}] section"),
                    );
                    None
                }
            },
            None => None,
        };
        Section { path: field, table, accepted: Vec::new() }
    }

    /// The value of `key` in `s`, if present, with its field path; notes `key` as accepted.
    fn value<'t>(
        &mut self,
        s: &mut Section<'t, 'i>,
        key: &'static str,
    ) -> Option<(String, &'t Value<'i>)> {
        if !s.accepted.contains(&key) {
            s.accepted.push(key);
        }
        let (k, v) = s.table?.get_key_value(key)?;
        let field = s.field(key);
        self.note(&field, v, k.span().start);
        Some((field, v))
    }

    /// Reports every key of `s` that was not asked for.
    fn finish(&mut self, s: Section<'_, 'i>) {
        let Some(table) = s.table else { return };
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if s.accepted.contains(&name) {
                continue;
            }
            let field = s.field(name);
            self.note(&field, value, key.span().start);
            let mut accepted = s.accepted.join(", ");
            if let Some(close) = s.accepted.iter().find(|a| similar(a, name)) {
                accepted = format!("{accepted} (did you mean {close}?)");
            }
            self.report_at(&field, None, ProblemKind::UnknownField { accepted });
        }
    }

    // ---- problems ----

    fn note(&mut self, field: &str, value: &Value<'i>, at: usize) {
        let line = self.line(at);
        self.notes.written.insert(field.to_owned(), Written { line, text: self.shown(value) });
    }

    fn invalid(&mut self, field: &str, message: String) {
        self.report(field, ProblemKind::Invalid(message));
    }

    fn wrong_type(&mut self, field: &str, value: &Value<'i>, expected: &str) {
        let found = value.get_ref().type_str();
        self.report(field, ProblemKind::WrongType { expected: expected.to_owned(), found });
    }

    fn report(&mut self, field: &str, kind: ProblemKind) {
        let value = self.notes.written.get(field).map(|w| w.text.clone());
        self.report_at(field, value, kind);
    }

    fn report_at(&mut self, field: &str, value: Option<String>, kind: ProblemKind) {
        self.notes.bad.insert(field.to_owned());
        let line = self.notes.written.get(field).map(|w| w.line);
        self.problems.push(Problem { field: field.to_owned(), value, line, kind });
    }

    /// 1-based line of byte offset `at`.
    fn line(&self, at: usize) -> u32 {
        let index = self.line_starts.partition_point(|&start| start <= at);
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// The value's text as written, shortened to one line.
    fn shown(&self, value: &Value<'i>) -> String {
        let raw = self.text.get(value.span()).unwrap_or("").trim();
        let one_line: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() <= SHOWN_VALUE_CHARS_MAX {
            return one_line;
        }
        let cut: String = one_line.chars().take(SHOWN_VALUE_CHARS_MAX).collect();
        format!("{cut}...")
    }
}

/// Whether `typed` looks like a misspelling of `known`: edit distance at most 2 (or a third
/// of the length), or one contains the other.
fn similar(known: &str, typed: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (known.chars().collect(), typed.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=b.len() {
            let substitution = diagonal + usize::from(a[i - 1] != b[j - 1]);
            diagonal = row[j];
            row[j] = substitution.min(row[j] + 1).min(row[j - 1] + 1);
        }
    }
    let distance = row[b.len()];
    distance <= 2.max(a.len() / 3)
        || (b.len() >= 4 && (known.contains(typed) || typed.contains(known)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_names() {
        assert!(similar("max_connections", "max_conections"));
        assert!(similar("zone_size", "zone_sze"));
        assert!(similar("listen", "listen_addr"));
        assert!(similar("idle_timeout_ms", "idle_timeout"));
        assert!(!similar("listen", "core"));
        assert!(!similar("id", "size"));
    }
}
