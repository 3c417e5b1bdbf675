//! `postdesk check` as an admin runs it: every error at once, each as
//! `FILE:LINE:COL: message`, exit 2; the shipped example passes.

mod common;

use std::process::Command;

use common::BIN;

fn check(path: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["--config", path, "check"])
        .output()
        .expect("run postdesk");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_config_passes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/postdesk.example.toml");
    let (code, out, err) = check(path);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(err.is_empty(), "the example has no warnings: {err}");
}

#[test]
fn every_error_is_reported_with_its_line_and_column() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/config/every-error.toml"
    );
    let (code, _, err) = check(path);
    assert_eq!(code, Some(2), "{err}");
    let expected = [
        ("3:20", "max_message_size"),
        ("4:1", "unknown key `colour`"),
        ("18:11", "also the address of user `bob`"),
        ("19:15", "needs a company name"),
        ("22:10", "`ann`, who has no licence"),
        ("22:17", "unknown user `zed`"),
        ("27:11", "duplicate channel address"),
        ("35:17", "cannot read secrets/nope"),
    ];
    for (pos, text) in expected {
        let prefix = format!("{path}:{pos}: ");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(text)),
            "missing `{prefix}… {text}` in:\n{err}"
        );
    }
    for line in err.lines() {
        assert!(
            line.starts_with(&format!("{path}:")),
            "not FILE:LINE:COL: {line}"
        );
    }
}

#[test]
fn missing_file_is_a_config_error() {
    let (code, _, err) = check("/nonexistent/postdesk.toml");
    assert_eq!(code, Some(2));
    assert!(err.starts_with("/nonexistent/postdesk.toml:1:1: "), "{err}");
}

#[test]
fn a_cert_file_without_a_certificate_is_an_error_at_tls_cert() {
    // `postdesk run` would exit 1 on this ("no certificate found"); `check`
    // now says so first, at the key, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cert.pem"), "not a certificate\n").unwrap();
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls/key.pem");
    let path = d.join("postdesk.toml");
    std::fs::write(
        &path,
        format!("[smtp]\ntls_cert = \"cert.pem\"\ntls_key = \"{key}\"\n"),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (code, out, err) = check(path);
    assert_eq!(code, Some(2), "{out}{err}");
    let want = format!(
        "{path}:2:12: unusable STARTTLS files: no certificate found in {}",
        d.join("cert.pem").display()
    );
    // The error alone (the file has no channels: a warning of its own).
    let errors: Vec<&str> = err.lines().filter(|l| !l.contains(": warning: ")).collect();
    assert_eq!(errors, [want.as_str()], "{out}{err}");
}

/// A group/world-readable secret file and a relay password sent in clear to
/// another host are warnings (`FILE:LINE:COL: warning: …`), not errors:
/// `check` still passes.
#[test]
fn exposed_secrets_are_warnings() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("relay-password");
    std::fs::write(&pw, "s3cret\n").expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("postdesk.toml");
    std::fs::write(
        &config,
        "[relay]\nhost = \"relay.example.net\"\ntls = \"none\"\nusername = \"desk\"\npassword_file = \"relay-password\"\n[[channels]]\nid = \"s\"\nkind = \"forward\"\naddress = \"s@acme.example\"\n",
    )
    .expect("write");
    let path = config.to_string_lossy().into_owned();
    let (code, out, err) = check(&path);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "{path}:3:7: warning: SMTP AUTH to relay.example.net"
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{path}:5:17: warning: secret file relay-password is readable by its group and everyone (mode 0644)"
        )),
        "{err}"
    );
}

/// A command whose reader went away (`postdesk check | head -0`) ends by
/// SIGPIPE like any Unix tool, without a panic on the broken pipe.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/postdesk.example.toml");
    let mut child = Command::new(BIN)
        .args(["--config", path, "check"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run postdesk");
    // Closed before the process (still starting) writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

/// `check` says which Azure permissions each Office 365 flow needs (and
/// Gmail's scope), per channel.
#[test]
fn check_explains_the_permissions_each_oauth_flow_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["rt", "cs"] {
        std::fs::write(dir.path().join(f), "x\n").expect("secret");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let path = dir.path().join("postdesk.toml");
    std::fs::write(
        &path,
        r#"
[[channels]]
id = "delegated"
kind = "office365"
address = "a@acme.example"
[channels.oauth]
client_id = "cid-1"
refresh_token_file = "rt"

[[channels]]
id = "apponly"
kind = "office365"
address = "b@acme.example"
[channels.oauth]
flow = "client_credentials"
tenant = "acme.example"
client_id = "cid-2"
client_secret_file = "cs"

[[channels]]
id = "google"
kind = "gmail"
address = "c@acme.example"
[channels.oauth]
client_id = "cid-3"
refresh_token_file = "rt"
"#,
    )
    .expect("config");
    let (code, out, err) = check(path.to_str().expect("utf-8 path"));
    assert_eq!(code, Some(0), "{out}{err}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("note: channel `{id}`")))
            .unwrap_or_else(|| panic!("no note for {id}: {out}"))
            .to_string()
    };
    let delegated = line("delegated");
    assert!(delegated.contains("IMAP.AccessAsUser.All") && delegated.contains("offline_access"));
    assert!(!delegated.contains("AccessAsApp"), "{delegated}");
    let app = line("apponly");
    assert!(
        app.contains("IMAP.AccessAsApp") && app.contains("admin consent"),
        "{app}"
    );
    assert!(
        app.contains("Add-MailboxPermission -Identity b@acme.example"),
        "{app}"
    );
    assert!(
        app.contains("https://outlook.office365.com/.default"),
        "{app}"
    );
    assert!(line("google").contains("https://mail.google.com/"));
}
