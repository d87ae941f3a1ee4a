//! The e-mail behind a conversation, for the console (issue 6): the mails
//! of a conversation with their noise flag and attachments, and downloads
//! of the original `.eml`, the original HTML body and each attachment.
//! Noise (auto-replies, bounces, list mail: stored, never answered) has
//! its own list for supervisors, since most of it opens no conversation.
//!
//! **Downloads are never rendered.** Every file goes out with
//! `Content-Disposition: attachment` (RFC 6266), `X-Content-Type-Options:
//! nosniff` and `Content-Security-Policy: sandbox`: a citizen's HTML, or an
//! attachment that claims to be a PDF but is markup, must not run in the
//! console's origin. Attachments keep their declared type only when it is
//! one of a few inert ones; anything else is `application/octet-stream`.
//!
//! Scope: the same as the conversation's (404 for what the user may not
//! see, which does not reveal that it exists); a mail that opened no
//! conversation is seen through its queue's organization.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::ApiPath;
use crate::app::AppState;
use crate::auth::{Auth, SupervisorAuth};
use crate::store::mail::InboundMailSummary;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(conversation_mail))
        .routes(routes!(noise_mail))
        .routes(routes!(get_mail))
        .routes(routes!(raw_mail))
        .routes(routes!(html_original))
        .routes(routes!(attachment))
}

/// The mails of one conversation, oldest first.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/mail", tag = "mail",
    params(("id" = i64, Path, description = "Conversation id")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = Vec<InboundMailSummary>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn conversation_mail(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<InboundMailSummary>>, ApiError> {
    if !state.store.conversation_visible(&auth.scope, id).await? {
        return Err(ApiError::NotFound("conversation"));
    }
    Ok(Json(state.store.mail_summaries_for_conversation(id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoiseParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct MailPage {
    pub items: Vec<InboundMailSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<i64>,
}

/// Noise mail, newest first: auto-replies, bounces, list mail. Stored
/// (RFC 5321 §6.1) but never answered automatically (RFC 3834 §2); each
/// item says why in `noise`.
#[utoipa::path(
    get, path = "/api/v1/mail/noise", tag = "mail",
    params(NoiseParams),
    security(("bearer" = ["supervisor"]), ("cookie" = ["supervisor"])),
    responses((status = 200, body = MailPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn noise_mail(
    auth: SupervisorAuth,
    State(state): State<AppState>,
    params: Result<Query<NoiseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MailPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "between 1 and 200"));
    }
    let items = state
        .store
        .noise_mail(&auth.scope, params.cursor, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|m| m.id))
        .flatten();
    Ok(Json(MailPage { items, next_cursor }))
}

/// One inbound mail: envelope, headers, noise, attachments.
#[utoipa::path(
    get, path = "/api/v1/mail/{id}", tag = "mail",
    params(("id" = i64, Path, description = "Inbound mail id")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = InboundMailSummary), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_mail(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<InboundMailSummary>, ApiError> {
    Ok(Json(visible(&state, &auth, id).await?))
}

/// The original message as received (with our `Received:` header), as a
/// `.eml` download.
#[utoipa::path(
    get, path = "/api/v1/mail/{id}/raw", tag = "mail",
    params(("id" = i64, Path, description = "Inbound mail id")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 200, description = "The message, `Content-Disposition: attachment`", content_type = "message/rfc822", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
async fn raw_mail(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let raw = visible_raw(&state, &auth, id).await?;
    Ok(download(
        HeaderValue::from_static("message/rfc822"),
        &format!("mail-{id}.eml"),
        raw,
    ))
}

/// The mail's original HTML body, as a download: never to be opened in the
/// console (it may carry scripts, trackers, forms). The console shows the
/// text ccu extracted from it.
#[utoipa::path(
    get, path = "/api/v1/mail/{id}/html", tag = "mail",
    params(("id" = i64, Path, description = "Inbound mail id")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 200, description = "The HTML part, `Content-Disposition: attachment`", content_type = "text/html", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such mail, or it has no HTML part")
    )
)]
async fn html_original(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let raw = visible_raw(&state, &auth, id).await?;
    let limits = ccu_email::inbound::ParseLimits::default();
    // Parsing is pure and total; a large mail is parsed off the async threads.
    let html = tokio::task::spawn_blocking(move || {
        ccu_email::inbound::parse_inbound(&raw, &limits).original_html
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .ok_or(ApiError::NotFound("HTML part"))?;
    Ok(download(
        HeaderValue::from_static("text/html; charset=utf-8"),
        &format!("mail-{id}.html"),
        html.into_bytes(),
    ))
}

/// One attachment of a mail, as a download.
#[utoipa::path(
    get, path = "/api/v1/mail/{id}/attachments/{attachment}", tag = "mail",
    params(
        ("id" = i64, Path, description = "Inbound mail id"),
        ("attachment" = i64, Path, description = "Attachment id"),
    ),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 200, description = "The file, `Content-Disposition: attachment`", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
async fn attachment(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((id, attachment)): ApiPath<(i64, i64)>,
) -> Result<Response, ApiError> {
    visible(&state, &auth, id).await?;
    let file = state
        .store
        .attachment(attachment)
        .await?
        .filter(|f| f.inbound_id == id)
        .ok_or(ApiError::NotFound("attachment"))?;
    Ok(download(
        inert_content_type(&file.content_type),
        &file.filename,
        file.bytes,
    ))
}

async fn visible(state: &AppState, auth: &Auth, id: i64) -> Result<InboundMailSummary, ApiError> {
    state
        .store
        .visible_mail(&auth.scope, id)
        .await?
        .ok_or(ApiError::NotFound("mail"))
}

async fn visible_raw(state: &AppState, auth: &Auth, id: i64) -> Result<Vec<u8>, ApiError> {
    visible(state, auth, id).await?;
    state
        .store
        .inbound_raw(id)
        .await?
        .ok_or(ApiError::NotFound("mail"))
}

/// Types a browser shows without running anything; the rest (HTML, SVG,
/// XML, scripts, unknown) is sent as bytes.
fn inert_content_type(declared: &str) -> HeaderValue {
    const INERT: [&str; 8] = [
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "text/plain",
        "text/csv",
        "application/zip",
    ];
    match INERT.iter().find(|t| declared.eq_ignore_ascii_case(t)) {
        Some(t) => HeaderValue::from_static(t),
        None => HeaderValue::from_static("application/octet-stream"),
    }
}

/// A file response that the browser saves and never renders.
pub(super) fn download(content_type: HeaderValue, filename: &str, bytes: Vec<u8>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_DISPOSITION, content_disposition(filename));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Defence in depth if a browser opens it anyway: no scripts, no
    // same-origin access.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    (headers, bytes).into_response()
}

/// `attachment; filename="..."; filename*=UTF-8''...` (RFC 6266 §4.3 with
/// the RFC 8187 encoding): an ASCII fallback without quotes or
/// backslashes, and the exact name percent-encoded.
fn content_disposition(filename: &str) -> HeaderValue {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disposition_is_always_an_attachment_with_a_safe_fallback_name() {
        assert_eq!(
            content_disposition("ricevuta TARI.pdf"),
            "attachment; filename=\"ricevuta TARI.pdf\"; filename*=UTF-8''ricevuta%20TARI.pdf"
        );
        assert_eq!(
            content_disposition("perché \"x\".pdf"),
            "attachment; filename=\"perch_ _x_.pdf\"; filename*=UTF-8''perch%C3%A9%20%22x%22.pdf"
        );
    }

    #[test]
    fn markup_is_never_served_with_its_own_type() {
        for t in [
            "text/html",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
        ] {
            assert_eq!(inert_content_type(t), "application/octet-stream", "{t}");
        }
        assert_eq!(inert_content_type("application/PDF"), "application/pdf");
    }
}
