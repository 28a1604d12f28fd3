//! What a config can be wrong with: one [`Problem`] per finding, each naming the field path
//! (`disk[1].zone_size`), the value as written, the line, and what to do; [`ConfigErrors`]
//! holds all of them so an operator fixes a file in one pass instead of one error per restart.

use std::fmt;
use std::path::{Path, PathBuf};

/// The kind of a problem, with its explanation and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ProblemKind {
    /// The config file cannot be read.
    #[error("cannot read the config file: {source}")]
    Unreadable { source: std::io::Error },
    /// The text is not valid TOML (the message comes from the TOML parser).
    #[error("TOML syntax error: {message}")]
    Syntax { message: String },
    /// A key that the schema does not have (a typo, or a field of another section).
    #[error("unknown field; the fields accepted here are: {accepted}")]
    UnknownField { accepted: String },
    /// A required field is absent.
    #[error("missing; {hint}")]
    Missing { hint: String },
    /// The value has the wrong TOML type.
    #[error("expected {expected}, found {found}")]
    WrongType { expected: String, found: &'static str },
    /// The value has the right type but is not acceptable; the text says why and what to do.
    #[error("{0}")]
    Invalid(String),
}

/// One problem found in a config.
#[derive(Debug)]
pub struct Problem {
    /// Path of the field: `server.listen`, `disk[1].zone_size`, `runtime.cores[2]`; empty for a
    /// problem with the whole file.
    pub field: String,
    /// The value as written in the file (or, for a config built in code, as held).
    pub value: Option<String>,
    /// 1-based line of the field in the file, when known.
    pub line: Option<u32>,
    /// What is wrong and how to fix it.
    pub kind: ProblemKind,
}

impl Problem {
    /// The problem's explanation (without field, value and line).
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.field[..], &self.value) {
            ("", _) => write!(f, "{}", self.kind),
            (field, Some(value)) => write!(f, "{field} = {value}: {}", self.kind),
            (field, None) => write!(f, "{field}: {}", self.kind),
        }
    }
}

/// Every problem found in one config (never empty). `Display` prints one problem per line,
/// prefixed with `file:line:` as compilers do, so editors can jump to each.
#[derive(Debug)]
pub struct ConfigErrors {
    path: Option<PathBuf>,
    problems: Vec<Problem>,
}

impl ConfigErrors {
    pub(crate) fn new(problems: Vec<Problem>) -> ConfigErrors {
        assert!(!problems.is_empty(), "ConfigErrors without a problem");
        ConfigErrors { path: None, problems }
    }

    pub(crate) fn with_path(mut self, path: &Path) -> ConfigErrors {
        self.path = Some(path.to_owned());
        self
    }

    /// The config file the problems are in, if the config came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The problems, in the order of the file.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The problems about `field` (exact path, e.g. `disk[1].zone_size`).
    pub fn for_field<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a Problem> + 'a {
        self.problems.iter().filter(move |p| p.field == field)
    }

    /// Number of problems (at least 1).
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Always false: a `ConfigErrors` holds at least one problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (&self.path, problem.line) {
                (Some(path), Some(line)) => write!(f, "{}:{line}: ", path.display())?,
                (Some(path), None) => write!(f, "{}: ", path.display())?,
                (None, Some(line)) => write!(f, "line {line}: ")?,
                (None, None) => {}
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(field: &str, value: Option<&str>, line: Option<u32>) -> Problem {
        Problem {
            field: field.to_owned(),
            value: value.map(str::to_owned),
            line,
            kind: ProblemKind::Invalid("must be a multiple of 4KiB".to_owned()),
        }
    }

    #[test]
    fn display_is_one_problem_per_line() {
        let errors = ConfigErrors::new(vec![
            problem("disk[1].zone_size", Some("1000"), Some(12)),
            problem("server.listen", None, None),
        ]);
        assert_eq!(
            errors.to_string(),
            "line 12: disk[1].zone_size = 1000: must be a multiple of 4KiB\n\
             server.listen: must be a multiple of 4KiB"
        );
        let errors = errors.with_path(Path::new("/etc/shingle/shingled.toml"));
        let text = errors.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "/etc/shingle/shingled.toml:12: disk[1].zone_size = 1000: must be a multiple of 4KiB"
        );
        assert!(lines[1].starts_with("/etc/shingle/shingled.toml: server.listen: "));
        assert_eq!(errors.for_field("server.listen").count(), 1);
    }
}
