//! Operators' SIP accounts (voice channel, issue 5): the username and
//! password their desk or soft phones register with, set by an admin, and
//! the devices registered now. Only the digest HA1 values are stored.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ccu_channels::sip::registrar::OperatorId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, ApiPath};
use super::users::{validate_password, visible_user};
use crate::app::AppState;
use crate::auth::AdminAuth;
use crate::store::{AuditEntry, User};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(
        get_sip_account,
        set_sip_account,
        remove_sip_account
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSipAccount {
    /// What the phone authenticates and registers as (`sip:USERNAME@realm`):
    /// 2-32 characters, lowercase letters, digits, `.`, `_`, `-` (an
    /// extension such as `1001` is fine). Unique across users.
    pub username: String,
    /// The phone's password, under the same policy as login passwords.
    pub password: String,
}

/// A user's SIP account and registered devices. No secrets.
#[derive(Serialize, ToSchema)]
pub struct SipAccountView {
    pub user_id: i64,
    /// `null` when the user has no SIP account.
    pub username: Option<String>,
    /// The digest realm phones must use (`sip.registrar.realm`).
    pub realm: String,
    /// False when the account was set for another realm: its phones cannot
    /// register until the password is set again.
    pub realm_matches: bool,
    pub updated_at: Option<i64>,
    /// The devices registered now, oldest first.
    pub registrations: Vec<SipRegistration>,
}

/// One registered device.
#[derive(Serialize, ToSchema)]
pub struct SipRegistration {
    /// The Contact the phone registered, e.g. `<sip:1001@192.168.1.20:5060>`.
    pub contact: String,
    /// Where the REGISTER came from (calls go there, for phones behind NAT).
    pub source: String,
    /// `UDP` or `TCP`.
    pub transport: String,
    /// Seconds until the registration expires unless refreshed.
    pub expires_in: u64,
    /// The same as Unix milliseconds.
    pub expires_at: i64,
}

/// Checks a SIP username's shape; shared with `ccu user sip`.
pub fn validate_sip_username(username: &str) -> Result<(), ApiError> {
    let ok = (2..=32).contains(&username.len())
        && username.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "username",
            "2-32 characters: lowercase letters, digits, '.', '_' or '-'",
        ))
    }
}

async fn view(state: &AppState, user: &User) -> Result<SipAccountView, ApiError> {
    let account = state.store.sip_account(user.id).await?;
    let realm = state.settings.sip.registrar.realm.clone();
    let now = crate::now_ms();
    let registrations = crate::sip::handle(state)
        .map(|sip| sip.bindings_with_expiry(OperatorId(user.id)))
        .unwrap_or_default()
        .into_iter()
        .map(|(binding, expires_in)| SipRegistration {
            contact: binding.contact.to_string(),
            source: binding.source.to_string(),
            transport: binding.transport.as_str().to_owned(),
            expires_in,
            expires_at: now.saturating_add(
                i64::try_from(expires_in.saturating_mul(1_000)).unwrap_or(i64::MAX),
            ),
        })
        .collect();
    Ok(SipAccountView {
        user_id: user.id,
        realm_matches: account.as_ref().is_none_or(|a| a.realm == realm),
        username: account.as_ref().map(|a| a.sip_username.clone()),
        updated_at: account.as_ref().map(|a| a.updated_at),
        realm,
        registrations,
    })
}

/// The user's SIP account (without secrets) and their registered devices.
#[utoipa::path(
    get, path = "/api/v1/users/{id}/sip", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses((status = 200, body = SipAccountView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_sip_account(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<SipAccountView>, ApiError> {
    let user = visible_user(&state, &auth, id).await?;
    Ok(Json(view(&state, &user).await?))
}

/// Sets the user's SIP username and password (replacing any they had).
/// Devices registered with the old credentials are forgotten: they
/// register again with the new ones.
#[utoipa::path(
    put, path = "/api/v1/users/{id}/sip", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = SetSipAccount,
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses(
        (status = 200, body = SipAccountView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Another user has this SIP username", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
async fn set_sip_account(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<SetSipAccount>,
) -> Result<Json<SipAccountView>, ApiError> {
    let user = visible_user(&state, &auth, id).await?;
    validate_sip_username(&body.username)?;
    validate_password(&state.settings, &body.password)?;
    let realm = &state.settings.sip.registrar.realm;
    let now = crate::now_ms();
    state
        .store
        .set_sip_account(user.id, &body.username, realm, &body.password, now)
        .await?;
    let removed = forget_devices(&state, user.id);
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(auth.user.id),
                address: None,
                action: "sip_account_set",
                target: Some(user.username.clone()),
                detail: serde_json::json!({
                    "sip_username": body.username,
                    "realm": realm,
                    "devices_forgotten": removed,
                }),
            },
            now,
        )
        .await?;
    Ok(Json(view(&state, &user).await?))
}

/// Removes the user's SIP account; their phones can no longer register,
/// and the devices registered now are forgotten.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}/sip", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "No such user, or no SIP account", body = ErrorBody))
)]
async fn remove_sip_account(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&state, &auth, id).await?;
    let account = state.store.sip_account(user.id).await?;
    if !state.store.delete_sip_account(user.id).await? {
        return Err(ApiError::NotFound("sip account"));
    }
    let removed = forget_devices(&state, user.id);
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(auth.user.id),
                address: None,
                action: "sip_account_removed",
                target: Some(user.username),
                detail: serde_json::json!({
                    "sip_username": account.map(|a| a.sip_username),
                    "devices_forgotten": removed,
                }),
            },
            crate::now_ms(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the user's registered phones (credentials changed or removed,
/// user deactivated); how many there were.
pub(crate) fn forget_devices(state: &AppState, user_id: i64) -> usize {
    crate::sip::handle(state).map_or(0, |sip| sip.remove_bindings(OperatorId(user_id)))
}
