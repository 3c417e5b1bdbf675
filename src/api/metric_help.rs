//! The help text of every metric postdesk records: `/metrics` carries a
//! `# HELP` line for each, so a Prometheus user reads what a series means
//! without the source. A test checks that every `postdesk_*` name in the
//! source is described here.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, kind and help text of each metric.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "postdesk_api_rate_limited_total",
        Kind::Counter,
        "API replies and ticket openings refused (429) because the token was over [http] sends_per_minute_per_token.",
    ),
    (
        "postdesk_http_connections",
        Kind::Gauge,
        "HTTP connections open now, by listener (api, metrics).",
    ),
    (
        "postdesk_http_connections_refused_total",
        Kind::Counter,
        "HTTP connections answered 503 and closed at once, by reason (max_connections, max_connections_per_ip).",
    ),
    (
        "postdesk_http_body_timeouts_total",
        Kind::Counter,
        "HTTP requests answered 408 because their body did not arrive within [http] body_timeout_secs.",
    ),
    (
        "postdesk_smtp_connections",
        Kind::Gauge,
        "SMTP sessions open now.",
    ),
    (
        "postdesk_smtp_inflight_bytes",
        Kind::Gauge,
        "Bytes of message buffers SMTP sessions hold in memory before commit (bounded by smtp.max_inflight_bytes; a session over it gets 452 4.3.1).",
    ),
    (
        "postdesk_smtp_messages_total",
        Kind::Counter,
        "Messages at the end of DATA/BDAT, by result (accepted: durably in the spool and answered 250; rejected).",
    ),
    (
        "postdesk_smtp_rejections_total",
        Kind::Counter,
        "SMTP commands or sessions refused, by reason (unknown_recipient, disabled_recipient, size, rate, memory, data_timeout, …).",
    ),
    (
        "postdesk_spool_commit_seconds",
        Kind::Histogram,
        "How long an SMTP session waits for its message's durable commit before it can answer 250.",
    ),
    (
        "postdesk_spool_pending",
        Kind::Gauge,
        "Spool entries not yet ingested.",
    ),
    (
        "postdesk_spool_failed",
        Kind::Gauge,
        "Spool entries ingest gave up on (kept; see postdesk status).",
    ),
    (
        "postdesk_store_commits_total",
        Kind::Counter,
        "Group commits of the store's writer.",
    ),
    (
        "postdesk_store_commit_batch",
        Kind::Histogram,
        "Jobs per group commit.",
    ),
    (
        "postdesk_search_pending",
        Kind::Gauge,
        "Stored messages not yet in the full-text index (PostgreSQL store; searches index them first).",
    ),
    (
        "postdesk_search_indexed_total",
        Kind::Counter,
        "Messages this node's search indexer took off its queue after their commit: indexed, or left out as unindexable (PostgreSQL store).",
    ),
    (
        "postdesk_ingest_messages_total",
        Kind::Counter,
        "Messages ingested, by result (stored, duplicate).",
    ),
    (
        "postdesk_ingest_failed_total",
        Kind::Counter,
        "Spool entries ingest could not process.",
    ),
    (
        "postdesk_ingest_lag_seconds",
        Kind::Histogram,
        "From a message's arrival in the spool to its ticket.",
    ),
    (
        "postdesk_ingest_handoff_overflows_total",
        Kind::Counter,
        "Times the in-memory handoff to ingest overflowed and ingest read the spool instead.",
    ),
    (
        "postdesk_pull_messages_total",
        Kind::Counter,
        "Messages pulled from mailboxes into the spool, by channel.",
    ),
    (
        "postdesk_pull_bytes_total",
        Kind::Counter,
        "Bytes of messages pulled, by channel.",
    ),
    (
        "postdesk_pull_skipped_total",
        Kind::Counter,
        "Messages a server never returned, skipped after repeated fetches, by channel.",
    ),
    (
        "postdesk_pull_move_failed_total",
        Kind::Counter,
        "Moves to move_to that failed (retried later), by channel.",
    ),
    (
        "postdesk_mailbox_state",
        Kind::Gauge,
        "1 for a mailbox's current state, 0 for the others, by channel and state.",
    ),
    (
        "postdesk_mailbox_alert",
        Kind::Gauge,
        "1 while a pulled mailbox has an open alert incident (stopped: needs re-authorisation, or failing longer than alert_after_secs), by channel.",
    ),
    (
        "postdesk_mailbox_alerts_total",
        Kind::Counter,
        "Alert incidents opened, by channel and reason (needs_reauth, failing).",
    ),
    (
        "postdesk_outbox_queued_total",
        Kind::Counter,
        "Replies queued for sending.",
    ),
    (
        "postdesk_notices_queued_total",
        Kind::Counter,
        "Notices (mail to agents and admins, on no ticket) queued for sending, by kind.",
    ),
    (
        "postdesk_outbox_attempts_total",
        Kind::Counter,
        "Delivery attempts of replies, by result (sent, deferred, failed).",
    ),
    (
        "postdesk_outbox_queued",
        Kind::Gauge,
        "Replies waiting to be sent.",
    ),
    (
        "postdesk_outbox_depth",
        Kind::Gauge,
        "Replies in the outbox, by state (queued, sent, failed).",
    ),
    (
        "postdesk_outbox_bounced",
        Kind::Gauge,
        "Sent replies reported undeliverable by a bounce since.",
    ),
    (
        "postdesk_form_submissions_total",
        Kind::Counter,
        "Web form submissions, by result.",
    ),
    (
        "postdesk_config_last_reload_successful",
        Kind::Gauge,
        "1 if the last configuration load (start or SIGHUP) succeeded, 0 if it was refused.",
    ),
    (
        "postdesk_config_last_reload_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last successful configuration load.",
    ),
];

/// Upper bounds of the histograms' buckets: seconds for latencies (from a
/// group commit's ≈ 0.5 ms to a slow ingest's seconds), jobs for commit
/// batches. With buckets the exporter writes real Prometheus histograms,
/// which add up across daemons, instead of per-process summaries.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const JOBS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The Prometheus recorder with each histogram's buckets.
pub fn exporter() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let mut b = PrometheusBuilder::new();
    for &(name, kind, _) in METRICS {
        if kind != Kind::Histogram {
            continue;
        }
        let bounds = if name.ends_with("_seconds") {
            SECONDS
        } else {
            JOBS
        };
        // Only an empty list is refused; ours are not.
        b = match b.set_buckets_for_metric(Matcher::Full(name.to_string()), bounds) {
            Ok(b) => b,
            Err(_) => PrometheusBuilder::new(),
        };
    }
    b
}

/// Register the help texts with the installed recorder (once, at start).
pub fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `"postdesk_…"` name recorded in the source has a help text, and
    /// every help text names a metric still recorded.
    #[test]
    fn every_metric_in_the_source_is_described() {
        let mut used = std::collections::BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("metric_help.rs")
                {
                    let text = std::fs::read_to_string(&path).expect("source");
                    for (i, _) in text.match_indices("!(\"postdesk_") {
                        let name: String = text[i + 3..]
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        used.insert(name);
                    }
                }
            }
        }
        let described: std::collections::BTreeSet<String> =
            METRICS.iter().map(|(n, ..)| n.to_string()).collect();
        assert!(used.len() > 20, "the scan found too little: {used:?}");
        assert_eq!(used, described);
    }
}
