//! The WebSockets: `/ws/chat` (citizens), `/ws/operator` (the console) and
//! `/ws/supervisor` (the dashboard). The protocols are in docs/websocket.md.
//!
//! Each socket is one task that waits on three things at once: frames from
//! the client, notifications from the bus (which say *what* changed; the
//! task loads the data from the store, so a socket on any node of a cluster
//! sees the same thing), and its own timers. A frame from the client is
//! acted on only after it is stored, and acknowledged after that.

pub mod chat;
pub mod operator;
pub mod supervisor;

use axum::extract::ws::{Message as Frame, WebSocket};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::error::ApiError;

/// Largest frame a client may send; bigger ones close the socket (1009).
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The initial read buffer of a socket. tungstenite allocates 128 KiB per
/// socket by default, and a socket that receives for long enough touches
/// all of it: 1.3 GB for ten thousand chats. Frames are small (at most
/// [`MAX_FRAME_BYTES`]) and the buffer grows for a larger one.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Sends one JSON frame; `false` when the client is gone.
pub async fn send(socket: &mut WebSocket, value: &impl Serialize) -> bool {
    match serde_json::to_string(value) {
        Ok(text) => socket.send(Frame::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

pub async fn send_error(socket: &mut WebSocket, code: &str, message: &str) -> bool {
    send(
        socket,
        &json!({ "type": "error", "code": code, "message": message }),
    )
    .await
}

/// Reads a text frame as a JSON object with a `type`; `Err` carries the
/// error frame to send back. Binary frames are refused.
pub fn decode(frame: &str) -> Result<(String, Value), (&'static str, String)> {
    let value: Value =
        serde_json::from_str(frame).map_err(|e| ("malformed_json", e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or((
            "validation_failed",
            "every frame needs a string \"type\"".to_owned(),
        ))?
        .to_owned();
    Ok((kind, value))
}

/// Cross-site WebSocket hijacking: a browser sends cookies with a socket
/// opened by any page, so a socket that authenticates by cookie must come
/// from our own origin. Clients without an Origin (scripts, tests) pass.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or_default();
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// A text field from a frame: trimmed, non-empty, at most `max` characters,
/// no control characters but newlines and tabs.
pub fn text_field(value: &Value, field: &str, max: usize) -> Result<String, ApiError> {
    let text = value
        .get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or_else(|| ApiError::validation(field, "required"))?;
    if text.is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(ApiError::validation(
            field,
            format!("at most {max} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::validation(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(text.to_owned())
}

/// An optional text field (absent or empty is `None`).
pub fn optional_text(value: &Value, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(_) => text_field(value, field, max).map(Some),
    }
}

/// A plausible e-mail address (the mail relay is the real judge).
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
}

/// An error frame for an API error, with the field when there is one.
pub fn error_frame(err: &ApiError) -> Value {
    let mut frame = json!({ "type": "error", "code": err.code(), "message": err.to_string() });
    if let ApiError::Validation { field, message } = err {
        frame["field"] = json!(field);
        frame["message"] = json!(message);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_match_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "ccu.comune.it".parse().unwrap());
        assert!(check_origin(&headers).is_ok());
        headers.insert(ORIGIN, "https://ccu.comune.it".parse().unwrap());
        assert!(check_origin(&headers).is_ok());
        headers.insert(ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_origin(&headers).is_err());
        headers.insert(ORIGIN, "null".parse().unwrap());
        assert!(check_origin(&headers).is_err());
    }

    #[test]
    fn text_fields_are_bounded_and_clean() {
        let v = json!({"t": "  ciao  ", "long": "x".repeat(11), "ctl": "a\u{0007}b", "n": 5});
        assert_eq!(text_field(&v, "t", 10).unwrap(), "ciao");
        assert!(text_field(&v, "long", 10).is_err());
        assert!(text_field(&v, "ctl", 10).is_err());
        assert!(text_field(&v, "n", 10).is_err());
        assert!(text_field(&v, "missing", 10).is_err());
        assert_eq!(optional_text(&v, "missing", 10).unwrap(), None);
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(valid_email("mario.rossi@comune.monteverde.it"));
        assert!(!valid_email("mario"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@c.it"));
        assert!(!valid_email("<script>@x.it"));
    }
}
