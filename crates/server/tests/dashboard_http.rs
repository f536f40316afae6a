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

    // The right key: a session cookie, HttpOnly, SameSite=Strict, Path=/.
    let r = web.sign_in(&app.key).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/"));
    let session = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cistern_session="))
        .expect("session cookie");
    assert_eq!(
        session,
        &format!(
            "cistern_session={}; HttpOnly; SameSite=Strict; Path=/",
            app.key
        )
    );
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
