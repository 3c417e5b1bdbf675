//! Power cuts: nothing acknowledged is lost when the machine loses power,
//! not only when the process is killed.
//!
//! `kill -9` (tests/durability.rs) leaves every write in the kernel's page
//! cache, so it cannot tell a store that syncs before `250` from one that
//! does not. Here the daemon runs with `tests/powercut/powercut.c` preloaded:
//! it logs what each write to the store's directory overwrote since the
//! file's last fsync and, when the test asks, ends the process at a moment
//! when some write is still unsynced, undoing those writes first — what a
//! power cut leaves on disk. The daemon's own layer under SQLite
//! (`store/sqlite/wal_vfs.rs`, which holds WAL frames in memory until the
//! commit's sync) is inside what is tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::load::{Load, assert_each_once};
use common::{ACME, Daemon};

/// Compile the preload library into `dir`.
fn build_library(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powercut/powercut.c");
    let lib = dir.join("powercut.so");
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc powercut.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// The numbers of the library's report: `key=value` pairs.
fn report_value(report: &str, key: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in report {report:?}"))
}

fn env(
    lib: &Path,
    dir: &Path,
    trigger: &Path,
    report: &Path,
    mode: &str,
    seed: u32,
) -> Vec<(String, String)> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        ("LD_PRELOAD".into(), s(lib)),
        ("POWERCUT_DIR".into(), format!("{}/", s(dir))),
        ("POWERCUT_TRIGGER".into(), s(trigger)),
        ("POWERCUT_REPORT".into(), s(report)),
        ("POWERCUT_MODE".into(), mode.into()),
        ("POWERCUT_SEED".into(), seed.to_string()),
        ("POWERCUT_WAIT_MS".into(), "20000".into()),
    ]
}

/// The harness itself: a synced write survives, an unsynced overwrite and
/// an unsynced append do not (a Python process writing through libc).
#[test]
fn the_harness_loses_exactly_the_unsynced_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lib = build_library(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let (trigger, report) = (tmp.path().join("cut"), tmp.path().join("report"));
    let script = r#"
import os, sys, time
fd = os.open(sys.argv[1] + "/f", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"A" * 4096)
os.fsync(fd)
os.pwrite(fd, b"C" * 10, 0)
os.write(fd, b"B" * 4096)
open(sys.argv[2], "w").close()
time.sleep(30)
"#;
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&data)
        .arg(&trigger)
        .envs(env(&lib, &data, &trigger, &report, "all", 1))
        .status()
        .expect("python3");
    assert_eq!(status.code(), Some(137), "the cut ends the process");
    let file = std::fs::read(data.join("f")).expect("read");
    assert_eq!(file, vec![b'A'; 4096], "only the synced write is left");
    let report = std::fs::read_to_string(&report).expect("report");
    // 10 bytes over the synced page, one new page after it.
    assert_eq!(report_value(&report, "lost_pages"), 2, "{report}");
}

/// 4 clients send 1,600 messages; the power is cut twice under that load
/// (once losing every unsynced write, once a random half of their pages). After the
/// last restart every message that got `250` is in exactly one ticket and
/// the database is intact.
#[test]
fn power_cuts_under_load_lose_no_acknowledged_message() {
    let mut d = Daemon::start("", ACME);
    d.stop();
    let lib = build_library(d.dir.path());
    let var = d.dir.path().join("var");
    let trigger = d.dir.path().join("cut-now");
    let mut load = None;
    for (round, mode) in [(1, "all"), (2, "random")] {
        let report = d.dir.path().join(format!("report-{round}"));
        d.env = env(&lib, &var, &trigger, &report, mode, round);
        d.spawn();
        let load = load.get_or_insert_with(|| Load::start(d.smtp, 4, 400));
        load.wait_sent(round as usize * 500, &d);
        std::fs::write(&trigger, "").expect("trigger");
        let status = d.stop_wait();
        assert_eq!(status.code(), Some(137), "cut {round}:\n{}", d.log_text());
        std::fs::remove_file(&trigger).expect("rm trigger");
        let report = std::fs::read_to_string(&report).expect("report");
        assert!(
            report_value(&report, "lost_pages") + report_value(&report, "kept_pages") > 0,
            "cut {round} came at a moment with unsynced writes: {report}"
        );
        if mode == "all" {
            assert!(report_value(&report, "lost_pages") > 0, "{report}");
        }
    }
    d.env.clear();
    d.spawn();
    let acked = load.expect("load").finish();
    assert_eq!(
        acked.len(),
        1600,
        "every message was eventually acknowledged"
    );
    assert_each_once(&d, &acked);
    let db = rusqlite::Connection::open_with_flags(
        var.join("postdesk.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open store");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}
