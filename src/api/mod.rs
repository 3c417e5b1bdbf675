//! HTTP listener: the agents' JSON API under `/api/v1`, health, readiness
//! and Prometheus metrics.
//!
//! Owns routing, authentication ([`auth`]), JSON errors with stable codes
//! ([`error`]) and the resources: [`tickets`] (list, show, create, update,
//! replies, notes), [`people`] (contacts, users' availability, channels) and
//! [`forms`] (web form submissions, the one route without a token); both
//! forms and `POST /api/v1/tickets` open tickets through [`open`].
//!
//! Must not: run SQL or talk SMTP — handlers call the store and
//! [`crate::outbound::Outbound`] (the same reply path as the CLI).
//!
//! Untrusted input: every request. Bodies are capped at [`MAX_BODY`]; JSON
//! that does not parse or has unknown fields is a 400 `bad_request` (415
//! `unsupported_media_type` without a JSON `Content-Type`), as is a path
//! segment that is not UTF-8; a known path with another method is a 405
//! `method_not_allowed`; every `/api/v1` route but form submissions needs a
//! bearer token (401 `unauthorized`). All of these are JSON errors ([`error`]).

pub mod auth;
pub mod error;
pub mod forms;
pub mod metric_help;
mod open;
pub mod people;
pub mod tickets;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::live::Live;
use crate::outbound::Outbound;
use crate::store::Store;
use error::ApiError;

/// Largest request body (base64 attachments included).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub outbound: Outbound,
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the daemon stops: `/readyz` then answers 503.
    pub stopping: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/tickets", get(tickets::list).post(tickets::create))
        .route("/tickets/{n}", get(tickets::show).patch(tickets::update))
        .route("/tickets/{n}/replies", post(tickets::reply))
        .route("/tickets/{n}/notes", post(tickets::note))
        .route("/contacts", get(people::contacts))
        .route("/contacts/{email}", get(people::contact))
        .route("/contacts/{email}/owner", put(people::contact_owner))
        .route("/users", get(people::users))
        .route("/users/{id}/availability", put(people::set_availability))
        .route("/channels", get(people::channels))
        .route("/channels/{id}/enable", post(people::enable_channel))
        .route("/channels/{id}/disable", post(people::disable_channel))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY));
    // Public (no token): websites post here. Its own body cap.
    let forms = Router::new()
        .route(
            "/forms/{id}/submissions",
            post(forms::submit).options(forms::preflight),
        )
        .layer(axum::Extension(Arc::new(forms::FormLimits::default())));
    // A known path with a method it does not serve: JSON 405 (set on every
    // route above, forms included; the `Allow` header stays axum's).
    let api = forms
        .merge(api)
        .method_not_allowed_fallback(error::method_not_allowed);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_string());
    }
    match s.store.queues().await {
        Ok(q) => (
            StatusCode::OK,
            format!("ready spool_pending={}\n", q.spool_pending),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    if let Ok(q) = s.store.queues().await {
        let c = q.outbox;
        metrics::gauge!("postdesk_spool_pending").set(q.spool_pending as f64);
        metrics::gauge!("postdesk_spool_failed").set(q.spool_failed as f64);
        metrics::gauge!("postdesk_outbox_queued").set(c.queued as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "queued").set(c.queued as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "sent").set(c.sent as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "failed").set(c.failed as f64);
        metrics::gauge!("postdesk_outbox_bounced").set(c.bounced as f64);
    }
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".into(),
        ),
    }
}

/// Serve until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
