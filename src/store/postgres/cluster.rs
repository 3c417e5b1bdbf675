//! A private PostgreSQL cluster for tests: `initdb` in a temp dir, the
//! server started as a non-root user (`postgres`, else `nobody`, when the
//! tests run as root) listening on a unix socket in that dir (and on
//! 127.0.0.1 when asked), and stopped by its PID when dropped. No system
//! service is touched. Shared by the library's tests and the integration
//! tests (`tests/common/pg.rs` includes this file).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates (trust authentication: only this
/// cluster's own socket dir and 127.0.0.1 reach it).
pub const SUPERUSER: &str = "postdesk";
/// The port number in the socket's name (`.s.PGSQL.5432`); TCP uses its own.
const SOCKET_PORT: u16 = 5432;

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user the server runs as, when the tests run as root.
    user: Option<String>,
    /// The TCP port on 127.0.0.1, if the cluster listens there.
    pub tcp_port: Option<u16>,
    child: Option<Child>,
}

impl Cluster {
    /// A new cluster on a unix socket only, with an empty database `postdesk`.
    pub fn start() -> Cluster {
        Self::start_on(None)
    }

    /// A new cluster, also listening on 127.0.0.1:`tcp_port` when given.
    pub fn start_on(tcp_port: Option<u16>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir()
            .expect("tempdir");
        let bin = bin_dir();
        let user = run_as();
        std::fs::create_dir(dir.path().join("sock")).expect("mkdir sock");
        if let Some(u) = &user {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown {u} failed");
        }
        let mut c = Cluster {
            dir,
            bin,
            user,
            tcp_port,
            child: None,
        };
        let data = c.data();
        let out = c
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs (scripts/test installs postgresql)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c.spawn();
        c.create_db("postdesk");
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A libpq URL for database `db` over the unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{db}?host={}&port={}",
            self.socket_dir().display(),
            self.port()
        )
    }

    /// A libpq URL for database `db` over TCP (the cluster must listen there).
    pub fn tcp_url(&self, db: &str) -> String {
        let port = self.tcp_port.expect("cluster started with a TCP port");
        format!("postgresql://{SUPERUSER}@127.0.0.1:{port}/{db}")
    }

    /// Create another empty database, for a test that wants its own.
    pub fn create_db(&self, name: &str) {
        let out = self
            .command("createdb")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER, name])
            .output()
            .expect("createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `sql` with psql on database `db`; its stdout (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Serve TLS from now on with this certificate chain and key (PEM):
    /// written into the data directory (the key readable by the server's
    /// user only), `ssl = on`, configuration reloaded; returns once new
    /// sessions see it.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        for (name, text, mode) in [
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ] {
            let path = self.data().join(name);
            std::fs::write(&path, text).expect("write TLS file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            if let Some(u) = &self.user {
                let st = Command::new("chown")
                    .arg(format!("{u}:"))
                    .arg(&path)
                    .status()
                    .expect("chown");
                assert!(st.success(), "chown {u} failed");
            }
        }
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql("postgres", "SELECT pg_reload_conf()");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("postgres", "SHOW ssl") != "on" {
            assert!(Instant::now() < deadline, "ssl not on:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start the server (again) and wait until it accepts connections.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log");
        let listen = if self.tcp_port.is_some() {
            "127.0.0.1"
        } else {
            ""
        };
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string()])
            .arg("-c")
            .arg(format!("listen_addresses={listen}"))
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .command("pg_isready")
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port().to_string(), "-U", SUPERUSER, "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("postgres exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port in the socket's name, and the TCP port when listening there
    /// (PostgreSQL uses one number for both).
    fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(SOCKET_PORT)
    }

    /// Stop the server: SIGINT to its PID (fast shutdown), then wait.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGINT);
    }

    /// Stop the server as a crash would: SIGQUIT (immediate shutdown, no
    /// checkpoint; the next start recovers from the WAL), then wait.
    pub fn stop_immediate(&mut self) {
        self.signal_and_wait(libc::SIGQUIT);
    }

    /// Stop (fast shutdown) and start again on the same socket and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn signal_and_wait(&mut self, sig: libc::c_int) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) with our own child's PID, which `wait` has not reaped.
                unsafe { libc::kill(pid, sig) };
            }
            let _ = child.wait();
        }
    }

    /// A command of the PostgreSQL binaries, run as the cluster's user.
    fn command(&self, name: &str) -> Command {
        let exe = self.bin.join(name);
        match &self.user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={}", group_of(u)))
                    .arg("--clear-groups")
                    .arg(exe)
                    // The server's environment: its HOME is not root's.
                    .env("HOME", self.dir.path())
                    .current_dir(self.dir.path());
                c
            }
            None => Command::new(exe),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the PostgreSQL programs are: next to the `initdb` on PATH (a
/// symlink is followed to its directory), else Debian's newest
/// `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    let complete = |d: &std::path::Path| {
        ["initdb", "postgres", "pg_isready", "createdb", "psql"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .filter_map(|d| std::fs::canonicalize(d.join("initdb")).ok())
            .filter_map(|exe| exe.parent().map(PathBuf::from))
            .find(|d| complete(d))
    });
    if let Some(d) = on_path {
        return d;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, d)| d)
        .expect("PostgreSQL is installed (scripts/test installs postgresql)")
}

/// Whom to run the server as: PostgreSQL refuses root.
fn run_as() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    Some(
        if exists("postgres") {
            "postgres"
        } else {
            "nobody"
        }
        .to_string(),
    )
}

fn group_of(user: &str) -> String {
    let out = Command::new("id").args(["-gn", user]).output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "nogroup".into())
}
