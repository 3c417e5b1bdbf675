//! Files postdesk creates that hold customer data are private whatever the
//! umask: the store (and its `-wal` / `-shm`) made by a CLI command run
//! under `umask 000` is mode 0600.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::BIN;

#[test]
fn a_store_created_under_umask_000_is_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("postdesk.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"var/postdesk.sqlite\"\n[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"s@acme.example\"\n",
    )
    .expect("config");
    let script = format!(
        "umask 000 && touch {0}/probe && exec {BIN} --config {1} tickets list",
        dir.path().display(),
        config.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run postdesk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The umask really was 000 (else this proves nothing).
    let probe = std::fs::metadata(dir.path().join("probe")).expect("probe");
    assert_eq!(probe.permissions().mode() & 0o777, 0o666);
    let db = dir.path().join("var/postdesk.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", db.display());
        if suffix.is_empty() || std::path::Path::new(&file).exists() {
            let mode = std::fs::metadata(&file)
                .expect("store file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
}
