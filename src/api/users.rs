//! Users: operators, supervisors and admins. Admins manage the users of the
//! organizations they see (the city's admins: everyone).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::json::ApiPath;
use crate::app::AppState;
use crate::auth::{self, AdminAuth};
use crate::config::{Channel, Settings};
use crate::store::{AuditEntry, NewUser, Role, Scope, User, UserChanges};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, deactivate_user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 3-64 characters: lowercase letters, digits, `.`, `_`, `-`.
    pub username: String,
    pub display_name: String,
    pub password: String,
    pub role: Role,
    /// Defaults to the admin's own organization.
    pub organization_id: Option<String>,
    #[serde(default)]
    pub grants: Vec<String>,
    /// Skill id -> level 1-10.
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Defaults to `["it"]`.
    pub languages: Option<Vec<String>>,
    /// Channel -> simultaneous conversations, overriding the defaults.
    #[serde(default)]
    pub capacity: BTreeMap<String, u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub display_name: Option<String>,
    pub password: Option<String>,
    pub role: Option<Role>,
    pub grants: Option<Vec<String>>,
    pub skills: Option<BTreeMap<String, u8>>,
    pub languages: Option<Vec<String>>,
    pub capacity: Option<BTreeMap<String, u32>>,
    pub active: Option<bool>,
}

/// Checks a username's shape; shared with the `ccu user add` command.
pub fn validate_username(username: &str) -> Result<(), ApiError> {
    let ok = (3..=64).contains(&username.len())
        && username.bytes().any(|b| b.is_ascii_lowercase())
        && username.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::validation(
            "username",
            "3-64 characters: lowercase letters, digits, '.', '_' or '-', with at least one letter",
        ))
    }
}

pub fn validate_password(settings: &Settings, password: &str) -> Result<(), ApiError> {
    // Spaces and control characters do not count towards the length.
    let chars = password
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .count();
    if chars < settings.auth.min_password_length || password.len() > 1024 {
        return Err(ApiError::validation(
            "password",
            format!(
                "between {} characters and 1024 bytes",
                settings.auth.min_password_length
            ),
        ));
    }
    Ok(())
}

pub fn validate_display_name(name: &str) -> Result<(), ApiError> {
    let chars = name.trim().chars().count();
    // Control characters, and the invisible format ones (bidi overrides,
    // zero-width joiners) that make one name look like another.
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if chars == 0 || chars > 100 || name.chars().any(invisible) {
        return Err(ApiError::validation(
            "display_name",
            "1-100 characters, no control characters",
        ));
    }
    Ok(())
}

/// Skills, languages, capacity and grants must name things in the config.
pub fn validate_profile(
    settings: &Settings,
    skills: &BTreeMap<String, u8>,
    languages: &[String],
    capacity: &BTreeMap<String, u32>,
    grants: &[String],
) -> Result<(), ApiError> {
    for (skill, level) in skills {
        if !settings.skills.contains_key(skill) {
            return Err(ApiError::validation(
                format!("skills.{skill}"),
                "unknown skill",
            ));
        }
        if !(1..=10).contains(level) {
            return Err(ApiError::validation(
                format!("skills.{skill}"),
                "levels go from 1 to 10",
            ));
        }
    }
    if languages.is_empty() {
        return Err(ApiError::validation("languages", "at least one language"));
    }
    for lang in languages {
        if !settings.languages.contains(lang) {
            return Err(ApiError::validation(
                "languages",
                format!("{lang:?} is not one of {:?}", settings.languages),
            ));
        }
    }
    for (channel, n) in capacity {
        if Channel::parse(channel).is_none() {
            return Err(ApiError::validation(
                format!("capacity.{channel}"),
                "unknown channel",
            ));
        }
        if *n > 50 {
            return Err(ApiError::validation(
                format!("capacity.{channel}"),
                "at most 50",
            ));
        }
    }
    for org in grants {
        if !settings.organizations.contains_key(org) {
            return Err(ApiError::validation(
                "grants",
                format!("unknown organization {org:?}"),
            ));
        }
    }
    Ok(())
}

async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .with_password_pool(move || auth::hash_password(&password))
        .await?
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Whose users an admin manages: the city's admins everyone's, a company's
/// admins their own organization's. Grants widen what a user *sees* (their
/// conversations), never whom an admin manages, and only the city's admins
/// may give grants: otherwise a company admin could grant themselves the
/// city and take over its accounts.
fn management_scope(auth: &AdminAuth) -> Scope {
    match auth.scope {
        Scope::All => Scope::All,
        Scope::Organizations { .. } => Scope::Organizations {
            organizations: vec![auth.user.organization_id.clone()],
            assigned_to: None,
        },
    }
}

fn check_grants(auth: &AdminAuth, grants: Option<&[String]>) -> Result<(), ApiError> {
    if grants.is_some_and(|g| !g.is_empty()) && auth.scope != Scope::All {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// Removes repeated entries, keeping the first of each.
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    list.into_iter()
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// Tells the router about a new or changed user; a deactivated one goes
/// offline and their registered phones are forgotten.
async fn refresh_operator(state: &AppState, user: &User) {
    let router = state.hub.router();
    let profile = crate::router::operator_profile(&state.settings, router.ids(), user);
    let mut result = router.upsert_operator(profile).await;
    if !user.active {
        // Their phones can no longer refresh; forget them now.
        super::sip::forget_devices(state, user.id);
    }
    if result.is_ok() && !user.active {
        result = router
            .presence(user.id, ccu_routing::Presence::Offline)
            .await;
    }
    if let Err(err) = result {
        tracing::warn!(%err, user = user.id, "the router did not take the user change");
    }
}

/// The users the admin may manage, by username.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "users",
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses((status = 200, body = Vec<User>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
async fn list_users(
    auth: AdminAuth,
    State(state): State<AppState>,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(
        state.store.list_users(&management_scope(&auth)).await?,
    ))
}

/// Creates a user in one of the admin's organizations.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "users",
    request_body = CreateUser,
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses(
        (status = 201, body = User),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
async fn create_user(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let settings = &state.settings;
    validate_username(&body.username)?;
    validate_display_name(&body.display_name)?;
    validate_password(settings, &body.password)?;
    let organization_id = body
        .organization_id
        .unwrap_or_else(|| auth.user.organization_id.clone());
    if !settings.organizations.contains_key(&organization_id) {
        return Err(ApiError::validation(
            "organization_id",
            "unknown organization",
        ));
    }
    if !management_scope(&auth).allows_organization(&organization_id) {
        return Err(ApiError::Forbidden);
    }
    check_grants(&auth, Some(&body.grants))?;
    let grants = dedup(body.grants);
    let languages = dedup(body.languages.unwrap_or_else(|| vec!["it".into()]));
    validate_profile(settings, &body.skills, &languages, &body.capacity, &grants)?;
    let new = NewUser {
        username: body.username,
        display_name: body.display_name.trim().to_owned(),
        password_hash: hash(&state, body.password).await?,
        role: body.role,
        organization_id,
        grants,
        skills: body.skills,
        languages,
        capacity: body.capacity,
    };
    let now = crate::now_ms();
    let user = state.store.create_user(&new, now).await?;
    refresh_operator(&state, &user).await;
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(auth.user.id),
                address: None,
                action: "user_created",
                target: Some(user.username.clone()),
                detail: serde_json::json!({ "role": user.role, "organization_id": user.organization_id }),
            },
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// The user `id` if the admin manages them; else 404 (shared with the
/// SIP account routes in `api/sip.rs`).
pub(crate) async fn visible_user(
    state: &AppState,
    auth: &AdminAuth,
    id: i64,
) -> Result<User, ApiError> {
    match state.store.get_user(id).await? {
        Some(user) if management_scope(auth).allows_organization(&user.organization_id) => Ok(user),
        _ => Err(ApiError::NotFound("user")),
    }
}

#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_user(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(visible_user(&state, &auth, id).await?))
}

/// Changes a user; a new password, a new role or deactivation ends their sessions.
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    request_body = UpdateUser,
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses(
        (status = 200, body = User), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
async fn update_user(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<User>, ApiError> {
    let current = visible_user(&state, &auth, id).await?;
    let settings = &state.settings;
    if let Some(name) = &body.display_name {
        validate_display_name(name)?;
    }
    if id == auth.user.id && body.active == Some(false) {
        return Err(ApiError::validation(
            "active",
            "you cannot deactivate yourself",
        ));
    }
    if id == auth.user.id && body.role.is_some_and(|r| r != Role::Admin) {
        return Err(ApiError::validation("role", "you cannot demote yourself"));
    }
    // Grants: only the city's admins, and never on oneself.
    if body.grants.is_some() && (auth.scope != Scope::All || id == auth.user.id) {
        return Err(ApiError::Forbidden);
    }
    let body = UpdateUser {
        grants: body.grants.map(dedup),
        languages: body.languages.map(dedup),
        ..body
    };
    validate_profile(
        settings,
        body.skills.as_ref().unwrap_or(&current.skills),
        body.languages.as_ref().unwrap_or(&current.languages),
        body.capacity.as_ref().unwrap_or(&current.capacity),
        body.grants.as_ref().unwrap_or(&current.grants),
    )?;
    let password_hash = match body.password {
        Some(password) => {
            validate_password(settings, &password)?;
            Some(hash(&state, password).await?)
        }
        None => None,
    };
    let changes = UserChanges {
        display_name: body.display_name.map(|n| n.trim().to_owned()),
        password_hash,
        role: body.role,
        grants: body.grants,
        skills: body.skills,
        languages: body.languages,
        capacity: body.capacity,
        active: body.active,
    };
    let now = crate::now_ms();
    let user = state
        .store
        .update_user(id, &changes, now)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    refresh_operator(&state, &user).await;
    if changes.password_hash.is_some() {
        crate::cli::forget_initial_password(&state.settings, &user.username);
    }
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(auth.user.id),
                address: None,
                action: "user_updated",
                target: Some(user.username.clone()),
                detail: serde_json::json!({
                    "password_changed": changes.password_hash.is_some(),
                    "display_name": changes.display_name,
                    "role": changes.role,
                    "grants": changes.grants,
                    "skills": changes.skills,
                    "languages": changes.languages,
                    "capacity": changes.capacity,
                    "active": changes.active,
                }),
            },
            now,
        )
        .await?;
    Ok(Json(user))
}

/// Deactivates a user: they can no longer log in and their sessions end.
/// History keeps pointing at them, so users are never hard-deleted.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("bearer" = ["admin"]), ("cookie" = ["admin"])),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn deactivate_user(
    auth: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let user = visible_user(&state, &auth, id).await?;
    if user.id == auth.user.id {
        return Err(ApiError::validation("id", "you cannot deactivate yourself"));
    }
    let changes = UserChanges {
        active: Some(false),
        ..Default::default()
    };
    let now = crate::now_ms();
    if let Some(user) = state.store.update_user(id, &changes, now).await? {
        refresh_operator(&state, &user).await;
    }
    state
        .store
        .audit(
            &AuditEntry {
                actor_user_id: Some(auth.user.id),
                address: None,
                action: "user_deactivated",
                target: Some(user.username),
                detail: serde_json::json!({}),
            },
            now,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
