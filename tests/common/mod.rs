//! Test harness: runs the real `postdesk` binary on free loopback ports in a
//! temp dir, and real peers (swaks, Python's smtplib, Postfix) against it.
#![allow(dead_code)]

pub mod browser;
pub mod dovecot;
pub mod gmail;
pub mod http;
pub mod load;
pub mod pg;
pub mod pki;
pub mod postfix;
pub mod relay;
pub mod smtp;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

/// A TCP port on 127.0.0.1 that is free now and that no earlier call in this
/// process returned. It is taken below the kernel's ephemeral range: a port
/// from `bind(0)` is released before the server it is meant for (the daemon,
/// Postfix, Dovecot, a test's relay) binds it, and in that window any outgoing
/// connection — the tests make thousands — could be given it as its local
/// port. Ports below the range are never handed out that way; each is bound
/// once here to check that nothing else listens on it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = port_range();
    let span = u32::from(hi - lo);
    // Spread concurrent test processes over the range.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lo + ((start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {lo}..{hi}");
}

/// Ports for `free_port`: the 12,000 below the ephemeral range (Linux
/// default 32768-60999), or above it when it starts too low.
fn port_range() -> (u16, u16) {
    let eph = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    match eph {
        (lo, _) if lo >= 13_024 => (lo - 12_000, lo),
        (_, hi) if hi <= 53_000 => (hi + 1, hi + 12_001),
        _ => panic!("ephemeral port range {eph:?} leaves no room for test ports"),
    }
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The users and channels most tests use: Acme with ann and bob, and a
/// `support` forward channel.
pub const ACME: &str = r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"
first_name = "Ann"
last_name = "Agent"

[[users]]
id = "bob"
email = "bob@acme.example"
first_name = "Bob"
last_name = "Builder"

[[channels]]
id = "support"
kind = "forward"
address = "support@acme.example"
[channels.ticket_properties]
pipeline = "support"
status = "new"
priority = "medium"
"#;

/// `[http]` keys every daemon gets unless a test gives its own
/// ([`Daemon::start_http`]): tests send hundreds of replies with one token.
pub const HTTP_EXTRA: &str = "sends_per_minute_per_token = 0";

/// `RUST_LOG` of the daemons tests start.
const DEFAULT_LOG: &str = "info,postdesk=debug";

/// A running postdesk daemon.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub smtp: SocketAddr,
    pub http: SocketAddr,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// `RUST_LOG` the daemon runs with (default `info,postdesk=debug`).
    pub rust_log: String,
    /// Environment variables the next [`Daemon::spawn`] adds.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Write a config with `[smtp]` extra keys and the rest (users, channels…),
    /// and start the daemon.
    pub fn start(smtp_extra: &str, rest: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, smtp_extra, rest, None)
    }

    /// Like [`Daemon::start`] with the store at `store_path`.
    pub fn start_in(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        rest: &str,
        store_path: Option<&Path>,
    ) -> Daemon {
        Self::start_full(dir, smtp_extra, None, rest, store_path)
    }

    /// Like [`Daemon::start`] with the `[relay]` table's keys given (default:
    /// port 9, nothing listening, `tls = "none"`).
    pub fn start_relay(smtp_extra: &str, relay: &str, rest: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_full(dir, smtp_extra, Some(relay), rest, None)
    }

    /// Write the config and start: `relay` replaces the `[relay]` keys.
    pub fn start_full(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        relay: Option<&str>,
        rest: &str,
        store_path: Option<&Path>,
    ) -> Daemon {
        Self::start_with(
            dir,
            smtp_extra,
            relay,
            HTTP_EXTRA,
            rest,
            store_path,
            DEFAULT_LOG,
        )
    }

    /// Like [`Daemon::start`] with `[http]` keys (besides `listen`) given:
    /// they replace the harness's [`HTTP_EXTRA`].
    pub fn start_http(http_extra: &str, rest: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_with(dir, "", None, http_extra, rest, None, DEFAULT_LOG)
    }

    /// Like [`Daemon::start_relay`] with `[http]` keys (besides `listen`)
    /// given: they replace the harness's [`HTTP_EXTRA`].
    pub fn start_relay_http(smtp_extra: &str, relay: &str, http_extra: &str, rest: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_with(
            dir,
            smtp_extra,
            Some(relay),
            http_extra,
            rest,
            None,
            DEFAULT_LOG,
        )
    }

    /// Like [`Daemon::start_full`], the daemon logging with `RUST_LOG=rust_log`.
    pub fn start_logged(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        relay: Option<&str>,
        rest: &str,
        store_path: Option<&Path>,
        rust_log: &str,
    ) -> Daemon {
        Self::start_with(
            dir, smtp_extra, relay, HTTP_EXTRA, rest, store_path, rust_log,
        )
    }

    fn start_with(
        dir: tempfile::TempDir,
        smtp_extra: &str,
        relay: Option<&str>,
        http_extra: &str,
        rest: &str,
        store_path: Option<&Path>,
        rust_log: &str,
    ) -> Daemon {
        let relay = relay.unwrap_or("host = \"127.0.0.1\"\nport = 9\ntls = \"none\"");
        // No DNS lookups from tests unless a test serves its own zone.
        let dns_off = if smtp_extra.contains("dns_resolver") {
            ""
        } else {
            "dns_resolver = \"off\"\n"
        };
        let store = store_path
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| dir.path().join("var/postdesk.sqlite"));
        let config = dir.path().join("postdesk.toml");
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            dir,
            config,
            smtp: "127.0.0.1:0".parse().expect("addr"),
            http: "127.0.0.1:0".parse().expect("addr"),
            child: None,
            log,
            rust_log: rust_log.to_string(),
            env: Vec::new(),
        };
        // A free port is only free until someone takes it: tests running in
        // parallel (and their Postfix, Dovecot) can, between free_port() and
        // the daemon's bind. Then start again on other ports.
        for attempt in 1.. {
            d.smtp = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            d.http = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let text = format!(
                "[store]\npath = {store:?}\n\n[smtp]\nlisten = [\"{}\"]\nhostname = \"desk.acme.example\"\nshutdown_grace_secs = 10\n{dns_off}{smtp_extra}\n\n[http]\nlisten = \"{}\"\n{http_extra}\n\n[relay]\n{relay}\n{rest}\n",
                d.smtp, d.http
            );
            std::fs::write(&d.config, text).expect("write config");
            let _ = std::fs::remove_file(&d.log);
            match d.try_spawn() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        d
    }

    /// Start the process and wait until SMTP answers.
    pub fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Start the process and wait until SMTP answers; Err: what went wrong.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postdesk");
        self.child = Some(child);
        let mut exited = None;
        let ready = wait_for(Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                exited = Some(status);
                return Some(false);
            }
            let mut s = TcpStream::connect_timeout(&self.smtp, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).ok()?;
            (&buf == b"220").then_some(true)
        });
        match (ready, exited) {
            (Some(true), _) => Ok(()),
            (_, Some(status)) => {
                self.child = None;
                Err(format!(
                    "postdesk exited early with {status}:\n{}",
                    self.log_text()
                ))
            }
            _ => Err(format!(
                "postdesk did not become ready:\n{}",
                self.log_text()
            )),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// The pulled mailbox of `channel` as `status --json` shows it.
    pub fn mailbox(&self, channel: &str) -> Value {
        let st = self.cli_json(&["status", "--json"]);
        st["mailboxes"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["channel"] == channel).cloned())
            .unwrap_or(Value::Null)
    }

    /// Wait (up to 240 s) until `channel`'s mailbox passes `f`; panics
    /// saying `what` was awaited.
    pub fn wait_mailbox(&self, channel: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        wait_for(Duration::from_secs(240), || {
            last = self.mailbox(channel);
            f(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "mailbox {channel}: {what}; last {last}\n{}",
                self.log_text()
            )
        })
    }

    /// The daemon's `/metrics` answer (headers and body).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.http).expect("http");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{sig} failed");
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.stop_wait()
    }

    /// Wait for the process to exit (after a signal was sent).
    pub fn stop_wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st;
            }
            if Instant::now() > end {
                let _ = c.kill();
                panic!("postdesk did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run a CLI command against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run postdesk cli")
    }

    /// Run a CLI command that must succeed; panics with stderr otherwise.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "postdesk {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run a CLI command that prints JSON; panics with stderr on failure.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "postdesk {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn tickets(&self) -> Vec<Value> {
        match self.cli_json(&["tickets", "list", "--json"]) {
            Value::Array(v) => v,
            other => panic!("tickets list is not an array: {other}"),
        }
    }

    /// Issue an API token for `user` with the CLI (the default role, agent).
    pub fn token(&self, user: &str) -> String {
        self.token_with(user, &[])
    }

    /// Issue an admin API token for `user`.
    pub fn admin_token(&self, user: &str) -> String {
        self.token_with(user, &["--role", "admin"])
    }

    /// Issue an API token for `user` with extra `users token` options.
    pub fn token_with(&self, user: &str, options: &[&str]) -> String {
        let mut args = vec!["users", "token", user];
        args.extend_from_slice(options);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "users token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Set `user`'s web inbox password (given on standard input, as an
    /// admin types it) and web role with the CLI.
    pub fn set_password(&self, user: &str, password: &str, role: &str) {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(["users", "password", user, "--role", role])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("postdesk users password");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{password}").expect("write password");
        drop(stdin);
        assert!(child.wait_with_output().expect("wait").status.success());
    }

    /// Sign in to the web inbox with a password: the session cookie
    /// (`name=value`), checked to be HttpOnly and SameSite=Lax.
    pub fn sign_in(&self, email: &str, password: &str) -> String {
        let body = format!(
            "email={}&password={password}&next=%2F",
            email.replace('@', "%40")
        );
        let (status, cookie, _) = http::request_header(
            self.http,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            None,
            Some(&body),
            "set-cookie",
        );
        assert_eq!(status, 303, "sign-in");
        let cookie = cookie.expect("Set-Cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        cookie.split(';').next().expect("name=value").to_string()
    }

    /// An HTTP request to this daemon's API: (status, JSON body or Null).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        http::request(self.http, method, path, token, body)
    }

    pub fn ticket(&self, number: i64) -> Value {
        self.cli_json(&["tickets", "show", &number.to_string(), "--json"])
    }

    /// Wait until at least `n` tickets exist; returns them.
    pub fn wait_tickets(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut last = Vec::new();
        let got = wait_for(timeout, || {
            last = self.tickets();
            (last.len() >= n).then(|| last.clone())
        });
        got.unwrap_or_else(|| {
            panic!(
                "expected {n} tickets, have {}:\n{}",
                last.len(),
                self.log_text()
            )
        })
    }

    /// A customer (carol@customer.example) mails `subject` and `body` to
    /// support@acme.example through the SMTP listener (swaks); waits for the
    /// ticket with that subject and returns its number.
    pub fn mail_ticket(&self, subject: &str, body: &str) -> i64 {
        let (ok, out) = swaks(
            self.smtp,
            &[
                "--from",
                "carol@customer.example",
                "--to",
                "support@acme.example",
                "--h-Subject",
                subject,
                "--body",
                body,
            ],
        );
        assert!(ok, "{out}");
        wait_for(Duration::from_secs(60), || {
            self.tickets()
                .iter()
                .find(|t| t["subject"] == subject)
                .and_then(|t| t["number"].as_i64())
        })
        .unwrap_or_else(|| panic!("no ticket {subject:?}:\n{}", self.log_text()))
    }

    /// Wait until the spool has nothing pending.
    pub fn wait_ingested(&self, timeout: Duration) -> Value {
        let mut last = Value::Null;
        wait_for(timeout, || {
            last = self.cli_json(&["status", "--json"]);
            (last["store"]["spool_pending"] == 0).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("spool not drained: {last}\n{}", self.log_text()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Run swaks; returns its output (stdout + stderr) and whether it succeeded.
pub fn swaks(server: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .arg("--server")
        .arg(server.ip().to_string())
        .arg("--port")
        .arg(server.port().to_string())
        .args(args)
        .output()
        .expect("swaks is installed (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Run a Python script with `server` host/port as argv[1], argv[2].
pub fn python(script: &str, server: SocketAddr, extra: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .args(extra)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The messages array of a ticket.
pub fn messages(ticket: &Value) -> &Vec<Value> {
    ticket["messages"].as_array().expect("messages array")
}

/// A tmpfs of `size` mounted at `dir` (root only: CI and tests run as root here).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the disk-full test simulates a full disk with one)"
        );
        Tmpfs(dir.to_path_buf())
    }
    /// Remount read-only (`true`) or writable: even root cannot write then.
    pub fn read_only(&self, ro: bool) {
        let mode = if ro { "remount,ro" } else { "remount,rw" };
        let st = Command::new("mount")
            .args(["-o", mode])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(st.success(), "remount {mode} failed");
    }

    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
