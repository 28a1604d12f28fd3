//! `shingle-bench` end to end: a real `shingled` spawned on a temporary file under a 1-second
//! randrw job (every GET checked against the bytes PUT, no failed request), its JSON read with
//! the expectations fio's own JSON meets, and the errors for an unreachable server and an
//! option shingle-bench does not take.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_shingle-bench");

/// The debug `shingled` of this workspace, built if missing.
fn shingled() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    let binary = target.join("debug").join("shingled");
    if !binary.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args(["build", "-q", "-p", "shingle-daemon", "--bin", "shingled"])
            .status()
            .unwrap();
        assert!(status.success(), "building shingled failed");
    }
    binary
}

fn bench(args: &[&str]) -> Output {
    Command::new(BENCH).args(args).output().unwrap()
}

/// What tooling written for fio's `--output-format=json` reads.
fn check_fio_shape(root: &Value, what: &str) {
    let job = &root["jobs"][0];
    assert!(job["jobname"].is_string(), "{what}: jobs[0].jobname");
    assert!(job["job_runtime"].is_u64(), "{what}: jobs[0].job_runtime");
    for key in ["usr_cpu", "sys_cpu"] {
        assert!(job[key].is_number(), "{what}: jobs[0].{key}");
    }
    for dir in ["read", "write"] {
        let d = &job[dir];
        assert!(d["iops"].is_f64(), "{what}: jobs[0].{dir}.iops = {}", d["iops"]);
        for key in ["io_bytes", "io_kbytes", "bw", "bw_bytes", "runtime", "total_ios"] {
            assert!(d[key].is_u64(), "{what}: jobs[0].{dir}.{key} = {}", d[key]);
        }
        for lat in ["slat_ns", "clat_ns", "lat_ns"] {
            for key in ["min", "max", "N"] {
                assert!(d[lat][key].is_u64(), "{what}: jobs[0].{dir}.{lat}.{key}");
            }
            for key in ["mean", "stddev"] {
                assert!(d[lat][key].is_number(), "{what}: jobs[0].{dir}.{lat}.{key}");
            }
        }
        let p = &d["clat_ns"]["percentile"];
        for key in ["1.000000", "50.000000", "99.000000", "99.900000", "99.990000"] {
            assert!(
                p[key].is_u64(),
                "{what}: jobs[0].{dir}.clat_ns.percentile[{key}] = {}",
                p[key]
            );
        }
        // Units: bw is KiB/s, bw_bytes bytes/s; runtime in ms.
        let (bw, bw_bytes) = (d["bw"].as_u64().unwrap(), d["bw_bytes"].as_u64().unwrap());
        assert!(bw_bytes / 1024 - bw <= 1, "{what}: {dir}.bw {bw} vs bw_bytes {bw_bytes}");
        let (bytes, ms) = (d["io_bytes"].as_f64().unwrap(), d["runtime"].as_f64().unwrap());
        let rate = bytes / (ms / 1e3);
        assert!((rate / bw_bytes as f64 - 1.0).abs() < 0.05, "{what}: {dir} {rate} {bw_bytes}");
    }
}

#[test]
fn a_one_second_randrw_job_against_a_spawned_daemon_checks_every_read() {
    let dir = std::env::temp_dir().join(format!("shingle-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    let shingled = shingled();
    let output = bench(&[
        "--spawn",
        disk.to_str().unwrap(),
        "--shingled",
        shingled.to_str().unwrap(),
        "--name=e2e",
        "--rw=randrw",
        "--rwmixread=60",
        "--bs=4k-64k",
        "--iodepth=8",
        "--numjobs=2",
        "--size=4m",
        "--runtime=1",
        "--time_based",
        "--output-format=json",
        "--eta=never",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    assert!(!disk.exists(), "the disk file it created is removed");
    let root: Value = serde_json::from_slice(&output.stdout).unwrap();
    check_fio_shape(&root, "shingle-bench");
    assert!(root["shingle-bench version"].as_str().unwrap().starts_with("shingle-bench-"));
    let job = &root["jobs"][0];
    assert_eq!(job["jobname"], "e2e");
    assert_eq!(job["error"], 0, "{job}");
    assert!(job["read"]["total_ios"].as_u64().unwrap() > 0, "every GET's bytes were checked");
    assert!(job["write"]["total_ios"].as_u64().unwrap() > 0);
    assert_eq!(job["shingle"]["clients"], 2);
    let shingle = &root["shingle"];
    assert_eq!(shingle["errors"], serde_json::json!({}), "no failed request");
    assert!(shingle["server_cpu"]["cpu_s"].is_number(), "the spawned daemon's CPU from /proc");
    assert!(shingle["total"]["read"]["clat_ns"]["percentile"]["99.000000"].is_u64());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fios_own_json_meets_the_same_expectations() {
    if Command::new("fio").arg("--version").output().is_err() {
        eprintln!("fio is not installed: skipped (scripts/test installs it)");
        return;
    }
    let file = std::env::temp_dir().join(format!("shingle-bench-fio-shape-{}", std::process::id()));
    let output = Command::new("fio")
        .args(["--name=shape", "--rw=randrw", "--bs=4k", "--size=8m", "--runtime=1"])
        .arg(format!("--filename={}", file.display()))
        .args(["--ioengine=psync", "--output-format=json"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let root: Value = serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
    check_fio_shape(&root, "fio");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = bench(&["--server", &format!("127.0.0.1:{port}"), "--rw=write", "--size=1m"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach shingled at 127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("--spawn"), "says how to start one: {stderr}");
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("shingle-bench-jobfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let job = dir.join("job.fio");
    std::fs::write(&job, "[global]\nsize=1m\n\n[r]\nrw=randread\nzonemode=zbd\n").unwrap();
    let output = bench(&[job.to_str().unwrap(), "--server", "127.0.0.1:1"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 6") && stderr.contains("`zonemode` is not supported"),
        "{stderr}"
    );
}
