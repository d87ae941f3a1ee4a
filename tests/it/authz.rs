//! The authorization matrix: every operation in the OpenAPI document is
//! tried without credentials, with a dead token and with each lesser role.
//! A route added without the right extractor, or documented without its
//! security, fails here.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const ROLES: [&str; 3] = ["operator", "supervisor", "admin"];

struct Operation {
    method: Method,
    path: String,
    /// The least role, or None for public operations.
    role: Option<String>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let security = op["security"]
                .as_array()
                .expect("every operation declares its security");
            let role = security
                .iter()
                .filter_map(|requirement| requirement.as_object())
                .flat_map(|requirement| requirement.values())
                .filter_map(|scopes| scopes.as_array())
                .flatten()
                .filter_map(|s| s.as_str())
                .next()
                .map(str::to_owned);
            let has_scheme = security
                .iter()
                .any(|r| r.as_object().is_some_and(|o| !o.is_empty()));
            assert_eq!(
                role.is_some(),
                has_scheme,
                "{method} {path}: a protected operation names its least role"
            );
            // Concrete values for path parameters; authorization comes before lookup.
            let path = path.replace("{id}", "1");
            ops.push(Operation { method, path, role });
        }
    }
    // Logout ends the session it is called with: try it last.
    ops.sort_by_key(|op| op.path.ends_with("/logout"));
    ops
}

async fn call(app: &TestApp, op: &Operation, token: Option<&str>) -> u16 {
    let mut request = app.client.request(op.method.clone(), app.url(&op.path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if matches!(op.method, Method::POST | Method::PATCH | Method::PUT) {
        request = request.json(&json!({}));
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_protected_operation_refuses_missing_or_dead_credentials_and_lesser_roles() {
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
    let ops = operations(&doc);
    assert!(
        ops.iter().filter(|o| o.role.is_some()).count() >= 10,
        "the matrix must cover the API"
    );
    let mut tokens = Vec::new();
    for role in ROLES {
        let (_, token) = app.user(&format!("matrix.{role}"), role, "comune").await;
        tokens.push((role, token));
    }
    for op in &ops {
        let Some(least) = &op.role else { continue };
        let what = format!("{} {}", op.method, op.path);
        assert!(
            ROLES.contains(&least.as_str()),
            "{what}: unknown role {least}"
        );
        assert_eq!(
            call(&app, op, None).await,
            401,
            "{what} without credentials"
        );
        assert_eq!(
            call(&app, op, Some("not-a-session")).await,
            401,
            "{what} with a dead token"
        );
        let least_rank = ROLES.iter().position(|r| r == least).unwrap();
        for (rank, (role, token)) in tokens.iter().enumerate() {
            let status = call(&app, op, Some(token)).await;
            if rank < least_rank {
                assert_eq!(status, 403, "{what} as {role}");
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{what} as {role} got {status}"
                );
            }
        }
    }
}

#[tokio::test]
async fn another_organizations_conversation_is_not_found() {
    let app = spawn_app().await;
    let city = app.conversation("anagrafe").await;
    let water = app.conversation("acqua_rifiuti").await;
    let transport = app.conversation("trasporti").await;

    let (_, water_supervisor) = app.user("sup.acque", "supervisor", "acque").await;
    let (_, city_supervisor) = app.user("sup.comune", "supervisor", "comune").await;
    let (city_operator_id, city_operator) = app.user("op.comune", "operator", "comune").await;

    let ids = |page: Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect()
    };
    // A company's supervisor sees only the company's conversations.
    let seen = ids(app
        .get("/api/v1/conversations", &water_supervisor)
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(seen, [water.id]);
    assert_eq!(
        app.get(
            &format!("/api/v1/conversations/{}", city.id),
            &water_supervisor
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        app.get(
            &format!("/api/v1/conversations/{}", water.id),
            &water_supervisor
        )
        .await
        .status(),
        200
    );
    // Filtering by another organization does not widen the scope.
    let seen = ids(app
        .get(
            "/api/v1/conversations?organization=comune",
            &water_supervisor,
        )
        .await
        .json()
        .await
        .unwrap());
    assert!(seen.is_empty());

    // The city's supervisors see everything.
    let seen = ids(app
        .get("/api/v1/conversations", &city_supervisor)
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(seen, [transport.id, water.id, city.id]);

    // A city operator sees the city's, and a company conversation only once assigned to them.
    let seen = ids(app
        .get("/api/v1/conversations", &city_operator)
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(seen, [city.id]);
    assert!(
        app.store()
            .assign_conversation(water.id, city_operator_id, ccu::now_ms())
            .await
            .unwrap()
    );
    let seen = ids(app
        .get("/api/v1/conversations", &city_operator)
        .await
        .json()
        .await
        .unwrap());
    assert_eq!(seen, [water.id, city.id]);
}

#[tokio::test]
async fn a_grant_widens_what_a_supervisor_sees() {
    let app = spawn_app().await;
    let water = app.conversation("acqua_rifiuti").await;
    let (id, token) = app.user("sup.mobilita", "supervisor", "mobilita").await;
    assert_eq!(
        app.get(&format!("/api/v1/conversations/{}", water.id), &token)
            .await
            .status(),
        404
    );
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "grants": ["acque"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.get(&format!("/api/v1/conversations/{}", water.id), &token)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_company_admin_manages_only_the_company_users() {
    let app = spawn_app().await;
    let (_, company_admin) = app.user("admin.acque", "admin", "acque").await;
    let (city_user, _) = app.user("op.urp", "operator", "comune").await;
    assert_eq!(
        app.get(&format!("/api/v1/users/{city_user}"), &company_admin)
            .await
            .status(),
        404
    );
    let list: Vec<Value> = app
        .get("/api/v1/users", &company_admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list.iter().all(|u| u["organization_id"] == "acque"),
        "{list:?}"
    );
    let response = app
        .post(
            "/api/v1/users",
            &company_admin,
            &json!({"username": "intruso", "display_name": "Intruso", "password": "una password lunga e sicura",
                    "role": "admin", "organization_id": "comune"}),
        )
        .await;
    assert_eq!(response.status(), 403);
    // Queues: the company's own, not the city's.
    let queues: Vec<Value> = app
        .get("/api/v1/queues", &company_admin)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = queues.iter().map(|q| q["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acqua_rifiuti"]);
}

#[tokio::test]
async fn a_company_admin_cannot_grant_another_organization_to_anyone() {
    let app = spawn_app().await;
    let (company_admin_id, company_admin) = app.user("admin.mobilita", "admin", "mobilita").await;
    let (operator_id, _) = app.user("op.mobilita", "operator", "mobilita").await;
    // Not to themselves...
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{company_admin_id}")))
        .bearer_auth(&company_admin)
        .json(&json!({ "grants": ["comune"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // ...nor to one of their users, nor to a new one.
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{operator_id}")))
        .bearer_auth(&company_admin)
        .json(&json!({ "grants": ["comune"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = app
        .post(
            "/api/v1/users",
            &company_admin,
            &json!({"username": "complice", "display_name": "Complice", "password": "una password lunga e sicura",
                    "role": "admin", "organization_id": "mobilita", "grants": ["comune"]}),
        )
        .await;
    assert_eq!(response.status(), 403);
    // The city's admin (id 1) stays out of reach.
    let response = app
        .client
        .patch(app.url("/api/v1/users/1"))
        .bearer_auth(&company_admin)
        .json(&json!({ "password": "presa del comune 2026" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // The city's admin may grant, and repeated entries are stored once.
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{operator_id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "grants": ["acque", "acque"], "languages": ["it", "it", "en"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["grants"], json!(["acque"]));
    assert_eq!(user["languages"], json!(["it", "en"]));
    // A grant lets the operator see more, but does not let an admin manage more.
    let audit = app.store().recent_audit(1).await.unwrap();
    assert_eq!(audit[0].0, "user_updated");
}
