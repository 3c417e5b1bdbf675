//! Live updates: `/events`, a server-sent event stream for a signed-in
//! agent. It sends `activity` with the store's activity value
//! ([`crate::store::WebStore::activity`]) now and whenever it changes
//! (checked every [`POLL`]); the page's script then re-fetches its live
//! region. The value says only that something changed, nothing about what.
//! The stream ends when the daemon stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;

use super::session::Agent;
use crate::api::AppState;

/// How often the store's activity value is read, per open stream.
pub const POLL: Duration = Duration::from_secs(1);

pub async fn stream(
    State(s): State<AppState>,
    _agent: Agent,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::unfold((s, None, true), |(s, last, first)| async move {
        let mut first = first;
        loop {
            if !first {
                tokio::select! {
                    _ = s.stopping.cancelled() => return None,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            first = false;
            if s.stopping.is_cancelled() {
                return None;
            }
            match s.store.activity().await {
                Ok(v) if Some(v) != last => {
                    let event = Event::default().event("activity").data(v.to_string());
                    return Some((Ok(event), (s, Some(v), false)));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "activity poll failed"),
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
