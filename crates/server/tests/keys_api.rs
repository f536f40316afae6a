//! API keys over HTTP: created (shown once), listed with their state, rotated with a grace (the
//! old key works until it ends, then answers 401 saying it was rotated), revoked; the admin
//! section's `/admin/keys` page does the same through CSRF-checked forms. On SQLite and
//! PostgreSQL. Graces are short and asserted with bounds, never exact seconds.

mod common;

use std::time::{Duration, Instant};

use cistern_store::Scope;
use common::{backends, TestApp};
use serde_json::{json, Value};

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    common::read(req.send().await.unwrap()).await
}

async fn runs_status(app: &TestApp, key: &str) -> (u16, Value) {
    call(app, reqwest::Method::GET, "/api/v1/runs", key, None).await
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test]
async fn keys_are_created_rotated_with_a_grace_and_revoked() {
    for backend in backends() {
        // A key cache that remembers for a minute: the grace must end on time all the same.
        let app = TestApp::spawn_with(&backend, |c| c.auth_cache_ttl = "60s".into()).await;
        let admin = app.key_for("default", &[Scope::Admin]).await;
        use reqwest::Method;

        let (status, created) = call(
            &app,
            Method::POST,
            "/api/v1/keys",
            &admin,
            Some(json!({"name": "ci", "scopes": ["ingest", "read"]})),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let old = created["key"].as_str().unwrap().to_owned();
        let old_id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(created["scopes"], json!(["ingest", "read"]));
        assert_eq!(created["state"], "active");
        assert_eq!(runs_status(&app, &old).await.0, 200);

        // Shown once: the list has the prefix, never the key.
        let (_, list) = call(&app, Method::GET, "/api/v1/keys", &admin, None).await;
        assert!(!list.to_string().contains(&old), "{list}");
        assert_eq!(find(&list, &old_id)["state"], "active");

        // Rotate with a short grace: the new key works at once, the old one until the grace ends.
        let grace = Duration::from_secs(2);
        let started = Instant::now();
        let (status, rotated) = call(
            &app,
            Method::POST,
            &format!("/api/v1/keys/{old_id}/rotate"),
            &admin,
            Some(json!({"grace": "2s"})),
        )
        .await;
        assert_eq!(status, 200, "{rotated}");
        let new = rotated["key"].as_str().unwrap().to_owned();
        let new_id = rotated["id"].as_str().unwrap().to_owned();
        assert_ne!(new, old);
        assert_eq!(rotated["name"], "ci");
        assert_eq!(rotated["scopes"], json!(["ingest", "read"]));
        assert_eq!(rotated["replaces"]["id"], old_id.as_str());
        assert_eq!(runs_status(&app, &new).await.0, 200);
        let (status, _) = runs_status(&app, &old).await;
        if started.elapsed() < grace {
            assert_eq!(status, 200, "the old key works during the grace");
        }
        let (_, list) = call(&app, Method::GET, "/api/v1/keys", &admin, None).await;
        if started.elapsed() < grace {
            assert_eq!(find(&list, &old_id)["state"], "grace");
        }
        assert_eq!(find(&list, &old_id)["replaced_by"], new_id.as_str());
        assert_eq!(find(&list, &new_id)["state"], "active");

        tokio::time::sleep(grace.saturating_sub(started.elapsed()) + Duration::from_millis(300))
            .await;
        let (status, body) = runs_status(&app, &old).await;
        assert_eq!(status, 401, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("was rotated"), "{detail}");
        assert!(detail.contains(&new_id), "names its replacement: {detail}");
        assert_eq!(runs_status(&app, &new).await.0, 200);
        let (_, list) = call(&app, Method::GET, "/api/v1/keys", &admin, None).await;
        assert_eq!(find(&list, &old_id)["state"], "rotated");

        // A rotated key is not rotated again; unknown ids and bad graces are named.
        let (status, body) = call(
            &app,
            Method::POST,
            &format!("/api/v1/keys/{old_id}/rotate"),
            &admin,
            None,
        )
        .await;
        assert_eq!(status, 409, "{body}");
        let (status, _) = call(&app, Method::POST, "/api/v1/keys/nope/rotate", &admin, None).await;
        assert_eq!(status, 404);
        let (status, body) = call(
            &app,
            Method::POST,
            &format!("/api/v1/keys/{new_id}/rotate"),
            &admin,
            Some(json!({"grace": "31d"})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(common::error_fields(&body), ["grace"]);
        for bad in [
            json!({"name": "x", "scopes": ["root"]}),
            json!({"name": "x"}),
            json!({"name": "", "scopes": ["read"]}),
        ] {
            let (status, body) = call(
                &app,
                Method::POST,
                "/api/v1/keys",
                &admin,
                Some(bad.clone()),
            )
            .await;
            assert_eq!(status, 400, "{bad}: {body}");
        }

        // Admin scope only; another tenant's admin cannot touch these keys.
        let (status, _) = call(&app, Method::GET, "/api/v1/keys", &new, None).await;
        assert_eq!(status, 403);
        let other = app.key_for("other", &[Scope::Admin]).await;
        let (status, _) = call(
            &app,
            Method::POST,
            &format!("/api/v1/keys/{new_id}/rotate"),
            &other,
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/api/v1/keys/{new_id}"),
            &other,
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (_, theirs) = call(&app, Method::GET, "/api/v1/keys", &other, None).await;
        assert!(!theirs.to_string().contains(&new_id), "{theirs}");

        // Revocation is at once, whatever the cache remembers.
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("/api/v1/keys/{new_id}"),
            &admin,
            None,
        )
        .await;
        assert_eq!(status, 204);
        assert_eq!(runs_status(&app, &new).await.0, 401);
    }
}

#[tokio::test]
async fn a_zero_grace_ends_the_old_key_at_once() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| c.auth_cache_ttl = "60s".into()).await;
        let admin = app.key_for("default", &[Scope::Admin]).await;
        let (_, created) = call(
            &app,
            reqwest::Method::POST,
            "/api/v1/keys",
            &admin,
            Some(json!({"name": "bot", "scopes": "read"})),
        )
        .await;
        let old = created["key"].as_str().unwrap().to_owned();
        assert_eq!(runs_status(&app, &old).await.0, 200, "now in the cache");
        let (status, rotated) = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/keys/{}/rotate", created["id"].as_str().unwrap()),
            &admin,
            Some(json!({"grace": "0s"})),
        )
        .await;
        assert_eq!(status, 200, "{rotated}");
        let (status, body) = runs_status(&app, &old).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["detail"].as_str().unwrap().contains("was rotated"));
    }
}

/// Signs in through the form (as a browser does) and returns the cookie header.
async fn sign_in(app: &TestApp, http: &reqwest::Client, key: &str) -> String {
    let mut jar: Vec<String> = Vec::new();
    let keep = |jar: &mut Vec<String>, resp: &reqwest::Response| {
        for c in resp.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            jar.retain(|p| !p.starts_with(&format!("{name}=")));
            jar.push(pair);
        }
    };
    let login = http.get(app.url("/login")).send().await.unwrap();
    keep(&mut jar, &login);
    let html = login.text().await.unwrap();
    let csrf = form_token(&html);
    let resp = http
        .post(app.url("/login"))
        .header("cookie", jar.join("; "))
        .form(&[
            ("key", key),
            ("csrf", csrf.as_str()),
            ("next", "/admin/keys"),
        ])
        .send()
        .await
        .unwrap();
    keep(&mut jar, &resp);
    jar.join("; ")
}

fn form_token(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let at = html.find(marker).expect("csrf field") + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_keys_page_rotates_through_a_csrf_checked_form() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        let admin = app.key_for("default", &[Scope::Admin]).await;
        let (_, created) = call(
            &app,
            reqwest::Method::POST,
            "/api/v1/keys",
            &admin,
            Some(json!({"name": "deployer", "scopes": ["trigger"]})),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();

        // A read-only session is told why, and its posts change nothing.
        let cookie = sign_in(&app, &http, &app.key).await;
        let page = http
            .get(app.url("/admin/keys"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403);
        let html = page.text().await.unwrap();
        assert!(html.contains("needs a key with the"), "{html}");
        let csrf = form_token(&html);
        let r = http
            .post(app.url(&format!("/admin/keys/{id}/rotate")))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("grace", "1h")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        let cookie = sign_in(&app, &http, &admin).await;
        let page = http
            .get(app.url("/admin/keys"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(&format!("/admin/keys/{id}/rotate")), "{html}");
        assert!(!html.contains(created["key"].as_str().unwrap()));
        let csrf = form_token(&html);

        // Without the session's token: refused, nothing rotated.
        let r = http
            .post(app.url(&format!("/admin/keys/{id}/rotate")))
            .header("cookie", &cookie)
            .form(&[("csrf", "0".repeat(64).as_str()), ("grace", "1h")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let (_, list) = call(&app, reqwest::Method::GET, "/api/v1/keys", &admin, None).await;
        assert_eq!(find(&list, &id)["state"], "active");

        // With it: the new key is on the answer page, once, not to be cached.
        let r = http
            .post(app.url(&format!("/admin/keys/{id}/rotate")))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("grace", "1h")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers().get("cache-control").unwrap().to_str().unwrap(),
            "no-store"
        );
        let html = r.text().await.unwrap();
        let marker = r#"id="new-key-value">"#;
        let at = html.find(marker).expect("the new key is shown") + marker.len();
        let new_key = &html[at..at + html[at..].find('<').unwrap()];
        assert!(new_key.starts_with("cst_"), "{new_key}");
        let (status, _) = call(
            &app,
            reqwest::Method::POST,
            "/gateway/api/webhook/custom",
            new_key,
            None,
        )
        .await;
        assert_ne!(status, 401, "the new key authenticates");
        let (_, list) = call(&app, reqwest::Method::GET, "/api/v1/keys", &admin, None).await;
        assert_eq!(find(&list, &id)["state"], "grace");

        // Create and revoke through the forms too.
        let r = http
            .post(app.url("/admin/keys"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("name", "made-here"),
                ("scopes", "read"),
                ("scopes", "ingest"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"new-key-value\""), "{html}");
        let (_, list) = call(&app, reqwest::Method::GET, "/api/v1/keys", &admin, None).await;
        let made = list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "made-here")
            .expect("created")
            .clone();
        assert_eq!(made["scopes"], json!(["read", "ingest"]));
        let r = http
            .post(app.url(&format!(
                "/admin/keys/{}/revoke",
                made["id"].as_str().unwrap()
            )))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let (_, list) = call(&app, reqwest::Method::GET, "/api/v1/keys", &admin, None).await;
        assert_eq!(
            find(&list, made["id"].as_str().unwrap())["state"],
            "revoked"
        );
    }
}
