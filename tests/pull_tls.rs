//! Pulling over TLS from a real Dovecot: implicit TLS (imaps) and STARTTLS,
//! with a test CA that postdesk trusts through `SSL_CERT_FILE` (read by the
//! platform verifier's native root loading on Linux). One test in this
//! binary, because it sets a process environment variable.

mod common;

use std::time::Duration;

use common::dovecot::{Dovecot, message};
use common::pki::Pki;
use common::{ACME, Daemon};

#[test]
fn pulls_over_implicit_tls_and_starttls() {
    let pki = Pki::new();
    let p = pki.dir.path();
    let (cert, key) = pki.server();
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
