use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn first_start_writes_a_random_admin_password_readable_only_by_the_owner() {
    let app = spawn_app().await;
    let path = app.dir.path().join("initial-admin-password");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = std::fs::read_to_string(&path).unwrap();
    assert!(password.trim().len() >= 20);
    // spawn_app logged in with it already; a second app has another password.
    let other = spawn_app().await;
    let other_password =
        std::fs::read_to_string(other.dir.path().join("initial-admin-password")).unwrap();
    assert_ne!(password, other_password);
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes() {
    let app = spawn_app().await;
    app.user("mario.rossi", "operator", "comune").await;
    let (_, hash) = app
        .store()
        .user_for_login("mario.rossi")
        .await
        .unwrap()
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("una password lunga"));
}

#[tokio::test]
async fn login_gives_a_bearer_token_and_an_http_only_same_site_cookie() {
    let app = spawn_app().await;
    app.user("giulia", "operator", "comune").await;
    let response = app
        .login_response("giulia", "una password lunga e sicura")
        .await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("ccu_session={token};")));
    assert_eq!(body["user"]["username"], "giulia");
    assert!(body["user"].get("password_hash").is_none());

    // The bearer token and the cookie each authenticate on their own.
    let me: Value = app.get("/api/v1/me", token).await.json().await.unwrap();
    assert_eq!(me["user"]["role"], "operator");
    let by_cookie = app
        .client
        .get(app.url("/api/v1/me"))
        .header("cookie", format!("theme=dark; ccu_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = spawn_app().await;
    app.user("anna", "operator", "comune").await;
    let wrong = app.login_response("anna", "non è la password giusta").await;
    let unknown = app
        .login_response("nessuno", "non è la password giusta")
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    let (wrong, unknown): (Value, Value) =
        (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["code"], "unauthorized");
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (_, token) = app.user("luca", "operator", "comune").await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(app.get("/api/v1/me", &token).await.status(), 401);
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let app = spawn_app().await;
    let (id, _) = app.user("sara", "operator", "comune").await;
    let token = "scaduto-scaduto-scaduto";
    let now = ccu::now_ms();
    app.store()
        .insert_session(
            &ccu::auth::token_hash(token),
            id,
            now - 10_000,
            now - 1,
            None,
        )
        .await
        .unwrap();
    assert_eq!(app.get("/api/v1/me", token).await.status(), 401);
    // The same row with a future expiry works: the expiry is what refused it.
    let live = "valido-valido-valido";
    app.store()
        .insert_session(&ccu::auth::token_hash(live), id, now, now + 60_000, None)
        .await
        .unwrap();
    assert_eq!(app.get("/api/v1/me", live).await.status(), 200);
}

#[tokio::test]
async fn repeated_failures_throttle_the_username_even_with_the_right_password() {
    let app = spawn_app_with(&[("auth.login_failures_per_user", json!(3))]).await;
    app.user("paolo", "operator", "comune").await;
    for _ in 0..3 {
        assert_eq!(
            app.login_response("paolo", "sbagliata sbagliata")
                .await
                .status(),
            401
        );
    }
    let response = app
        .login_response("paolo", "una password lunga e sicura")
        .await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Other users are not affected.
    app.user("chiara", "operator", "comune").await;
}

#[tokio::test]
async fn one_address_trying_many_usernames_is_throttled() {
    let app = spawn_app_with(&[("auth.login_attempts_per_address", json!(4))]).await;
    // spawn_app's own admin login succeeded, so it does not count.
    for n in 0..4 {
        let status = app
            .login_response(&format!("utente{n}"), "qualsiasi cosa")
            .await
            .status();
        assert_eq!(status, 401);
    }
    assert_eq!(
        app.login_response("utente9", "qualsiasi cosa")
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_deactivated_user_loses_their_sessions_and_cannot_log_in() {
    let app = spawn_app().await;
    let (id, token) = app.user("ex.operatore", "operator", "comune").await;
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/api/v1/me", &token).await.status(), 401);
    assert_eq!(
        app.login_response("ex.operatore", "una password lunga e sicura")
            .await
            .status(),
        401
    );
    let audit = app.store().recent_audit(5).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(action, target, _)| action == "user_deactivated"
                && target.as_deref() == Some("ex.operatore"))
    );
}

#[tokio::test]
async fn a_password_change_by_the_admin_ends_the_old_sessions() {
    let app = spawn_app().await;
    let (id, token) = app.user("marta", "operator", "comune").await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "password": "un'altra password lunga" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.get("/api/v1/me", &token).await.status(), 401);
    app.login("marta", "un'altra password lunga").await;
}

#[tokio::test]
async fn concurrent_guesses_cannot_slip_past_the_per_user_limit() {
    let app = spawn_app_with(&[("auth.login_failures_per_user", json!(3))]).await;
    app.user("bersaglio", "operator", "comune").await;
    let guesses = (0..12).map(|n| {
        let app = &app;
        async move {
            app.login_response("bersaglio", &format!("tentativo numero {n}"))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let wrong = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let limited = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert!(wrong <= 3, "{statuses:?}");
    assert_eq!(wrong + limited, 12, "{statuses:?}");
}

#[tokio::test]
async fn one_address_cannot_lock_a_user_out_for_everyone_and_success_does_not_count() {
    let app = spawn_app_with(&[
        ("auth.login_failures_per_user", json!(3)),
        ("auth.login_attempts_per_address", json!(3)),
        ("http.trust_forwarded_for", json!(true)),
    ])
    .await;
    app.user("vittima", "operator", "comune").await;
    let login_from = |address: &'static str, password: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/auth/login"))
                .header("x-forwarded-for", address)
                .json(&json!({ "username": "vittima", "password": password }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..3 {
        assert_eq!(login_from("10.0.0.66", "sbagliata sbagliata").await, 401);
    }
    assert_eq!(
        login_from("10.0.0.66", "una password lunga e sicura").await,
        429
    );
    // From the operator's own desk the right password still works, many times:
    // successful logins do not use up the address's budget.
    for _ in 0..5 {
        assert_eq!(
            login_from("10.0.0.7", "una password lunga e sicura").await,
            200
        );
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[("http.header_read_timeout_seconds", json!(1))]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408) instead of waiting for ever.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection must be closed by the server");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}
