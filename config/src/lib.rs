//! shingled's configuration: the TOML schema, its defaults and limits, and validation that
//! runs before any disk is opened and reports every problem at once, each naming the field
//! path, the value as written, the line, and the fix. No device I/O happens here: [`load`]
//! reads the config file and nothing else; paths are checked as text.
//!
//! ```
//! let config = config::parse(r#"
//!     [server]
//!     listen = "127.0.0.1:7700"
//!
//!     [[disk]]
//!     id = 0
//!     path = "/var/lib/shingle/disk0.img"
//!     size = "4GiB"
//! "#).unwrap();
//! assert_eq!(config.disks[0].zone_size, config::ByteSize::mib(256));
//! assert_eq!(config.server.shard_port(1), Some(7711));
//! ```
//!
//! Files: `schema` (the resolved types, defaults and limits), `size` (byte sizes), `read`
//! (TOML to config: syntax, unknown keys, types), `rules` (ranges shared by reading and
//! checking), `check` (relations between fields), `placement` (cores and disk ownership on
//! this machine), `error` (the problems). `shingled.example.toml` beside this crate documents
//! every field.

#![forbid(unsafe_code)]

mod check;
mod error;
mod placement;
mod read;
mod rules;
mod schema;
mod size;

use std::io::Read as _;
use std::path::Path;

pub use error::{ConfigErrors, Problem, ProblemKind};
pub use placement::Placement;
pub use schema::*;
pub use size::{ByteSize, SizeError};

/// Largest config file [`load`] reads.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Parses and validates a config. Relative paths stay relative (to the working directory);
/// [`load`] resolves them against the config file's folder instead.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_in(text, None)
}

/// Reads, parses and validates the config file at `path`. Relative paths in it (disk paths,
/// `server.auth_secret_file`) are resolved against the file's folder. An unreadable file is
/// one problem naming the path and the OS error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text =
        read_file(path).map_err(|problem| ConfigErrors::new(vec![problem]).with_path(path))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    parse_in(&text, base).map_err(|errors| errors.with_path(path))
}

impl Config {
    /// Validates a config built in code (a parsed config is already valid): the same checks
    /// [`parse`] runs after reading, except those that need the machine
    /// ([`Config::placement`]).
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let problems = check::check(self, &read::Notes::default());
        if problems.is_empty() { Ok(()) } else { Err(ConfigErrors::new(problems)) }
    }
}

fn parse_in(text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let (config, mut problems, notes) = read::read(text, base_dir);
    if let Some(config) = &config {
        problems.extend(check::check(config, &notes));
    }
    // File order; problems without a line (relations, missing sections) last.
    problems.sort_by_key(|p| p.line.unwrap_or(u32::MAX));
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigErrors::new(problems)),
    }
}

fn read_file(path: &Path) -> Result<String, Problem> {
    let whole_file = |kind| Problem { field: String::new(), value: None, line: None, kind };
    let unreadable = |source| whole_file(ProblemKind::Unreadable { source });
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 > CONFIG_FILE_BYTES_MAX {
        let message = format!(
            "the config file is larger than {}; is this the right file?",
            ByteSize(CONFIG_FILE_BYTES_MAX)
        );
        return Err(whole_file(ProblemKind::Invalid(message)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let message = format!(
            "not UTF-8 text (invalid byte at offset {}); TOML files are UTF-8",
            e.utf8_error().valid_up_to()
        );
        whole_file(ProblemKind::Invalid(message))
    })
}

#[cfg(test)]
mod tests;
