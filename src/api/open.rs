//! The one way the HTTP API opens a ticket — web form submissions and
//! `POST /api/v1/tickets` alike: runtime overrides refreshed first (a
//! `postdesk channels disable` a moment ago must already refuse), the
//! channel's enabled state checked against them, the submission planned as
//! mail is ([`crate::ingest::submit::plan`], routing with availability as of
//! now) and committed with its spool row in one transaction.
//!
//! Must not: validate the request's own fields (the handlers do), or store
//! anything when it answers an error.

use axum::http::StatusCode;

use super::AppState;
use super::error::ApiError;
use crate::config::{ChannelConfig, Config};
use crate::ingest::submit::{self, Origin};
use crate::store::{ContactRef, InboundOutcome, NewSpool, Submission};

/// Refresh the overrides, then refuse (503 `unavailable`, `why` as the
/// message) if the channel is disabled now.
pub(super) async fn check_enabled(
    s: &AppState,
    channel: &ChannelConfig,
    why: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if let Err(e) = s.live.refresh(s.store.as_ref()).await {
        tracing::debug!(error = %e, "override refresh failed; using cached values");
    }
    if s.live.channel_enabled(channel) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            why(),
        ))
    }
}

/// What a new ticket is opened from.
pub(super) struct Opening<'a> {
    pub origin: Origin<'a>,
    pub contact: ContactRef,
    pub subject: String,
    pub text: String,
    /// A web form's fields, name → value, for routing rules (empty: none).
    pub fields: std::collections::BTreeMap<String, String>,
    /// Its spool row (`raw`: the submission as received).
    pub spool: NewSpool,
}

/// Plan and commit one opening on `channel` (checked with [`check_enabled`]
/// first); routing uses the availability refreshed there.
pub(super) async fn open(
    s: &AppState,
    config: &Config,
    channel: &ChannelConfig,
    o: Opening<'_>,
) -> Result<InboundOutcome, ApiError> {
    let live = s.live.clone();
    let raw = o.spool.raw.clone();
    let msg = submit::plan(
        config,
        channel,
        o.origin,
        o.contact,
        o.subject,
        o.text,
        &o.fields,
        &|u| live.user_available(u),
    );
    let brief = crate::ingest::notices::Brief::of(&msg, &raw, config);
    let outcome = s
        .store
        .submit(
            Submission {
                spool: o.spool,
                messages: vec![msg],
            },
            crate::ingest::decide::decide,
        )
        .await?;
    crate::ingest::notices::tell_owners(
        s.store.as_ref(),
        config,
        &s.live,
        crate::ingest::notices::pair(&outcome.delivered, vec![brief]),
    )
    .await;
    Ok(outcome)
}

/// The `Idempotency-Key` header, if any: 1-200 printable ASCII characters
/// (one rule for every route that takes it).
pub(super) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1-200 printable ASCII characters")
        })
}
