//! Several postdesk nodes (separate `postdesk run` processes, each with its
//! own configuration and ports) sharing one private PostgreSQL cluster:
//! mail spread over all of them, one node `kill -9`'d twice mid-run and
//! restarted, and at the end every acknowledged message in exactly one
//! ticket; the same message accepted by two nodes at once is one ticket;
//! new tickets taken by three nodes at once are balanced evenly; `status`
//! lists the nodes.

mod common;

use std::time::Duration;

use common::Daemon;
use common::load::{Load, assert_each_once};
use common::pg::{Cluster, daemon_on};
use common::smtp::{Client, message};

/// Agents ann, bob and cy in team tier1, and a channel balancing over it.
fn team() -> String {
    let users: String = ["ann", "bob", "cy"]
        .iter()
        .map(|u| {
            format!("[[users]]\nid = \"{u}\"\nemail = \"{u}@acme.example\"\nteams = [\"tier1\"]\n")
        })
        .collect();
    format!(
        "[company]\nname = \"Acme\"\n[[teams]]\nid = \"tier1\"\n{users}\
         [[channels]]\nid = \"support\"\nkind = \"forward\"\naddress = \"support@acme.example\"\n\
         [channels.routing]\nassign = \"users_and_teams\"\nteams = [\"tier1\"]\n"
    )
}

/// Three started nodes `n1`..`n3` on `cluster`, claims lasting 5 s.
fn three_nodes(cluster: &Cluster) -> Vec<Daemon> {
    let url = cluster.url("postdesk");
    (1..=3)
        .map(|i| {
            let mut d = daemon_on(
                &url,
                &format!("node_id = \"n{i}\"\nlease_secs = 5\n"),
                None,
                &team(),
            );
            d.spawn();
            d
        })
        .collect()
}

/// `total` messages over 20 SMTP sessions spread over three nodes; node 2
/// killed with SIGKILL after a third was acknowledged and started again at
/// once (it takes its own pending entries back), then killed after two
/// thirds and left down until the others finished the load and drained the
/// spool (they take its pending entries over once its claims expire), then
/// started again.
fn spread_load_with_a_node_killed_twice(total: usize) {
    let cluster = Cluster::start();
    let mut nodes = three_nodes(&cluster);
    let addrs: Vec<_> = nodes.iter().map(|d| d.smtp).collect();
    let load = Load::spread(&addrs, 20, total / 20);
    load.wait_sent(total / 3, &nodes[1]);
    nodes[1].kill9();
    std::thread::sleep(Duration::from_millis(300));
    nodes[1].spawn();
    load.wait_sent(2 * total / 3, &nodes[1]);
    nodes[1].kill9();
    let acked = load.finish();
    assert_eq!(
        acked.len(),
        total,
        "every message was eventually acknowledged"
    );
    // Node 2 is down: whatever it accepted and did not ingest, the others do.
    nodes[0].wait_ingested(Duration::from_secs(120));
    nodes[1].spawn();
    assert_each_once(&nodes[0], &acked);
    // Straight from the database: each Message-ID once, in one ticket.
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*), COUNT(DISTINCT message_id), COUNT(DISTINCT ticket_id) FROM messages"
        ),
        format!("{total}|{total}|{total}")
    );
    // Every node is registered and seen alive.
    let status = nodes[2].cli_json(&["status", "--json"]);
    let ids: Vec<&str> = status["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["n1", "n2", "n3"], "{status}");
    let text = String::from_utf8_lossy(&nodes[0].cli_ok(&["status"]).stdout).to_string();
    assert!(text.contains("nodes:") && text.contains("n2"), "{text}");
}

#[test]
fn three_nodes_3000_messages_one_node_killed_twice() {
    spread_load_with_a_node_killed_twice(3000);
}

/// Send one message to `node`; the final reply code.
fn send(node: &Daemon, from: &str, subject: &str, message_id: &str) -> u16 {
    let mut c = Client::connect(node.smtp);
    assert_eq!(c.cmd("EHLO client.example").0, 250);
    let body = message(from, "support@acme.example", subject, message_id, "help");
    c.mail(from, &["support@acme.example"], &body).0
}

#[test]
fn duplicates_across_nodes_are_one_ticket_and_balancing_is_even() {
    let cluster = Cluster::start();
    let nodes = three_nodes(&cluster);
    // The same message sent to two nodes at the same moment (a client's
    // retry after a lost 250), 12 times: 12 tickets of one message each.
    std::thread::scope(|s| {
        for i in 0..12 {
            let id = format!("dup{i}@customer.example");
            for node in [&nodes[i % 3], &nodes[(i + 1) % 3]] {
                let id = id.clone();
                s.spawn(move || {
                    let from = format!("d{i}@customer.example");
                    assert_eq!(send(node, &from, &format!("dup-{i}"), &id), 250);
                });
            }
        }
    });
    // 30 new tickets taken by the three nodes at once.
    std::thread::scope(|s| {
        for (k, node) in nodes.iter().enumerate() {
            s.spawn(move || {
                for j in 0..10 {
                    let n = k * 10 + j;
                    let from = format!("b{n}@customer.example");
                    let id = format!("bal{n}@customer.example");
                    assert_eq!(send(node, &from, &format!("bal-{n}"), &id), 250);
                }
            });
        }
    });
    nodes[0].wait_ingested(Duration::from_secs(120));
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT COUNT(*), COUNT(DISTINCT ticket_id) FROM messages WHERE subject LIKE 'dup-%'"
        ),
        "12|12"
    );
    assert_eq!(
        cluster.psql(
            "postdesk",
            "SELECT owner || '=' || COUNT(*) FROM tickets GROUP BY owner ORDER BY owner"
        ),
        "ann=14\nbob=14\ncy=14"
    );
}
