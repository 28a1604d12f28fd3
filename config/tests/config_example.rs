//! The example config shipped beside the crate: it parses and validates, says what the
//! defaults are, and documents every field the schema has (with a comment that gives the
//! default, or says the field is required).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use config::{ByteSize, Config, Cores, SyncMode};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shingled.example.toml")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).expect("read shingled.example.toml")
}

#[test]
fn example_loads_and_validates() {
    let c = match config::load(&example_path()) {
        Ok(c) => c,
        Err(errors) => panic!("the example config is refused:\n{errors}"),
    };
    c.validate().unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7700");
    assert_eq!(c.server.shard_port(0), Some(7710));
    assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9700");
    assert_eq!(c.runtime.cores, Cores::All);
    assert_eq!(c.disks.len(), 1);
    let disk = &c.disks[0];
    assert_eq!(disk.path, Path::new("/var/lib/shingle/disk0.img"));
    assert_eq!((disk.size, disk.zone_size), (Some(ByteSize::gib(4)), ByteSize::mib(256)));
    assert_eq!((disk.core, disk.sync), (Some(0), SyncMode::Dsync));
    let placement = c.placement(&[0, 1, 2, 3]).unwrap();
    assert_eq!(placement.disk_core(0), 0);
}

/// The example sets every field to its default (or, for fields without a default, to a
/// sensible value), so a file holding only the disk's required fields resolves the same.
#[test]
fn example_values_are_the_defaults() {
    let example = config::parse(&example_text()).unwrap();
    let minimal = config::parse(
        "[[disk]]\nid = 0\npath = \"/var/lib/shingle/disk0.img\"\nsize = \"4GiB\"\ncore = 0\n",
    )
    .unwrap();
    assert_eq!(example, minimal);
}

/// (section, key) of every field the schema has, taken from a config with every optional
/// field set, printed in full.
fn schema_fields() -> BTreeSet<(String, String)> {
    let mut full = Config::embedded_default(Path::new("/data"));
    full.server.auth_secret_file = Some(PathBuf::from("/etc/shingle/secret"));
    full.disks[0].core = Some(0);
    let table: toml::Table = toml::from_str(&full.to_toml()).expect("to_toml gives TOML");
    let mut fields = BTreeSet::new();
    for (section, value) in &table {
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(|i| i.as_table()).collect(),
            other => panic!("top-level {section} is not a section: {other:?}"),
        };
        for t in tables {
            fields.extend(t.keys().map(|k| (section.clone(), k.clone())));
        }
    }
    fields
}

/// (section, key) → the comment lines right above the first line that sets the key (or shows
/// it commented out) in the example.
fn documented_fields(text: &str) -> Vec<((String, String), Vec<String>)> {
    let mut section = String::new();
    let mut comment: Vec<String> = Vec::new();
    let mut found = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.trim_matches(|c| c == '[' || c == ']').to_owned();
            comment.clear();
            continue;
        }
        let body = trimmed.trim_start_matches('#').trim();
        let key = body.split('=').next().unwrap_or("").trim();
        let is_key = body.contains('=')
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if is_key && !section.is_empty() {
            found.push(((section.clone(), key.to_owned()), comment.clone()));
            comment.clear();
        } else if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.trim().to_owned());
        } else {
            comment.clear();
        }
    }
    found
}

#[test]
fn example_documents_every_field() {
    let text = example_text();
    let documented = documented_fields(&text);
    let names: BTreeSet<(String, String)> = documented.iter().map(|(f, _)| f.clone()).collect();
    let fields = schema_fields();
    let missing: Vec<_> = fields.difference(&names).collect();
    assert!(missing.is_empty(), "fields missing from shingled.example.toml: {missing:?}");
    let unknown: Vec<_> = names.difference(&fields).collect();
    assert!(unknown.is_empty(), "the example shows fields the schema lacks: {unknown:?}");
    for field in &fields {
        let (_, comment) = documented.iter().find(|(f, _)| f == field).expect("documented");
        let comment = comment.join(" ").to_lowercase();
        assert!(
            comment.contains("default") || comment.contains("required"),
            "the comment above {field:?} gives no default: {comment:?}"
        );
    }
}
