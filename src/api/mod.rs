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
//! Roles and tokens: [`auth`]. The listener itself — connection caps,
//! header and body timeouts, shutdown — is [`listener`]'s; the budgets
//! (connections, sends per token) are [`limits`]'. `/metrics` may be on its
//! own listener (`[http] metrics_listen`) and may need a bearer token read
//! from `[http] metrics_token_file` (401 `unauthorized` without it).
//!
//! Untrusted input: every request. Bodies are capped at [`MAX_BODY`]; JSON
//! that does not parse or has unknown fields is a 400 `bad_request` (415
//! `unsupported_media_type` without a JSON `Content-Type`), as is a path
//! segment that is not UTF-8; a known path with another method is a 405
//! `method_not_allowed`; every `/api/v1` route but form submissions needs a
//! bearer token (401 `unauthorized`). All of these are JSON errors ([`error`]).

pub mod actions;
pub mod auth;
pub mod error;
pub mod forms;
pub mod limits;
pub mod listener;
pub mod metric_help;
mod open;
pub mod people;
pub mod tickets;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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
    /// Replies and ticket openings per token (`[http] sends_per_minute_per_token`).
    pub sends: Arc<limits::SendLimits>,
}

impl AppState {
    /// Take one send (a reply, a ticket opened) from the caller's token's
    /// budget: 429 `rate_limited` with `Retry-After` when it is spent.
    pub fn take_send(&self, user: &auth::AuthUser) -> Result<(), ApiError> {
        let per_minute = self.live.config().http.sends_per_minute_per_token;
        self.sends
            .take(&user.token_hash, per_minute)
            .map_err(|wait| {
                metrics::counter!("postdesk_api_rate_limited_total").increment(1);
                tracing::info!(user = %user.id, retry_after_ms = wait.as_millis() as u64, "API send refused: token over its rate");
                ApiError::rate_limited(
                    format!("more than {per_minute} sends a minute with this token; retry later"),
                    wait,
                )
            })
    }
}

/// The API, health and readiness routes, `pages` (the web inbox's routes,
/// given by the daemon: the API does not import the pages built on it), and
/// `/metrics` unless it has a listener of its own (`separate_metrics`).
pub fn router(state: AppState, pages: Router<AppState>, separate_metrics: bool) -> Router {
    let api = Router::new()
        .route("/tickets", get(tickets::list).post(tickets::create))
        .route("/tickets/outbound", post(tickets::compose))
        .route("/tickets/{n}", get(tickets::show).patch(tickets::update))
        .route("/tickets/{n}/replies", post(tickets::reply))
        .route("/tickets/{n}/notes", post(tickets::note))
        .route("/tickets/{n}/inline/{cid}", get(tickets::inline))
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
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            listener::body_deadline,
        ));
    let root = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api)
        .merge(pages);
    let root = if separate_metrics {
        root
    } else {
        root.route("/metrics", get(metrics))
    };
    root.with_state(state)
}

/// `/metrics` alone, for `[http] metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
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

/// With `[http] metrics_token_file`: the request's bearer token must be the
/// file's (trimmed). The file is read at each scrape, so it can be rotated.
async fn check_metrics_token(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(file) = s.live.config().http.metrics_token_file.clone() else {
        return Ok(());
    };
    let want = match tokio::fs::read_to_string(&file).await {
        Ok(t) if !t.trim().is_empty() => t,
        Ok(_) => {
            tracing::error!(file = %file.display(), "the metrics token file is empty; refusing scrapes");
            return Err(ApiError::internal("metrics token not configured properly"));
        }
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "cannot read the metrics token file; refusing scrapes");
            return Err(ApiError::internal("metrics token not configured properly"));
        }
    };
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let got = auth::bearer(header)?;
    // Compared as digests: no early exit on the secret's first differing byte.
    if auth::token_hash(got) == auth::token_hash(want.trim()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid token"))
    }
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_metrics_token(&s, &headers).await {
        return e.into_response();
    }
    if let Ok(q) = s.store.queues().await {
        let c = q.outbox;
        metrics::gauge!("postdesk_spool_pending").set(q.spool_pending as f64);
        metrics::gauge!("postdesk_spool_failed").set(q.spool_failed as f64);
        metrics::gauge!("postdesk_search_pending").set(q.search_pending as f64);
        metrics::gauge!("postdesk_outbox_queued").set(c.queued as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "queued").set(c.queued as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "sent").set(c.sent as f64);
        metrics::gauge!("postdesk_outbox_depth", "state" => "failed").set(c.failed as f64);
        metrics::gauge!("postdesk_outbox_bounced").set(c.bounced as f64);
    }
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

/// Serve until `shutdown` is cancelled: the API and `pages` on `listener`,
/// `/metrics` on `metrics_listener` when given (else on `listener`), each
/// with its own connection caps ([`listener`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    state: AppState,
    pages: Router<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let http = state.live.config().http.clone();
    let settings = |name| listener::Listener {
        name,
        header_timeout: std::time::Duration::from_secs(http.header_timeout_secs),
        conns: limits::ConnLimits::new(
            http.max_connections,
            http.max_connections_per_ip,
            http.trusted_proxies.clone(),
        ),
    };
    let api = listener::serve(
        listener,
        router(state.clone(), pages, metrics_listener.is_some()),
        settings("api"),
        shutdown.clone(),
    );
    match metrics_listener {
        None => api.await,
        Some(m) => {
            let metrics = listener::serve(m, metrics_router(state), settings("metrics"), shutdown);
            let (a, m) = tokio::join!(api, metrics);
            a.and(m)
        }
    }
}
