//! A private Postfix instance in a temp dir, listening on a free loopback
//! port: the mail admin's upstream MTA that relays a team alias to postdesk
//! ([`Postfix::start`]), or the relay for replies that delivers every
//! recipient into one Maildir ([`Postfix::start_maildir`]) or relays by
//! domain ([`Postfix::start_routes`]).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

const SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Start Postfix relaying everything for `relay_domains` to 127.0.0.1:`relay_port`.
    pub fn start(relay_port: u16, relay_domains: &str) -> Postfix {
        let extra = format!(
            "relay_domains = {relay_domains}\nrelayhost = [127.0.0.1]:{relay_port}\nmydestination =\n"
        );
        Self::start_with(None, &extra, "")
    }

    /// Start Postfix as an MTA that relays mail for each `(domain, port)`
    /// route to 127.0.0.1:port — e.g. replies to a remote MX that refuses
    /// them, and its own DSNs back to postdesk.
    pub fn start_routes(routes: &[(&str, u16)]) -> Postfix {
        let domains: Vec<&str> = routes.iter().map(|(d, _)| *d).collect();
        let map: Vec<String> = routes
            .iter()
            .map(|(d, p)| format!("{{ {d} = smtp:[127.0.0.1]:{p} }}"))
            .collect();
        let extra = format!(
            "mydestination =\nrelay_domains = {}\ntransport_maps = inline:{{ {} }}\n",
            domains.join(", "),
            map.join(", ")
        );
        Self::start_with(None, &extra, "")
    }

    /// Start Postfix as a relay that accepts mail for any domain from
    /// loopback and delivers it into one Maildir ([`Postfix::maildir`]).
    /// `port`: listen there (to bring a "down" relay up), else a free port.
    pub fn start_maildir(port: Option<u16>) -> Postfix {
        Self::start_with(port, MAILDIR_MAIN, MAILDIR_MASTER)
    }

    /// [`Postfix::start_maildir`] with TLS from `cert`/`key`: STARTTLS offered
    /// on [`Postfix::port`], implicit TLS (wrapper mode) on `smtps_port`.
    pub fn start_maildir_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        smtps_port: u16,
    ) -> Postfix {
        let main = format!(
            "{MAILDIR_MAIN}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = may\nsmtpd_tls_loglevel = 1\n",
            cert.display(),
            key.display()
        );
        let master = format!(
            "{MAILDIR_MASTER}127.0.0.1:{smtps_port} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n"
        );
        Self::start_with(None, &main, &master)
    }
}

const MAILDIR_MASTER: &str = "virtual   unix  -       n       n       -       -       virtual\n";
const MAILDIR_MAIN: &str = "mydestination =
virtual_mailbox_domains = static:all
virtual_mailbox_base = MAILBASE
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 1
virtual_mailbox_limit = 0
virtual_destination_concurrency_limit = 20
";

impl Postfix {
    /// The Maildir of [`Postfix::start_maildir`] (its `new/` holds delivered mail).
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/inbox")
    }

    /// Files delivered to the Maildir so far.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.maildir().join("new")) {
            let mut paths: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
        out
    }

    fn start_with(port: Option<u16>, main_extra: &str, master_extra: &str) -> Postfix {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        for d in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(p.join(d)).expect("mkdir");
        }
        let _ = Command::new("chown")
            .arg("65534:65534")
            .arg(p.join("mail"))
            .status();
        let main_extra = main_extra.replace("MAILBASE", &p.join("mail").display().to_string());
        let port = port.unwrap_or_else(free_port);
        let main_cf = format!(
            "compatibility_level = 3.6
config_directory = {p}/etc
queue_directory = {p}/queue
data_directory = {p}/data
maillog_file = {p}/maillog
maillog_file_prefixes = /var, /dev/stdout, /tmp
myhostname = upstream.test
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = yes
message_size_limit = 52428800
{main_extra}",
            p = p.display()
        );
        std::fs::write(p.join("etc/main.cf"), main_cf).expect("main.cf");
        let master = format!("127.0.0.1:{port} inet n - n - - smtpd\n{SERVICES}{master_extra}");
        std::fs::write(p.join("etc/master.cf"), master).expect("master.cf");
        let _ = Command::new("chown")
            .arg("-R")
            .arg("postfix")
            .arg(p.join("data"))
            .status();
        let _ = Command::new("chmod").arg("755").arg(p).status();
        let child = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(p.join("etc"))
            .arg("start-fg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postfix is installed (scripts/test installs it)");
        let pf = Postfix {
            dir,
            port,
            child: Some(child),
        };
        let up = wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "postfix did not start:\n{}", pf.log());
        pf
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.etc())
            .arg("stop")
            .output();
        if let Some(mut c) = self.child.take() {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
