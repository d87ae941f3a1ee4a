//! The web form: `POST /api/v1/requests`, public. A citizen's written
//! request becomes an asynchronous conversation in the topic's queue with a
//! human reference (`URP-2026-000123`).
//!
//! It answers JSON to scripts and, to the plain HTML form at `/request`
//! (`application/x-www-form-urlencoded`, no JavaScript needed), a 303 to
//! the thank-you page or a page listing what to fix. Every field is bounded,
//! a hidden honeypot field catches bots, and each client address may send a
//! few forms per window.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::client_address;
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::config::Channel;
use crate::hub::Arrival;
use crate::ratelimit::Verdict;
use crate::store::Direction;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_request))
}

/// A citizen's written request. `privacy_consent` must be true; `website`
/// is a honeypot that people never see and must stay empty.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CitizenRequest {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    /// A queue id from the configuration, e.g. `tributi`.
    pub topic: String,
    pub subject: String,
    pub text: String,
    /// `true`, or `on` from an HTML checkbox.
    #[serde(default, deserialize_with = "checkbox")]
    pub privacy_consent: bool,
    #[serde(default)]
    pub website: Option<String>,
    /// it, en, de, fr (default it).
    #[serde(default)]
    pub language: Option<String>,
}

fn checkbox<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Bool(bool),
        Text(String),
    }
    Ok(match Value::deserialize(deserializer)? {
        Value::Bool(b) => b,
        Value::Text(t) => matches!(t.as_str(), "on" | "true" | "1" | "yes"),
    })
}

#[derive(Serialize, ToSchema)]
pub struct RequestAccepted {
    /// Quote it in any later contact, e.g. `URP-2026-000123`.
    pub reference: String,
    pub conversation_id: i64,
}

fn bounded(
    field: &str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return if required {
            Err(ApiError::validation(field, "required"))
        } else {
            Ok(None)
        };
    }
    if value.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::validation(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(Some(value.to_owned()))
}

/// Sends a request to the contact center.
#[utoipa::path(
    post, path = "/api/v1/requests", tag = "conversations",
    request_body(content = CitizenRequest, content_type = "application/json",
                 description = "Also accepted as application/x-www-form-urlencoded (the HTML form): then the answer is a 303 to /request/thanks?ref=..."),
    security(()),
    responses(
        (status = 201, body = RequestAccepted),
        (status = 303, description = "From the HTML form: to the thank-you page"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
async fn create_request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge.into_response();
        }
        Err(rejection) => return ApiError::BadRequest(rejection.body_text()).into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let html_form = content_type == "application/x-www-form-urlencoded";
    let parsed: Result<CitizenRequest, ApiError> = match content_type.as_str() {
        "application/json" => super::json::parse(&body),
        "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(&body).map_err(|e| {
            let message = e.to_string();
            let field = message.split('`').nth(1).unwrap_or("form").to_owned();
            ApiError::validation(field, message)
        }),
        _ => Err(ApiError::UnsupportedMediaType),
    };
    let address = client_address(&state, peer, &headers);
    let result = match parsed {
        Ok(request) => accept(&state, &address, request).await,
        Err(err) => Err(err),
    };
    match (result, html_form) {
        (Ok(accepted), false) => (StatusCode::CREATED, Json(accepted)).into_response(),
        (Ok(accepted), true) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(location) =
                HeaderValue::from_str(&format!("/request/thanks?ref={}", accepted.reference))
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        (Err(err), false) => err.into_response(),
        (Err(err), true) => form_error_page(&err),
    }
}

async fn accept(
    state: &AppState,
    address: &str,
    request: CitizenRequest,
) -> Result<RequestAccepted, ApiError> {
    if let Verdict::Limited { retry_after } = state.forms.check(address, Instant::now()) {
        return Err(ApiError::RateLimited { retry_after });
    }
    if request
        .website
        .as_deref()
        .is_some_and(|w| !w.trim().is_empty())
    {
        return Err(ApiError::validation("website", "leave this field empty"));
    }
    let settings = &state.settings;
    let max_text = settings.public.max_text_chars;
    let name = bounded("name", &request.name, 100, true)?.unwrap_or_default();
    let email = bounded("email", &request.email, 254, true)?.unwrap_or_default();
    if !crate::ws::valid_email(&email) {
        return Err(ApiError::validation("email", "not an e-mail address"));
    }
    let phone = match request.phone.as_deref() {
        Some(phone) => bounded("phone", phone, 30, false)?,
        None => None,
    };
    if let Some(phone) = &phone
        && !phone
            .chars()
            .all(|c| c.is_ascii_digit() || " +-./()".contains(c))
    {
        return Err(ApiError::validation(
            "phone",
            "digits, spaces and + - . / ( ) only",
        ));
    }
    let topic = bounded("topic", &request.topic, 40, true)?.unwrap_or_default();
    if !settings
        .queues
        .get(&topic)
        .is_some_and(|q| q.channels.contains(&Channel::Webform))
    {
        return Err(ApiError::validation("topic", "not a topic of the web form"));
    }
    let subject = bounded("subject", &request.subject, 200, true)?.unwrap_or_default();
    let text = bounded("text", &request.text, max_text, true)?.unwrap_or_default();
    if !request.privacy_consent {
        return Err(ApiError::validation(
            "privacy_consent",
            "consent is needed to handle the request",
        ));
    }
    let language = request.language.unwrap_or_else(|| "it".into());
    if !settings.languages.contains(&language) {
        return Err(ApiError::validation("language", "unsupported language"));
    }
    let now = crate::now_ms();
    let contact = state
        .store
        .contact_for(Some(&name), Some(&email), phone.as_deref(), now)
        .await?;
    let hub = &state.hub;
    let conversation = hub
        .open_conversation(Arrival {
            queue_id: topic,
            channel: Channel::Webform,
            language,
            subject: Some(subject),
            contact_id: Some(contact),
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    hub.add_message(
        conversation.id,
        Direction::Inbound,
        None,
        &text,
        Some("webform"),
    )
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    // The acknowledgement with the reference, through the outbox.
    if let Some(outbox) = state.outbox.get() {
        let subject = conversation.subject.clone().unwrap_or_default();
        outbox
            .acknowledge_request(
                conversation.id,
                &conversation.reference,
                &email,
                Some(&name),
                &subject,
            )
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    Ok(RequestAccepted {
        reference: conversation.reference,
        conversation_id: conversation.id,
    })
}

/// For the no-JavaScript form: what went wrong, in plain HTML, every value
/// escaped.
fn form_error_page(err: &ApiError) -> Response {
    let field = match err {
        ApiError::Validation { field, .. } => field.as_str(),
        _ => "",
    };
    let message = match err {
        ApiError::Validation { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let page = format!(
        "<!doctype html><html lang=\"it\"><head><meta charset=\"utf-8\"><title>Richiesta non inviata</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><main>\
         <h1>Richiesta non inviata</h1><p>Controlli il campo <strong>{}</strong>: {}.</p>\
         <p><a href=\"/request\">Torna al modulo</a></p></main></body></html>",
        escape(field),
        escape(&message)
    );
    let mut response = (err.status(), Html(page)).into_response();
    if let ApiError::RateLimited { .. } = err {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}

/// HTML-escapes text for the error page.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
