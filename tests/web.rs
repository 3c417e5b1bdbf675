//! The agents' web inbox, in real headless Chromium over WebDriver and with
//! plain HTTP where the browser would hide what is checked:
//!
//! - sign in; a forwarded mail arrives over SMTP and appears in the open
//!   inbox without a reload (server-sent events); the ticket says who
//!   really wrote it; a reply shows the From line and signature it will
//!   carry, is queued, reaches a real relay (Postfix's smtp-sink) and turns
//!   "sent" on the page by itself; a note; assigning; search by a body word.
//! - An HTML mail with `<script>` and a remote image runs nothing and loads
//!   nothing.
//! - A POST without the session's CSRF token, with another session's, or
//!   from another origin is refused; another agent's session acts only as
//!   that agent; revoking a user's tokens signs their browsers out.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::browser::{Browser, SmtpSink};
use common::http::request_header;
use common::smtp::send_file;
use common::{ACME, Daemon, messages, swaks, wait_for};

const T: Duration = Duration::from_secs(30);

/// The upstream MTA is the test on 127.0.0.1, a trusted relay whose
/// Authentication-Results say the team's mail passed DKIM.
const RELAY: &str = "trusted_relays = [\"127.0.0.1/32\"]\nauthserv_id = \"mx.test.example\"";
const PASSED: &str = "Authentication-Results: mx.test.example; dkim=pass header.d=acme.example\r\n";

fn config() -> String {
    ACME.replace(
        "kind = \"forward\"\naddress = \"support@acme.example\"\n",
        "kind = \"forward\"\naddress = \"support@acme.example\"\nsender_name = \"agent_and_company\"\nsignature_html = \"<p>{{ sender.full_name }}<br>Acme Support</p>\"\n",
    )
}

fn daemon(relay_port: u16) -> Daemon {
    let relay = format!("host = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"");
    let d = Daemon::start_relay(RELAY, &relay, &config());
    set_password(&d, "ann", "ann-secret-pw");
    set_password(&d, "bob", "bob-secret-pw");
    d
}

fn set_password(d: &Daemon, user: &str, password: &str) {
    set_password_role(d, user, password, "agent");
}

fn sign_in(b: &Browser, d: &Daemon, email: &str, password: &str) {
    b.goto(&format!("http://{}/", d.http));
    assert!(b.url().contains("/login"), "not signed in: {}", b.url());
    b.fill("input[name=email]", email);
    b.fill("input[name=password]", password);
    b.click("form.login button[type=submit]");
    b.wait_for("nav#views", T);
}

/// Deliver a fixture forward as `from`, through the trusted relay.
fn forward(d: &Daemon, name: &str, from: &str) {
    let path = format!(
        "{}/fixtures/forwards/{name}.eml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut raw = PASSED.as_bytes().to_vec();
    raw.extend(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")));
    let (code, text) = send_file(d.smtp, from, "support@acme.example", &raw);
    assert_eq!(code, 250, "{text}");
}

/// With `POSTDESK_SCREENSHOTS=1`: the window as `docs/screenshots/NAME`
/// (the README's pictures).
fn save_screenshot(b: &Browser, name: &str) {
    if std::env::var_os("POSTDESK_SCREENSHOTS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(name), b.screenshot());
    }
}

#[test]
fn agent_sees_mail_arrive_live_replies_and_sees_it_sent() {
    let sink = SmtpSink::start();
    let d = daemon(sink.port);
    let b = Browser::start();
    sign_in(&b, &d, "ann@acme.example", "ann-secret-pw");
    assert_eq!(b.count("tr[data-ticket]"), 0, "{}", b.source());
    // A marker that a reload would lose.
    b.js("window.notReloaded = true;");

    forward(&d, "001-gmail-en", "ann@acme.example");
    b.wait_for("tr[data-ticket]", T);
    assert_eq!(
        b.js("return window.notReloaded === true;"),
        serde_json::json!(true),
        "the ticket appeared without a reload"
    );
    let row = b.text("tr[data-ticket]");
    assert!(row.contains("Invoice 4471 is wrong"), "{row}");
    assert!(row.contains("John Carter"), "{row}");
    save_screenshot(&b, "inbox.png");

    b.click("tr[data-ticket] td a");
    b.wait_for("article.msg.inbound", T);
    let who = b.text("article.msg.inbound p.who");
    assert!(
        who.contains("forwarded by Ann Agent")
            && who.contains("John Carter")
            && who.contains("Gmail forward"),
        "{who}"
    );
    // The forwarder's own words are an internal note, apart.
    assert!(b.count("article.msg.note") >= 1, "{}", b.source());

    // What the customer will see: the From line and the signature.
    let from = b.text("#preview-from");
    assert_eq!(from, "Ann Agent from Acme <support@acme.example>");
    assert!(b.text("#preview-signature").contains("Ann Agent"));
    b.fill("#reply-text", "We corrected invoice 4471, sorry!");
    assert!(
        b.text("#preview-text")
            .contains("We corrected invoice 4471")
    );
    b.click("form[action$='/reply'] button[type=submit]");
    b.wait_for("article.msg.outbound", T);
    b.js("window.notReloaded = true;");
    // Sent by the relay, shown without a reload.
    if !b.appears("article.msg.outbound [data-delivery=sent]", T) {
        panic!("not shown sent:\n{}\n{}", b.source(), d.log_text());
    }
    assert_eq!(
        b.js("return window.notReloaded === true;"),
        serde_json::json!(true)
    );
    let got = wait_for(T, || {
        sink.messages()
            .into_iter()
            .find(|m| m.contains("We corrected invoice 4471"))
    })
    .expect("the relay received the reply");
    assert!(got.contains("john.carter@example.com"), "{got}");
    assert!(got.contains("Ann Agent"), "{got}");
    // The ticket had no owner: the replier took it.
    let number = d.tickets()[0]["number"].as_i64().expect("number");
    assert_eq!(d.ticket(number)["owner"], "ann");

    // A note, then assign to bob.
    b.fill(
        "form[action$='/note'] textarea",
        "Customer called, all good.",
    );
    b.click("form[action$='/note'] button[type=submit]");
    b.wait_for("article.msg.note[data-author=ann]", T);
    let notes = messages(&d.ticket(number))
        .iter()
        .filter(|m| m["direction"] == "note" && m["author"] == "ann")
        .count();
    assert_eq!(notes, 1);
    b.select("select[name=owner]", "bob");
    b.clear("input[name=status]");
    b.fill("input[name=status]", "open");
    b.clear("input[name=priority]");
    b.fill("input[name=priority]", "high");
    b.click("form[action$='/update'] button[type=submit]");
    b.wait_for("article.msg.outbound", T);
    let t = d.ticket(number);
    assert_eq!(
        (&t["owner"], &t["status"], &t["priority"]),
        (
            &serde_json::json!("bob"),
            &serde_json::json!("open"),
            &serde_json::json!("high")
        )
    );
    save_screenshot(&b, "ticket.png");

    // Search finds a word of the body (not of the subject).
    b.goto(&format!("http://{}/?view=open&q=licences", d.http));
    b.wait_for("nav#views", T);
    let body_word = b.count("tr[data-ticket]");
    b.goto(&format!("http://{}/?view=open&q=zebrafishes", d.http));
    b.wait_for("nav#views", T);
    assert_eq!(b.count("tr[data-ticket]"), 0);
    assert_eq!(body_word, 1, "a body word finds the ticket");
}

#[test]
fn customer_html_runs_nothing_and_loads_nothing() {
    // Anything fetched from here is a remote load the page allowed: the
    // spy records each request's path.
    let spy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let spy_port = spy.local_addr().expect("addr").port();
    let paths = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = paths.clone();
    std::thread::spawn(move || {
        for stream in spy.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("?").to_string();
            seen.lock().expect("lock").push(path);
        }
    });
    let d = daemon(9);
    let html = format!(
        "<html><body><p>Hello <b>team</b></p>\
         <script>new Image().src='http://127.0.0.1:{spy_port}/script'; top.document.title='pwned';</script>\
         <img src=\"http://127.0.0.1:{spy_port}/pixel.png\" alt=\"pixel\">\
         <img src=x onerror=\"top.document.title='pwned'\"></body></html>"
    );
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "mallory@evil.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Look at this",
            "--add-header",
            "MIME-Version: 1.0",
            "--add-header",
            "Content-Type: text/html; charset=utf-8",
            "--body",
            &html,
        ],
    );
    assert!(ok, "{out}");
    d.wait_tickets(1, T);
    let b = Browser::start();
    sign_in(&b, &d, "ann@acme.example", "ann-secret-pw");
    b.click("tr[data-ticket] td a");
    b.wait_for("iframe.html", T);
    // Give the frame every chance to load and run.
    b.js("return new Promise(r => setTimeout(r, 1500));");
    let title = b.js("return document.title;");
    assert!(!title.to_string().contains("pwned"), "{title}");
    assert_eq!(
        *paths.lock().expect("lock"),
        Vec::<String>::new(),
        "nothing fetched from the mail's hosts"
    );
    // The agent asks for images: the picture loads (so the spy would have
    // seen a load before), the script still does not run.
    b.click("article.msg.inbound a[href*='images=0']");
    let loaded = wait_for(T, || {
        paths
            .lock()
            .expect("lock")
            .iter()
            .any(|p| p == "/pixel.png")
            .then_some(())
    });
    assert!(
        loaded.is_some(),
        "the image loads once asked for:\n{}",
        b.source()
    );
    b.js("return new Promise(r => setTimeout(r, 1000));");
    assert!(!paths.lock().expect("lock").iter().any(|p| p == "/script"));
    assert!(!b.js("return document.title;").to_string().contains("pwned"));
    // The message is shown: its text in our page, escaped.
    assert_eq!(b.count("article.msg script"), 0);
    // The frame's own response forbids script and remote loads.
    let cookie = session_cookie(&d, "ann@acme.example", "ann-secret-pw");
    let (status, csp, _) = request_header(
        d.http,
        "GET",
        "/tickets/1/messages/0/html",
        &[("Cookie", &cookie)],
        None,
        None,
        "content-security-policy",
    );
    assert_eq!(status, 200);
    let csp = csp.expect("CSP on customer HTML");
    assert!(
        csp.starts_with("sandbox;") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("http:"), "{csp}");
}

/// Sign in over plain HTTP: the `name=value` of the session cookie.
fn session_cookie(d: &Daemon, email: &str, password: &str) -> String {
    let body = format!(
        "email={}&password={password}&next=%2F",
        email.replace('@', "%40")
    );
    let (status, cookie, _) = request_header(
        d.http,
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

/// The CSRF token in a page's forms.
fn csrf_of(d: &Daemon, cookie: &str, path: &str) -> String {
    let (status, _, page) =
        request_header(d.http, "GET", path, &[("Cookie", cookie)], None, None, "x");
    assert_eq!(status, 200, "{page}");
    let page = page.as_str().expect("html").to_string();
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().expect("value").to_string()
}

#[test]
fn forged_posts_and_other_sessions_cannot_act_as_you() {
    let d = daemon(9);
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            "carol@customer.example",
            "--to",
            "support@acme.example",
            "--header",
            "Subject: Help",
        ],
    );
    assert!(ok, "{out}");
    d.wait_tickets(1, T);
    let ann = session_cookie(&d, "ann@acme.example", "ann-secret-pw");
    let bob = session_cookie(&d, "bob@acme.example", "bob-secret-pw");
    let ann_csrf = csrf_of(&d, &ann, "/tickets/1");
    let bob_csrf = csrf_of(&d, &bob, "/tickets/1");
    assert_ne!(ann_csrf, bob_csrf);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let post = |cookie: &str, extra: &[(&str, &str)], body: &str| {
        let mut headers = vec![form[0], ("Cookie", cookie)];
        headers.extend_from_slice(extra);
        request_header(
            d.http,
            "POST",
            "/tickets/1/note",
            &headers,
            None,
            Some(body),
            "x",
        )
        .0
    };
    // No token, a wrong one, another session's: refused.
    assert_eq!(post(&ann, &[], "text=forged"), 403);
    assert_eq!(post(&ann, &[], "text=forged&csrf=nope"), 403);
    assert_eq!(
        post(&bob, &[], &format!("text=forged&csrf={ann_csrf}")),
        403
    );
    // The right token from another origin: refused.
    assert_eq!(
        post(
            &ann,
            &[("Origin", "http://evil.example")],
            &format!("text=forged&csrf={ann_csrf}")
        ),
        403
    );
    // No session at all.
    assert_eq!(
        post("x=y", &[], &format!("text=forged&csrf={ann_csrf}")),
        401
    );
    // Bob's own session acts as Bob, whatever the form says.
    assert_eq!(
        post(
            &bob,
            &[],
            &format!("text=by+bob&as=ann&author=ann&csrf={bob_csrf}")
        ),
        303
    );
    let notes: Vec<_> = messages(&d.ticket(1))
        .iter()
        .filter(|m| m["direction"] == "note")
        .map(|m| (m["author"].clone(), m["text"].clone()))
        .collect();
    assert_eq!(
        notes,
        vec![(serde_json::json!("bob"), serde_json::json!("by bob"))]
    );
    // Revoking Ann's tokens signs her out.
    d.cli_ok(&["users", "revoke", "ann", "--all"]);
    let (status, location, _) = request_header(
        d.http,
        "GET",
        "/",
        &[("Cookie", &ann)],
        None,
        None,
        "location",
    );
    assert_eq!(status, 303);
    assert!(location.unwrap_or_default().starts_with("/login"));
    // A wrong password is refused, the same as an unknown email.
    let bad = "email=ann%40acme.example&password=wrong-password";
    let (status, cookie, _) = request_header(
        d.http,
        "POST",
        "/login",
        &form,
        None,
        Some(bad),
        "set-cookie",
    );
    assert_eq!((status, cookie), (401, None));
}

#[test]
fn admins_switch_channels_agents_only_their_own_availability() {
    let d = daemon(9);
    set_password_role(&d, "ann", "ann-secret-pw", "admin");
    let ann = session_cookie(&d, "ann@acme.example", "ann-secret-pw");
    let bob = session_cookie(&d, "bob@acme.example", "bob-secret-pw");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let post = |cookie: &str, path: &str, body: &str| {
        request_header(
            d.http,
            "POST",
            path,
            &[form, ("Cookie", cookie)],
            None,
            Some(body),
            "x",
        )
        .0
    };
    // The admin page: channels with the From line and signature per agent.
    let (status, _, page) = request_header(
        d.http,
        "GET",
        "/admin?agent=bob",
        &[("Cookie", &ann)],
        None,
        None,
        "x",
    );
    assert_eq!(status, 200);
    let page = page.as_str().expect("html").to_string();
    assert!(
        page.contains("Bob Builder from Acme &lt;support@acme.example&gt;"),
        "{page}"
    );
    let ann_csrf = csrf_of(&d, &ann, "/admin");
    let bob_csrf = csrf_of(&d, &bob, "/");
    // An agent may not see it nor switch channels.
    let (status, _, _) = request_header(
        d.http,
        "GET",
        "/admin",
        &[("Cookie", &bob)],
        None,
        None,
        "x",
    );
    assert_eq!(status, 403);
    assert_eq!(
        post(
            &bob,
            "/admin/channels/support",
            &format!("enabled=0&csrf={bob_csrf}")
        ),
        403
    );
    assert_eq!(
        post(
            &ann,
            "/admin/channels/support",
            &format!("enabled=0&csrf={ann_csrf}")
        ),
        303
    );
    let channels = d.cli_json(&["channels", "list", "--json"]);
    assert_eq!(channels[0]["enabled"], false, "{channels}");
    // Availability: one's own, not another's (unless admin).
    assert_eq!(
        post(
            &bob,
            "/users/bob/availability",
            &format!("available=0&csrf={bob_csrf}")
        ),
        303
    );
    assert_eq!(
        post(
            &bob,
            "/users/ann/availability",
            &format!("available=0&csrf={bob_csrf}")
        ),
        403
    );
    let users = d.cli_json(&["users", "list", "--json"]);
    let available = |id: &str| {
        users
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["id"] == id)
            .expect("user")["available"]
            .clone()
    };
    assert_eq!(
        (available("ann"), available("bob")),
        (serde_json::json!(true), serde_json::json!(false))
    );
    // German when the browser asks for it.
    let (_, _, page) = request_header(
        d.http,
        "GET",
        "/",
        &[("Cookie", &bob), ("Accept-Language", "de-DE,de;q=0.9")],
        None,
        None,
        "x",
    );
    assert!(page.as_str().expect("html").contains("Posteingang"));
}

fn set_password_role(d: &Daemon, user: &str, password: &str, role: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&d.config)
        .args(["users", "password", user, "--role", role])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("postdesk users password");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{password}").expect("write password");
    drop(stdin);
    assert!(child.wait_with_output().expect("wait").status.success());
}

#[test]
fn compose_from_the_page_the_api_and_the_cli() {
    let sink = SmtpSink::start();
    let d = daemon(sink.port);
    let ann = session_cookie(&d, "ann@acme.example", "ann-secret-pw");
    let csrf = csrf_of(&d, &ann, "/compose");
    let body = format!(
        "csrf={csrf}&channel=support&email=dora%40customer.example&name=Dora&subject=Your+renewal&text=Page+compose+text"
    );
    let (status, location, _) = request_header(
        d.http,
        "POST",
        "/compose",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &ann),
        ],
        None,
        Some(&body),
        "location",
    );
    assert_eq!((status, location.as_deref()), (303, Some("/tickets/1")));
    let token = d.token("bob");
    let (status, v) = d.api(
        "POST", "/api/v1/tickets/outbound", Some(&token),
        Some(r#"{"channel":"support","contact":{"email":"erin@customer.example"},"subject":"Hello","text":"API compose text"}"#),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = d.api(
        "POST", "/api/v1/tickets/outbound", Some(&token),
        Some(r#"{"channel":"support","contact":{"email":"support@acme.example"},"subject":"Loop","text":"x"}"#),
    );
    assert_eq!(status, 400, "our own address refused: {v}");
    d.cli_ok(&[
        "compose",
        "--channel",
        "support",
        "--to",
        "fred@customer.example",
        "--subject",
        "From the CLI",
        "--as",
        "ann",
        "--text",
        "CLI compose text",
    ]);
    let tickets = d.wait_tickets(3, T);
    assert_eq!(tickets.len(), 3, "the refused one opened nothing");
    let t1 = d.ticket(1);
    assert_eq!(
        (&t1["owner"], &t1["contact"]["email"]),
        (
            &serde_json::json!("ann"),
            &serde_json::json!("dora@customer.example")
        )
    );
    assert_eq!(d.ticket(2)["owner"], "bob");
    for text in ["Page compose text", "API compose text", "CLI compose text"] {
        let got = wait_for(T, || sink.messages().into_iter().find(|m| m.contains(text)));
        let got = got.unwrap_or_else(|| panic!("{text} not relayed:\n{}", d.log_text()));
        assert!(got.contains("[#"), "the ticket's tag in the subject: {got}");
    }
}
