//! Pulling over TLS from a real Dovecot: implicit TLS (imaps) and STARTTLS,
//! with a test CA that postdesk trusts through `SSL_CERT_FILE` (read by the
//! platform verifier's native root loading on Linux). One test in this
//! binary, because it sets a process environment variable.

mod common;

use std::process::Command;
use std::time::Duration;

use common::dovecot::{Dovecot, message};
use common::{ACME, Daemon};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pulls_over_implicit_tls_and_starttls() {
    let pki = tempfile::tempdir().expect("tempdir");
    let p = pki.path();
    openssl(
        p,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=postdesk test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let cert = std::fs::read_to_string(p.join("server.pem")).expect("cert");
    let key = std::fs::read_to_string(p.join("server.key")).expect("key");
    // SAFETY: the only test in this binary sets it before starting any thread
    // that reads the environment; child processes inherit it.
    unsafe { std::env::set_var("SSL_CERT_FILE", p.join("ca.pem")) };

    let dc = Dovecot::start_with(None, Some((&cert, &key)));
    let pw = dc.password_file(p);
    for i in 0..3 {
        dc.deliver(&message(i, 300));
    }
    let channel = |id: &str, addr: &str, port: u16, tls: &str| {
        format!(
            "\n[[channels]]\nid = \"{id}\"\nkind = \"imap\"\naddress = \"{addr}\"\n[channels.imap]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\nusername = \"test\"\npassword_file = {pw:?}\n"
        )
    };
    let d = Daemon::start(
        "",
        &format!(
            "{ACME}{}{}",
            channel("implicit", "tls1@acme.example", dc.imaps_port, "implicit"),
            channel("starttls", "tls2@acme.example", dc.port, "starttls")
        ),
    );
    let tickets = d.wait_tickets(6, Duration::from_secs(120));
    for ch in ["implicit", "starttls"] {
        assert_eq!(
            tickets.iter().filter(|t| t["channel"] == ch).count(),
            3,
            "{ch}: {tickets:?}\n{}",
            d.log_text()
        );
    }
}
