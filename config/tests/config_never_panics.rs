//! Whatever the text, `parse` answers with a config or with problems, never a panic; and a
//! config it accepts validates again and survives its own text form (`to_toml`).

use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../shingled.example.toml");

/// Keys of every section, and values of every kind, to splice into the example.
const KEYS: &[&str] = &[
    "listen",
    "shard_port_base",
    "max_connections",
    "max_in_flight_per_connection",
    "max_frame_bytes",
    "max_in_flight_bytes",
    "idle_timeout_ms",
    "read_timeout_ms",
    "request_timeout_ms",
    "auth_secret_file",
    "cores",
    "ring_entries",
    "pool_buffer_bytes",
    "pool_buffer_count",
    "value_bytes_max",
    "checkpoint_interval",
    "sync",
    "level",
    "format",
    "id",
    "path",
    "size",
    "zone_size",
    "zone_capacity",
    "max_open_zones",
    "max_active_zones",
    "core",
    "bogus",
];
const VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "3",
    "4096",
    "65535",
    "65536",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "true",
    "\"\"",
    "\"all\"",
    "\"1GiB\"",
    "\"16EiB\"",
    "\"18446744073709551615\"",
    "\"1.5GiB\"",
    "\"0.1KiB\"",
    "\"4GB\"",
    "\"1000\"",
    "\"/dev/sdb\"",
    "\"/\"",
    "\"x/\"",
    "\"0.0.0.0:0\"",
    "\"127.0.0.1:7700\"",
    "\"[::]:7710\"",
    "\"dsync\"",
    "\"json\"",
    "[]",
    "[0, 0]",
    "[1023, 1024]",
    "[\"a\"]",
    "{ a = 1 }",
    "1979-05-27",
];

fn check(text: &str) {
    if let Ok(config) = config::parse(text) {
        if let Err(errors) = config.validate() {
            panic!("parsed but does not validate:\n{errors}\n--- text ---\n{text}");
        }
        let again = config::parse(&config.to_toml()).map_err(|e| e.to_string());
        assert_eq!(again, Ok(config.clone()), "to_toml does not round-trip");
        let _ = config.placement(&[0, 1, 2, 3]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn example_with_spliced_lines(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..KEYS.len(), 0..VALUES.len()), 1..6),
    ) {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        for (at, key, value) in edits {
            let at = at.index(lines.len());
            lines.insert(at, format!("{} = {}", KEYS[key], VALUES[value]));
        }
        check(&lines.join("\n"));
    }

    #[test]
    fn example_with_replaced_values(index in any::<prop::sample::Index>(), value in 0..VALUES.len()) {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        let keyed: Vec<usize> = (0..lines.len())
            .filter(|&i| !lines[i].starts_with('#') && lines[i].contains(" = "))
            .collect();
        let i = keyed[index.index(keyed.len())];
        let key = lines[i].split(" = ").next().unwrap_or("").to_owned();
        lines[i] = format!("{key} = {}", VALUES[value]);
        check(&lines.join("\n"));
    }
}
