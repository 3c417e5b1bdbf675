//! The web inbox's part of the conformance suite: users, sessions, sign-in
//! links, the inbox's views, filters, counts and paging, a new email's
//! ticket, the activity counter, and full-text search (SQLite's FTS5,
//! PostgreSQL's `tsvector`: the same answers).

use super::*;

/// Sessions and sign-in links are found by their hash only, end on
/// sign-out, on a new password and with all of the user's API tokens; a
/// sign-in link works once and not after it expired.
pub(crate) async fn web_sessions_and_sign_in_links(s: &dyn Store) {
    let record = |password: &str, role| WebUser {
        password: Some(password.into()),
        role,
    };
    s.set_web_user("ann".into(), record("$argon2id$x", TokenRole::Admin))
        .await
        .expect("password");
    let w = s.web_user("ann".into()).await.expect("read").expect("ann");
    assert_eq!(
        (w.password.as_deref(), w.role),
        (Some("$argon2id$x"), TokenRole::Admin)
    );
    let session = |id: &str| NewWebSession {
        id_hash: id.into(),
        user: "ann".into(),
        csrf: format!("csrf-{id}"),
        expires_at: now_ms() + 60_000,
    };
    s.create_session(session("s1")).await.expect("s1");
    s.create_session(session("s2")).await.expect("s2");
    let got = s.web_session("s1".into()).await.expect("read").expect("s1");
    assert_eq!(
        (got.user.as_str(), got.role, got.csrf.as_str()),
        ("ann", TokenRole::Admin, "csrf-s1")
    );
    s.end_session("s1".into()).await.expect("end");
    assert_eq!(s.web_session("s1".into()).await.expect("read"), None);
    assert!(s.web_session("s2".into()).await.expect("read").is_some());
    s.revoke_api_tokens("ann".into(), None)
        .await
        .expect("revoke");
    assert_eq!(
        s.web_session("s2".into()).await.expect("read"),
        None,
        "revoked with the tokens"
    );
    s.create_session(session("s3")).await.expect("s3");
    s.set_web_user("ann".into(), record("$argon2id$y", TokenRole::Agent))
        .await
        .expect("new password");
    assert_eq!(
        s.web_session("s3".into()).await.expect("read"),
        None,
        "a new password signs out"
    );
    let now = now_ms();
    let link = |token_hash: &str, expires_at| NewSigninLink {
        token_hash: token_hash.into(),
        user: "ann".into(),
        expires_at,
    };
    s.create_signin_link(link("l1", now + 60_000))
        .await
        .expect("link");
    s.create_signin_link(link("l2", now + 10))
        .await
        .expect("link");
    assert_eq!(
        s.use_signin_link("l1".into(), now).await.expect("use"),
        Some("ann".into())
    );
    assert_eq!(
        s.use_signin_link("l1".into(), now).await.expect("reuse"),
        None,
        "once"
    );
    assert_eq!(
        s.use_signin_link("l2".into(), now + 20)
            .await
            .expect("late"),
        None,
        "expired"
    );
}

/// Inbox views (mine, unassigned, open, channel, closed) with filters by
/// contact, owner and status, newest activity first, paged by cursor; the
/// counts; the activity counter; a ticket opened by our own email.
pub(crate) async fn inbox_views_filters_counts_and_paging(s: &dyn Store) {
    let ids = spool_many(s, 4).await;
    let before = s.activity().await.expect("activity");
    let plans = ids
        .iter()
        .enumerate()
        .map(|(n, id)| inbound(*id, n, unassigned()))
        .collect();
    apply_all(s, plans).await;
    assert!(s.activity().await.expect("activity") > before);
    let update = |status: Option<&str>, owner: Option<&str>| TicketUpdate {
        status: status.map(str::to_string),
        owner: owner.map(|o| Some(o.to_string())),
        priority: Some("high".into()),
        only_if_unassigned: false,
    };
    s.update_ticket(TicketId(3), update(Some("closed"), None))
        .await
        .expect("close");
    s.update_ticket(TicketId(4), update(None, Some("ann")))
        .await
        .expect("assign");
    let compose = |owner: &str, key: Option<&str>| {
        s.open_outbound_ticket(OutboundOpening {
            channel: "support".into(),
            contact: ContactRef {
                email: "new@customer.example".into(),
                name: Some("New".into()),
            },
            ticket: NewTicket {
                subject: "Your order".into(),
                secret: "abcdefgh".into(),
                pipeline: None,
                status: Some("open".into()),
                priority: None,
                properties: "{}".into(),
                routing: unassigned(),
                routed_by: None,
            },
            owner: owner.into(),
            idempotency_key: key.map(str::to_string),
        })
    };
    let composed = compose("ann", Some("k1")).await.expect("compose");
    assert_eq!(composed, TicketId(5));
    // A retry with the key: the same ticket, nothing new.
    assert_eq!(
        compose("ann", Some("k1")).await.expect("retry"),
        TicketId(5)
    );
    let q = |view: InboxView| InboxQuery {
        view,
        status: None,
        owner: None,
        contact: None,
        search: None,
        before: None,
        limit: 50,
    };
    let numbers =
        |list: Vec<TicketSummary>| -> Vec<i64> { list.iter().map(|t| t.head.number.0).collect() };
    let page = |query: InboxQuery| async move { numbers(s.inbox(query).await.expect("inbox")) };
    assert_eq!(page(q(InboxView::Mine("ann".into()))).await, vec![5, 4]);
    assert_eq!(page(q(InboxView::Unassigned)).await, vec![2, 1]);
    assert_eq!(page(q(InboxView::Open)).await, vec![5, 4, 2, 1]);
    assert_eq!(
        page(q(InboxView::Channel("support".into()))).await,
        vec![5, 4, 2, 1]
    );
    assert_eq!(
        page(q(InboxView::Channel("sales".into()))).await,
        Vec::<i64>::new()
    );
    assert_eq!(page(q(InboxView::Closed)).await, vec![3]);
    let by_contact = InboxQuery {
        contact: Some(" C1@Customer.Example ".into()),
        ..q(InboxView::Open)
    };
    assert_eq!(page(by_contact).await, vec![2]);
    let by_owner = InboxQuery {
        owner: Some("ann".into()),
        status: Some("open".into()),
        ..q(InboxView::Open)
    };
    assert_eq!(page(by_owner).await, vec![5]);
    // Paging: two at a time, the cursor after the last one shown.
    let first = s
        .inbox(InboxQuery {
            limit: 2,
            ..q(InboxView::Open)
        })
        .await
        .expect("page 1");
    let last = &first[1].head;
    let rest = InboxQuery {
        before: Some((last.updated_at, last.number.0)),
        ..q(InboxView::Open)
    };
    assert_eq!((numbers(first), page(rest).await), (vec![5, 4], vec![2, 1]));
    let counts = s.inbox_counts("ann".into()).await.expect("counts");
    assert_eq!(
        counts,
        InboxCounts {
            mine: 2,
            unassigned: 2,
            open: 4,
            closed: 1,
            channels: vec![("support".into(), 4)],
        }
    );
    let t = s.ticket(TicketId(4)).await.expect("ticket");
    assert_eq!(t.head.priority.as_deref(), Some("high"));
    assert_eq!(s.message_html(TicketId(1), 0).await.expect("html"), None);
    // One contact with its owner and tickets.
    s.set_contact_owner("c1@customer.example".into(), Some("bob".into()))
        .await
        .expect("owner");
    let c = s
        .contact_view("c1@customer.example".into())
        .await
        .expect("contact")
        .expect("c1");
    assert_eq!(
        (c.name.as_deref(), c.owner.as_deref(), c.tickets),
        (Some("C 1"), Some("bob"), 1)
    );
    assert!(
        s.contact_view("nobody@customer.example".into())
            .await
            .expect("none")
            .is_none()
    );
    // Keys are per author; no key: always a new ticket.
    assert_eq!(compose("bob", Some("k1")).await.expect("bob"), TicketId(6));
    assert_eq!(compose("ann", None).await.expect("no key"), TicketId(7));
    assert_eq!(s.message_html(TicketId(1), 9).await.expect("none"), None);
}

/// Inbox search: a word of the body (inline or stored by reference into
/// the raw mail), of the subject, of the sender or the ticket's contact
/// (address or name), each word a prefix, any case, accents ignored, every
/// word required. Whatever is typed is words: quotes, operators and query
/// syntax of either backend are taken literally, never an error.
pub(crate) async fn inbox_search_words_prefixes_contacts_and_hostile_input(s: &dyn Store) {
    let ids = spool_many(s, 4).await;
    let mut plans = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut p = inbound(*id, n, unassigned());
        let m = &mut p.messages[0];
        m.text = match n {
            0 => BodyText::Inline("The printer is on fire".into()),
            // spool_msg's raw ends with its body ("body 1"): by reference.
            1 => BodyText::RawFrom(format!("Subject: {n}\r\n\r\n").len()),
            2 => BodyText::Inline("Le café de l'École: un résumé naïf".into()),
            _ => BodyText::Inline(
                "Quote \"it's\" a & b | !c :* (x) back\\slash o'clock 'DROP".into(),
            ),
        };
        if n == 2 {
            m.contact.name = Some("Zoë Ärger".into());
            m.from.name = Some("Zoë Ärger".into());
        }
        if n == 3 {
            m.subject = "Invoice overdue".into();
            m.new_ticket.subject = "Invoice overdue".into();
        }
        plans.push(p);
    }
    apply_all(s, plans).await;
    let found = |words: &str| {
        let words = words.to_string();
        let query = InboxQuery {
            view: InboxView::Open,
            status: None,
            owner: None,
            contact: None,
            search: Some(words.clone()),
            before: None,
            limit: 50,
        };
        async move {
            match s.inbox(query).await {
                Ok(list) => list.iter().map(|t| t.head.number.0).collect::<Vec<i64>>(),
                Err(e) => panic!("search {words:?}: {e}"),
            }
        }
    };
    let none: Vec<i64> = Vec::new();
    assert_eq!(found("printer").await, [1], "an inline body word");
    assert_eq!(found("PRINT").await, [1], "a prefix, any case");
    assert_eq!(found("body").await, [2], "a body stored by reference");
    assert_eq!(found("invoice").await, [4], "a subject word");
    assert_eq!(found("overd").await, [4], "a subject word's prefix");
    assert_eq!(found("c1@customer.example").await, [2], "the contact");
    assert_eq!(found("c2@CUSTOMER.ex").await, [3], "an address's prefix");
    assert_eq!(found("zoe").await, [3], "the contact's name, unaccented");
    assert_eq!(found("ÄRGER").await, [3], "upper case with an accent");
    assert_eq!(found("CAFE ecole resume").await, [3], "accents ignored");
    assert_eq!(found("café").await, [3], "accents typed");
    assert_eq!(found("fire printer").await, [1], "all the words");
    assert_eq!(found("printer body").await, none, "all words must match");
    assert_eq!(found("Subject 9").await, none, "all words must match");
    assert_eq!(found("\"fire OR x*").await, none, "no query syntax");
    assert_eq!(found("fire)").await, [1], "punctuation around a word");
    assert_eq!(found("it's").await, [4], "an apostrophe");
    assert_eq!(found("back\\slash").await, [4], "a backslash");
    assert_eq!(found("& printer |").await, [1], "operators are no words");
    assert_eq!(found("  ").await, [4, 3, 2, 1], "no words: no search");
    for hostile in [
        "\"",
        "'",
        "&",
        "|",
        "!",
        ":*",
        ")",
        "(",
        "\\",
        "\\'",
        "''",
        "<->",
        "a:*",
        "a:* | b",
        "!c",
        "(x",
        "x)",
        "fire & !x",
        "fire | body",
        "'; DROP TABLE tickets; --",
        "a\0b",
        "*",
        "^fire",
        "NEAR(fire printer)",
        "subject:fire",
        "body:printer",
        "{subject}: fire",
        "\"\"",
        "'it''s'",
        "e'\\x41'",
        "$1",
        "fire:*A",
        "fire:B",
        "fire <2> printer",
    ] {
        // Answered (some list, perhaps empty): never an error.
        let _ = found(hostile).await;
    }
    assert_eq!(found("fire & !x").await, none, "! negates nothing");
    assert_eq!(found("subject:fire").await, none, "no column filter");
    assert_eq!(found("'; DROP TABLE tickets; --").await, none);
    assert_eq!(found("  ").await.len(), 4, "the tickets are all there");
}
