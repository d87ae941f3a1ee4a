//! Liveness, readiness and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

/// Installs the process-wide Prometheus recorder once (tests start many
/// servers in one process) and returns its handle.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// sqlite or postgres.
    pub store: &'static str,
    pub store_ok: bool,
    /// in-process or redis.
    pub bus: &'static str,
    pub bus_ok: bool,
    /// The SIP endpoint (voice) is running.
    pub sip_ok: bool,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The store answers, the bus delivers and the SIP endpoint runs; listeners are bound before the
/// server accepts anything, so answering at all means they are.
#[utoipa::path(
    get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness))
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let store_ok = state.store.ping().await.is_ok();
    let bus_ok = state.bus.healthy().await;
    let sip_ok = crate::sip::handle(&state).is_some_and(|sip| sip.is_running());
    let ready = store_ok && bus_ok && sip_ok;
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        store: state.store.backend(),
        store_ok,
        bus: state.bus.kind(),
        bus_ok,
        sip_ok,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format. Served to loopback peers only unless
/// `http.metrics_public` is set (numbers about the city's service are not
/// for everyone; scrape from the host or through a proxy).
#[utoipa::path(
    get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"), (status = 403))
)]
async fn metrics_text(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !state.settings.http.metrics_public && !peer.ip().is_loopback() {
        return Err(ApiError::Forbidden);
    }
    if let Some(token) = &state.settings.http.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared as hashes, so the time taken says nothing about the token.
        if given.map(crate::auth::token_hash) != Some(crate::auth::token_hash(token)) {
            return Err(ApiError::Unauthorized);
        }
    }
    crate::sip::export_metrics(&state);
    let handle = metrics_handle();
    handle.run_upkeep();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}
