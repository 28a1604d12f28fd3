//! Tests of parsing and validation: one per rule, each checking that the problem names its
//! field; plus defaults, the embedded default, `load`, placement and reporting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;

/// One valid disk, to make a config complete.
const DISK: &str = "[[disk]]\nid = 0\npath = \"/srv/shingle/d0.img\"\nsize = \"1GiB\"\n";

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("refused:\n{errors}\n--- config ---\n{text}"),
    }
}

fn errors(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:#?}\n--- config ---\n{text}"),
        Err(errors) => errors,
    }
}

/// The one problem about `field`, whose message contains `needle`.
#[track_caller]
fn problem<'e>(errors: &'e ConfigErrors, field: &str, needle: &str) -> &'e Problem {
    let found: Vec<&Problem> = errors.problems().iter().filter(|p| p.field == field).collect();
    assert_eq!(found.len(), 1, "expected one problem about {field}, got:\n{errors}");
    let shown = found[0].to_string();
    assert!(shown.starts_with(field), "problem does not start with its field: {shown}");
    assert!(shown.contains(needle), "problem about {field} lacks {needle:?}: {shown}");
    found[0]
}

/// Parses `text`, expecting exactly one problem, about `field`, containing `needle`.
#[track_caller]
fn only(text: &str, field: &str, needle: &str) {
    let errors = errors(text);
    problem(&errors, field, needle);
    assert_eq!(errors.len(), 1, "expected only a problem about {field}:\n{errors}");
}

// ---- defaults and examples ----

#[test]
fn minimal_config_gets_every_default() {
    let c = ok(DISK);
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.server.listen, "127.0.0.1:7700".parse::<SocketAddr>().unwrap());
    assert_eq!(c.server.shard_port_base, 7710);
    assert_eq!(c.server.max_frame_bytes, ByteSize(ByteSize::mib(16).0 + ByteSize::kib(64).0));
    assert_eq!(c.metrics.listen, "127.0.0.1:9700".parse::<SocketAddr>().unwrap());
    assert_eq!(c.runtime, RuntimeConfig::default());
    assert_eq!(c.runtime.cores, Cores::All);
    assert_eq!(c.store, StoreConfig::default());
    assert_eq!(c.log, LogConfig::default());
    let d = &c.disks[0];
    assert_eq!((d.id, d.path.as_path()), (0, Path::new("/srv/shingle/d0.img")));
    assert_eq!(d.size, Some(ByteSize::gib(1)));
    assert_eq!((d.zone_size, d.zone_capacity), (ByteSize::mib(256), ByteSize::mib(256)));
    assert_eq!((d.max_open_zones, d.max_active_zones, d.core), (0, 0, None));
    assert_eq!((d.checkpoint_interval, d.sync), (ByteSize::mib(256), SyncMode::Dsync));
}

#[test]
fn the_issue_example_parses() {
    let c = ok(r#"
        [server]
        listen = "127.0.0.1:7700"      # main port, every core accepts here
        shard_port_base = 7710         # core i also listens on base + i; 0 turns shard ports off
        [metrics]
        listen = "127.0.0.1:9700"
        [[disk]]
        id = 0
        path = "/var/lib/shingle/disk0.img"   # regular file, block device, or zoned block device
        size = "4GiB"                        # regular files only: created sparse if missing
        zone_size = "256MiB"                 # emulated zones only
        core = 0                             # optional; round-robin otherwise
    "#);
    assert_eq!(c.disks[0].size, Some(ByteSize::gib(4)));
    assert_eq!(c.disks[0].core, Some(0));
    assert_eq!(c.server.shard_port(0), Some(7710));
    assert_eq!(c.server.shard_port(3), Some(7713));
}

#[test]
fn embedded_default_validates_and_is_as_documented() {
    let c = Config::embedded_default(Path::new("/home/op/shingle-data"));
    c.validate().unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:7700".parse::<SocketAddr>().unwrap());
    assert_eq!(c.server.shard_port(0), Some(7710));
    assert_eq!(c.metrics.listen, "127.0.0.1:9700".parse::<SocketAddr>().unwrap());
    assert_eq!(c.disks.len(), 1);
    let d = &c.disks[0];
    assert_eq!(d.path, Path::new("/home/op/shingle-data/disk0.img"));
    assert!(!d.looks_like_block_device());
    assert_eq!((d.size, d.zone_size), (Some(ByteSize::gib(1)), ByteSize::mib(64)));
    // It also survives the text form, and places on a one-CPU machine.
    assert_eq!(ok(&c.to_toml()), c);
    let placement = c.placement(&[3]).unwrap();
    assert_eq!((placement.cpus(), placement.disk_core(0)), (&[3][..], 0));
}

#[test]
fn to_toml_round_trips_a_full_config() {
    let c = ok(r#"
        [server]
        listen = "[::1]:8000"
        shard_port_base = 0
        max_connections = 10
        auth_secret_file = "/etc/shingle/secret"
        [runtime]
        cores = [2, 0]
        ring_entries = 1024
        [store]
        value_bytes_max = "1.5MiB"
        sync = "fdatasync"
        [log]
        level = "debug"
        format = "json"
        [[disk]]
        id = 7
        path = "/dev/sdb"
        zone_size = "128MiB"
        zone_capacity = "100MiB"
        max_open_zones = 14
        max_active_zones = 14
        core = 1
        sync = "dsync"
        [[disk]]
        id = 8
        path = "relative/d8.img"
        checkpoint_interval = "1GiB"
    "#);
    assert_eq!(c.server.shard_port(5), None);
    assert_eq!(c.runtime.cores, Cores::List(vec![2, 0]));
    assert_eq!((c.disks[0].sync, c.disks[1].sync), (SyncMode::Dsync, SyncMode::Fdatasync));
    assert_eq!(c.disks[1].path, Path::new("relative/d8.img"));
    let text = c.to_toml();
    assert_eq!(ok(&text), c, "{text}");
}

// ---- syntax, unknown fields, types ----

#[test]
fn syntax_errors_give_the_line() {
    let errors = errors("[server]\nlisten = \"127.0.0.1:7700\"\nmax_connections = = 4\n");
    let p = &errors.problems()[0];
    assert!(matches!(p.kind, ProblemKind::Syntax { .. }), "{p:?}");
    assert_eq!(p.line, Some(3));
    assert!(errors.to_string().starts_with("line 3: TOML syntax error"), "{errors}");
    let errors = errors_of("[server]\nlisten = \"a\"\nlisten = \"b\"\n");
    assert!(errors.to_string().contains("duplicate key"), "{errors}");
}

fn errors_of(text: &str) -> ConfigErrors {
    errors(text)
}

#[test]
fn unknown_fields_are_named_with_the_accepted_ones() {
    let errors = errors(&format!(
        "[server]\nmax_conections = 10\n[storage]\nx = 1\n{DISK}zone_sise = \"64MiB\"\n"
    ));
    let p = problem(&errors, "server.max_conections", "max_connections");
    assert!(matches!(p.kind, ProblemKind::UnknownField { .. }));
    assert_eq!(p.line, Some(2));
    let shown = p.to_string();
    assert!(shown.contains("listen, shard_port_base"), "{shown}");
    assert!(shown.contains("did you mean max_connections?"), "{shown}");
    problem(&errors, "storage", "server, metrics, runtime, store, log, disk");
    problem(&errors, "disk[0].zone_sise", "did you mean zone_size?");
    assert_eq!(errors.len(), 3, "{errors}");
}

#[test]
fn wrong_types_say_what_was_expected() {
    let errors = errors(&format!(
        "[server]\nmax_connections = \"many\"\nlisten = 7700\n\
         [store]\nvalue_bytes_max = 1.5\n{DISK}"
    ));
    problem(&errors, "server.max_connections", "expected an integer, found string");
    problem(&errors, "server.listen", "expected a string, found integer");
    problem(&errors, "store.value_bytes_max", "expected a size like \"256MiB\"");
    let errors = errors_of("server = 1\n");
    problem(&errors, "server", "expected a table, written as a [server] section");
}

// ---- [server] ----

#[test]
fn listen_addresses_must_parse() {
    let errors = errors(&format!(
        "[server]\nlisten = \"localhost:7700\"\n[metrics]\nlisten = \"127.0.0.1\"\n{DISK}"
    ));
    problem(&errors, "server.listen", "host names are not resolved");
    let p = problem(&errors, "metrics.listen", "not an IP address and port");
    assert_eq!(p.value.as_deref(), Some("\"127.0.0.1\""));
    ok(&format!("[server]\nlisten = \"[::]:7700\"\n{DISK}"));
}

#[test]
fn listen_ports_must_not_be_zero() {
    only(&format!("[server]\nlisten = \"0.0.0.0:0\"\n{DISK}"), "server.listen", "port 0");
    only(&format!("[metrics]\nlisten = \"127.0.0.1:0\"\n{DISK}"), "metrics.listen", "9700");
}

#[test]
fn metrics_must_not_share_the_main_port() {
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n{DISK}"
    );
    only(&text, "metrics.listen", "same port as server.listen");
    // Different addresses may share a port number.
    ok(&format!(
        "[server]\nlisten = \"10.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n{DISK}"
    ));
}

#[test]
fn shard_ports_must_fit_below_65536() {
    let text = format!(
        "[server]\nshard_port_base = 65530\n[runtime]\ncores = [0, 1, 2, 3, 4, 5, 6, 7]\n{DISK}"
    );
    only(&text, "server.shard_port_base", "8 cores would listen on ports 65530 to 65537");
    let errors = errors(&text);
    problem(&errors, "server.shard_port_base", "at most 65528");
    ok(&format!(
        "[server]\nshard_port_base = 65528\n[runtime]\ncores = [0, 1, 2, 3, 4, 5, 6, 7]\n{DISK}"
    ));
    only(
        &format!("[server]\nshard_port_base = 70000\n{DISK}"),
        "server.shard_port_base",
        "from 0 to 65535",
    );
    let c = ok(&format!("[server]\nshard_port_base = 0\n{DISK}"));
    assert_eq!(c.server.shard_port(0), None);
}

#[test]
fn shard_ports_must_not_cover_the_main_or_metrics_port() {
    let text = format!(
        "[server]\nshard_port_base = 7695\n[runtime]\ncores = [0, 1, 2, 3, 4, 5, 6, 7]\n{DISK}"
    );
    only(
        &text,
        "server.shard_port_base",
        "shard ports 7695 to 7702 (one per core) include server.listen's port 7700",
    );
    let text =
        format!("[metrics]\nlisten = \"127.0.0.1:7712\"\n[runtime]\ncores = [0, 1, 2, 3]\n{DISK}");
    only(&text, "server.shard_port_base", "include metrics.listen's port 7712");
    // Metrics on another address than the shard ports' does not clash.
    ok(&format!("[metrics]\nlisten = \"10.1.2.3:7712\"\n[runtime]\ncores = [0, 1, 2, 3]\n{DISK}"));
    // With cores = "all" only the base is known at parse time; placement checks the rest.
    only(&format!("[server]\nshard_port_base = 7700\n{DISK}"), "server.shard_port_base", "7700");
}

#[test]
fn server_limits_have_ranges() {
    let errors = errors(&format!(
        "[server]\nmax_connections = 0\nmax_in_flight_per_connection = 5000\nidle_timeout_ms = 10\n\
         read_timeout_ms = -1\nrequest_timeout_ms = 99999999999\n{DISK}"
    ));
    problem(&errors, "server.max_connections", "from 1 to 1000000 (default 4096)");
    problem(&errors, "server.max_in_flight_per_connection", "from 1 to 4096 (default 128)");
    problem(
        &errors,
        "server.idle_timeout_ms",
        "from 1000 to 86400000 (default 300000) milliseconds",
    );
    problem(&errors, "server.read_timeout_ms", "from 100 to 3600000");
    problem(&errors, "server.request_timeout_ms", "from 100 to 3600000");
    assert_eq!(errors.len(), 5, "{errors}");
    let c = ok(&format!(
        "[server]\nmax_connections = 1\nidle_timeout_ms = 1000\nrequest_timeout_ms = 250\n{DISK}"
    ));
    assert_eq!(c.server.request_timeout(), std::time::Duration::from_millis(250));
}

#[test]
fn frame_limit_must_carry_the_largest_value() {
    let text = format!("[server]\nmax_frame_bytes = \"16MiB\"\n{DISK}");
    only(
        &text,
        "server.max_frame_bytes",
        "at least store.value_bytes_max (16MiB) + 64KiB = 16448KiB",
    );
    only(
        &format!("[server]\nmax_frame_bytes = \"2GiB\"\n{DISK}"),
        "server.max_frame_bytes",
        "from 1MiB to",
    );
    // The default follows the value cap, and the in-flight budget follows the frame.
    let c = ok(&format!("[store]\nvalue_bytes_max = \"64MiB\"\n{DISK}"));
    assert_eq!(c.server.max_frame_bytes, ByteSize::kib(64 * 1024 + 64));
    assert_eq!(c.server.max_in_flight_bytes, ByteSize::mib(256));
    let c = ok("[store]\nvalue_bytes_max = \"1GiB\"\n\
         [[disk]]\nid = 0\npath = \"/dev/sdb\"\nzone_size = \"2GiB\"\n");
    assert_eq!(c.server.max_frame_bytes, ByteSize::kib(1024 * 1024 + 64));
    assert_eq!(c.server.max_in_flight_bytes, c.server.max_frame_bytes);
}

#[test]
fn in_flight_budget_must_hold_a_frame() {
    let text = format!("[server]\nmax_in_flight_bytes = \"4MiB\"\n{DISK}");
    only(&text, "server.max_in_flight_bytes", "at least server.max_frame_bytes (16448KiB)");
    only(
        &format!("[server]\nmax_in_flight_bytes = \"1TiB\"\n{DISK}"),
        "server.max_in_flight_bytes",
        "64GiB",
    );
}

#[test]
fn auth_secret_file_must_be_a_file_path() {
    only(
        &format!("[server]\nauth_secret_file = \"\"\n{DISK}"),
        "server.auth_secret_file",
        "empty path",
    );
    only(
        &format!("[server]\nauth_secret_file = \"  \"\n{DISK}"),
        "server.auth_secret_file",
        "empty path",
    );
    only(
        &format!("[server]\nauth_secret_file = \"/etc/shingle/\"\n{DISK}"),
        "server.auth_secret_file",
        "names a folder",
    );
    only(
        &format!("[server]\nauth_secret_file = \"a\\u0000b\"\n{DISK}"),
        "server.auth_secret_file",
        "NUL",
    );
    let long = "x".repeat(5000);
    only(
        &format!("[server]\nauth_secret_file = \"{long}\"\n{DISK}"),
        "server.auth_secret_file",
        "4095",
    );
    let c = ok(&format!("[server]\nauth_secret_file = \"secret.key\"\n{DISK}"));
    assert_eq!(c.server.auth_secret_file.as_deref(), Some(Path::new("secret.key")));
    assert_eq!(ok(DISK).server.auth_secret_file, None);
}

// ---- [runtime], [store], [log] ----

#[test]
fn cores_are_all_or_distinct_cpu_ids() {
    only(
        &format!("[runtime]\ncores = \"some\"\n{DISK}"),
        "runtime.cores",
        "\"all\" or a list of CPU ids",
    );
    only(&format!("[runtime]\ncores = []\n{DISK}"), "runtime.cores", "lists no CPU");
    only(&format!("[runtime]\ncores = 4\n{DISK}"), "runtime.cores", "found integer");
    only(
        &format!("[runtime]\ncores = [0, 1, 1]\n{DISK}"),
        "runtime.cores[2]",
        "CPU 1 is listed twice (also runtime.cores[1])",
    );
    only(&format!("[runtime]\ncores = [0, 2000]\n{DISK}"), "runtime.cores[1]", "from 0 to 1023");
    only(&format!("[runtime]\ncores = [0, -1]\n{DISK}"), "runtime.cores[1]", "from 0 to 1023");
    only(
        &format!("[runtime]\ncores = [0, \"1\"]\n{DISK}"),
        "runtime.cores[1]",
        "expected an integer",
    );
}

#[test]
fn ring_entries_are_a_power_of_two_in_range() {
    for bad in ["300", "4", "8192", "0"] {
        only(
            &format!("[runtime]\nring_entries = {bad}\n{DISK}"),
            "runtime.ring_entries",
            "a power of two from 8 to 4096",
        );
    }
    assert_eq!(ok(&format!("[runtime]\nring_entries = 8\n{DISK}")).runtime.ring_entries, 8);
}

#[test]
fn buffer_pool_is_bounded() {
    only(
        &format!("[runtime]\npool_buffer_bytes = \"1000B\"\n{DISK}"),
        "runtime.pool_buffer_bytes",
        "a multiple of 4KiB (4096 bytes)",
    );
    only(
        &format!("[runtime]\npool_buffer_count = 0\n{DISK}"),
        "runtime.pool_buffer_count",
        "from 1 to 16384",
    );
    let text =
        format!("[runtime]\npool_buffer_bytes = \"16MiB\"\npool_buffer_count = 16384\n{DISK}");
    only(&text, "runtime.pool_buffer_count", "256GiB per core, above 4GiB");
    let c =
        ok(&format!("[runtime]\npool_buffer_bytes = \"64KiB\"\npool_buffer_count = 32\n{DISK}"));
    assert_eq!(c.runtime.pool_bytes_per_core(), ByteSize::mib(2));
}

#[test]
fn store_settings_have_ranges() {
    only(
        &format!("[store]\nvalue_bytes_max = 0\n{DISK}"),
        "store.value_bytes_max",
        "from 1B to 1GiB",
    );
    only(
        &format!("[store]\nvalue_bytes_max = \"2GiB\"\n{DISK}"),
        "store.value_bytes_max",
        "from 1B to 1GiB",
    );
    only(
        &format!("[store]\ncheckpoint_interval = \"1KiB\"\n{DISK}"),
        "store.checkpoint_interval",
        "from 1MiB to 1TiB",
    );
    only(
        &format!("[store]\nsync = \"fsync\"\n{DISK}"),
        "store.sync",
        "one of \"dsync\", \"fdatasync\"",
    );
    assert_eq!(
        ok(&format!("[store]\nvalue_bytes_max = 1\n{DISK}")).store.value_bytes_max,
        ByteSize(1)
    );
}

#[test]
fn log_settings_are_choices() {
    let errors = errors(&format!("[log]\nlevel = \"verbose\"\nformat = \"xml\"\n{DISK}"));
    problem(&errors, "log.level", "\"error\", \"warn\", \"info\", \"debug\", \"trace\"");
    problem(&errors, "log.format", "\"text\", \"json\"");
    let c = ok(&format!("[log]\nlevel = \"warn\"\nformat = \"json\"\n{DISK}"));
    assert_eq!((c.log.level.as_str(), c.log.format), ("warn", LogFormat::Json));
}

// ---- [[disk]] ----

#[test]
fn at_least_one_disk() {
    only("[server]\n", "disk", "add a [[disk]] section");
    only("disk = 5\n", "disk", "expected an array of tables");
    only(
        "[disk]\nid = 0\npath = \"/a\"\n",
        "disk",
        "expected an array of tables, written as [[disk]]",
    );
    only("disk = [1]\n", "disk[0]", "expected a table");
}

#[test]
fn disk_id_and_path_are_required() {
    let errors = errors("[[disk]]\nsize = \"1GiB\"\n");
    let p = problem(&errors, "disk[0].id", "missing; every disk needs a unique id");
    assert_eq!(p.line, Some(1), "points at the [[disk]] header");
    problem(&errors, "disk[0].path", "missing; name the disk's file or device");
    assert_eq!(errors.len(), 2, "{errors}");
    only("[[disk]]\nid = -3\npath = \"/a\"\n", "disk[0].id", "from 0 to 65534");
    only("[[disk]]\nid = 65535\npath = \"/a\"\n", "disk[0].id", "65535 means every disk");
}

#[test]
fn disk_ids_and_paths_are_unique() {
    let text = "[[disk]]\nid = 1\npath = \"/srv/a.img\"\n\
                [[disk]]\nid = 1\npath = \"/srv/./a.img\"\n\
                [[disk]]\nid = 2\npath = \"/srv//a.img\"\n";
    let errors = errors(text);
    let p = problem(&errors, "disk[1].id", "also the id of disk[0]; disk ids must be unique");
    assert_eq!(p.line, Some(5));
    problem(&errors, "disk[1].path", "also the path of disk[0]");
    problem(&errors, "disk[2].path", "also the path of disk[0]");
    assert_eq!(errors.len(), 3, "{errors}");
}

#[test]
fn disk_paths_are_files() {
    only("[[disk]]\nid = 0\npath = \"\"\n", "disk[0].path", "empty path");
    only("[[disk]]\nid = 0\npath = \"/srv/shingle/\"\n", "disk[0].path", "names a folder");
    only("[[disk]]\nid = 0\npath = \"/\"\n", "disk[0].path", "names a folder");
    only("[[disk]]\nid = 0\npath = \"/srv/..\"\n", "disk[0].path", "names a folder");
}

#[test]
fn size_is_for_regular_files_only() {
    let p_text = "[[disk]]\nid = 0\npath = \"/dev/sdb\"\nsize = \"4GiB\"\n";
    only(p_text, "disk[0].size", "size is for regular files only");
    let c = ok("[[disk]]\nid = 0\npath = \"/dev/nvme0n1\"\n");
    assert!(c.disks[0].looks_like_block_device());
    assert_eq!(c.disks[0].size, None);
    // /dev/shm holds files.
    let c = ok("[[disk]]\nid = 0\npath = \"/dev/shm/d0.img\"\nsize = \"1GiB\"\n");
    assert!(!c.disks[0].looks_like_block_device());
}

#[test]
fn zone_size_is_a_block_multiple_in_range() {
    let text =
        "[[disk]]\nid = 0\npath = \"/a\"\n[[disk]]\nid = 1\npath = \"/b\"\nzone_size = 1000\n";
    let errors = errors(text);
    let p = problem(&errors, "disk[1].zone_size", "must be a multiple of 4KiB (4096 bytes)");
    assert!(p.to_string().starts_with("disk[1].zone_size = 1000: "), "{p}");
    assert!(p.to_string().ends_with("use e.g. \"256MiB\""), "{p}");
    assert_eq!(p.line, Some(7));
    assert_eq!(errors.len(), 1, "{errors}");
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nzone_size = \"32GiB\"\n",
        "disk[0].zone_size",
        "to 16GiB",
    );
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nzone_size = \"4GB\"\n",
        "disk[0].zone_size",
        "write \"4GiB\"",
    );
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nzone_size = \"-4MiB\"\n",
        "disk[0].zone_size",
        "negative",
    );
    only("[[disk]]\nid = 0\npath = \"/a\"\nzone_size = -4096\n", "disk[0].zone_size", "negative");
    only("[[disk]]\nid = 0\npath = \"/a\"\nzone_size = \"\"\n", "disk[0].zone_size", "empty size");
}

#[test]
fn zone_size_must_not_exceed_the_disk_size() {
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nsize = \"1GiB\"\nzone_size = \"2GiB\"\n";
    only(text, "disk[0].zone_size", "larger than disk[0].size (1GiB)");
}

#[test]
fn disk_size_is_whole_zones_and_enough_of_them() {
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nsize = \"1000MiB\"\n";
    only(
        text,
        "disk[0].size",
        "not a multiple of disk[0].zone_size (256MiB); use e.g. \"768MiB\" or \"1GiB\"",
    );
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nsize = \"512MiB\"\n";
    only(text, "disk[0].size", "holds 2 zones of 256MiB; a disk needs at least 4");
    only("[[disk]]\nid = 0\npath = \"/a\"\nsize = 12345\n", "disk[0].size", "a multiple of 4KiB");
    only("[[disk]]\nid = 0\npath = \"/a\"\nsize = \"16EiB\"\n", "disk[0].size", "too large");
}

#[test]
fn zone_capacity_fits_in_the_zone() {
    let text =
        "[[disk]]\nid = 0\npath = \"/a\"\nzone_size = \"64MiB\"\nzone_capacity = \"128MiB\"\n";
    only(text, "disk[0].zone_capacity", "larger than disk[0].zone_size (64MiB)");
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nzone_capacity = \"100000KiB\"\n";
    ok(text);
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nzone_capacity = 5000\n";
    only(text, "disk[0].zone_capacity", "a multiple of 4KiB");
}

#[test]
fn zone_limits_are_zero_or_enough() {
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nmax_open_zones = 2\n",
        "disk[0].max_open_zones",
        "0 (no limit) or at least 3",
    );
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nmax_active_zones = 1\n",
        "disk[0].max_active_zones",
        "at least 3",
    );
    let text = "[[disk]]\nid = 0\npath = \"/a\"\nmax_open_zones = 14\nmax_active_zones = 8\n";
    only(text, "disk[0].max_open_zones", "larger than disk[0].max_active_zones (8)");
    only(
        "[[disk]]\nid = 0\npath = \"/a\"\nmax_open_zones = -1\n",
        "disk[0].max_open_zones",
        "0 means no limit",
    );
    ok("[[disk]]\nid = 0\npath = \"/a\"\nmax_open_zones = 14\n");
}

#[test]
fn a_zone_holds_the_largest_record() {
    let text = "[store]\nvalue_bytes_max = \"1GiB\"\n[[disk]]\nid = 0\npath = \"/dev/sdb\"\n";
    only(text, "disk[0].zone_size", "a zone of 256MiB cannot hold the largest record");
    let text = "[store]\nvalue_bytes_max = \"64MiB\"\n\
                [[disk]]\nid = 0\npath = \"/a\"\nzone_capacity = \"32MiB\"\n";
    only(text, "disk[0].zone_capacity", "store.value_bytes_max = 64MiB");
}

#[test]
fn disk_core_must_exist() {
    let text = format!("[runtime]\ncores = [4, 5]\n{DISK}core = 2\n");
    only(
        &text,
        "disk[0].core",
        "there are 2 cores (indexes 0 to 1); core is an index into runtime.cores",
    );
    let text = format!("[runtime]\ncores = [4, 5]\n{DISK}core = 1\n");
    assert_eq!(ok(&text).disks[0].core, Some(1));
    // With cores = "all", the count is known only at startup.
    let c = ok(&format!("{DISK}core = 5\n"));
    let errors = c.placement(&[0, 1]).unwrap_err();
    problem(&errors, "disk[0].core", "there are 2 cores");
    only(&format!("{DISK}core = 5000\n"), "disk[0].core", "from 0 to 1023");
}

#[test]
fn disks_override_store_defaults() {
    let text = format!(
        "[store]\nsync = \"fdatasync\"\ncheckpoint_interval = \"64MiB\"\n{DISK}sync = \"dsync\"\n\
         [[disk]]\nid = 1\npath = \"/b\"\ncheckpoint_interval = \"1GiB\"\n"
    );
    let c = ok(&text);
    assert_eq!(
        (c.disks[0].sync, c.disks[0].checkpoint_interval),
        (SyncMode::Dsync, ByteSize::mib(64))
    );
    assert_eq!(
        (c.disks[1].sync, c.disks[1].checkpoint_interval),
        (SyncMode::Fdatasync, ByteSize::gib(1))
    );
    only(
        &format!("{DISK}checkpoint_interval = \"1KiB\"\n"),
        "disk[0].checkpoint_interval",
        "from 1MiB",
    );
    only(&format!("{DISK}sync = \"never\"\n"), "disk[0].sync", "one of");
}

// ---- reporting ----

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = "\
[server]
listen = \"localhost:7700\"
max_conections = 5
[runtime]
ring_entries = 100
[[disk]]
id = 0
path = \"/dev/sdb\"
size = \"4GiB\"
[[disk]]
id = 0
path = \"/srv/b.img\"
zone_size = 1000
";
    let errors = errors(text);
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 6, "{shown}");
    let expected = [
        "line 2: server.listen = \"localhost:7700\": ",
        "line 3: server.max_conections: unknown field",
        "line 5: runtime.ring_entries = 100: must be a power of two",
        "line 9: disk[0].size = \"4GiB\": size is for regular files only",
        "line 11: disk[1].id = 0: also the id of disk[0]",
        "line 13: disk[1].zone_size = 1000: must be a multiple of 4KiB",
    ];
    for (line, start) in lines.iter().zip(expected) {
        assert!(line.starts_with(start), "{line:?} should start with {start:?}");
    }
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut c = Config::embedded_default(Path::new("data"));
    c.disks[0].zone_size = ByteSize(1000);
    c.server.max_connections = 0;
    c.disks.push(c.disks[0].clone());
    let errors = c.validate().unwrap_err();
    problem(&errors, "disk[0].zone_size", "multiple of 4KiB");
    problem(&errors, "server.max_connections", "from 1");
    problem(&errors, "disk[1].id", "also the id of disk[0]");
    problem(&errors, "disk[1].path", "also the path of disk[0]");
    assert!(errors.problems().iter().all(|p| p.line.is_none()));
}

// ---- load ----

#[test]
fn load_resolves_relative_paths_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shingled.toml");
    let text = "[server]\nauth_secret_file = \"secret\"\n[[disk]]\nid = 0\npath = \"data/d0.img\"\n\
                [[disk]]\nid = 1\npath = \"/abs/d1.img\"\n";
    std::fs::write(&path, text).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.disks[0].path, dir.path().join("data/d0.img"));
    assert_eq!(c.disks[1].path, PathBuf::from("/abs/d1.img"));
    assert_eq!(c.server.auth_secret_file, Some(dir.path().join("secret")));
}

#[test]
fn load_names_the_file_in_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nmax_connections = 0\n[[disk]]\nid = 0\npath = \"/a\"\nzone_size = 7\n",
    )
    .unwrap();
    let errors = load(&path).unwrap_err();
    assert_eq!(errors.path(), Some(path.as_path()));
    let shown = errors.to_string();
    let prefix = path.display().to_string();
    assert!(shown.lines().all(|l| l.starts_with(&prefix)), "{shown}");
    assert!(shown.contains(&format!("{prefix}:2: server.max_connections = 0")), "{shown}");
    assert!(shown.contains(&format!("{prefix}:6: disk[0].zone_size = 7")), "{shown}");
}

#[test]
fn unreadable_files_name_the_path_and_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let errors = load(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors.problems()[0].kind, ProblemKind::Unreadable { .. }));
    let shown = errors.to_string();
    assert!(shown.starts_with(&missing.display().to_string()), "{shown}");
    assert!(shown.contains("cannot read the config file: No such file or directory"), "{shown}");
    let shown = load(dir.path()).unwrap_err().to_string();
    assert!(shown.contains("Is a directory"), "{shown}");
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"[server]\n\xff\xfe").unwrap();
    let shown = load(&binary).unwrap_err().to_string();
    assert!(shown.contains("not UTF-8 text (invalid byte at offset 9)"), "{shown}");
    let huge = dir.path().join("huge.toml");
    std::fs::write(&huge, vec![b'#'; CONFIG_FILE_BYTES_MAX as usize + 1]).unwrap();
    let shown = load(&huge).unwrap_err().to_string();
    assert!(shown.contains("larger than 1MiB"), "{shown}");
}

// ---- placement ----

#[test]
fn placement_spreads_unpinned_disks_round_robin() {
    let mut text = String::new();
    for id in 0..5 {
        text += &format!("[[disk]]\nid = {id}\npath = \"/d{id}\"\n");
    }
    let c = ok(&text);
    let p = c.placement(&[0, 1, 2]).unwrap();
    assert_eq!(p.cpus(), &[0, 1, 2]);
    let cores: Vec<usize> = (0..5).map(|i| p.disk_core(i)).collect();
    assert_eq!(cores, [0, 1, 2, 0, 1]);
    assert_eq!(p.disks_of(0).collect::<Vec<_>>(), [0, 3]);
    // Pinned disks count: the unpinned ones fill the other cores first.
    let c = ok("[[disk]]\nid = 0\npath = \"/a\"\n[[disk]]\nid = 1\npath = \"/b\"\ncore = 0\n\
                [[disk]]\nid = 2\npath = \"/c\"\n[runtime]\ncores = [6, 7]\n");
    let p = c.placement(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    assert_eq!(p.cpus(), &[6, 7]);
    assert_eq!((p.disk_core(0), p.disk_core(1), p.disk_core(2)), (1, 0, 0));
}

#[test]
fn placement_checks_cpus_and_shard_ports_against_the_machine() {
    let c = ok(&format!("[runtime]\ncores = [0, 9]\n{DISK}"));
    let errors = c.placement(&[0, 1, 2, 3, 8]).unwrap_err();
    problem(
        &errors,
        "runtime.cores[1]",
        "CPU 9 is not in this process's CPU affinity mask (0-3,8)",
    );
    let c = ok(&format!("[server]\nshard_port_base = 65000\n{DISK}"));
    let many: Vec<usize> = (0..1024).collect();
    let errors = c.placement(&many).unwrap_err();
    problem(&errors, "server.shard_port_base", "1024 cores would listen on ports 65000 to 66023");
    let errors = c.placement(&[]).unwrap_err();
    problem(&errors, "runtime.cores", "affinity mask is empty");
    let c = ok(&format!("[server]\nshard_port_base = 7695\n{DISK}"));
    c.placement(&[0, 1, 2, 3]).unwrap();
    let errors = c.placement(&(0..8).collect::<Vec<_>>()).unwrap_err();
    problem(&errors, "server.shard_port_base", "server.listen's port 7700");
}
