use serde_json::{Value, json};

use crate::helpers::*;
use ccu::store::Direction;

async fn raw_post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.admin_token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_stable_code() {
    let app = spawn_app().await;
    let response = raw_post(
        &app,
        "/api/v1/users",
        "application/json",
        b"{\"username\": ".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "malformed_json");
    assert!(body["message"].as_str().unwrap().len() > 5);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let app = spawn_app_with(&[("http.body_limit_bytes", json!(4096))]).await;
    let big = format!("{{\"username\": \"{}\"}}", "x".repeat(10_000));
    let response = raw_post(&app, "/api/v1/users", "application/json", big.into_bytes()).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415() {
    let app = spawn_app().await;
    let response = raw_post(&app, "/api/v1/users", "text/plain", b"username=x".to_vec()).await;
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn validation_errors_get_422_naming_the_field() {
    let app = spawn_app().await;
    let base = json!({
        "username": "valido", "display_name": "Valido", "password": "una password lunga e sicura",
        "role": "operator", "organization_id": "comune",
    });
    let cases = [
        (json!({"username": "NO SPACES"}), "username"),
        (json!({"password": "corta"}), "password"),
        (json!({"role": "boss"}), "role"),
        (json!({"organization_id": "marte"}), "organization_id"),
        (json!({"skills": {"astrologia": 3}}), "skills.astrologia"),
        (json!({"skills": {"anagrafe": 11}}), "skills.anagrafe"),
        (json!({"languages": ["xx"]}), "languages"),
        (json!({"capacity": {"fax": 1}}), "capacity.fax"),
        (json!({"favourite_colour": "blu"}), "favourite_colour"),
    ];
    for (change, field) in cases {
        let mut body = base.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = app.post("/api/v1/users", &app.admin_token, &body).await;
        assert_eq!(response.status(), 422, "{change}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "validation_failed");
        assert_eq!(error["field"], field, "{change}: {error}");
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("password");
    let error: Value = app
        .post("/api/v1/users", &app.admin_token, &missing)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(error["field"], "password");
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/nothing-here", &app.admin_token).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let health: Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    let expected_store = if std::env::var("CCU_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(ready["store"], expected_store);
    assert_eq!(
        ready["bus"],
        if redis_url().is_some() {
            "redis"
        } else {
            "in-process"
        }
    );
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("ccu_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/readyz\""), "{text}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_client_id_is_kept() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!generated.is_empty());
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "richiesta-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "richiesta-42");
}

#[tokio::test]
async fn the_openapi_document_describes_every_api_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/queues",
        "/api/v1/queues/{id}",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn an_admin_manages_users_end_to_end() {
    let app = spawn_app().await;
    let (id, _) = app.user("elena", "operator", "comune").await;
    let duplicate = app
        .post(
            "/api/v1/users",
            &app.admin_token,
            &json!({"username": "elena", "display_name": "Elena bis", "password": "una password lunga e sicura", "role": "operator"}),
        )
        .await;
    assert_eq!(duplicate.status(), 409);

    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({"skills": {"anagrafe": 8, "tributi": 5}, "role": "supervisor", "capacity": {"chat": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let user: Value = app
        .get(&format!("/api/v1/users/{id}"), &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["skills"], json!({"anagrafe": 8, "tributi": 5}));
    assert_eq!(user["role"], "supervisor");
    assert_eq!(user["capacity"]["chat"], 4);
    let list: Vec<Value> = app
        .get("/api/v1/users", &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "elena"]);
    assert_eq!(
        app.get("/api/v1/users/999999", &app.admin_token)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn queues_show_config_and_opening_state() {
    let app = spawn_app().await;
    let queues: Vec<Value> = app
        .get("/api/v1/queues", &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(queues.len() >= 8);
    let anagrafe = queues.iter().find(|q| q["id"] == "anagrafe").unwrap();
    assert_eq!(anagrafe["strategy"], "best-skill");
    assert_eq!(anagrafe["skills"]["anagrafe"], 4);
    assert!(anagrafe["open_now"].is_boolean());
    // The police line is open around the clock, holidays included.
    let police: Value = app
        .get("/api/v1/queues/polizia_locale", &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(police["open_now"], true);
    assert_eq!(
        app.get("/api/v1/queues/nonesiste", &app.admin_token)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn conversations_are_listed_with_filters_and_pages_and_read_with_their_history() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for queue in ["anagrafe", "tributi", "anagrafe", "anagrafe", "scuola"] {
        ids.push(app.conversation(queue).await.id);
    }
    let first = ids[0];
    app.store()
        .add_message(
            first,
            ccu::now_ms(),
            Direction::Inbound,
            None,
            "Buongiorno, mi serve un certificato",
            Some("c-1"),
        )
        .await
        .unwrap();

    let page: Value = app
        .get(
            "/api/v1/conversations?queue=anagrafe&limit=2",
            &app.admin_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[3], ids[2]]);
    let cursor = page["next_cursor"].as_i64().unwrap();
    let page: Value = app
        .get(
            &format!("/api/v1/conversations?queue=anagrafe&limit=2&cursor={cursor}"),
            &app.admin_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [first]);
    assert!(page["next_cursor"].is_null());

    let bad = app
        .get("/api/v1/conversations?state=lost", &app.admin_token)
        .await;
    assert_eq!(bad.status(), 422);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["field"], "state");
    assert_eq!(
        app.get("/api/v1/conversations?limit=abc", &app.admin_token)
            .await
            .status(),
        400
    );

    let detail: Value = app
        .get(&format!("/api/v1/conversations/{first}"), &app.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        detail["reference"]
            .as_str()
            .unwrap()
            .starts_with("URP-2026-")
    );
    assert_eq!(detail["events"][0]["kind"], "queued");
    assert_eq!(
        detail["messages"][0]["body"],
        "Buongiorno, mi serve un certificato"
    );
}

#[tokio::test]
async fn bad_path_parameters_and_wrong_methods_get_json_errors() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/users/abc",
        "/api/v1/users/99999999999999999999",
        "/api/v1/conversations/-x",
    ] {
        let response = app.get(path, &app.admin_token).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    let response = app
        .client
        .delete(app.url("/api/v1/queues"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    // API answers are never cached and never sniffed.
    let me = app.get("/api/v1/me", &app.admin_token).await;
    assert_eq!(me.headers()["cache-control"], "no-store");
    assert_eq!(me.headers()["x-content-type-options"], "nosniff");
    // An oversized or odd request id is replaced, not logged as sent.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"].len(), 300);
}

fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

#[tokio::test]
async fn the_web_form_creates_a_request_with_a_reference_from_json_or_a_plain_html_form() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/requests"))
        .json(&json!({
            "name": "Giuseppe Verdi", "email": "giuseppe@example.it", "phone": "+39 051 123456",
            "topic": "tributi", "subject": "<script>alert(1)</script> TARI 2026",
            "text": "Buongiorno, non ho ricevuto l'avviso TARI.", "privacy_consent": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let reference = body["reference"].as_str().unwrap();
    assert!(reference.starts_with("URP-"), "{reference}");
    let id = body["conversation_id"].as_i64().unwrap();
    let detail = app
        .store()
        .get_conversation(&ccu::store::Scope::All, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.conversation.queue_id, "tributi");
    assert_eq!(
        detail.conversation.subject.as_deref(),
        Some("<script>alert(1)</script> TARI 2026")
    );
    assert_eq!(
        detail.messages[0].body,
        "Buongiorno, non ho ricevuto l'avviso TARI."
    );
    assert!(detail.conversation.contact_id.is_some());
    // The acknowledgement with the reference waits in the e-mail outbox.
    let outbox = app.store().outbox_for_conversation(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, "acknowledgement");
    assert_eq!(outbox[0].to_address, "giuseppe@example.it");
    assert!(
        outbox[0].subject.contains(reference),
        "{}",
        outbox[0].subject
    );
    assert!(outbox[0].body.contains(reference));

    // The HTML form, without JavaScript: a 303 to the thank-you page.
    let response = app
        .client
        .post(app.url("/api/v1/requests"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("name", "Ada"),
            ("email", "ada@example.it"),
            ("topic", "anagrafe"),
            ("subject", "Residenza"),
            ("text", "Vorrei sapere i tempi."),
            ("privacy_consent", "on"),
            ("website", ""),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("/request/thanks?ref=URP-"),
        "{location}"
    );
}

#[tokio::test]
async fn the_web_form_refuses_bad_input_by_field_and_escapes_it_on_its_error_page() {
    let app = spawn_app_with(&[("public.forms_per_address", json!(20))]).await;
    let good = json!({"name": "Ada", "email": "ada@example.it", "topic": "anagrafe", "subject": "Residenza",
                      "text": "Tempi?", "privacy_consent": true});
    let cases = [
        (json!({"privacy_consent": false}), "privacy_consent"),
        (json!({"website": "http://spam.example"}), "website"),
        (json!({"topic": "astrologia"}), "topic"),
        (json!({"email": "ada"}), "email"),
        (json!({"phone": "chiamami"}), "phone"),
        (json!({"subject": ""}), "subject"),
        (json!({"text": "x".repeat(5000)}), "text"),
    ];
    for (change, field) in cases {
        let mut body = good.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = app
            .client
            .post(app.url("/api/v1/requests"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{change}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["field"], field, "{change}");
    }
    // The no-JavaScript error page shows the problem as text, never markup.
    let response = app
        .client
        .post(app.url("/api/v1/requests"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("name", "<img src=x onerror=alert(1)>"),
            ("email", "a@b.it"),
            ("topic", "<b>x</b>"),
            ("subject", "s"),
            ("text", "t"),
            ("privacy_consent", "on"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains("topic"), "{page}");
    assert!(
        !page.contains("<b>x</b>") && !page.contains("<img"),
        "{page}"
    );
}

#[tokio::test]
async fn a_flood_of_forms_from_one_address_is_limited() {
    let app = spawn_app_with(&[("public.forms_per_address", json!(2))]).await;
    let body = json!({"name": "Ada", "email": "ada@example.it", "topic": "urp", "subject": "s", "text": "t",
                      "privacy_consent": true});
    for _ in 0..2 {
        let status = app
            .client
            .post(app.url("/api/v1/requests"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let response = app
        .client
        .post(app.url("/api/v1/requests"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}
