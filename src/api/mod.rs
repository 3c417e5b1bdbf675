//! HTTP listener: health, readiness and Prometheus metrics.
//!
//! The agents' JSON API (`/api/v1`) grows here; it calls the store and ingest,
//! never SQL or SMTP directly.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub metrics: Option<PrometheusHandle>,
    /// Cancelled when the daemon stops: `/readyz` then answers 503.
    pub stopping: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_string());
    }
    match s.store.status().await {
        Ok(st) => (
            StatusCode::OK,
            format!("ready spool_pending={}\n", st.spool_pending),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    if let Ok(st) = s.store.status().await {
        metrics::gauge!("postdesk_spool_pending").set(st.spool_pending as f64);
        metrics::gauge!("postdesk_outbox_queued").set(st.outbox_queued as f64);
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
