//! The HTTP API: REST under `/api/v1`, health and metrics, and the OpenAPI
//! document generated from the handlers' annotations (`/api/openapi.json`).
//!
//! Every operation declares its security in the document: public ones have
//! none, protected ones list the `bearer` and `cookie` schemes with the least
//! role as the scope (OpenAPI 3.1 allows role names as scopes for non-OAuth
//! schemes). The authorization test walks that document, so a route added
//! without the right extractor fails it.

pub mod auth;
pub mod conversations;
pub mod error;
pub mod health;
pub mod json;
pub mod mail;
pub mod operators;
pub mod queues;
pub mod requests;
pub mod sip;
pub mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ccu: Contact Center Unico",
        description = "REST API of ccu, the omnichannel contact center of a public administration. \
                       Errors are JSON objects with a stable `code`, a `message` and, for validation \
                       errors, the `field`.",
        license(name = "AGPL-3.0-or-later")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Sessions"),
        (name = "users", description = "Operators, supervisors and admins (admin only)"),
        (name = "queues", description = "Queues from the configuration"),
        (name = "operators", description = "Colleagues and their live presence, for transfers"),
        (name = "conversations", description = "Conversations on every channel, scoped by organization"),
        (name = "mail", description = "The e-mail behind conversations: original messages, attachments, noise"),
        (name = "health", description = "Probes and metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// The REST routes with their OpenAPI document.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router())
        .merge(users::router())
        .merge(queues::router())
        .merge(operators::router())
        .merge(conversations::router())
        .merge(mail::router())
        .merge(requests::router())
        .merge(sip::router())
}

/// The OpenAPI document (also served at `/api/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The whole HTTP surface with its middleware.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = api_router().split_for_parts();
    let doc = std::sync::Arc::new(doc);
    let body_limit = state.settings.http.body_limit_bytes;
    let timeout = Duration::from_secs(state.settings.http.request_timeout_seconds);
    let request_id = HeaderName::from_static("x-request-id");
    routes
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/ws/chat", axum::routing::get(crate::ws::chat::chat_socket))
        .route("/ws/operator", axum::routing::get(crate::ws::operator::operator_socket))
        .route("/ws/supervisor", axum::routing::get(crate::ws::supervisor::supervisor_socket))
        .merge(crate::web::router())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(json_errors_and_headers))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let id = request
                    .extensions()
                    .get::<RequestId>()
                    .and_then(|id| id.header_value().to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, NextRequestId::default()))
        .layer(middleware::map_request(drop_bad_request_id))
}

/// Request ids: a random per-process prefix and a counter, unique across a
/// cluster's logs without a uuid dependency. A client's own `x-request-id`
/// is kept.
#[derive(Clone)]
struct NextRequestId {
    prefix: std::sync::Arc<str>,
    counter: std::sync::Arc<AtomicU64>,
}

impl Default for NextRequestId {
    fn default() -> Self {
        Self {
            prefix: crate::auth::random_token(6).into(),
            counter: Default::default(),
        }
    }
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// A client's `x-request-id` is kept only when it is short and plain, so it
/// cannot flood or forge log lines.
async fn drop_bad_request_id(mut request: Request) -> Request {
    let bad = request.headers().get("x-request-id").is_some_and(|v| {
        let v = v.as_bytes();
        v.is_empty()
            || v.len() > 64
            || !v
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    });
    if bad {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// Errors made by layers rather than handlers (timeouts) come without a
/// body: give them ours. API answers are never cached, and no response is
/// sniffed into another type.
async fn json_errors_and_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let bare = !response
        .headers()
        .contains_key(axum::http::header::CONTENT_TYPE);
    if bare && response.status() == StatusCode::REQUEST_TIMEOUT {
        response = ApiError::Timeout.into_response();
    }
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if api && !headers.contains_key(axum::http::header::CACHE_CONTROL) {
        headers.insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    response
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("ccu_http_requests_total", &labels).increment(1);
    metrics::histogram!("ccu_http_request_duration_seconds", &labels[..2])
        .record(started.elapsed().as_secs_f64());
    response.into_response()
}
