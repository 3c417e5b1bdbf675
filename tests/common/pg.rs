//! A private PostgreSQL cluster for integration tests: the same harness the
//! library's tests use (`src/store/postgres/cluster.rs`), included here;
//! and daemons configured to use it.

use std::os::unix::fs::PermissionsExt;

use super::{Daemon, free_port};

#[path = "../../src/store/postgres/cluster.rs"]
mod cluster;

// Test crates that start no cluster do not use it.
#[allow(unused_imports)]
pub use cluster::*;

/// A daemon (not started: call [`Daemon::spawn`]) on `url`'s database, its
/// config in a temp dir and the URL in a 0600 file: `store_extra` added to
/// `[store]` (a node's `node_id`, `lease_secs`), `relay` the `[relay]` keys
/// (default: port 9, nothing listening), `rest` the users and channels.
pub fn daemon_on(url: &str, store_extra: &str, relay: Option<&str>, rest: &str) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    let url_file = secrets.join("postgres-url");
    std::fs::write(&url_file, format!("{url}\n")).expect("url file");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let smtp = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let relay = relay.unwrap_or("host = \"127.0.0.1\"\nport = 9\ntls = \"none\"");
    let config = dir.path().join("postdesk.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"postgres\"\nurl_file = \"secrets/postgres-url\"\npool_size = 4\n{store_extra}\n\n\
             [smtp]\nlisten = [\"{smtp}\"]\nhostname = \"desk.acme.example\"\ndns_resolver = \"off\"\n\n\
             [http]\nlisten = \"{http}\"\n{}\n\n[relay]\n{relay}\n{rest}\n",
            super::HTTP_EXTRA
        ),
    )
    .expect("config");
    let log = dir.path().join("daemon.log");
    Daemon {
        config,
        smtp: smtp.parse().expect("addr"),
        http: http.parse().expect("addr"),
        child: None,
        log,
        rust_log: "info,postdesk=debug".into(),
        env: Vec::new(),
        dir,
    }
}
