//! The page shell every dashboard page shares: head, skip link, navigation, sign-out form, and
//! small pieces used across pages (result badges, the filter form).

use cistern_core::RunResult;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::filters::{Filters, Window, WINDOW_DAYS};
use super::format;
use super::session::Session;

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Overview.
    Overview,
    /// Pipelines.
    Pipelines,
    /// The admin section's index.
    Admin,
    /// Instances.
    Instances,
    /// Satellites.
    Satellites,
    /// Signed sources.
    Sources,
    /// Subscriptions and their deliveries.
    Subscriptions,
    /// Rejected events.
    Events,
    /// Triggers.
    Triggers,
    /// None.
    None,
}

/// The admin section's pages, in the order of its navigation: (entry, link, label).
pub const ADMIN_PAGES: &[(Nav, &str, &str)] = &[
    (Nav::Instances, "/admin/instances", "Instances"),
    (Nav::Satellites, "/admin/satellites", "Satellites"),
    (Nav::Sources, "/admin/sources", "Sources"),
    (Nav::Subscriptions, "/admin/subscriptions", "Subscriptions"),
    (Nav::Triggers, "/admin/triggers", "Triggers"),
    (
        Nav::Events,
        "/admin/events?status=rejected",
        "Rejected events",
    ),
];

impl Nav {
    /// True for the admin section's pages (its index included).
    pub fn is_admin(self) -> bool {
        self == Nav::Admin || ADMIN_PAGES.iter().any(|(n, _, _)| *n == self)
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light";
            title { (title) " · Cistern" }
            link rel="stylesheet" href=(super::assets::CSS_PATH);
            link rel="icon" href="data:,";
            script src=(super::assets::JS_PATH) defer {}
        }
    }
}

/// A page without navigation (sign-in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" { (body) }
            }
        }
    }
}

/// The sign-out button (a POST form with the session's token).
pub fn logout_form(session: &Session) -> Markup {
    html! {
        form method="post" action="/logout" class="logout" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" class="link" { "Sign out" }
        }
    }
}

/// A signed-in page.
pub fn page(title: &str, session: &Session, current: Nav, body: Markup) -> Markup {
    let item = |nav: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == current).then_some("page")] { (label) } }
        }
    };
    // The section's link is marked as the current location on every admin page.
    let admin_current = if current == Nav::Admin {
        Some("page")
    } else if current.is_admin() {
        Some("location")
    } else {
        None
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "Cistern" }
                    nav aria-label="Main" {
                        ul {
                            (item(Nav::Overview, "/", "Overview"))
                            (item(Nav::Pipelines, "/pipelines", "Pipelines"))
                            li { a href="/admin" aria-current=[admin_current] { "Admin" } }
                        }
                    }
                    div class="who" {
                        span { "Tenant " strong { (session.caller.tenant.slug) } }
                        (logout_form(session))
                    }
                }
                @if current.is_admin() {
                    nav class="sub" aria-label="Admin" {
                        ul {
                            @for (nav, href, label) in ADMIN_PAGES {
                                (item(*nav, href, label))
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
                footer { "Cistern " (env!("CARGO_PKG_VERSION")) " · times in UTC" }
            }
        }
    }
}

/// A result badge: colour and word (never colour alone).
pub fn badge(r: RunResult) -> Markup {
    html! {
        span class={ "badge " (format::result_class(r)) } { (format::result_label(r)) }
    }
}

/// An optional result badge.
pub fn opt_badge(r: Option<RunResult>) -> Markup {
    match r {
        Some(r) => badge(r),
        None => html! { span class="badge r-neutral" { "Unknown" } },
    }
}

/// The filter form (a GET form, so a filtered view is a URL to share).
pub fn filter_form(
    action: &str,
    f: &Filters,
    projects: &[String],
    pipelines: &[String],
    environments: &[String],
) -> Markup {
    let select = |name: &str, label: &str, options: &[String], current: &Option<String>| {
        html! {
            div class="field" {
                label for={ "f-" (name) } { (label) }
                select id={ "f-" (name) } name=(name) {
                    option value="" { "All" }
                    @for o in options {
                        option value=(o) selected[current.as_deref() == Some(o.as_str())] { (o) }
                    }
                    @if let Some(c) = current {
                        @if !options.contains(c) {
                            option value=(c) selected { (c) }
                        }
                    }
                }
            }
        }
    };
    let custom = f.days.is_none();
    html! {
        form method="get" action=(action) class="filters" aria-label="Filters" {
            div class="field" {
                label for="f-days" { "Window" }
                select id="f-days" name="days" {
                    @for d in [7i64, 14, 30, 90, 180] {
                        option value=(d) selected[f.days == Some(d)] { "Last " (d) " days" }
                    }
                    @if let Some(d) = f.days {
                        @if ![7i64, 14, 30, 90, 180].contains(&d) {
                            option value=(d) selected { "Last " (d) " days" }
                        }
                    }
                    @if custom {
                        option value="" selected { "Custom (since/until)" }
                    }
                }
            }
            @if custom {
                input type="hidden" name="since" value=(f.since_text());
                input type="hidden" name="until" value=(f.until_text());
            }
            (select("project", "Project", projects, &f.project))
            (select("pipeline", "Pipeline", pipelines, &f.pipeline))
            div class="field" {
                label for="f-branch" { "Branch" }
                input id="f-branch" name="branch" type="text" value=[f.branch.as_deref()] placeholder="any";
            }
            (select("environment", "Environment", environments, &f.environment))
            div class="field actions" {
                button type="submit" { "Apply" }
                a href=(action) { "Reset" }
            }
        }
        p class="window" {
            "Window: " (format::datetime(f.since)) " – " (format::datetime(f.until))
        }
    }
}

/// The window form of a log page (a GET form, so the view is a URL to share): the window's
/// length, and `keep` carried along as hidden fields (a status tab, a source).
pub fn window_form(action: &str, w: &Window, keep: &[(&str, &str)]) -> Markup {
    let custom = w.days.is_none() && !w.is_all();
    html! {
        form method="get" action=(action) class="filters" aria-label="Time window" {
            @for (k, v) in keep {
                input type="hidden" name=(k) value=(v);
            }
            div class="field" {
                label for="w-days" { "Window" }
                select id="w-days" name="days" {
                    option value="all" selected[w.is_all()] { "All time" }
                    @for d in WINDOW_DAYS {
                        option value=(d) selected[w.days == Some(d)] {
                            @if d == 1 { "Last day" } @else { "Last " (d) " days" }
                        }
                    }
                    @if let Some(d) = w.days {
                        @if !WINDOW_DAYS.contains(&d) {
                            option value=(d) selected { "Last " (d) " days" }
                        }
                    }
                    @if custom {
                        option value="" selected { "Custom (since/until)" }
                    }
                }
            }
            @if custom {
                @if let Some(t) = w.since {
                    input type="hidden" name="since" value=(crate::routes::query::rfc3339(t));
                }
            }
            @if !w.is_all() {
                @if let Some(t) = w.until {
                    input type="hidden" name="until" value=(crate::routes::query::rfc3339(t));
                }
            }
            div class="field actions" {
                button type="submit" { "Apply" }
            }
        }
        p class="window" { "Showing " (w.describe()) "." }
    }
}

/// Raw, trusted markup (the SVG renderer's output).
pub fn svg(s: String) -> Markup {
    PreEscaped(s)
}

/// The header of a runs table.
pub fn run_head(with_pipeline: bool) -> Markup {
    html! {
        thead { tr {
            th scope="col" { "Result" }
            @if with_pipeline { th scope="col" { "Pipeline" } }
            th scope="col" { "Run" }
            th scope="col" { "Branch" }
            th scope="col" { "Environment" }
            th scope="col" { "Started" }
            th scope="col" class="num" { "Duration" }
        } }
    }
}

/// The rows of a runs table.
pub fn run_rows(
    runs: &[cistern_core::Run],
    now: time::OffsetDateTime,
    with_pipeline: bool,
) -> Markup {
    html! {
        @if runs.is_empty() {
            tr { td colspan=(if with_pipeline { 7 } else { 6 }) class="empty" { "No runs in this window." } }
        }
        @for r in runs {
            tr {
                td { (badge(r.result)) }
                @if with_pipeline {
                    td { a href={ "/pipelines/" (r.pipeline.id) } { (r.pipeline.full_name) } }
                }
                td { a href={ "/runs/" (r.id) } { "#" (r.build_number.map(|b| b.to_string()).unwrap_or_else(|| r.run_key.clone())) } }
                td { (r.branch.as_deref().unwrap_or("–")) }
                td { (r.environment.as_deref().unwrap_or("–")) }
                td title=(format::datetime(r.started_at)) { (format::ago(r.started_at, now)) }
                td class="num" data-value=[r.duration_ms] { (r.duration_ms.map(format::duration_ms).unwrap_or_else(|| "–".into())) }
            }
        }
    }
}
