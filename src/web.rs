//! The web UI: the console login, the operator console, the supervisor
//! dashboard, the chat widget with its demo page and the web form, served
//! from files embedded in the binary (`web/`, no build step).
//!
//! Every page is static except two that must work without JavaScript: the
//! web form (`/request`, its topic list comes from the configuration and
//! [`request_form_page`] re-renders it with the citizen's values and the
//! errors) and its thank-you page (`/request/thanks?ref=...`). Both are
//! rendered here by substitution into the embedded HTML, every value
//! escaped.
//!
//! Headers: a strict Content-Security-Policy (no inline script or style, so
//! text that slipped into HTML could not run), `nosniff`, no referrer to
//! other sites. The operator and supervisor pages refuse to be framed
//! (clickjacking of an authenticated session); the citizens' pages carry no
//! session or authority, and a city site may frame them, so they allow any
//! ancestor. `widget.js` and `widget.css` are loaded by other sites' pages,
//! hence `Cross-Origin-Resource-Policy: cross-origin` on them.
//!
//! Files are revalidated on every use (`no-cache`) with an `ETag` from
//! their content: names carry no hash, and a new binary must not leave
//! consoles on yesterday's script.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::config::{Channel, Settings};

/// The policy of the operator and supervisor pages.
pub const CSP_STRICT: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The citizens' pages: as strict, but a city site may frame them.
pub const CSP_PUBLIC: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors *";

/// Who may see a file: decides the framing policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Login, console, dashboard: never framed.
    Staff,
    /// Chat demo, web form, thanks page.
    Citizen,
    /// Scripts and styles other sites load (`widget.js`, `widget.css`).
    Embedded,
    /// Other static files of our own pages.
    Own,
}

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    audience: Audience,
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str, audience: Audience) -> Self {
        let digest = Sha256::digest(body);
        let mut etag = String::from("\"");
        for byte in &digest[..12] {
            let _ = write!(etag, "{byte:02x}");
        }
        etag.push('"');
        Self {
            body,
            content_type,
            audience,
            etag,
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";
const SVG: &str = "image/svg+xml";

/// The embedded files by the name they are served under.
static ASSETS: LazyLock<BTreeMap<&'static str, Asset>> = LazyLock::new(|| {
    use Audience::*;
    let files: [(&str, &[u8], &str, Audience); 13] = [
        (
            "index.html",
            include_bytes!("../web/index.html"),
            HTML,
            Staff,
        ),
        (
            "console.html",
            include_bytes!("../web/console.html"),
            HTML,
            Staff,
        ),
        (
            "dashboard.html",
            include_bytes!("../web/dashboard.html"),
            HTML,
            Staff,
        ),
        (
            "chat.html",
            include_bytes!("../web/chat.html"),
            HTML,
            Citizen,
        ),
        (
            "widget.js",
            include_bytes!("../web/widget.js"),
            JS,
            Embedded,
        ),
        (
            "widget.css",
            include_bytes!("../web/widget.css"),
            CSS,
            Embedded,
        ),
        ("app.css", include_bytes!("../web/app.css"), CSS, Own),
        ("i18n.js", include_bytes!("../web/i18n.js"), JS, Own),
        ("login.js", include_bytes!("../web/login.js"), JS, Own),
        ("console.js", include_bytes!("../web/console.js"), JS, Own),
        (
            "dashboard.js",
            include_bytes!("../web/dashboard.js"),
            JS,
            Own,
        ),
        (
            "canned.json",
            include_bytes!("../web/canned.json"),
            JSON,
            Own,
        ),
        (
            "favicon.svg",
            include_bytes!("../web/favicon.svg"),
            SVG,
            Own,
        ),
    ];
    files
        .into_iter()
        .map(|(name, body, content_type, audience)| {
            (name, Asset::new(body, content_type, audience))
        })
        .collect()
});

const REQUEST_TEMPLATE: &str = include_str!("../web/request.html");
const THANKS_TEMPLATE: &str = include_str!("../web/thanks.html");

/// The pages and files, to be merged into the API router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console",
            get(|h: HeaderMap| async move { serve("console.html", &h) }),
        )
        .route(
            "/dashboard",
            get(|h: HeaderMap| async move { serve("dashboard.html", &h) }),
        )
        .route(
            "/chat",
            get(|h: HeaderMap| async move { serve("chat.html", &h) }),
        )
        .route(
            "/widget.js",
            get(|h: HeaderMap| async move { serve("widget.js", &h) }),
        )
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| async move { serve("favicon.svg", &h) }),
        )
        .route("/static/{file}", get(static_file))
        .route("/widget/topics", get(topics))
        .route("/request", get(request_page))
        .route("/request/thanks", get(thanks_page))
}

async fn static_file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.get(name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut headers = security_headers(asset.audience, asset.content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        headers.insert(header::ETAG, etag);
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, asset.body).into_response()
}

fn security_headers(audience: Audience, content_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    let csp = match audience {
        Audience::Staff => {
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            CSP_STRICT
        }
        Audience::Citizen => CSP_PUBLIC,
        Audience::Embedded | Audience::Own => CSP_STRICT,
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    let resource_policy = if audience == Audience::Embedded {
        "cross-origin"
    } else {
        "same-origin"
    };
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static(resource_policy),
    );
    headers
}

/// A topic the chat widget offers: a queue that takes chats.
#[derive(Serialize)]
struct Topic<'a> {
    id: &'a str,
    name: &'a str,
    languages: &'a [String],
}

/// `GET /widget/topics`: the queues that take chats, for the widget's topic
/// choice. Public: names only, the same as any city page shows. Whether a
/// topic is open now is answered by `/ws/chat` (`closed`).
async fn topics(State(state): State<AppState>) -> Response {
    let topics: Vec<Topic<'_>> = state
        .settings
        .queues
        .iter()
        .filter(|(_, q)| q.channels.contains(&Channel::Chat))
        .map(|(id, q)| Topic {
            id,
            name: &q.name,
            languages: &q.languages,
        })
        .collect();
    let mut headers = security_headers(Audience::Embedded, JSON);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The widget runs on other sites' pages and asks from there.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    (headers, axum::Json(topics)).into_response()
}

/// What the citizen typed into the web form, to fill it in again when it is
/// re-rendered with errors.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RequestFormValues {
    pub name: String,
    pub email: String,
    pub phone: String,
    pub topic: String,
    pub subject: String,
    pub text: String,
    /// Present (`on`/`true`) when the box was ticked.
    pub privacy_consent: Option<String>,
}

/// One complaint about one field, shown next to it and in the summary.
#[derive(Debug, Clone)]
pub struct FieldError {
    /// The form field's name (`email`, `privacy_consent`...), or empty for
    /// an error about the whole form (e.g. rate limited).
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct RequestQuery {
    topic: Option<String>,
}

async fn request_page(
    State(state): State<AppState>,
    Query(query): Query<RequestQuery>,
) -> Response {
    let values = RequestFormValues {
        topic: query.topic.unwrap_or_default(),
        ..Default::default()
    };
    request_form_page(&state.settings, StatusCode::OK, &values, &[])
}

/// The web form page, filled with `values` and showing `errors`: the
/// answer of `POST /api/v1/requests` to a browser form (urlencoded) that
/// failed validation (422) or hit a limit (429), so the form works without
/// JavaScript.
pub fn request_form_page(
    settings: &Settings,
    status: StatusCode,
    values: &RequestFormValues,
    errors: &[FieldError],
) -> Response {
    let mut topics = String::new();
    for (id, queue) in settings
        .queues
        .iter()
        .filter(|(_, q)| q.channels.contains(&Channel::Webform))
    {
        let selected = if *id == values.topic { " selected" } else { "" };
        let _ = write!(
            topics,
            "<option value=\"{}\"{selected}>{}</option>",
            escape(id),
            escape(&queue.name)
        );
    }
    let mut summary = String::new();
    if !errors.is_empty() {
        summary.push_str(
            "<div class=\"error-summary\" role=\"alert\" tabindex=\"-1\" id=\"errors\"><h2>La richiesta non è stata inviata</h2><ul>",
        );
        for error in errors {
            if error.field.is_empty() {
                let _ = write!(summary, "<li>{}</li>", escape(&error.message));
            } else {
                let _ = write!(
                    summary,
                    "<li><a href=\"#f-{}\">{}: {}</a></li>",
                    escape(&error.field),
                    escape(&field_label(&error.field)),
                    escape(&error.message)
                );
            }
        }
        summary.push_str("</ul></div>");
    }
    let field_error = |field: &str| -> String {
        errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| {
                format!(
                    "<span class=\"field-error\" id=\"e-{field}\">{}</span>",
                    escape(&e.message)
                )
            })
            .collect()
    };
    let invalid = |field: &str| -> &'static str {
        if errors.iter().any(|e| e.field == field) {
            " aria-invalid=\"true\""
        } else {
            ""
        }
    };
    let consent = if values
        .privacy_consent
        .as_deref()
        .is_some_and(|v| !v.is_empty() && v != "false")
    {
        " checked"
    } else {
        ""
    };
    let mut page = REQUEST_TEMPLATE
        .replace("{{errors}}", &summary)
        .replace("{{topics}}", &topics)
        .replace("{{privacy_consent}}", consent);
    for (field, value) in [
        ("name", &values.name),
        ("email", &values.email),
        ("phone", &values.phone),
        ("subject", &values.subject),
        ("text", &values.text),
        ("topic", &values.topic),
        ("privacy_consent", &String::new()),
    ] {
        page = page
            .replace(&format!("{{{{value.{field}}}}}"), &escape(value))
            .replace(&format!("{{{{error.{field}}}}}"), &field_error(field))
            .replace(&format!("{{{{invalid.{field}}}}}"), invalid(field));
    }
    rendered(status, page, Audience::Citizen)
}

fn field_label(field: &str) -> String {
    match field {
        "name" => "Nome e cognome",
        "email" => "E-mail",
        "phone" => "Telefono",
        "topic" => "Argomento",
        "subject" => "Oggetto",
        "text" => "Testo della richiesta",
        "privacy_consent" => "Consenso al trattamento dei dati",
        other => other,
    }
    .to_owned()
}

#[derive(Deserialize)]
struct ThanksQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

async fn thanks_page(Query(query): Query<ThanksQuery>) -> Response {
    // The reference comes from the URL: show it only if it looks like one.
    let reference = query
        .reference
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 40
                && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .unwrap_or_default();
    let shown = if reference.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"reference-line\">Il numero della sua richiesta è <strong id=\"reference\">{}</strong>. Lo conservi: le servirà per ogni comunicazione.</p>",
            escape(&reference)
        )
    };
    rendered(
        StatusCode::OK,
        THANKS_TEMPLATE.replace("{{reference}}", &shown),
        Audience::Citizen,
    )
}

fn rendered(status: StatusCode, page: String, audience: Audience) -> Response {
    let mut headers = security_headers(audience, HTML);
    // It may hold what the citizen typed.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (status, headers, page).into_response()
}

/// HTML escaping for text and attribute values (always double-quoted).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_turns_markup_into_text() {
        assert_eq!(
            escape(r#"<img src=x onerror="alert('1')">&"#),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn every_embedded_file_has_a_type_and_a_distinct_etag() {
        let tags: std::collections::BTreeSet<_> = ASSETS.values().map(|a| a.etag.clone()).collect();
        assert_eq!(tags.len(), ASSETS.len());
        assert!(ASSETS.values().all(|a| !a.body.is_empty()));
    }

    #[test]
    fn templates_have_every_placeholder_they_are_filled_with() {
        for placeholder in [
            "{{errors}}",
            "{{topics}}",
            "{{value.name}}",
            "{{value.text}}",
            "{{error.email}}",
        ] {
            assert!(REQUEST_TEMPLATE.contains(placeholder), "{placeholder}");
        }
        assert!(THANKS_TEMPLATE.contains("{{reference}}"));
    }
}
