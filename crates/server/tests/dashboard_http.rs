//! The dashboard over plain HTTP (no browser): sign-in and its cookie, CSRF, redirects, tenant
//! walls, and every page against a seeded history, with the tiles checked against the API.

mod common;

use cistern_server::seed::{seed, SeedOptions};
use cistern_store::Scope;
use common::*;
use serde_json::Value;

/// A client that shows redirects instead of following them, with one cookie jar by hand.
struct Web {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

struct Reply {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Web {
    fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.base.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&mut self, resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() && !attrs.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        Reply {
            status,
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            set_cookies,
            headers,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(resp).await
    }

    /// Signs in with `key` through the form; returns the POST's reply.
    async fn sign_in(&mut self, key: &str) -> Reply {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200);
        let csrf = hidden(&page.body, "csrf");
        self.post("/login", &[("key", key), ("csrf", &csrf), ("next", "/")])
            .await
    }
}

/// The value of a hidden input.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The value of `attr` in the tag that holds `anchor`.
fn attr_near(html: &str, anchor: &str, attr: &str) -> String {
    let at = html
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in page"));
    let tag_end = at + html[at..].find('>').unwrap();
    let tag = &html[html[..at].rfind('<').unwrap()..tag_end];
    let marker = format!(r#"{attr}=""#);
    let s = tag
        .find(&marker)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"))
        + marker.len();
    tag[s..s + tag[s..].find('"').unwrap()].to_owned()
}

async fn seeded() -> TestApp {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let mut opts = SeedOptions::new(700, 35);
    opts.concurrency = 64;
    let summary = seed(&app.store, &opts).await.expect("seed");
    assert_eq!(summary.runs, 700);
    app
}

#[tokio::test]
async fn pages_need_a_session_and_assets_do_not() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let mut web = Web::new(&app);
    let r = web.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/login"));
    for (path, next) in [
        ("/pipelines", "%2Fpipelines"),
        ("/runs/abc", "%2Fruns%2Fabc"),
        ("/admin/instances", "%2Fadmin%2Finstances"),
        (
            "/admin/events?status=rejected",
            "%2Fadmin%2Fevents%3Fstatus%3Drejected",
        ),
        ("/admin/events/x", "%2Fadmin%2Fevents%2Fx"),
        ("/admin", "%2Fadmin"),
        ("/admin/satellites", "%2Fadmin%2Fsatellites"),
        ("/admin/sources", "%2Fadmin%2Fsources"),
        (
            "/admin/subscriptions?days=7",
            "%2Fadmin%2Fsubscriptions%3Fdays%3D7",
        ),
        ("/admin/deliveries/x", "%2Fadmin%2Fdeliveries%2Fx"),
    ] {
        let r = web.get(path).await;
        assert_eq!(r.status, 303, "{path}");
        assert_eq!(r.location.unwrap(), format!("/login?next={next}"));
    }
    assert_eq!(web.get("/fragments/latest-runs").await.status, 401);
    let css = web.get(cistern_server::dashboard::assets::CSS_PATH).await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let js = web.get(cistern_server::dashboard::assets::JS_PATH).await;
    assert_eq!(js.status, 200);
    assert!(js.body.contains("data-refresh"));
    // The API keeps answering JSON problems, not redirects.
    let (status, _) = app.get_with("/api/v1/runs", "nope").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sign_in_checks_the_key_and_the_form_token_then_sets_a_strict_cookie() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let mut web = Web::new(&app);

    let login = web.get("/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains(r#"<label for="key">API key</label>"#));
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let csrf = hidden(&login.body, "csrf");

    // No token, or a forged one: refused before the key is even looked at.
    let r = web.post("/login", &[("key", &app.key)]).await;
    assert_eq!(r.status, 403);
    let r = web
        .post("/login", &[("key", &app.key), ("csrf", &"0".repeat(64))])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("form expired"));

    // A wrong key.
    let r = web.sign_in("cst_not_a_key").await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Could not sign in"), "{}", r.body);
    assert!(r.body.contains("not valid"));
    assert!(!web.cookies.iter().any(|(k, _)| k == "cistern_session"));

    // A key without the read scope.
    let ingest_only = app.key_for("default", &[Scope::Ingest]).await;
    let r = web.sign_in(&ingest_only).await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("lacks the `read` scope"), "{}", r.body);

    // The right key: a session cookie holding an opaque id (not the key), HttpOnly,
    // SameSite=Strict, Path=/, ending with the session's lifetime (12 h by default).
    let r = web.sign_in(&app.key).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/"));
    let session = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cistern_session="))
        .expect("session cookie");
    let (pair, attrs) = session.split_once(';').unwrap();
    let id = pair.trim_start_matches("cistern_session=");
    assert!(id.starts_with("css_") && id.len() == 68, "{session}");
    assert!(!session.contains(&app.key) && !session.contains(&app.key[4..]));
    assert_eq!(attrs, " HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
    let _ = csrf;

    let home = web.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Delivery overview"));
    assert_eq!(home.headers["cache-control"], "no-store");
    // Signed in, the sign-in page sends you on.
    assert_eq!(
        web.get("/login?next=/pipelines").await.location.as_deref(),
        Some("/pipelines")
    );
    // `next` never leads off the site.
    let page = web.get("/login?next=//evil.example/").await;
    assert_eq!(page.location.as_deref(), Some("/"));

    // Sign out needs the session's form token.
    let r = web.post("/logout", &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403);
    let token = hidden(&home.body, "csrf");
    let r = web.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/login?signed_out=1"));
    assert!(r
        .set_cookies
        .iter()
        .any(|c| c.starts_with("cistern_session=;") && c.contains("Max-Age=0")));
    assert_eq!(web.get("/").await.status, 303);
    assert!(web
        .get("/login?signed_out=1")
        .await
        .body
        .contains("You are signed out"));
}

#[tokio::test]
async fn a_revoked_key_ends_the_session() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let key = app.key_for("default", &[Scope::Read]).await;
    let mut web = Web::new(&app);
    assert_eq!(web.sign_in(&key).await.status, 303);
    assert_eq!(web.get("/pipelines").await.status, 200);
    let tenant = app.store.tenant_by_slug("default").await.unwrap().unwrap();
    let info = app
        .store
        .list_api_keys(&tenant.id)
        .await
        .unwrap()
        .into_iter()
        .find(|k| key.starts_with(&k.prefix) && k.scopes == vec![Scope::Read])
        .unwrap();
    app.store
        .revoke_api_key(&tenant.id, &info.id)
        .await
        .unwrap();
    let r = web.get("/pipelines").await;
    assert_eq!(r.status, 303);
    assert!(r
        .set_cookies
        .iter()
        .any(|c| c.starts_with("cistern_session=;")));
}

fn tile(html: &str, metric: &str, attr: &str) -> String {
    attr_near(html, &format!(r#"data-metric="{metric}""#), attr)
}

fn same_number(page: &str, api: &Value, what: &str) {
    let a: Option<f64> = (!page.is_empty()).then(|| page.parse().unwrap());
    // serde_json's default float parsing may differ from the printed value in the last bit.
    let close = match (a, api.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * y.abs().max(1.0),
        (x, y) => x == y,
    };
    assert!(close, "{what}: page {page:?}, API {api}");
}

#[tokio::test]
async fn overview_tiles_equal_the_metrics_api_for_the_same_filters() {
    let app = seeded().await;
    let mut web = Web::new(&app);
    assert_eq!(web.sign_in(&app.key).await.status, 303);
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let window = format!(
        "since={}&until={}",
        fmt(now - time::Duration::days(21)),
        fmt(now - time::Duration::hours(1))
    )
    .replace(':', "%3A");
    for slice in [
        "",
        "&project=shop",
        "&environment=prod",
        "&project=payments&branch=main",
    ] {
        let q = format!("{window}{slice}");
        let page = web.get(&format!("/?{q}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let (status, api) = app.get(&format!("/api/v1/metrics/dora?{q}")).await;
        assert_eq!(status, 200, "{api}");
        let h = &page.body;
        same_number(
            &tile(h, "deployment_frequency", "data-value"),
            &api["deployment_frequency"]["per_day"],
            "per day",
        );
        same_number(
            &tile(h, "deployment_frequency", "data-count"),
            &api["deployment_frequency"]["deployments"],
            "deployments",
        );
        same_number(
            &tile(h, "lead_time", "data-value"),
            &api["lead_time"]["median_seconds"],
            "lead time",
        );
        same_number(
            &tile(h, "lead_time", "data-count"),
            &api["lead_time"]["count"],
            "lead time count",
        );
        same_number(
            &tile(h, "change_failure_rate", "data-value"),
            &api["change_failure_rate"]["rate"],
            "cfr",
        );
        same_number(
            &tile(h, "change_failure_rate", "data-count"),
            &api["change_failure_rate"]["deployments"],
            "cfr deployments",
        );
        same_number(
            &tile(h, "change_failure_rate", "data-failed"),
            &api["change_failure_rate"]["failed"],
            "cfr failed",
        );
        same_number(
            &tile(h, "time_to_restore", "data-value"),
            &api["time_to_restore"]["median_seconds"],
            "ttr",
        );
        same_number(
            &tile(h, "time_to_restore", "data-count"),
            &api["time_to_restore"]["count"],
            "ttr count",
        );
        if slice.is_empty() {
            assert!(
                api["deployment_frequency"]["deployments"].as_u64().unwrap() > 20,
                "{api}"
            );
            assert!(
                api["change_failure_rate"]["failed"].as_u64().unwrap() > 0,
                "{api}"
            );
        }
    }
}

#[tokio::test]
async fn every_page_renders_the_seeded_history() {
    let app = seeded().await;
    let mut web = Web::new(&app);
    assert_eq!(web.sign_in(&app.key).await.status, 303);

    let home = web.get("/?days=30").await;
    assert_eq!(home.status, 200);
    for needle in [
        "Deployments per week",
        r#"id="chart-deploys""#,
        r#"id="chart-lead""#,
        r#"id="chart-success""#,
        r#"id="chart-durations""#,
        "Pipelines failing now",
        r#"data-refresh="/fragments/latest-runs?days=30""#,
    ] {
        assert!(home.body.contains(needle), "overview lacks {needle}");
    }
    let frag = web
        .get("/fragments/latest-runs?days=30&project=payments")
        .await;
    assert_eq!(frag.status, 200);
    assert!(frag.body.starts_with("<tr>"), "{}", frag.body);
    assert!(frag.body.contains("payments/"));
    assert!(!frag.body.contains("shop/"), "the project filter holds");

    let list = web.get("/pipelines").await;
    assert_eq!(list.status, 200);
    for p in [
        "shop/web-build",
        "shop/api-build",
        "shop/deploy-staging",
        "shop/deploy-prod",
        "payments/ledger-ci",
        "payments/ledger-deploy",
        "platform/infra-plan",
        "shop/nightly-e2e",
    ] {
        assert!(list.body.contains(p), "pipelines list lacks {p}");
    }
    let sorted = web.get("/pipelines?sort=p95&dir=desc").await;
    assert!(sorted.body.contains(r#"aria-sort="descending""#));
    let table = &sorted.body[sorted.body.find(r#"id="pipelines""#).unwrap()..];
    assert!(
        table.find("nightly-e2e").unwrap() < table.find("infra-plan").unwrap(),
        "slowest first"
    );
    let platform = web.get("/pipelines?project=platform").await;
    assert!(platform.body.contains("platform/infra-plan"));
    assert!(!platform.body.contains(">shop/api-build<"));

    // A pipeline page, from the list's link.
    let table = &list.body[list.body.find(r#"id="pipelines""#).unwrap()..];
    let at = table.find(">shop/api-build<").unwrap();
    let href_start = table[..at].rfind("href=\"").unwrap() + 6;
    let href = &table[href_start..href_start + table[href_start..].find('"').unwrap()];
    assert!(href.starts_with("/pipelines/"), "{href}");
    let pipe = web.get(&href.replace("&amp;", "&")).await;
    assert_eq!(pipe.status, 200, "{href}");
    for needle in [
        "Duration of each run",
        "Slowest stages",
        "Recent runs",
        r#"id="chart-run-durations""#,
        "Test / unit tests",
    ] {
        assert!(pipe.body.contains(needle), "pipeline page lacks {needle}");
    }

    // A failed run: header, timeline, marked log lines, raw payload.
    let (_, runs) = app.get("/api/v1/runs?result=failure&limit=50").await;
    let failed = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pipeline"]["full_name"] == "shop/api-build")
        .expect("a failed api-build run");
    let id = failed["id"].as_str().unwrap();
    let run = web.get(&format!("/runs/{id}")).await;
    assert_eq!(run.status, 200);
    for needle in [
        "Failure logs",
        r#"<ol class="gantt""#,
        "<mark class=\"l\"",
        "Checkout",
        "GIT_BRANCH",
        "https://github.com/example/shop/commit/",
    ] {
        assert!(run.body.contains(needle), "run page lacks {needle}");
    }
    let event_id = failed["event_id"].as_str().unwrap();
    assert!(run.body.contains(&format!("/admin/events/{event_id}")));
    let raw = web.get(&format!("/admin/events/{event_id}")).await;
    assert_eq!(raw.status, 200);
    assert!(raw.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let raw: Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(raw["payload"]["job_full_name"], "shop/api-build");
    assert_eq!(raw["status"], "accepted");

    let inst = web.get("/admin/instances").await;
    assert_eq!(inst.status, 200);
    for needle in [
        "jenkins-main",
        "gitlab-runners",
        "2.462.3",
        "Alive",
        "Quiet",
    ] {
        assert!(inst.body.contains(needle), "instances page lacks {needle}");
    }
    let ev = web.get("/admin/events?status=rejected").await;
    assert_eq!(ev.status, 200);
    assert!(ev.body.contains("looks like seconds"));
    assert!(ev.body.contains("unknown result"));
    assert!(ev.body.contains("curly quote"));
    assert_eq!(ev.body.matches("Rejected 400").count(), 3);
    assert!(web
        .get("/admin/events?status=accepted")
        .await
        .body
        .contains("Accepted 201"));

    // Bad filters and unknown ids answer pages that say so.
    let bad = web.get("/?days=0").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("days: must be a whole number"));
    assert_eq!(web.get("/runs/nope").await.status, 404);
    assert_eq!(web.get("/pipelines/nope").await.status, 404);
    assert_eq!(web.get("/admin/events?status=odd").await.status, 400);
}

#[tokio::test]
async fn another_tenants_session_sees_nothing_of_this_one() {
    let app = seeded().await;
    let other = app.key_for("acme", &[Scope::Read]).await;
    let (_, runs) = app.get("/api/v1/runs?limit=1").await;
    let run = &runs["runs"][0];
    let mut web = Web::new(&app);
    assert_eq!(web.sign_in(&other).await.status, 303);
    assert_eq!(
        web.get(&format!("/runs/{}", run["id"].as_str().unwrap()))
            .await
            .status,
        404
    );
    assert_eq!(
        web.get(&format!(
            "/admin/events/{}",
            run["event_id"].as_str().unwrap()
        ))
        .await
        .status,
        404
    );
    let list = web.get("/pipelines").await;
    assert!(list.body.contains("No pipeline has reported"));
    assert!(web
        .get("/admin/instances")
        .await
        .body
        .contains("No instance has reported"));
    let home = web.get("/").await;
    assert!(home.body.contains("No data"));
    assert!(home.body.contains("Tenant <strong>acme</strong>"));
}

// ---------------------------------------------------------------------------------------------
// The admin section

/// A hub on `backend` seeded with the fixture generator, master key included (secrets, sources,
/// subscriptions and their deliveries). The delivery worker is off, so the seeded deliveries
/// stay as the generator left them and a redelivery stays queued for the test to see.
async fn seeded_admin(backend: &Backend) -> TestApp {
    let app = TestApp::spawn_with(backend, |c| c.delivery_worker = false).await;
    let master =
        cistern_server::secrets::MasterKey::load(None, std::path::Path::new(&app.master_key_file))
            .expect("the hub's master key");
    let mut opts = SeedOptions::new(700, 35);
    opts.concurrency = 64;
    opts.master = Some(std::sync::Arc::new(master));
    let summary = seed(&app.store, &opts).await.expect("seed");
    assert_eq!(summary.runs, 700);
    assert_eq!(
        (summary.satellites, summary.sources, summary.subscriptions),
        (3, 3, 3)
    );
    let [delivered, pending, failed] = summary.deliveries;
    assert!(
        delivered > 10 && pending > 0 && failed > 0,
        "{:?}",
        summary.deliveries
    );
    app
}

/// The part of `html` from `start` to the next `end` (both included).
fn between<'h>(html: &'h str, start: &str, end: &str) -> &'h str {
    let a = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in page"));
    let b = a + html[a..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} after {start}"));
    &html[a..b + end.len()]
}

/// The delivery rows of an HTML fragment: (id, status), in order.
fn delivery_rows(html: &str) -> Vec<(String, String)> {
    html.match_indices(r#"<tr id="d-"#)
        .map(|(at, m)| {
            let rest = &html[at + m.len()..];
            let id = rest[..rest.find('"').unwrap()].to_owned();
            let row = &rest[..rest.find("</tr>").unwrap()];
            let marker = r#"data-status=""#;
            let s = row.find(marker).unwrap() + marker.len();
            (id, row[s..s + row[s..].find('"').unwrap()].to_owned())
        })
        .collect()
}

/// The API's deliveries of a subscription for a query: (id, status), in order.
async fn api_deliveries(
    app: &TestApp,
    admin: &str,
    sub: &str,
    query: &str,
) -> Vec<(String, String)> {
    let (status, body) = app
        .get_with(
            &format!("/api/v1/subscriptions/{sub}/deliveries?{query}"),
            admin,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn rfc3339_q(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace(':', "%3A")
        .replace('+', "%2B")
}

#[tokio::test]
async fn admin_pages_show_what_the_api_shows() {
    for backend in backends() {
        let app = seeded_admin(&backend).await;
        let admin = app.key_for("default", &[Scope::Read, Scope::Admin]).await;
        // A secret whose value must never reach a page, and a source signed with it.
        let (status, _) = app
            .client
            .put(app.url("/api/v1/secrets/visible-name"))
            .header("Authorization", format!("Bearer {admin}"))
            .header("Content-Type", "application/json")
            .body(r#"{"value": "never-shown-7f3a9c"}"#)
            .send()
            .await
            .map(|r| (r.status().as_u16(), ()))
            .unwrap();
        assert_eq!(status, 201);
        let (status, created) = app
            .client
            .post(app.url("/api/v1/sources"))
            .header("Authorization", format!("Bearer {admin}"))
            .header("Content-Type", "application/json")
            .body(r#"{"kind": "jobserv", "secret": "visible-name", "name": "Foundries"}"#)
            .send()
            .await
            .map(|r| (r.status().as_u16(), r))
            .unwrap();
        assert_eq!(status, 201);
        let created: Value = created.json().await.unwrap();
        let mut web = Web::new(&app);
        assert_eq!(web.sign_in(&admin).await.status, 303);

        // The section: an Admin link on every page, and a navigation reaching each admin page.
        let home = web.get("/").await;
        assert!(
            home.body.contains(r#"<a href="/admin">Admin</a>"#),
            "{}",
            home.body
        );
        let index = web.get("/admin").await;
        assert_eq!(index.status, 200);
        assert!(index
            .body
            .contains(r#"<a href="/admin" aria-current="page">Admin</a>"#));
        // Each admin room has its card on the index, triggers included.
        assert!(
            index
                .body
                .contains(r#"<h2><a href="/admin/triggers">Triggers</a></h2>"#),
            "{}",
            index.body
        );
        for (_, href, label) in cistern_server::dashboard::layout::ADMIN_PAGES {
            assert!(
                index
                    .body
                    .contains(&format!(r#"<a href="{href}">{label}</a>"#)),
                "the admin navigation lacks {label}"
            );
            let page = web.get(href).await;
            assert_eq!(page.status, 200, "{href}: {}", page.body);
            let nav = between(
                &page.body,
                r#"<nav class="sub" aria-label="Admin">"#,
                "</nav>",
            );
            assert!(
                nav.contains(&format!(
                    r#"<a href="{}" aria-current="page">{label}</a>"#,
                    href.replace('&', "&amp;")
                )),
                "{href}: {nav}"
            );
            assert!(page
                .body
                .contains(r#"<a href="/admin" aria-current="location">Admin</a>"#));
        }
        for needle in [
            "3</strong> satellites",
            "4</strong> signed sources",
            "3</strong> subscriptions",
            "1 disabled",
        ] {
            assert!(
                index.body.contains(needle),
                "the index lacks {needle}: {}",
                index.body
            );
        }

        // Satellites: each with the API's health.
        let sats = web.get("/admin/satellites").await;
        let (_, api) = app.get_with("/api/v1/satellites", &admin).await;
        let api = api["satellites"].as_array().unwrap();
        assert_eq!(api.len(), 3);
        for s in api {
            let id = s["id"].as_str().unwrap();
            let at = sats.body.find(&format!(">{id}<")).unwrap();
            let tr = sats.body[..at].rfind("<tr data-health=\"").unwrap();
            let health = &sats.body[tr + 17..tr + 17 + sats.body[tr + 17..].find('"').unwrap()];
            assert_eq!(health, s["health"].as_str().unwrap(), "{id}");
            assert!(sats.body.contains(s["version"].as_str().unwrap()));
        }
        for needle in [
            "Stale",
            "Degraded",
            "OK",
            "503 Service Unavailable",
            "spool_bound_bytes",
        ] {
            assert!(sats.body.contains(needle), "satellites page lacks {needle}");
        }

        // Sources: id, kind, hook URL, secret name, last event; never a secret's value.
        let sources = web.get("/admin/sources").await;
        assert_eq!(sources.status, 200);
        assert!(!sources.body.contains("never-shown-7f3a9c"));
        let (_, api) = app.get_with("/api/v1/sources", &admin).await;
        let api = api["sources"].as_array().unwrap();
        assert_eq!(api.len(), 4);
        for s in api {
            let id = s["id"].as_str().unwrap();
            assert!(
                sources
                    .body
                    .contains(&format!("{}/v1/hooks/{id}", app.base)),
                "no hook URL for {id}"
            );
            assert!(sources.body.contains(s["name"].as_str().unwrap()));
            if let Some(secret) = s["secret_name"].as_str() {
                assert!(sources.body.contains(&format!("<code>{secret}</code>")));
            }
        }
        assert_eq!(created["name"], "Foundries");
        let gitlab = between(&sources.body, "GitLab payments", "</tr>");
        assert!(gitlab.contains("Rejected 401"), "{gitlab}");
        let github = between(&sources.body, "GitHub example org", "</tr>");
        assert!(
            github.contains("Accepted 202") && github.contains("min ago"),
            "{github}"
        );
        let foundries = between(&sources.body, "Foundries", "</tr>");
        assert!(foundries.contains("none yet"), "{foundries}");
        // The last event links to its raw payload, and to the source's events.
        let raw = attr_near(gitlab, "Raw payload (JSON)", "href");
        let raw = web.get(&raw).await;
        assert_eq!(raw.status, 200);
        let raw: Value = serde_json::from_str(&raw.body).unwrap();
        assert_eq!(raw["payload"]["object_kind"], "pipeline");
        assert_eq!(raw["status"], "rejected");
        let all = attr_near(gitlab, "All its events", "href").replace("&amp;", "&");
        let events = web.get(&all).await;
        assert_eq!(events.status, 200);
        assert!(events
            .body
            .contains("Only events of the source <strong>GitLab payments</strong>"));
        assert_eq!(
            events.body.matches("source </span><a href=").count(),
            2,
            "its two events, linked"
        );
        assert!(events.body.contains("X-Gitlab-Token does not match"));
        assert!(
            !events.body.contains("/v1/custom-cicd"),
            "no other source's events"
        );

        // Subscriptions: each with its state and the API's latest deliveries, in order.
        let subs = web.get("/admin/subscriptions").await;
        assert_eq!(subs.status, 200);
        let mut statuses = std::collections::HashSet::new();
        for sub in [
            "sub_seed_chat_alerts",
            "sub_seed_deploy_tracker",
            "sub_seed_legacy_jobserv",
        ] {
            let section = between(&subs.body, &format!(r#"id="sub-{sub}""#), "</section>");
            let rows = delivery_rows(section);
            assert!(!rows.is_empty(), "{sub} shows no delivery");
            assert_eq!(
                rows,
                api_deliveries(&app, &admin, sub, "limit=10").await,
                "{sub}"
            );
            statuses.extend(rows.iter().map(|(_, s)| s.clone()));
            // Each row has its redeliver form, carrying the session's token.
            assert_eq!(
                section.matches(r#"action="/admin/deliveries/"#).count(),
                rows.len()
            );
        }
        assert!(!statuses.is_empty());
        // Every state is shown, each through the page's status filter, as the API lists it. (Not
        // among the latest ten alone: a delivery fails after a day of retries, so whether a
        // failed one is among the latest depends on the hour of the week the seeded history
        // ends at — it favours working hours — and the test passed or failed with the clock.)
        for state in ["delivered", "pending", "failed"] {
            let page = web
                .get(&format!("/admin/subscriptions?status={state}"))
                .await;
            assert_eq!(page.status, 200);
            let mut shown = 0;
            for sub in [
                "sub_seed_chat_alerts",
                "sub_seed_deploy_tracker",
                "sub_seed_legacy_jobserv",
            ] {
                let section = between(&page.body, &format!(r#"id="sub-{sub}""#), "</section>");
                let rows = delivery_rows(section);
                assert_eq!(
                    rows,
                    api_deliveries(&app, &admin, sub, &format!("status={state}&limit=10")).await,
                    "{sub} {state}"
                );
                assert!(rows.iter().all(|(_, s)| s == state), "{sub}: {rows:?}");
                shown += rows.len();
            }
            assert!(shown > 0, "no {state} delivery shown");
        }
        let legacy = between(
            &subs.body,
            r#"id="sub-sub_seed_legacy_jobserv""#,
            "</section>",
        );
        assert!(legacy.contains("Disabled"));
        assert!(legacy.contains("disabled automatically: every delivery attempt failed since"));
        assert!(legacy.contains("waits: the subscription is disabled"));
        assert!(legacy.contains("https://legacy-ci.example/jobserv/webhook"));

        // Filters in the URL: a status, and a time window, as the API reads them.
        let failed = web.get("/admin/subscriptions?status=failed").await;
        let mut shown = 0;
        for sub in ["sub_seed_chat_alerts", "sub_seed_legacy_jobserv"] {
            let section = between(&failed.body, &format!(r#"id="sub-{sub}""#), "</section>");
            let rows = delivery_rows(section);
            assert!(rows.iter().all(|(_, s)| s == "failed"), "{rows:?}");
            assert_eq!(
                rows,
                api_deliveries(&app, &admin, sub, "limit=10&status=failed").await
            );
            shown += rows.len();
        }
        assert!(shown > 0);
        let now = time::OffsetDateTime::now_utc();
        let window = format!(
            "since={}&until={}",
            rfc3339_q(now - time::Duration::days(3)),
            rfc3339_q(now - time::Duration::days(1))
        );
        let windowed = web.get(&format!("/admin/subscriptions?{window}")).await;
        assert_eq!(windowed.status, 200);
        assert!(windowed
            .body
            .contains(r#"<option value="" selected>Custom (since/until)</option>"#));
        for sub in [
            "sub_seed_chat_alerts",
            "sub_seed_deploy_tracker",
            "sub_seed_legacy_jobserv",
        ] {
            let section = between(&windowed.body, &format!(r#"id="sub-{sub}""#), "</section>");
            assert_eq!(
                delivery_rows(section),
                api_deliveries(&app, &admin, sub, &format!("limit=10&{window}")).await,
                "{sub} in {window}"
            );
        }
        assert_ne!(
            delivery_rows(&windowed.body),
            delivery_rows(&subs.body),
            "the window changes what is shown"
        );
        assert_eq!(
            web.get("/admin/subscriptions?status=lost").await.status,
            400
        );
        assert_eq!(web.get("/admin/subscriptions?days=0").await.status, 400);

        // One subscription, paged like the API.
        let one = web
            .get("/admin/subscriptions/sub_seed_deploy_tracker")
            .await;
        assert_eq!(one.status, 200);
        let first = api_deliveries(&app, &admin, "sub_seed_deploy_tracker", "limit=50").await;
        assert_eq!(delivery_rows(&one.body), first);
        if first.len() == 50 {
            let older = attr_near(&one.body, "Older deliveries", "href").replace("&amp;", "&");
            let next = web.get(&older).await;
            let more = delivery_rows(&next.body);
            assert!(!more.is_empty() && more.iter().all(|r| !first.contains(r)));
        }
        assert_eq!(web.get("/admin/subscriptions/sub_nope").await.status, 404);

        // A delivery: its attempt log as the API keeps it.
        let (failed_id, _) = delivery_rows(&failed.body).into_iter().next().unwrap();
        let page = web.get(&format!("/admin/deliveries/{failed_id}")).await;
        assert_eq!(page.status, 200);
        let (_, api) = app
            .get_with(&format!("/api/v1/deliveries/{failed_id}"), &admin)
            .await;
        let log = api["attempt_log"].as_array().unwrap();
        assert!(log.len() >= 2);
        let table = between(
            &page.body,
            r#"<table aria-labelledby="attempts">"#,
            "</table>",
        );
        assert_eq!(
            table.matches("<tr>").count(),
            log.len() + 1,
            "a row per attempt"
        );
        let last = &log[log.len() - 1];
        if let Some(code) = last["status_code"].as_u64() {
            assert!(table.contains(&format!(">{code}<")));
        }
        assert!(page.body.contains("none: the schedule is spent"));
        assert!(page.body.contains(r#"<pre class="json">"#));
        assert_eq!(web.get("/admin/deliveries/nope").await.status, 404);

        // Rejected events in a window, each with its reasons and a link to its raw payload.
        let ev = web.get("/admin/events?status=rejected&days=7").await;
        assert_eq!(ev.status, 200);
        assert!(ev
            .body
            .contains(r#"<option value="7" selected>Last 7 days</option>"#));
        assert_eq!(ev.body.matches("Rejected 400").count(), 3);
        assert_eq!(ev.body.matches("Rejected 401").count(), 1);
        assert_eq!(ev.body.matches("Raw payload (JSON)").count(), 4);
        let old = web
            .get("/admin/events?status=rejected&until=2000-01-01")
            .await;
        assert!(
            old.body
                .contains("No events. Window: before 2000-01-01 00:00 UTC."),
            "{}",
            old.body
        );
        assert_eq!(web.get("/admin/events?source=src_nope").await.status, 404);
    }
}

#[tokio::test]
async fn read_only_sessions_see_states_but_not_capabilities_or_the_button() {
    for backend in backends() {
        let app = seeded_admin(&backend).await;
        let reader = app.key_for("default", &[Scope::Read]).await;
        let mut web = Web::new(&app);
        assert_eq!(web.sign_in(&reader).await.status, 303);

        let subs = web.get("/admin/subscriptions").await;
        assert_eq!(subs.status, 200);
        assert!(subs.body.contains(r#"id="redeliver-why""#));
        assert!(subs
            .body
            .contains("Redelivering needs a key with the <code>admin</code> scope"));
        assert!(
            !subs.body.contains(r#"action="/admin/deliveries/"#),
            "no redeliver form"
        );
        let rows = delivery_rows(&subs.body);
        assert!(!rows.is_empty());
        assert_eq!(
            subs.body
                .matches(r#"disabled aria-describedby="redeliver-why""#)
                .count(),
            rows.len()
        );
        // Target URLs are reduced to their origin (they may hold tokens).
        assert!(subs.body.contains("https://chat.example/…"));
        assert!(!subs.body.contains("B08ALERTS"));

        let sources = web.get("/admin/sources").await;
        assert!(sources.body.contains("shown to admin keys"));
        assert!(!sources.body.contains("/v1/hooks/src_"));
        let tenant = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        for s in app.store.list_sources(&tenant.id).await.unwrap() {
            assert!(!sources.body.contains(&s.id), "a source id is shown");
            assert!(sources.body.contains(&s.id[..12]));
        }
    }
}

#[tokio::test]
async fn redeliver_needs_the_form_token_and_the_admin_scope_and_requeues() {
    for backend in backends() {
        let app = seeded_admin(&backend).await;
        let tenant = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let admin_key = app.key_for("default", &[Scope::Read, Scope::Admin]).await;
        let reader_key = app.key_for("default", &[Scope::Read]).await;
        let mut admin = Web::new(&app);
        assert_eq!(admin.sign_in(&admin_key).await.status, 303);
        let mut reader = Web::new(&app);
        assert_eq!(reader.sign_in(&reader_key).await.status, 303);

        let page = admin.get("/admin/subscriptions?status=failed").await;
        let (id, status) = delivery_rows(&page.body)
            .into_iter()
            .next()
            .expect("a failed delivery");
        assert_eq!(status, "failed");
        let before = app
            .store
            .get_delivery(&tenant.id, &id)
            .await
            .unwrap()
            .unwrap()
            .delivery;
        let path = format!("/admin/deliveries/{id}/redeliver");
        let token = hidden(&page.body, "csrf");
        let back = "/admin/subscriptions?status=failed";
        let unchanged = |what: &'static str| {
            let (store, tenant, id, before) = (
                app.store.clone(),
                tenant.id.clone(),
                id.clone(),
                before.clone(),
            );
            async move {
                let now = store
                    .get_delivery(&tenant, &id)
                    .await
                    .unwrap()
                    .unwrap()
                    .delivery;
                assert_eq!(now, before, "{what} changed the delivery");
            }
        };

        // No token, a forged one, or another session's: refused, nothing queued.
        let r = admin.post(&path, &[("back", back)]).await;
        assert_eq!(r.status, 403);
        assert!(r.body.contains("This form expired"));
        unchanged("a form without a token").await;
        let r = admin
            .post(&path, &[("csrf", &"ab".repeat(32)), ("back", back)])
            .await;
        assert_eq!(r.status, 403);
        let reader_page = reader.get("/admin/subscriptions").await;
        let reader_token = hidden(&reader_page.body, "csrf");
        assert_ne!(reader_token, token);
        assert_eq!(
            admin
                .post(&path, &[("csrf", &reader_token), ("back", back)])
                .await
                .status,
            403
        );
        unchanged("another session's token").await;

        // A read-only key with its own valid token: refused on the server.
        let r = reader
            .post(&path, &[("csrf", &reader_token), ("back", back)])
            .await;
        assert_eq!(r.status, 403);
        assert!(r
            .body
            .contains("Redelivering needs a key with the <code>admin</code> scope"));
        unchanged("a read-only key").await;

        // Without a session (a cross-site form carries no SameSite=Strict cookie): sign in first.
        let mut stranger = Web::new(&app);
        let r = stranger
            .post(&path, &[("csrf", &token), ("back", back)])
            .await;
        assert_eq!(r.status, 303);
        assert!(r.location.unwrap().starts_with("/login"));
        unchanged("a request without a session").await;

        // The admin's form: queued again, due now, on a fresh schedule; back to the page.
        let asked = time::OffsetDateTime::now_utc();
        let r = admin.post(&path, &[("csrf", &token), ("back", back)]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(
            r.location.as_deref(),
            Some(format!("/admin/subscriptions?status=failed&redelivered={id}#d-{id}").as_str())
        );
        let after = app
            .store
            .get_delivery(&tenant.id, &id)
            .await
            .unwrap()
            .unwrap()
            .delivery;
        assert_eq!(after.status, cistern_store::DeliveryStatus::Pending);
        let due = after.next_attempt_at.expect("due");
        assert!(
            due >= asked - time::Duration::seconds(1) && due <= time::OffsetDateTime::now_utc(),
            "due now: {due}"
        );
        assert_eq!(
            after.attempts, before.attempts,
            "nothing sent by the dashboard itself"
        );
        let (_, api) = app
            .get_with(&format!("/api/v1/deliveries/{id}"), &admin_key)
            .await;
        assert_eq!(api["status"], "pending");
        // The page it leads back to says so, from the store.
        let back_page = admin
            .get(&format!(
                "/admin/subscriptions?status=failed&redelivered={id}"
            ))
            .await;
        assert!(back_page
            .body
            .contains(&format!("Delivery <code>{id}</code> is queued again")));
        assert!(
            back_page.body.contains("This node runs no delivery worker"),
            "the worker is off in this test"
        );
        let pending = admin.get("/admin/subscriptions?status=pending").await;
        assert!(delivery_rows(&pending.body).contains(&(id.clone(), "pending".to_owned())));

        // A return address off the site is not followed.
        let r = admin
            .post(
                &path,
                &[("csrf", &token), ("back", "//evil.example/admin/")],
            )
            .await;
        assert_eq!(r.status, 303);
        assert!(r
            .location
            .unwrap()
            .starts_with(&format!("/admin/deliveries/{id}?redelivered=")));

        // Unknown ids and other tenants' deliveries: 404, nothing queued.
        let r = admin
            .post("/admin/deliveries/nope/redeliver", &[("csrf", &token)])
            .await;
        assert_eq!(r.status, 404);
        let other = app.key_for("acme", &[Scope::Read, Scope::Admin]).await;
        let mut outsider = Web::new(&app);
        assert_eq!(outsider.sign_in(&other).await.status, 303);
        let outsider_page = outsider.get("/admin/subscriptions").await;
        assert!(outsider_page.body.contains("No subscription yet"));
        let outsider_token = hidden(&outsider_page.body, "csrf");
        let failed_other = delivery_rows(&page.body)
            .into_iter()
            .find(|(d, _)| *d != id)
            .map(|(d, _)| d)
            .expect("a second failed delivery");
        let before_other = app
            .store
            .get_delivery(&tenant.id, &failed_other)
            .await
            .unwrap()
            .unwrap()
            .delivery;
        let r = outsider
            .post(
                &format!("/admin/deliveries/{failed_other}/redeliver"),
                &[("csrf", &outsider_token)],
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(
            app.store
                .get_delivery(&tenant.id, &failed_other)
                .await
                .unwrap()
                .unwrap()
                .delivery,
            before_other
        );
        assert_eq!(
            outsider
                .get(&format!("/admin/deliveries/{failed_other}"))
                .await
                .status,
            404
        );
    }
}

#[tokio::test]
async fn next_with_whitespace_or_control_characters_goes_home() {
    let app = TestApp::spawn(&Backend::Sqlite).await;
    let mut web = Web::new(&app);
    assert_eq!(web.sign_in(&app.key).await.status, 303);
    // Browsers drop a tab or newline from `Location`: `/\t/evil.example` would be `//evil.example`.
    for next in [
        "/%09/evil.example",
        "/%0a",
        "/%0d%0a/evil.example",
        "/%20/evil.example",
        "/%7f",
        "/%5c/evil.example",
        "//evil.example",
        "/%2f/evil.example",
        "https://evil.example",
    ] {
        let r = web.get(&format!("/login?next={next}")).await;
        assert_eq!(r.status, 303, "next={next}: {}", r.body);
        assert_eq!(r.location.as_deref(), Some("/"), "next={next}");
    }
    // The sign-in form carries the same rule.
    let mut stranger = Web::new(&app);
    let page = stranger.get("/login").await;
    let csrf = hidden(&page.body, "csrf");
    let r = stranger
        .post(
            "/login",
            &[
                ("key", &app.key),
                ("csrf", &csrf),
                ("next", "/\t/evil.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/"));
    // A plain local path still works.
    let r = web.get("/login?next=/runs%3Fpage%3D2").await;
    assert_eq!(r.location.as_deref(), Some("/runs?page=2"));
}

/// A run accepted with a warning (a duration that looks like seconds) shows it on its page.
#[tokio::test]
async fn a_runs_warnings_are_shown_on_its_page() {
    for b in backends() {
        let app = TestApp::spawn(&b).await;
        let mut run: Value = serde_json::from_slice(&fixture("sei/data_example.json")).unwrap();
        run["duration"] = serde_json::json!(77);
        let (status, body) = app.post("/v1/custom-cicd", &run).await;
        assert_eq!(status, 201, "{body}");
        let mut web = Web::new(&app);
        assert_eq!(web.sign_in(&app.key).await.status, 303);
        let page = web
            .get(&format!("/runs/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Warnings"), "{b:?}");
        assert!(page.body.contains("looks like seconds"), "{}", page.body);
        // The events page names it as a warning too.
        let events = web.get("/admin/events?status=accepted").await;
        assert_eq!(events.status, 200);
        assert!(
            events.body.contains("warning: <code>duration</code>"),
            "{}",
            events.body
        );
    }
}

/// The session cookie is an opaque id whose hash the store keeps: signing out, the idle timeout
/// and revoking the key end it on the server, so a copied cookie stops working too.
#[tokio::test]
async fn sessions_end_on_the_server() {
    for backend in backends() {
        let app = TestApp::spawn_with(&backend, |c| {
            c.session_idle_timeout = "2s".into();
            c.public_url = Some("https://cistern.example".into());
        })
        .await;
        let mut web = Web::new(&app);
        let r = web.sign_in(&app.key).await;
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = r
            .set_cookies
            .iter()
            .find(|c| c.starts_with("cistern_session="))
            .unwrap()
            .clone();
        assert!(cookie.ends_with("; Secure"), "https public_url: {cookie}");
        // The raw key is not a session.
        let raw = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = raw
            .get(app.url("/pipelines"))
            .header("cookie", format!("cistern_session={}", app.key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "a key in the cookie is not a session");

        // Sign out, then replay the old cookie: the server has forgotten it.
        let copied = web.cookie_header();
        let home = web.get("/").await;
        assert_eq!(home.status, 200);
        let token = hidden(&home.body, "csrf");
        assert_eq!(web.post("/logout", &[("csrf", &token)]).await.status, 303);
        let replay = raw
            .get(app.url("/pipelines"))
            .header("cookie", &copied)
            .send()
            .await
            .unwrap();
        assert_eq!(
            replay.status(),
            303,
            "{backend:?}: a signed-out session still works"
        );

        // Idle longer than session_idle_timeout (2 s): ended.
        let mut web = Web::new(&app);
        assert_eq!(web.sign_in(&app.key).await.status, 303);
        assert_eq!(web.get("/pipelines").await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        assert_eq!(web.get("/pipelines").await.status, 303, "{backend:?}: idle");

        // Revoking the key ends its sessions in the store.
        let key = app.key_for("default", &[Scope::Read]).await;
        let mut web = Web::new(&app);
        assert_eq!(web.sign_in(&key).await.status, 303);
        let copied = web.cookie_header();
        assert_eq!(web.get("/pipelines").await.status, 200);
        let tenant = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let info = app
            .store
            .list_api_keys(&tenant.id)
            .await
            .unwrap()
            .into_iter()
            .find(|k| key.starts_with(&k.prefix))
            .unwrap();
        app.store
            .revoke_api_key(&tenant.id, &info.id)
            .await
            .unwrap();
        assert_eq!(web.get("/pipelines").await.status, 303);
        let id = copied
            .split("; ")
            .find_map(|c| c.strip_prefix("cistern_session="))
            .unwrap()
            .to_owned();
        let hash = cistern_server::auth::hash_key(&id);
        assert!(
            app.store.session_by_hash(&hash).await.unwrap().is_none(),
            "{backend:?}: the revoked key's session is gone from the store"
        );
    }
}
