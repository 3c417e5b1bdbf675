//! The web inbox's store queries on a large store, against the JSON API's
//! own query in the same run: `scripts/bench-web [--store postgres] [TICKETS]
//! [MESSAGES_PER_TICKET]` (default 100000 tickets × 10 messages = 1M
//! messages).
//!
//! Seeds a fresh SQLite store through the store's own ingest path (spool +
//! apply, in batches) — with `--postgres` (the script's `--store postgres`)
//! then also a private PostgreSQL cluster started for the run, the same
//! way — then times, 200 times each, p50/p99 in ms:
//! the inbox's first page (open view, by last activity), a deep page (by
//! cursor), the view counts, a full-text search, a ticket with its
//! messages — and `list_tickets` (what `GET /api/v1/tickets` runs).
//! It measures the queries a page runs, not HTML rendering or HTTP.

use std::time::Instant;

use postdesk::ingest::decide::decide;
use postdesk::store::*;

#[path = "../src/store/postgres/cluster.rs"]
mod cluster;

fn plan(spool: SpoolId, ticket: usize, msg: usize) -> InboundPlan {
    let contact = ContactRef {
        email: format!("c{ticket}@customer.example"),
        name: Some(format!("Customer {ticket}")),
    };
    let word = ["printer", "invoice", "licence", "refund", "password"][ticket % 5];
    InboundPlan {
        spool_id: spool,
        dropped: None,
        messages: vec![InboundMessage {
            channel: "support".into(),
            dedupe_key: format!("mid:t{ticket}m{msg}@customer.example"),
            message_id: Some(format!("t{ticket}m{msg}@customer.example")),
            in_reply_to: (msg > 0).then(|| format!("t{ticket}m0@customer.example")),
            references: if msg > 0 {
                vec![format!("t{ticket}m0@customer.example")]
            } else {
                vec![]
            },
            thread_token: None,
            plus_token: None,
            trusted_sender: false,
            thread_identity: Some(contact.email.clone()),
            name_verified: true,
            contact: contact.clone(),
            from: contact.clone(),
            to: vec!["support@acme.example".into()],
            cc: vec![],
            subject: format!("Question {ticket} about the {word}"),
            date: None,
            text: BodyText::Inline(format!(
                "Hello, message {msg} of ticket {ticket}: the {word} needs a look. Serial {ticket}-{msg}. Thanks!"
            )),
            html: None,
            classification: Classification::Normal,
            sender_resolution: SenderResolution {
                resolution: Resolution::only(
                    Address {
                        email: contact.email.clone(),
                        name: None,
                    },
                    "from",
                    1.0,
                ),
                authentication: None,
            },
            note: None,
            new_ticket: NewTicket {
                subject: format!("Question {ticket} about the {word}"),
                secret: format!("s{ticket}"),
                pipeline: None,
                status: Some(
                    if ticket.is_multiple_of(10) {
                        "closed"
                    } else {
                        "new"
                    }
                    .into(),
                ),
                priority: None,
                properties: "{}".into(),
                routing: RoutingPlan::Unassigned {
                    reason: "bench".into(),
                },
                routed_by: None,
            },
            bounce: None,
        }],
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

async fn time<F, Fut, T>(name: &str, runs: usize, mut f: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        if let Err(e) = f(i).await {
            panic!("{name}: {e}");
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = percentiles(ms);
    println!("{name:<34} p50 {p50:8.2} ms   p99 {p99:8.2} ms");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let tickets: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let per: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("bench.sqlite"), 5000, 512).expect("open");
    println!("== SQLite");
    run(&sqlite, tickets, per).await;
    if std::env::args().any(|a| a == "--postgres") {
        let pg = cluster::Cluster::start();
        let config = postgres::parse_url(&pg.url("postdesk")).expect("url");
        let store = PostgresStore::open(config, 8, 512).await.expect("open");
        println!("== PostgreSQL (private cluster, default settings)");
        run(&store, tickets, per).await;
    }
}

/// Seed `store` and time its queries.
async fn run(store: &dyn Store, tickets: usize, per: usize) {
    let t0 = Instant::now();
    // Message m of every ticket, round by round: activity interleaves.
    for m in 0..per {
        for chunk in (0..tickets).collect::<Vec<_>>().chunks(2000) {
            let mut plans = Vec::with_capacity(chunk.len());
            for &t in chunk {
                let raw = format!("Subject: {t}\r\n\r\n{m}\r\n").into_bytes();
                let spool = store
                    .spool(NewSpool {
                        source: SpoolSource::Smtp,
                        mail_from: format!("c{t}@customer.example"),
                        rcpt_to: vec!["support@acme.example".into()],
                        client_ip: None,
                        helo: None,
                        tls: false,
                        channel: Some("support".into()),
                        raw,
                    })
                    .await
                    .expect("spool");
                plans.push(plan(spool.id, t, m));
            }
            for r in store.apply_inbound(plans, decide).await.expect("apply") {
                r.expect("plan");
            }
        }
        eprintln!(
            "seeded round {}/{per} ({:.0} s)",
            m + 1,
            t0.elapsed().as_secs_f64()
        );
    }
    println!(
        "{tickets} tickets, {} messages, seeded in {:.0} s",
        tickets * per,
        t0.elapsed().as_secs_f64()
    );
    let runs = 200;
    let open = |before: Option<(i64, i64)>, search: Option<&str>| InboxQuery {
        view: InboxView::Open,
        status: None,
        owner: None,
        contact: None,
        search: search.map(str::to_string),
        before,
        limit: 50,
    };
    time("inbox: open view, first page", runs, |_| {
        store.inbox(open(None, None))
    })
    .await;
    let first = store.inbox(open(None, None)).await.expect("page");
    let deep = first.last().map(|t| (t.head.updated_at - 1, i64::MAX));
    time("inbox: open view, a later page", runs, |_| {
        store.inbox(open(deep, None))
    })
    .await;
    time("inbox: view counts", runs, |_| {
        store.inbox_counts("ann".into())
    })
    .await;
    time("inbox: search one body word", runs, |_| {
        store.inbox(open(None, Some("licence")))
    })
    .await;
    time("inbox: search a rare serial", runs, |i| {
        let q = format!("{}-0", (i * 7919) % tickets);
        async move { store.inbox(open(None, Some(&q))).await }
    })
    .await;
    time("ticket page: ticket + messages", runs, |i| {
        store.ticket(TicketId(((i * 7919) % tickets + 1) as i64))
    })
    .await;
    time("API GET /tickets (limit 50)", runs, |_| {
        store.list_tickets(TicketFilter {
            limit: Some(50),
            ..TicketFilter::default()
        })
    })
    .await;
    time("API GET /tickets/{n}", runs, |i| {
        store.ticket(TicketId(((i * 104_729) % tickets + 1) as i64))
    })
    .await;
}
