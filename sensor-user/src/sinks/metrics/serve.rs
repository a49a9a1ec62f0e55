//! The HTTP endpoint: `/metrics` and `/healthz`.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::Metrics;

/// prometheus-client writes OpenMetrics text (`info` metrics, `# EOF`); said
/// otherwise, Prometheus rejects the scrape ("invalid metric type info").
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([("content-type", OPENMETRICS)], m.encode())
}

async fn healthz_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves on `listener` (bound by the caller before anything else starts, so a
/// taken port is an immediate, clear error) until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(metrics);
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }))
}
