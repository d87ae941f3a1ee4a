//! Login, logout and "who am I".

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::{self, Auth, SESSION_COOKIE};
use crate::ratelimit::Verdict;
use crate::store::{AuditEntry, Scope, User};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`; browsers get the same token
    /// in an HttpOnly cookie and need not handle it.
    pub token: String,
    pub token_type: &'static str,
    /// Unix milliseconds.
    pub expires_at: i64,
    pub user: User,
}

/// The client's address: the peer, or the first `X-Forwarded-For` hop when
/// the deployment says a trusted proxy sets it.
pub fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    if state.settings.http.trust_forwarded_for
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    {
        return forwarded.to_owned();
    }
    peer.ip().to_string()
}

/// Opens a session. Rate-limited per client address (every attempt) and per
/// username (failed attempts), answering 429 with `Retry-After`.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Logged in; also sets the session cookie", body = LoginResponse),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let address = client_address(&state, peer, &headers);
    if body.username.len() > 64 || body.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    let username = body.username.trim().to_lowercase();
    let user_here = format!("{username}|{address}");
    // Tokens are taken before the (slow) verification, so concurrent
    // guesses cannot all slip through, and given back if the login succeeds:
    // only failures count. Three budgets: per address (one machine guessing
    // many accounts), per username and address (one machine guessing one
    // account), and a looser one per username (many machines, one account),
    // so one address alone cannot lock a user out.
    let now = Instant::now();
    let budgets = [
        (&state.login_per_address, address.as_str()),
        (&state.login_per_user, user_here.as_str()),
        (&state.login_per_username, username.as_str()),
    ];
    for (n, (limiter, key)) in budgets.iter().enumerate() {
        if let Verdict::Limited { retry_after } = limiter.check(key, now) {
            for (taken, key) in &budgets[..n] {
                taken.refund(key, now);
            }
            return Err(ApiError::RateLimited { retry_after });
        }
    }
    let found = state.store.user_for_login(&username).await?;
    let stored_hash = found
        .as_ref()
        .map(|(_, hash)| hash.clone())
        .unwrap_or_else(|| state.dummy_hash.clone());
    let password = body.password;
    let verified = state
        .with_password_pool(move || auth::verify_password(&password, &stored_hash))
        .await?;
    let user = match found {
        Some((user, _)) if verified && user.active => user,
        _ => {
            metrics::counter!("ccu_login_failures_total").increment(1);
            state
                .store
                .audit(
                    &AuditEntry {
                        actor_user_id: None,
                        address: Some(&address),
                        action: "login_failed",
                        target: Some(username),
                        detail: serde_json::json!({}),
                    },
                    crate::now_ms(),
                )
                .await?;
            return Err(ApiError::Unauthorized);
        }
    };
    for (limiter, key) in &budgets {
        limiter.refund(key, Instant::now());
    }
    let token = auth::random_token(32);
    let now_ms = crate::now_ms();
    let ttl = state.settings.auth.session_ttl_seconds;
    let expires_at =
        now_ms.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX));
    state
        .store
        .insert_session(
            &auth::token_hash(&token),
            user.id,
            now_ms,
            expires_at,
            Some(&address),
        )
        .await?;
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(user.id),
                address: Some(&address),
                action: "login",
                target: None,
                detail: serde_json::json!({}),
            },
            now_ms,
        )
        .await?;
    let secure = if state.settings.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={ttl}{secure}"
    );
    let mut response = Json(LoginResponse {
        token,
        token_type: "Bearer",
        expires_at,
        user,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends the session the request carries and clears the cookie.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No live session", body = ErrorBody),
    )
)]
async fn logout(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    state.store.delete_session(&auth.token_hash).await?;
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    /// Organizations whose data this user sees; `null` means all of them.
    pub organizations: Option<Vec<String>>,
    /// Unix milliseconds.
    pub session_expires_at: i64,
}

/// The logged-in user and what they may see.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "auth",
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 200, body = Me),
        (status = 401, body = ErrorBody),
    )
)]
async fn me(auth: Auth) -> Json<Me> {
    let organizations = match &auth.scope {
        Scope::All => None,
        Scope::Organizations { organizations, .. } => Some(organizations.clone()),
    };
    Json(Me {
        user: auth.session.user.clone(),
        organizations,
        session_expires_at: auth.expires_at,
    })
}
