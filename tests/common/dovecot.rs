//! A private Dovecot IMAP server on a free 127.0.0.1 port in a temp dir
//! (run unprivileged: no system service), with one user `test` / `secret` whose INBOX is
//! a Maildir the test fills directly; optionally an `oauth2` passdb that asks
//! an [`OAuthServer`] to introspect bearer tokens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{free_port, wait_for};

pub const USER: &str = "test";
pub const PASSWORD: &str = "secret";

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    /// Plain IMAP (STARTTLS offered when TLS is on).
    pub port: u16,
    /// Implicit TLS (0 when TLS is off).
    pub imaps_port: u16,
    child: Option<Child>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Dovecot {
    /// Start Dovecot; `introspect` is the OAuth server's port (XOAUTH2 enabled).
    pub fn start(introspect: Option<u16>) -> Dovecot {
        Self::start_with(introspect, None)
    }

    /// Start Dovecot with TLS: `tls` is (certificate PEM, key PEM); STARTTLS
    /// on [`Dovecot::port`], implicit TLS on [`Dovecot::imaps_port`].
    pub fn start_with(introspect: Option<u16>, tls: Option<(&str, &str)>) -> Dovecot {
        Self::start_full(introspect, tls, "")
    }

    /// Start Dovecot with `extra` appended to its configuration.
    pub fn start_configured(extra: &str) -> Dovecot {
        Self::start_full(None, None, extra)
    }

    fn start_full(introspect: Option<u16>, tls: Option<(&str, &str)>, extra: &str) -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let imaps_port = if tls.is_some() { free_port() } else { 0 };
        let ssl = match tls {
            Some((cert, key)) => {
                std::fs::write(d.join("cert.pem"), cert).expect("cert");
                std::fs::write(d.join("key.pem"), key).expect("key");
                format!(
                    "ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem",
                    d = d.display()
                )
            }
            None => "ssl = no".to_string(),
        };
        let imaps = if tls.is_some() {
            format!("    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes")
        } else {
            "    port = 0".to_string()
        };
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let oauth_passdb = match introspect {
            Some(p) => {
                std::fs::write(
                    d.join("oauth2.conf.ext"),
                    format!(
                        "introspection_mode = post\nintrospection_url = http://127.0.0.1:{p}/introspect\nusername_attribute = username\nactive_attribute = active\nactive_value = true\nforce_introspection = yes\n"
                    ),
                )
                .expect("oauth2 conf");
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                    d.join("oauth2.conf.ext").display()
                )
            }
            None => String::new(),
        };
        let conf = format!(
            r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
{oauth_passdb}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
{imaps}
  }}
}}
service anvil {{
  chroot =
}}
{extra}
"#,
            d = d.display()
        );
        std::fs::write(d.join("dovecot.conf"), conf).expect("conf");
        std::fs::write(
            d.join("users"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .expect("users");
        let mut dc = Dovecot {
            dir,
            port,
            imaps_port,
            child: None,
        };
        dc.make_maildir();
        dc.spawn();
        dc
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("home").join(USER).join("Maildir")
    }

    fn make_maildir(&self) {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(self.maildir().join(sub)).expect("maildir");
        }
        chown_nobody(self.dir.path());
    }

    /// Start (or restart) the server and wait until it greets.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log");
        let child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dovecot is installed (scripts/test installs dovecot-imapd)");
        self.child = Some(child);
        let port = self.port;
        let up = wait_for(Duration::from_secs(20), || {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).ok()?;
            line.starts_with("* OK").then_some(())
        });
        assert!(up.is_some(), "dovecot did not start:\n{}", self.log());
    }

    /// Stop the server (SIGTERM to the master, then wait).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
            // Children (imap, imap-login) leave with the master; wait for the port.
            let port = self.port;
            wait_for(Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_err()
                    .then_some(())
            });
        }
    }

    pub fn log(&self) -> String {
        let a = std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default();
        let b = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        format!("{a}{b}")
    }

    /// Deliver one message into INBOX (write to tmp/, rename into new/).
    pub fn deliver(&self, raw: &[u8]) {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}.P{}Q{n}.postdesk-test", now_secs(), std::process::id());
        let tmp = self.maildir().join("tmp").join(&name);
        std::fs::write(&tmp, raw).expect("write tmp");
        std::fs::rename(&tmp, self.maildir().join("new").join(&name)).expect("rename");
    }

    /// Deliver one message into `folder` (a Maildir++ folder beside INBOX,
    /// created if missing).
    pub fn deliver_to(&self, folder: &str, raw: &[u8]) {
        let dir = self.folder_dir(folder);
        if !dir.exists() {
            for sub in ["tmp", "new", "cur"] {
                std::fs::create_dir_all(dir.join(sub)).expect("folder");
            }
            chown_nobody(&dir);
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}.P{}Q{n}.postdesk-test", now_secs(), std::process::id());
        std::fs::write(dir.join("tmp").join(&name), raw).expect("write tmp");
        std::fs::rename(dir.join("tmp").join(&name), dir.join("new").join(&name)).expect("rename");
    }

    /// The Maildir++ directory of `folder` (`INBOX`: the Maildir itself).
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        if folder.eq_ignore_ascii_case("INBOX") {
            self.maildir()
        } else {
            self.maildir().join(format!(".{folder}"))
        }
    }

    /// Messages in `folder` (new and cur), not counting ones flagged deleted.
    pub fn count_in(&self, folder: &str) -> usize {
        let dir = self.folder_dir(folder);
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()))
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name
                    .rsplit_once(":2,")
                    .is_some_and(|(_, f)| f.contains('T'))
            })
            .count()
    }

    /// Delete and recreate INBOX (server stopped meanwhile), delivering
    /// `raws` again: the mailbox gets a new UIDVALIDITY.
    pub fn recreate_mailbox(&mut self, raws: &[Vec<u8>]) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.maildir());
        // UIDVALIDITY is derived from the clock in seconds; make sure it moves.
        std::thread::sleep(Duration::from_millis(1100));
        self.make_maildir();
        for raw in raws {
            self.deliver(raw);
        }
        self.spawn();
    }

    /// The password file contents postdesk's config points at.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let p = dir.join("imap-password");
        std::fs::write(&p, format!("{PASSWORD}\n")).expect("password file");
        p
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn chown_nobody(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(st.success(), "chown failed");
}

/// A `kind = "imap"` channel `id` pulling `dc`'s INBOX as `test` with the
/// password in `pw`, `extra` added to its `[channels.imap]`.
pub fn imap_channel(id: &str, address: &str, dc: &Dovecot, pw: &Path, extra: &str) -> String {
    imap_channel_on(id, address, dc.port, pw, extra)
}

/// [`imap_channel`] through whatever listens on `port` (a proxy in front of
/// Dovecot).
pub fn imap_channel_on(id: &str, address: &str, port: u16, pw: &Path, extra: &str) -> String {
    format!(
        r#"
[[channels]]
id = "{id}"
kind = "imap"
address = "{address}"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
password_file = {pw:?}
{extra}
"#
    )
}

/// A test message with a unique Message-ID, about `size` bytes of body.
pub fn message(i: usize, size: usize) -> Vec<u8> {
    let line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let mut body = String::new();
    while body.len() < size {
        body.push_str(line);
    }
    format!(
        "From: Customer {i} <customer{i}@example.com>\r\nTo: help@acme.example\r\nSubject: Pulled message {i}\r\nMessage-ID: <pull-{i}@example.com>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nMessage number {i}.\r\n{body}"
    )
    .into_bytes()
}

/// A tiny OAuth 2 server (Python's http.server) on a free port: `/token`
/// answers the refresh-token grant with a fresh access token and a rotated
/// refresh token (the old one stops working); `/introspect` tells Dovecot
/// whether an access token is live. `revoke` makes a refresh token refused
/// with `invalid_grant`.
pub struct OAuthServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

const OAUTH_PY: &str = r#"
import json, sys, secrets, threading, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
port, statefile = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def load():
    with open(statefile) as f: return json.load(f)
def save(s):
    with open(statefile + ".tmp", "w") as f: json.dump(s, f)
    import os; os.replace(statefile + ".tmp", statefile)
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        get = lambda k: (form.get(k) or [""])[0]
        with lock:
            s = load()
            if self.path == "/token":
                s["token_requests"] += 1
                if get("grant_type") == "client_credentials" and get("client_id") == s["client_id"]:
                    s["app_requests"] = s.get("app_requests", 0) + 1
                    if get("client_secret") != s.get("app_secret"):
                        save(s); return self.reply(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
                    if get("scope") != "https://outlook.office365.com/.default":
                        save(s); return self.reply(400, {"error": "invalid_scope"})
                    at = "at-app-" + secrets.token_hex(8)
                    s["access"][at] = s.get("app_user", "test")
                    save(s)
                    return self.reply(200, {"access_token": at, "token_type": "Bearer", "expires_in": s.get("expires_in", 3600)})
                rt = get("refresh_token")
                if get("grant_type") != "refresh_token" or get("client_id") != s["client_id"]:
                    save(s); return self.reply(400, {"error": "invalid_request"})
                user = s["refresh"].pop(rt, None)
                if user is None:
                    save(s); return self.reply(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
                at, nrt = "at-" + secrets.token_hex(8), "rt-" + secrets.token_hex(8)
                s["access"][at] = user
                s["refresh"][nrt] = user
                save(s)
                return self.reply(200, {"access_token": at, "token_type": "Bearer", "expires_in": s.get("expires_in", 3600), "refresh_token": nrt})
            if self.path == "/introspect":
                s["introspections"] += 1
                user = s["access"].get(get("token"))
                save(s)
                if user is None: return self.reply(401, {"active": False})
                return self.reply(200, {"active": True, "username": user})
        self.reply(404, {})
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl OAuthServer {
    pub fn start() -> OAuthServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let state = dir.path().join("state.json");
        std::fs::write(
            &state,
            r#"{"client_id": "postdesk-test", "refresh": {}, "access": {}, "token_requests": 0, "introspections": 0}"#,
        )
        .expect("state");
        std::fs::write(dir.path().join("oauth.py"), OAUTH_PY).expect("script");
        let child = Self::spawn(dir.path(), port);
        OAuthServer { port, dir, child }
    }

    fn spawn(dir: &std::path::Path, port: u16) -> Child {
        let child = Command::new("python3")
            .arg(dir.join("oauth.py"))
            .arg(port.to_string())
            .arg(dir.join("state.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "oauth server did not start");
        child
    }

    /// Take the endpoint down (connections refused), keeping its state.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Bring it back on the same port with the same grants.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path(), self.port);
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).expect("state");
        serde_json::from_str(&text).expect("state json")
    }

    /// Issue a refresh token for `user` (as a consent flow would).
    pub fn grant(&self, user: &str) -> String {
        let token = format!("rt-initial-{}", SEQ.fetch_add(1, Ordering::SeqCst));
        self.update(|s| s["refresh"][&token] = serde_json::Value::String(user.into()));
        token
    }

    /// Lifetime of the access tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.update(|s| s["expires_in"] = secs.into());
    }

    /// Accept `secret` as the client secret of the client-credentials
    /// (app-only) grant, whose tokens open `user`'s mailbox; returns it.
    pub fn app_secret(&self, secret: &str, user: &str) -> String {
        self.update(|s| {
            s["app_secret"] = secret.into();
            s["app_user"] = user.into();
        });
        secret.to_string()
    }

    /// Client-credentials requests answered so far.
    pub fn app_requests(&self) -> u64 {
        self.state()["app_requests"].as_u64().unwrap_or(0)
    }

    /// Change the state file: the server rereads it on each request, so it
    /// is replaced whole.
    fn update(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("state.json");
        let mut s = self.state();
        f(&mut s);
        let tmp = path.with_extension("test-tmp");
        std::fs::write(&tmp, s.to_string()).expect("state");
        std::fs::rename(&tmp, &path).expect("state");
    }

    /// The user an access token was issued for.
    pub fn user_of(&self, access_token: &str) -> Option<String> {
        self.state()["access"][access_token]
            .as_str()
            .map(str::to_string)
    }

    pub fn token_requests(&self) -> u64 {
        self.state()["token_requests"].as_u64().unwrap_or(0)
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
