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

/// POST a urlencoded form with the session `cookie`: the status, the
/// response's `header` and its body.
fn post_as(
    d: &Daemon,
    cookie: &str,
    path: &str,
    body: &str,
    header: &str,
) -> (u16, Option<String>, serde_json::Value) {
    request_header(
        d.http,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        None,
        Some(body),
        header,
    )
}

/// A plain mail from `from` to the support channel, sent with swaks.
fn mail_in(d: &Daemon, from: &str, subject: &str, body: &str) {
    let subject = format!("Subject: {subject}");
    let (ok, out) = swaks(
        d.smtp,
        &[
            "--from",
            from,
            "--to",
            "support@acme.example",
            "--header",
            &subject,
            "--body",
            body,
        ],
    );
    assert!(ok, "{out}");
}

fn set_password(d: &Daemon, user: &str, password: &str) {
    d.set_password(user, password, "agent");
}

fn sign_in(b: &Browser, d: &Daemon, email: &str, password: &str) {
    b.goto(&format!("http://{}/", d.http));
    assert!(b.url().contains("/login"), "not signed in: {}", b.url());
    b.fill("input[name=email]", email);
    b.fill("input[name=password]", password);
    b.click_and_load("form.login button[type=submit]");
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

    b.click_and_load("tr[data-ticket] td a");
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
    b.click_and_load("form[action$='/reply'] button[type=submit]");
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
    b.click_and_load("form[action$='/note'] button[type=submit]");
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
    b.click_and_load("form[action$='/update'] button[type=submit]");
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
    b.click_and_load("tr[data-ticket] td a");
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
    b.click_and_load("article.msg.inbound a[href*='images=0']");
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
    let cookie = d.sign_in("ann@acme.example", "ann-secret-pw");
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
    mail_in(&d, "carol@customer.example", "Help", "Please help.");
    d.wait_tickets(1, T);
    let ann = d.sign_in("ann@acme.example", "ann-secret-pw");
    let bob = d.sign_in("bob@acme.example", "bob-secret-pw");
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
    d.set_password("ann", "ann-secret-pw", "admin");
    let ann = d.sign_in("ann@acme.example", "ann-secret-pw");
    let bob = d.sign_in("bob@acme.example", "bob-secret-pw");
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

#[test]
fn compose_from_the_page_the_api_and_the_cli() {
    let sink = SmtpSink::start();
    let d = daemon(sink.port);
    let ann = d.sign_in("ann@acme.example", "ann-secret-pw");
    let csrf = csrf_of(&d, &ann, "/compose");
    let body = format!(
        "csrf={csrf}&channel=support&email=dora%40customer.example&name=Dora&subject=Your+renewal&text=Page+compose+text"
    );
    let (status, location, _) = post_as(&d, &ann, "/compose", &body, "location");
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
    // A subject the email cannot carry (over 300 characters, though a
    // ticket's subject may be longer) is refused before a ticket is opened.
    let long = "é".repeat(301);
    let (status, v) = d.api(
        "POST", "/api/v1/tickets/outbound", Some(&token),
        Some(&format!(r#"{{"channel":"support","contact":{{"email":"gil@customer.example"}},"subject":"{long}","text":"x"}}"#)),
    );
    assert_eq!(status, 400, "subject too long: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("subject"),
        "{v}"
    );
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
    assert_eq!(tickets.len(), 3, "the refused ones opened nothing");
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

/// The address sign-in links point to in these tests (as a proxy in front
/// would be reached); the test opens the path on the daemon itself.
const PUBLIC_URL: &str = "https://desk.test.example";

/// A daemon whose relay is `sink`, with notices and sign-in links on.
fn daemon_with_links(sink: &SmtpSink) -> Daemon {
    let relay = format!("host = \"127.0.0.1\"\nport = {}\ntls = \"none\"", sink.port);
    let http = format!("{}\npublic_url = \"{PUBLIC_URL}/\"", common::HTTP_EXTRA);
    let rest = format!(
        "{}\n[notifications]\nfrom = \"desk@acme.example\"\n",
        config()
    );
    let d = Daemon::start_relay_http(RELAY, &relay, &http, &rest);
    set_password(&d, "ann", "ann-secret-pw");
    d
}

/// The sign-in link tokens in the mails `sink` received so far, with each
/// mail's recipients.
fn mailed_links(sink: &SmtpSink) -> Vec<(String, String)> {
    let prefix = format!("{PUBLIC_URL}/login/link/");
    sink.messages()
        .iter()
        .filter_map(|m| {
            let msg = mail_parser::MessageParser::default().parse(m.as_bytes())?;
            let text = msg.body_text(0)?.into_owned();
            let at = text.find(&prefix)? + prefix.len();
            let token: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            let to = msg
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or("")
                .to_string();
            Some((to, token))
        })
        .collect()
}

/// POST a urlencoded form without a session: (status, Set-Cookie, body).
fn post_form(d: &Daemon, path: &str, body: &str) -> (u16, Option<String>, String) {
    let (status, cookie, page) = request_header(
        d.http,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        None,
        Some(body),
        "set-cookie",
    );
    (status, cookie, page.as_str().unwrap_or("").to_string())
}

#[test]
fn a_mailed_sign_in_link_signs_in_once() {
    let sink = SmtpSink::start();
    let d = daemon_with_links(&sink);
    // An unknown address gets the very same answer, and no mail.
    let (status, cookie, unknown) = post_form(&d, "/login/link", "email=nobody%40acme.example");
    assert_eq!((status, cookie), (200, None));
    let b = Browser::start();
    b.goto(&format!("http://{}/login", d.http));
    b.fill("form.link input[name=email]", "Ann@Acme.example");
    b.click_and_load("form.link button[type=submit]");
    b.wait_for("p[role=status]", T);
    let said = b.text("p[role=status]");
    assert_eq!(
        said,
        "If the address belongs to an agent, a link is on its way."
    );
    assert!(unknown.contains(&said), "{unknown}");
    let links = wait_for(T, || {
        let l = mailed_links(&sink);
        (!l.is_empty()).then_some(l)
    })
    .unwrap_or_else(|| panic!("no sign-in link mailed:\n{}", d.log_text()));
    assert_eq!(links.len(), 1, "one mail, to ann only: {links:?}");
    let (to, token) = links[0].clone();
    assert_eq!(to, "ann@acme.example");
    assert_eq!(token.len(), 43, "256 random bits: {token}");
    let mail = sink.messages().concat();
    assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
    // The store keeps only the link's hash, never the token itself (the
    // database and its write-ahead log).
    let var = d.dir.path().join("var");
    let files: Vec<_> = std::fs::read_dir(&var)
        .expect("var")
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(files.len() >= 2, "the store's files");
    for f in files {
        assert!(
            !f.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is stored in the clear"
        );
    }

    // Opening the link uses nothing up (a mail scanner may fetch it); its
    // button signs in.
    let path = format!("/login/link/{token}");
    b.goto(&format!("http://{}{path}", d.http));
    b.goto(&format!("http://{}{path}", d.http));
    b.click_and_load("form.login button[type=submit]");
    b.wait_for("nav#views", T);
    assert!(b.text("header.top").contains("ann"), "{}", b.source());

    // A second use, and a made-up link: the same refusal, no session.
    let (status, cookie, again) = post_form(&d, &path, "");
    assert_eq!((status, cookie), (400, None), "{again}");
    let made_up = format!("/login/link/{}", "A".repeat(43));
    let (status, cookie, forged) = post_form(&d, &made_up, "");
    assert_eq!((status, cookie), (400, None));
    assert_eq!(again, forged);
    assert!(again.contains("cannot be used"), "{again}");
    // In the browser too, after signing out.
    b.click_and_load("form[action='/logout'] button[type=submit]");
    b.wait_for("form.login", T);
    b.goto(&format!("http://{}{path}", d.http));
    b.click_and_load("form.login button[type=submit]");
    b.wait_for("p[role=status]", T);
    assert!(b.text("p[role=status]").contains("cannot be used"));
    assert_eq!(b.count("nav#views"), 0);

    // Asking is budgeted like password sign-in, known address or not.
    let refused = (0..30)
        .map(|_| post_form(&d, "/login/link", "email=nobody%40acme.example").0)
        .filter(|s| *s == 429)
        .count();
    assert!(refused > 0, "never rate-limited");
}

/// A customer's mail with two attachments: a PDF and an HTML file that
/// would run script if it were ever rendered in our origin.
const WITH_FILES: &str = "From: Carol <carol@customer.example>\r\nTo: support@acme.example\r\n\
Subject: Invoice attached\r\nMessage-ID: <files-1@customer.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nSee the attached files.\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"=?utf-8?q?Rechnung_M=C3=A4rz.pdf?=\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSBhIHRpbnkgcGRmCg==\r\n\
--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename=\"page.html\"\r\n\r\n\
<html><body><script>top.document.title='pwned'</script>hello</body></html>\r\n--b--\r\n";

#[test]
fn attachments_are_listed_downloaded_never_rendered_and_sent_with_replies() {
    let sink = SmtpSink::start();
    let d = daemon(sink.port);
    let (code, text) = send_file(
        d.smtp,
        "carol@customer.example",
        "support@acme.example",
        WITH_FILES.as_bytes(),
    );
    assert_eq!(code, 250, "{text}");
    d.wait_tickets(1, T);
    let b = Browser::start();
    sign_in(&b, &d, "ann@acme.example", "ann-secret-pw");
    b.goto(&format!("http://{}/tickets/1", d.http));
    b.wait_for("article.msg.inbound ul.attachments", T);
    let listed = b.text("article.msg.inbound ul.attachments");
    assert!(
        listed.contains("Rechnung März.pdf") && listed.contains("application/pdf"),
        "{listed}"
    );
    assert!(
        listed.contains("page.html") && listed.contains("text/html"),
        "{listed}"
    );
    assert_eq!(b.count("article.msg.inbound ul.attachments li"), 2);

    // The download: the bytes as sent, saved not shown.
    let cookie = d.sign_in("ann@acme.example", "ann-secret-pw");
    let get = |path: &str, cookie: &str, header: &str| {
        request_header(
            d.http,
            "GET",
            path,
            &[("Cookie", cookie)],
            None,
            None,
            header,
        )
    };
    let pdf = "/tickets/1/messages/0/attachments/0";
    let (status, disposition, body) = get(pdf, &cookie, "content-disposition");
    assert_eq!(status, 200);
    assert_eq!(body.as_str(), Some("%PDF-1.4\n% a tiny pdf\n"));
    let disposition = disposition.expect("Content-Disposition");
    assert!(
        disposition.starts_with("attachment;")
            && disposition.contains("filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"),
        "{disposition}"
    );
    let html = "/tickets/1/messages/0/attachments/1";
    for (header, want) in [
        ("content-type", "text/html"),
        ("x-content-type-options", "nosniff"),
        ("content-disposition", "attachment; filename=\"page.html\""),
        ("content-security-policy", "sandbox"),
    ] {
        let (status, value, _) = get(html, &cookie, header);
        assert_eq!(status, 200);
        let value = value.unwrap_or_default();
        assert!(value.starts_with(want), "{header}: {value}");
    }
    // Opening it in the browser saves it; nothing of it runs here.
    b.goto(&format!("http://{}{html}", d.http));
    b.js("return new Promise(r => setTimeout(r, 500));");
    assert!(!b.js("return document.title;").to_string().contains("pwned"));
    // Signed in only; no such attachment is 404.
    assert_eq!(get(pdf, "postdesk_session=nope", "x").0, 303);
    assert_eq!(
        get("/tickets/1/messages/0/attachments/2", &cookie, "x").0,
        404
    );

    // A reply with a file: the relay receives it attached, and the reply
    // lists it on the page.
    b.goto(&format!("http://{}/tickets/1", d.http));
    b.wait_for("#reply-text", T);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("corrected-invoice.txt");
    std::fs::write(&file, "Corrected invoice 4471: 12.00 EUR\n").expect("write");
    b.fill("#reply-text", "Here is the corrected invoice.");
    b.fill("input[name=attachments]", &file.display().to_string());
    // Quoting is off by default ([outbound] quote_history): ticked here.
    assert_eq!(
        b.js("return document.querySelector('input[name=quote_history]').checked;"),
        serde_json::json!(false)
    );
    b.click("input[name=quote_history]");
    b.click_and_load("form[action$='/reply'] button[type=submit]");
    b.wait_for("article.msg.outbound ul.attachments", T);
    assert!(
        b.text("article.msg.outbound ul.attachments")
            .contains("corrected-invoice.txt")
    );
    let got = wait_for(T, || {
        sink.messages()
            .into_iter()
            .find(|m| m.contains("Here is the corrected invoice"))
    })
    .expect("the relay received the reply");
    let msg = mail_parser::MessageParser::default()
        .parse(got.as_bytes())
        .expect("mail");
    let text = msg.body_text(0).expect("text").into_owned();
    assert!(
        text.contains("wrote:") && text.contains("> See the attached files."),
        "the customer's message quoted: {text}"
    );
    let a = msg.attachment(0).expect("an attachment");
    assert_eq!(
        (mail_parser::MimeHeaders::attachment_name(a), a.contents()),
        (
            Some("corrected-invoice.txt"),
            b"Corrected invoice 4471: 12.00 EUR\n".as_slice()
        )
    );
}

#[test]
fn the_sidebar_shows_the_contact_its_owner_and_other_tickets() {
    let d = daemon(9);
    for subject in ["First question", "Second question"] {
        mail_in(&d, "carol@customer.example", subject, "A question.");
    }
    d.wait_tickets(2, T);
    let admin = d.admin_token("ann");
    let (status, v) = d.api(
        "PUT",
        "/api/v1/contacts/carol@customer.example/owner",
        Some(&admin),
        Some(r#"{"owner":"bob"}"#),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = d.api(
        "GET",
        "/api/v1/contacts/Carol@Customer.example",
        Some(&admin),
        None,
    );
    assert_eq!(
        (status, &v["owner"], &v["tickets"]),
        (200, &serde_json::json!("bob"), &serde_json::json!(2))
    );
    let b = Browser::start();
    sign_in(&b, &d, "ann@acme.example", "ann-secret-pw");
    b.goto(&format!("http://{}/tickets/1", d.http));
    b.wait_for("#contact", T);
    let sidebar = b.text("#contact");
    assert!(sidebar.contains("carol@customer.example"), "{sidebar}");
    assert!(
        sidebar.contains("Bob Builder"),
        "the contact's owner: {sidebar}"
    );
    assert!(sidebar.contains("Second question"), "{sidebar}");
    assert!(!sidebar.contains("First question"), "not itself: {sidebar}");
    b.click_and_load("#contact a[href='/tickets/2']");
    b.wait_for("#contact a[href='/tickets/1']", T);
    assert!(b.url().ends_with("/tickets/2"), "{}", b.url());
    // The contact's address lists their tickets in the inbox.
    b.click_and_load("#contact p a");
    b.wait_for("nav#views", T);
    assert_eq!(b.count("tr[data-ticket]"), 2);
    // Her own availability, from the top bar.
    assert_eq!(b.text("form.availability button"), "Available");
    b.click_and_load("form.availability button");
    b.wait_for("form.availability button[data-available=false]", T);
    let users = d.cli_json(&["users", "list", "--json"]);
    let ann = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == "ann")
        .expect("ann")
        .clone();
    assert_eq!(ann["available"], false);
}

#[test]
fn a_retried_compose_opens_one_ticket_and_sends_one_email() {
    let sink = SmtpSink::start();
    let d = daemon(sink.port);
    let token = d.token("bob");
    let body = r#"{"channel":"support","contact":{"email":"erin@customer.example"},"subject":"Hello","text":"Keyed compose text"}"#;
    let send = || {
        common::http::request_with(
            d.http,
            "POST",
            "/api/v1/tickets/outbound",
            &[("Idempotency-Key", "compose-retry-1")],
            Some(&token),
            Some(body),
        )
    };
    let (first, a) = send();
    let (again, b) = send();
    assert_eq!((first, again), (201, 200), "{a} {b}");
    assert_eq!(a["ticket"], b["ticket"], "{a} {b}");
    assert_eq!(a["outbox_id"], b["outbox_id"], "{a} {b}");
    // The web form, posted twice with its key: one more ticket.
    let ann = d.sign_in("ann@acme.example", "ann-secret-pw");
    let page = {
        let (status, _, page) = request_header(
            d.http,
            "GET",
            "/compose",
            &[("Cookie", &ann)],
            None,
            None,
            "x",
        );
        assert_eq!(status, 200);
        page.as_str().expect("html").to_string()
    };
    let field = |name: &str| {
        let at = page
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no {name} field"))
            + name.len()
            + 15;
        page[at..].split('"').next().expect("value").to_string()
    };
    let form = format!(
        "csrf={}&idem={}&channel=support&email=dora%40customer.example&subject=Renewal&text=Page+compose+text",
        field("csrf"),
        field("idem")
    );
    let post = || post_as(&d, &ann, "/compose", &form, "location");
    let (s1, l1, _) = post();
    let (s2, l2, _) = post();
    assert_eq!((s1, s2), (303, 303));
    assert_eq!(l1, l2, "the same ticket");
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 2, "{tickets:?}");
    let outbox = d.cli_json(&["outbox", "status", "--json"]);
    let rows: i64 = ["queued", "sent", "failed"]
        .iter()
        .map(|k| outbox[k].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(rows, 2, "one email per ticket: {outbox}");
    for n in [1, 2] {
        assert_eq!(messages(&d.ticket(n)).len(), 1, "ticket {n}");
    }
}

/// What a reader of `html` sees or hears: the text outside tags (script
/// and style left out) and the placeholder, aria-label and title values.
fn visible_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        out.push(' ');
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let tag = &rest[open..open + close];
        for attr in ["placeholder=\"", "aria-label=\"", "title=\""] {
            if let Some(at) = tag.find(attr) {
                let v = &tag[at + attr.len()..];
                out.push_str(v.split('"').next().unwrap_or(""));
                out.push(' ');
            }
        }
        rest = &rest[open + close + 1..];
        for skip in ["script", "style"] {
            if tag.starts_with(&format!("<{skip}"))
                && let Some(end) = rest.find(&format!("</{skip}>"))
            {
                rest = &rest[end..];
            }
        }
    }
    out.push_str(rest);
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Words of the English pages that German ones never contain (data shown
/// on the pages here is German or addresses).
const ENGLISH_ONLY: &[&str] = &[
    "Sign",
    "Inbox",
    "Reply",
    "Send",
    "Subject",
    "Contact",
    "Owner",
    "Attachments",
    "Available",
    "Away",
    "Search",
    "Quoted",
    "Quote",
    "Priority",
    "Save",
    "Note",
    "forwarded",
    "Show",
    "images",
    "unassigned",
    "Channel",
    "Users",
    "Email",
    "Closed",
    "Mine",
    "Other",
    "Older",
    "activity",
    "Back",
    "Preview",
    "Signature",
    "Licence",
    "Enable",
    "Disable",
    "enabled",
    "disabled",
    "New",
    "link",
    "From",
    "Kind",
    "Address",
    "customer",
    "the",
    "and",
    "your",
    "with",
    "none",
    "Internal",
    "What",
    "All",
    "Wrong",
    "attempts",
    "If",
];

#[test]
fn every_page_in_german_has_no_english_left() {
    let sink = SmtpSink::start();
    let d = daemon_with_links(&sink);
    d.set_password("ann", "ann-secret-pw", "admin");
    mail_in(
        &d,
        "carol@kunde.example",
        "Rechnung falsch",
        "Hallo, die Rechnung stimmt nicht.",
    );
    d.wait_tickets(1, T);
    let ann = d.sign_in("ann@acme.example", "ann-secret-pw");
    let de = ("Accept-Language", "de-DE,de;q=0.9");
    let csrf = csrf_of(&d, &ann, "/tickets/1");
    let note = format!("csrf={csrf}&text=Kundin+angerufen");
    let (status, _, _) = post_as(&d, &ann, "/tickets/1/note", &note, "x");
    assert_eq!(status, 303);
    let get = |path: &str, cookie: Option<&str>| {
        let mut headers = vec![de];
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        let (status, _, page) = request_header(d.http, "GET", path, &headers, None, None, "x");
        assert_eq!(status, 200, "{path}");
        page.as_str().expect("html").to_string()
    };
    let post = |path: &str, body: &str| {
        let (_, _, page) = request_header(
            d.http,
            "POST",
            path,
            &[de, ("Content-Type", "application/x-www-form-urlencoded")],
            None,
            Some(body),
            "x",
        );
        page.as_str().expect("html").to_string()
    };
    let token = "A".repeat(43);
    let pages = [
        ("/login", get("/login", None)),
        (
            "wrong password",
            post("/login", "email=ann%40acme.example&password=nope"),
        ),
        (
            "/login/link",
            post("/login/link", "email=x%40kunde.example"),
        ),
        ("/login/link/T", get(&format!("/login/link/{token}"), None)),
        ("used link", post(&format!("/login/link/{token}"), "")),
        ("/", get("/", Some(&ann))),
        ("/?view=closed", get("/?view=closed", Some(&ann))),
        ("/tickets/1", get("/tickets/1", Some(&ann))),
        ("/compose", get("/compose", Some(&ann))),
        ("/admin", get("/admin", Some(&ann))),
    ];
    for (name, html) in &pages {
        assert!(html.contains("lang=\"de\""), "{name}: {html}");
        let text = visible_text(html);
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let english: Vec<&&str> = ENGLISH_ONLY.iter().filter(|e| words.contains(e)).collect();
        assert!(
            english.is_empty(),
            "{name}: English {english:?} in:\n{text}"
        );
    }
    let german = |name: &str| visible_text(&pages.iter().find(|(n, _)| *n == name).expect(name).1);
    assert!(german("/login").contains("Link per E-Mail senden"));
    assert!(german("/login/link").contains("ist ein Link unterwegs"));
    assert!(german("used link").contains("Anmeldelink gilt nicht"));
    let ticket = german("/tickets/1");
    for w in [
        "Antworten",
        "Kontakt-Betreuer",
        "Interne Notiz",
        "Anhänge",
        "Von:",
    ] {
        assert!(ticket.contains(w), "{w} in {ticket}");
    }
    assert!(german("/admin").contains("Verwaltung"));
    // The check can fail: the same pages in English are full of those words.
    let (_, _, en) = request_header(
        d.http,
        "GET",
        "/tickets/1",
        &[("Cookie", &ann)],
        None,
        None,
        "x",
    );
    let text = visible_text(en.as_str().expect("html"));
    for w in ["Reply", "Contact", "Owner", "Save"] {
        assert!(
            text.split(|c: char| !c.is_alphanumeric()).any(|x| x == w),
            "{w}"
        );
    }
}
