//! Tenants are walls, and scopes are enforced: a matrix over every route.
//!
//! Two tenants, A and B, each with a run (and its pipeline, instance and events), a rejected
//! event, secrets, a signed source, a subscription with a delivery and a satellite. For every route
//! of [`ROUTES`]:
//! - isolation: a key of A (every scope) aimed at B's resources gets 404 (or the refusal the row
//!   names), lists answer without any of B's ids, writes land in A's own tenant, and B's state,
//!   read back through B's admin key, is unchanged;
//! - scopes: against A's own resources, no key, an unknown key and a revoked key get 401, a key
//!   without the route's scope gets 403, and a key with it gets past authentication.
//!
//! Adding a route is one line in [`ROUTES`]: its method, its path (with `{b.…}` placeholders for
//! B's resources, see [`Tenant::values`]), the scope it needs and what A must get.

mod common;

use std::collections::BTreeMap;

use cistern_server::auth;
use cistern_store::{NewApiKey, Scope};
use common::*;
use serde_json::{json, Value};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Read,
    Ingest,
    Admin,
    /// A signed source that also takes an API key with the ingest scope (cdevents).
    HookKey,
    /// A dashboard page: a session cookie holding a key with the read scope.
    Session,
}

/// What A gets when it aims at B.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 404: B's resource does not exist for A.
    NotFound,
    /// This refusal (a reference to B's resource is as unknown as a missing one).
    Refused(u16),
    /// 2xx, and no id or name of B's appears in the reply.
    Hides,
    /// 2xx, and these JSON pointers of the reply are 0 (B's runs are not counted).
    Zero(&'static [&'static str]),
    /// 2xx: the write lands in A's tenant (B's identifiers are only names there).
    OwnCopy,
}

/// One row of the matrix.
struct Route {
    method: &'static str,
    path: &'static str,
    need: Need,
    expect: Expect,
    body: &'static str,
}

const fn r(method: &'static str, path: &'static str, need: Need, expect: Expect) -> Route {
    Route {
        method,
        path,
        need,
        expect,
        body: "",
    }
}

const fn rb(
    method: &'static str,
    path: &'static str,
    need: Need,
    expect: Expect,
    body: &'static str,
) -> Route {
    Route {
        method,
        path,
        need,
        expect,
        body,
    }
}

use Expect::*;
use Need::*;

const SEI_WITH_B_IDS: &str = r#"{"pipeline": "{b.pipeline}", "job_full_name": "{b.pipeline}", "qualified_name": "{b.pipeline}", "instance_name": "ci", "instance_guid": "{b.guid}", "start_time": 1711603545000, "duration": 1000, "result": "SUCCESS", "execution_id": "{b.execution}"}"#;

/// Every route that reads or writes tenant data, and what A must get from it.
const ROUTES: &[Route] = &[
    r("GET", "/api/v1/runs", Read, Hides),
    r("GET", "/api/v1/runs?instance={b.guid}", Read, Hides),
    r("GET", "/api/v1/runs?pipeline={b.pipeline}", Read, Hides),
    r("GET", "/api/v1/runs?format=csv", Read, Hides),
    r("GET", "/api/v1/runs/{b.run}", Read, NotFound),
    r("GET", "/api/v1/pipelines", Read, Hides),
    r("GET", "/api/v1/instances", Read, Hides),
    r("GET", "/api/v1/events", Read, Hides),
    r("GET", "/api/v1/events?status=rejected", Read, Hides),
    r("GET", "/api/v1/events/{b.event}", Read, NotFound),
    r("GET", "/api/v1/events/{b.rejected}", Read, NotFound),
    r(
        "GET",
        "/api/v1/metrics/dora?pipeline={b.pipeline}&since=2024-01-01&until=2024-12-31",
        Read,
        Zero(&[
            "/deployment_frequency/deployments",
            "/change_failure_rate/deployments",
        ]),
    ),
    r(
        "GET",
        "/api/v1/metrics/ci?pipeline={b.pipeline}&since=2024-01-01&until=2024-12-31",
        Read,
        Zero(&["/runs"]),
    ),
    r("GET", "/api/v1/satellites", Read, Hides),
    r("GET", "/api/v1/secrets", Admin, Hides),
    r("GET", "/api/v1/secrets/{b.secret}", Admin, NotFound),
    r("DELETE", "/api/v1/secrets/{b.secret}", Admin, NotFound),
    r("GET", "/api/v1/sources", Admin, Hides),
    r("GET", "/api/v1/sources/{b.source}", Admin, NotFound),
    r("DELETE", "/api/v1/sources/{b.source}", Admin, NotFound),
    rb(
        "POST",
        "/api/v1/sources",
        Admin,
        Refused(400),
        r#"{"kind": "github", "secret": "{b.secret2}"}"#,
    ),
    rb("POST", "/v1/hooks/{b.cdsource}", HookKey, NotFound, "{}"),
    r("GET", "/api/v1/subscriptions", Admin, Hides),
    r("GET", "/api/v1/subscriptions/{b.sub}", Admin, NotFound),
    rb(
        "PATCH",
        "/api/v1/subscriptions/{b.sub}",
        Admin,
        NotFound,
        r#"{"enabled": false}"#,
    ),
    r(
        "GET",
        "/api/v1/subscriptions/{b.sub}/deliveries",
        Admin,
        NotFound,
    ),
    r(
        "POST",
        "/api/v1/subscriptions/{b.sub}/replay?since=2000-01-01",
        Admin,
        NotFound,
    ),
    r("DELETE", "/api/v1/subscriptions/{b.sub}", Admin, NotFound),
    rb(
        "POST",
        "/api/v1/subscriptions",
        Admin,
        Refused(400),
        r#"{"url": "http://127.0.0.1:9/a", "secret": "{b.secret2}"}"#,
    ),
    r("GET", "/api/v1/deliveries/{b.delivery}", Admin, NotFound),
    r(
        "POST",
        "/api/v1/deliveries/{b.delivery}/redeliver",
        Admin,
        NotFound,
    ),
    rb(
        "POST",
        "/webhook/company/{b.slug}/cicd_job",
        Ingest,
        NotFound,
        r#"{"job_id": "1", "status": "Succeeded", "commit_sha": "a2e7da86cc392417b0d9f605b28038aae80b002f", "repo_id": "1", "service_id": 2, "job_start_time": 1704018030, "job_duration": 300}"#,
    ),
    rb(
        "POST",
        "/webhook/company/{b.tenant}/cicd_job",
        Ingest,
        NotFound,
        r#"{"job_id": "1", "status": "Succeeded", "commit_sha": "a2e7da86cc392417b0d9f605b28038aae80b002f", "repo_id": "1", "service_id": 2, "job_start_time": 1704018030, "job_duration": 300}"#,
    ),
    r("GET", "/api/v1/keys", Admin, Hides),
    r("POST", "/api/v1/keys/{b.key}/rotate", Admin, NotFound),
    r("DELETE", "/api/v1/keys/{b.key}", Admin, NotFound),
    r("GET", "/api/v1/triggers", Admin, Hides),
    r("GET", "/api/v1/triggers/{b.trigger}", Admin, NotFound),
    r(
        "POST",
        "/api/v1/triggers/{b.trigger}/rotate-token",
        Admin,
        NotFound,
    ),
    r("GET", "/", Session, Hides),
    r("GET", "/fragments/latest-runs", Session, Hides),
    r("GET", "/pipelines", Session, Hides),
    r("GET", "/pipelines/{b.pipeline_id}", Session, NotFound),
    r("GET", "/runs/{b.run}", Session, NotFound),
    r("GET", "/admin/instances", Session, Hides),
    r("GET", "/admin/events?status=rejected", Session, Hides),
    r("GET", "/admin/events/{b.event}", Session, NotFound),
    // Writes naming B's identifiers land in A: B's GUID, pipeline, run key, satellite and
    // secret names are only names in A's tenant (they run last, in this order: they make those
    // names A's too).
    rb(
        "POST",
        "/api/v1/instances",
        Ingest,
        OwnCopy,
        r#"{"integration_id": "1", "name": "ci", "type": "jenkins", "guid": "{b.guid}"}"#,
    ),
    rb("POST", "/v1/custom-cicd", Ingest, OwnCopy, SEI_WITH_B_IDS),
    rb(
        "POST",
        "/v1/generic-requests",
        Ingest,
        OwnCopy,
        r#"{"request_type": "JenkinsHeartbeat", "payload": {"instance_id": "{b.guid}", "timestamp": 1711603545}}"#,
    ),
    rb(
        "POST",
        "/api/v1/satellites/heartbeat",
        Ingest,
        OwnCopy,
        r#"{"id": "{b.satellite}", "version": "1", "time": "2024-03-28T05:25:45Z"}"#,
    ),
    rb(
        "PUT",
        "/api/v1/secrets/{b.secret}",
        Admin,
        OwnCopy,
        r#"{"value": "a's own value"}"#,
    ),
];

/// One tenant's keys and resources.
struct Tenant {
    admin: String,
    read: String,
    ingest: String,
    revoked: String,
    values: BTreeMap<String, String>,
}

impl Tenant {
    /// `{b.run}` etc. (with `side` = "b") replaced by this tenant's ids.
    fn fill(&self, side: &str, text: &str) -> String {
        let mut out = text.to_owned();
        for (k, v) in &self.values {
            out = out.replace(&format!("{{{side}.{k}}}"), v);
        }
        out
    }

    /// The ids and names that must never show up in another tenant's replies.
    fn markers(&self) -> Vec<&String> {
        [
            "run",
            "event",
            "rejected",
            "guid",
            "pipeline",
            "pipeline_id",
            "execution",
            "secret",
            "secret2",
            "source",
            "cdsource",
            "sub",
            "delivery",
            "satellite",
            "key",
            "trigger",
        ]
        .iter()
        .map(|k| &self.values[*k])
        .collect()
    }
}

async fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<(&str, Need)>,
    body: &str,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("Content-Type", "application/json");
    match auth {
        Some((key, Session)) => req = req.header("Cookie", app.session_cookie(key).await),
        Some((key, _)) => req = req.header("Authorization", format!("Bearer {key}")),
        None => {}
    }
    if !body.is_empty() {
        req = req.body(body.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn put_secret(app: &TestApp, admin: &str, name: &str, value: &str) {
    let (status, body) = http(
        app,
        "PUT",
        &format!("/api/v1/secrets/{name}"),
        Some((admin, Admin)),
        &json!({ "value": value }).to_string(),
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");
}

/// A tenant with one of everything; `tag` makes its names unique.
async fn tenant(app: &TestApp, slug: &str, tag: &str) -> Tenant {
    let admin = app
        .key_for(slug, &[Scope::Ingest, Scope::Read, Scope::Admin])
        .await;
    let read = app.key_for(slug, &[Scope::Read]).await;
    let ingest = app.key_for(slug, &[Scope::Ingest]).await;
    let t = app
        .store
        .tenant_by_slug(slug)
        .await
        .unwrap()
        .expect("tenant");
    let k = auth::generate_key();
    app.store
        .create_api_key(NewApiKey {
            tenant_id: t.id.clone(),
            name: format!("revoked-{tag}"),
            prefix: k.prefix.clone(),
            hash: k.hash.clone(),
            scopes: vec![Scope::Ingest, Scope::Read, Scope::Admin],
        })
        .await
        .unwrap();
    app.store
        .revoke_api_key(&t.id, &format!("revoked-{tag}"))
        .await
        .unwrap();
    let mut values = BTreeMap::new();
    values.insert("tenant".to_owned(), t.id.clone());
    values.insert("slug".to_owned(), slug.to_owned());
    let secret = format!("secret-{tag}");
    let secret2 = format!("other-secret-{tag}");
    put_secret(app, &admin, &secret, &format!("value of {tag}")).await;
    put_secret(
        app,
        &admin,
        &secret2,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .await;
    let source = |kind: &'static str, secret: String| {
        let admin = admin.clone();
        async move {
            let (status, body) = http(
                app,
                "POST",
                "/api/v1/sources",
                Some((&admin, Admin)),
                &json!({"kind": kind, "secret": secret}).to_string(),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };
    values.insert("source".into(), source("github", secret.clone()).await);
    values.insert("cdsource".into(), source("cdevents", secret2.clone()).await);
    let (status, body) = http(
        app,
        "POST",
        "/api/v1/subscriptions",
        Some((&admin, Admin)),
        &json!({"url": "http://127.0.0.1:9/hook", "secret": secret}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sub: Value = serde_json::from_str(&body).unwrap();
    let sub = sub["id"].as_str().unwrap().to_owned();
    let pipeline = format!("pipeline-{tag}");
    let guid = format!("guid-{tag}");
    let execution = format!("execution-{tag}");
    let run = json!({
        "pipeline": pipeline, "job_full_name": pipeline, "qualified_name": pipeline,
        "instance_name": "ci", "instance_guid": guid, "start_time": 1_711_603_545_000u64,
        "duration": 1000, "result": "SUCCESS", "execution_id": execution, "cd": true,
    });
    let (status, body) = app
        .post_raw("/v1/custom-cicd", &ingest, run.to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    values.insert("run".into(), body["id"].as_str().unwrap().to_owned());
    values.insert(
        "event".into(),
        body["event_id"].as_str().unwrap().to_owned(),
    );
    let (status, body) = app
        .post_raw("/v1/custom-cicd", &ingest, "{\"pipeline\": 1}".to_owned())
        .await;
    assert_eq!(status, 400, "{body}");
    values.insert(
        "rejected".into(),
        body["event_id"].as_str().unwrap().to_owned(),
    );
    let (_, pipelines) = app.get_with("/api/v1/pipelines", &admin).await;
    values.insert(
        "pipeline_id".into(),
        pipelines["pipelines"][0]["id"].as_str().unwrap().to_owned(),
    );
    let (_, deliveries) = app
        .get_with(&format!("/api/v1/subscriptions/{sub}/deliveries"), &admin)
        .await;
    values.insert(
        "delivery".into(),
        deliveries["deliveries"][0]["id"]
            .as_str()
            .expect("a delivery of the run")
            .to_owned(),
    );
    let satellite = format!("satellite-{tag}");
    let (status, body) = app
        .post_raw(
            "/api/v1/satellites/heartbeat",
            &ingest,
            json!({"id": satellite, "version": "1", "time": "2024-03-28T05:25:45Z"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A live key of its own (its read key) and a trigger.
    let read_key = app
        .store
        .list_api_keys(&t.id)
        .await
        .unwrap()
        .into_iter()
        .find(|k| read.starts_with(&k.prefix))
        .expect("the read key");
    values.insert("key".into(), read_key.id);
    let (status, body) = http(
        app,
        "POST",
        "/api/v1/triggers",
        Some((&admin, Admin)),
        &json!({"org": "o", "project": "p", "pipeline": format!("deploy-{tag}"), "trigger": format!("t-{tag}"),
                "url": "http://127.0.0.1:9/build", "allow_token": true})
        .to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let trigger: Value = serde_json::from_str(&body).unwrap();
    values.insert("trigger".into(), trigger["id"].as_str().unwrap().to_owned());
    values.insert("sub".into(), sub);
    values.insert("secret".into(), secret);
    values.insert("secret2".into(), secret2);
    values.insert("pipeline".into(), pipeline);
    values.insert("guid".into(), guid);
    values.insert("execution".into(), execution);
    values.insert("satellite".into(), satellite);
    Tenant {
        admin,
        read,
        ingest,
        revoked: k.secret,
        values,
    }
}

/// Everything B has, read through B's own admin key (times that move by themselves removed).
async fn snapshot(app: &TestApp, b: &Tenant) -> Value {
    let mut out = serde_json::Map::new();
    let paths = [
        "/api/v1/runs?limit=500".to_owned(),
        format!("/api/v1/runs/{}", b.values["run"]),
        "/api/v1/pipelines".to_owned(),
        "/api/v1/instances".to_owned(),
        "/api/v1/events?limit=500&status=accepted".to_owned(),
        "/api/v1/secrets".to_owned(),
        "/api/v1/sources".to_owned(),
        "/api/v1/subscriptions".to_owned(),
        format!("/api/v1/subscriptions/{}/deliveries", b.values["sub"]),
        format!("/api/v1/deliveries/{}", b.values["delivery"]),
        "/api/v1/satellites".to_owned(),
        "/api/v1/keys".to_owned(),
        "/api/v1/triggers".to_owned(),
    ];
    for p in paths {
        let (status, mut v) = app.get_with(&p, &b.admin).await;
        assert_eq!(status, 200, "{p}: {v}");
        if let Some(sats) = v["satellites"].as_array_mut() {
            for s in sats {
                if let Some(m) = s.as_object_mut() {
                    for k in ["seconds_since_heartbeat", "stale", "health"] {
                        m.remove(k);
                    }
                }
            }
        }
        out.insert(p, v);
    }
    let (_, rejected) = app
        .get_with("/api/v1/events?limit=500&status=rejected", &b.admin)
        .await;
    out.insert(
        "rejected events".into(),
        json!(rejected["events"].as_array().map_or(0, Vec::len)),
    );
    Value::Object(out)
}

/// The path with each `{b.name}` replaced by an id that exists nowhere (`nope-name`).
fn missing_ids(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find("{b.") {
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        out.push_str(&rest[..start]);
        out.push_str("nope-");
        out.push_str(&rest[start + 3..end]);
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

fn has_scope(need: Need, key: &str) -> bool {
    match need {
        Read | Session => matches!(key, "read" | "admin"),
        Ingest | HookKey => matches!(key, "ingest" | "admin"),
        Admin => key == "admin",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_walls_and_scopes_hold_on_every_route() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            c.allow_private_targets = true;
            c.delivery_worker = false;
        })
        .await;
        let a = tenant(&app, "tenant-a", "aaaa1").await;
        let b = tenant(&app, "tenant-b", "bbbb2").await;
        let mut failures = Vec::new();
        let mut checks = 0usize;

        // Scopes, on A's own resources; writes aim at ids that do not exist and send `{}`, so
        // that passing authentication changes nothing.
        for route in ROUTES.iter().filter(|r| r.need != HookKey) {
            let own_path = a.fill("b", route.path);
            let allowed_path = if route.method == "GET" {
                own_path.clone()
            } else {
                missing_ids(route.path)
            };
            for key in ["none", "unknown", "revoked", "read", "ingest", "admin"] {
                let secret = match key {
                    "none" => None,
                    "unknown" => Some("cst_0123456789abcdef".to_owned()),
                    "revoked" => Some(a.revoked.clone()),
                    "read" => Some(a.read.clone()),
                    "ingest" => Some(a.ingest.clone()),
                    _ => Some(a.admin.clone()),
                };
                let allowed = has_scope(route.need, key);
                let path = if allowed { &allowed_path } else { &own_path };
                let body = if route.body.is_empty() { "" } else { "{}" };
                let (status, text) = http(
                    &app,
                    route.method,
                    path,
                    secret.as_deref().map(|s| (s, route.need)),
                    body,
                )
                .await;
                checks += 1;
                let ok = match (route.need, key, allowed) {
                    // The dashboard answers a signed-out browser with its sign-in page (and its
                    // script's fragment with 401).
                    (Session, _, false) => {
                        status == 401 || (status == 200 && text.contains("<title>Sign in"))
                    }
                    (_, "none" | "unknown" | "revoked", _) => status == 401,
                    (_, _, false) => status == 403,
                    (_, _, true) => status != 401 && status != 403 && status < 500,
                };
                if !ok {
                    failures.push(format!(
                        "scope: {} {path} with a {key} key of A: {status} {}",
                        route.method,
                        text.chars().take(200).collect::<String>()
                    ));
                }
            }
        }
        // The cdevents source takes an API key of its own tenant with the ingest scope.
        let own_hook = a.fill("b", "/v1/hooks/{b.cdsource}");
        for (key, secret) in [("read", &a.read), ("revoked", &a.revoked)] {
            let (status, _) = http(&app, "POST", &own_hook, Some((secret, HookKey)), "{}").await;
            checks += 1;
            if status != 401 {
                failures.push(format!(
                    "scope: POST {own_hook} with a {key} key of A: {status}"
                ));
            }
        }

        // Isolation: A's admin key (every scope) against B's resources.
        let mut order: Vec<&Route> = ROUTES.iter().collect();
        order.sort_by_key(|r| matches!(r.expect, OwnCopy));
        for route in order {
            let before = snapshot(&app, &b).await;
            let path = b.fill("b", route.path);
            let body = b.fill("b", route.body);
            let (status, text) = http(
                &app,
                route.method,
                &path,
                Some((&a.admin, route.need)),
                &body,
            )
            .await;
            checks += 1;
            let shown: String = text.chars().take(300).collect();
            let mut bad = Vec::new();
            match route.expect {
                NotFound if status != 404 => bad.push(format!("status {status}, expected 404")),
                Refused(want) if status != want => {
                    bad.push(format!("status {status}, expected {want}"))
                }
                Hides | OwnCopy | Zero(_) if !(200..300).contains(&status) => {
                    bad.push(format!("status {status}, expected 2xx"))
                }
                Hides => {
                    for m in b.markers() {
                        if text.contains(m.as_str()) {
                            bad.push(format!("the reply shows B's {m:?}"));
                        }
                    }
                }
                Zero(pointers) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    for p in pointers {
                        if v.pointer(p).and_then(Value::as_u64) != Some(0) {
                            bad.push(format!("{p} is {:?}, expected 0", v.pointer(p)));
                        }
                    }
                }
                _ => {}
            }
            let after = snapshot(&app, &b).await;
            // A signed source logs refusals for its owner: a stranger's post to B's hook is
            // B's to see (nothing else of B's changes).
            let (mut before, mut after) = (before, after);
            if route.need == HookKey {
                before["rejected events"] = json!(null);
                after["rejected events"] = json!(null);
            }
            if before != after {
                bad.push("B's data changed".to_owned());
            }
            if !bad.is_empty() {
                failures.push(format!(
                    "isolation: {} {} with A's key: {} — {shown}",
                    route.method,
                    route.path,
                    bad.join("; ")
                ));
            }
        }
        // A's own copies are A's: its run list now holds a run with B's pipeline name, while B
        // still has exactly its one run.
        let (_, runs) = app.get_with("/api/v1/runs", &b.admin).await;
        assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");

        eprintln!(
            "isolation matrix on {backend:?}: {} routes, {checks} checks, {} failures",
            ROUTES.len(),
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{} failures on {backend:?}:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
