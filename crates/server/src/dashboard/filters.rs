//! The dashboard's filters, all in the URL so a view can be shared: the window (`since` and
//! `until`, or `days` before `until`), and the slice (`project`, `pipeline`, `branch`,
//! `environment`). They mean what the metrics API's parameters mean.

use std::collections::HashMap;

use cistern_core::Run;
use cistern_store::{MetricsFilter, RunFilter};
use time::{Duration, OffsetDateTime};

use crate::routes::metrics::{Interval, MetricsQuery};
use crate::routes::query::{rfc3339, Params};

/// Default window, in days (the metrics API's too).
pub const DEFAULT_DAYS: i64 = 30;

/// The filters of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Filters {
    /// Window start.
    pub since: OffsetDateTime,
    /// Window end (exclusive).
    pub until: OffsetDateTime,
    /// The window's length in days, when it was given that way (or by default).
    pub days: Option<i64>,
    /// `until` as given, to keep it in links.
    until_given: bool,
    /// Project.
    pub project: Option<String>,
    /// Pipeline full name or name.
    pub pipeline: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Environment.
    pub environment: Option<String>,
}

impl Filters {
    /// Reads the filters of a query string; the error names the parameter and the rule.
    pub fn parse(q: &HashMap<String, String>, now: OffsetDateTime) -> Result<Self, String> {
        let p = Params(q.clone());
        let until_given = p.text("until").is_some();
        let until = p
            .time("until")
            .map_err(|e| e.detail.clone())?
            .unwrap_or(now);
        let days = match p.text("days") {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(d) if (1..=3650).contains(&d) => Some(d),
                _ => {
                    return Err(format!(
                        "days: must be a whole number from 1 to 3650, got {s:?}"
                    ))
                }
            },
        };
        let (since, days) = match (days, p.time("since").map_err(|e| e.detail.clone())?) {
            (Some(d), _) => (until - Duration::days(d), Some(d)),
            (None, Some(s)) => (s, None),
            (None, None) => (until - Duration::days(DEFAULT_DAYS), Some(DEFAULT_DAYS)),
        };
        if since >= until {
            return Err("since: must be before until".into());
        }
        Ok(Self {
            since,
            until,
            days,
            until_given,
            project: p.text("project"),
            pipeline: p.text("pipeline"),
            branch: p.text("branch"),
            environment: p.text("environment"),
        })
    }

    /// The last `DEFAULT_DAYS` days, unfiltered.
    pub fn default_at(now: OffsetDateTime) -> Self {
        Self::parse(&HashMap::new(), now).expect("the default window is valid")
    }

    /// `since` as RFC 3339.
    pub fn since_text(&self) -> String {
        rfc3339(self.since)
    }

    /// `until` as RFC 3339.
    pub fn until_text(&self) -> String {
        rfc3339(self.until)
    }

    /// The metrics slice.
    pub fn metrics_filter(&self) -> MetricsFilter {
        MetricsFilter {
            project: self.project.clone(),
            pipeline: self.pipeline.clone(),
            branch: self.branch.clone(),
            environment: self.environment.clone(),
            ..MetricsFilter::default()
        }
    }

    /// The metrics query of these filters, as the API would read the same URL.
    pub fn metrics_query(&self, interval: Option<Interval>) -> MetricsQuery {
        MetricsQuery {
            filter: self.metrics_filter(),
            since: self.since,
            until: self.until,
            interval,
            csv: false,
        }
    }

    /// The run-list filter (project and environment are checked per run: see [`Filters::keeps`]).
    pub fn run_filter(&self) -> RunFilter {
        RunFilter {
            pipeline: self.pipeline.clone(),
            branch: self.branch.clone(),
            since: Some(self.since),
            until: Some(self.until),
            ..RunFilter::default()
        }
    }

    /// True when a run is in the slice's project and environment.
    pub fn keeps(&self, run: &Run) -> bool {
        self.project
            .as_ref()
            .is_none_or(|p| run.pipeline.project.as_ref() == Some(p))
            && self
                .environment
                .as_ref()
                .is_none_or(|e| run.environment.as_ref() == Some(e))
    }

    /// The query string that reproduces these filters (without `?`).
    pub fn query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match self.days {
            Some(d) => {
                pairs.push(("days", d.to_string()));
                if self.until_given {
                    pairs.push(("until", self.until_text()));
                }
            }
            None => {
                pairs.push(("since", self.since_text()));
                pairs.push(("until", self.until_text()));
            }
        }
        for (k, v) in [
            ("project", &self.project),
            ("pipeline", &self.pipeline),
            ("branch", &self.branch),
            ("environment", &self.environment),
        ] {
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }

    /// The same filters with the pipeline slice removed (for the pipelines list's links).
    pub fn without_pipeline(&self) -> Self {
        Self {
            pipeline: None,
            ..self.clone()
        }
    }

    /// Day buckets for short windows, weeks beyond.
    pub fn trend_interval(&self) -> Interval {
        if self.until - self.since <= Duration::days(45) {
            Interval::Day
        } else {
            Interval::Week
        }
    }
}

/// An optional time window for logs (events, deliveries): `days` before `until` (or now), or
/// `since`/`until`; nothing given means all time. The rules and messages are the filters' own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Start, when bounded.
    pub since: Option<OffsetDateTime>,
    /// End (exclusive), when bounded.
    pub until: Option<OffsetDateTime>,
    /// The length in days, when given that way.
    pub days: Option<i64>,
}

/// The lengths the window selects offer, in days.
pub const WINDOW_DAYS: [i64; 5] = [1, 7, 14, 30, 90];

impl Window {
    /// Reads `days`, `since` and `until` (`days=all`: no bound, whatever the others say); the
    /// error names the parameter and the rule.
    pub fn parse(q: &HashMap<String, String>, now: OffsetDateTime) -> Result<Self, String> {
        let p = Params(q.clone());
        if p.text("days").as_deref() == Some("all") {
            return Ok(Self::default());
        }
        let until = p.time("until").map_err(|e| e.detail.clone())?;
        let since = p.time("since").map_err(|e| e.detail.clone())?;
        let days = match p.text("days") {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(d) if (1..=3650).contains(&d) => Some(d),
                _ => {
                    return Err(format!(
                        "days: must be a whole number from 1 to 3650 (or all), got {s:?}"
                    ))
                }
            },
        };
        let since = match days {
            Some(d) => Some(until.unwrap_or(now) - Duration::days(d)),
            None => since,
        };
        if let (Some(a), Some(b)) = (since, until) {
            if a >= b {
                return Err("since: must be before until".into());
            }
        }
        Ok(Self { since, until, days })
    }

    /// True when nothing bounds it.
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// The query pairs that reproduce it.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self.days {
            Some(d) => out.push(("days", d.to_string())),
            None => out.extend(self.since.map(|t| ("since", rfc3339(t)))),
        }
        out.extend(self.until.map(|t| ("until", rfc3339(t))));
        out
    }

    /// In words: `the last 7 days`, `all time`, or the two ends.
    pub fn describe(&self) -> String {
        use super::format::datetime;
        match (self.days, self.since, self.until) {
            (Some(1), _, None) => "the last day".into(),
            (Some(d), _, None) => format!("the last {d} days"),
            (_, None, None) => "all time".into(),
            (_, Some(a), None) => format!("since {}", datetime(a)),
            (_, None, Some(b)) => format!("before {}", datetime(b)),
            (_, Some(a), Some(b)) => format!("{} – {}", datetime(a), datetime(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NOW: OffsetDateTime = datetime!(2024-06-01 12:00 UTC);

    #[test]
    fn the_default_is_the_last_30_days() {
        let f = Filters::parse(&q(&[]), NOW).unwrap();
        assert_eq!(f.until, NOW);
        assert_eq!(f.since, NOW - Duration::days(30));
        assert_eq!(f.days, Some(30));
        assert_eq!(f.query(), "days=30");
    }

    #[test]
    fn days_count_back_from_until() {
        let f = Filters::parse(&q(&[("days", "7"), ("project", "shop")]), NOW).unwrap();
        assert_eq!(f.since, NOW - Duration::days(7));
        assert_eq!(f.query(), "days=7&project=shop");
        let f = Filters::parse(&q(&[("days", "7"), ("until", "2024-05-01")]), NOW).unwrap();
        assert_eq!(f.until, datetime!(2024-05-01 0:00 UTC));
        assert_eq!(f.since, datetime!(2024-04-24 0:00 UTC));
        assert_eq!(f.query(), "days=7&until=2024-05-01T00%3A00%3A00Z");
    }

    #[test]
    fn since_and_until_round_trip_through_links() {
        let f = Filters::parse(
            &q(&[
                ("since", "2024-01-01T00:00:00Z"),
                ("until", "2024-01-15T00:00:00Z"),
                ("branch", "feature/x y"),
                ("environment", " prod "),
                ("pipeline", ""),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(f.days, None);
        assert_eq!(f.environment.as_deref(), Some("prod"));
        assert_eq!(f.pipeline, None);
        let again: HashMap<String, String> = serde_urlencoded::from_str(&f.query()).unwrap();
        assert_eq!(Filters::parse(&again, NOW).unwrap(), f);
        let m = f.metrics_query(None);
        assert_eq!(m.since, datetime!(2024-01-01 0:00 UTC));
        assert_eq!(m.filter.branch.as_deref(), Some("feature/x y"));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        assert!(Filters::parse(&q(&[("days", "0")]), NOW)
            .unwrap_err()
            .starts_with("days"));
        assert!(Filters::parse(&q(&[("since", "yesterday")]), NOW)
            .unwrap_err()
            .contains("since"));
        assert!(Filters::parse(&q(&[("since", "2024-07-01")]), NOW)
            .unwrap_err()
            .contains("before until"));
    }

    #[test]
    fn trend_buckets_follow_the_window() {
        let f = Filters::parse(&q(&[("days", "30")]), NOW).unwrap();
        assert!(matches!(f.trend_interval(), Interval::Day));
        let f = Filters::parse(&q(&[("days", "90")]), NOW).unwrap();
        assert!(matches!(f.trend_interval(), Interval::Week));
    }

    #[test]
    fn windows_are_optional_and_round_trip() {
        let w = Window::parse(&q(&[]), NOW).unwrap();
        assert!(w.is_all());
        assert!(w.pairs().is_empty());
        assert_eq!(w.describe(), "all time");
        let w = Window::parse(&q(&[("days", "7"), ("since", "2020-01-01")]), NOW).unwrap();
        assert_eq!(
            w.since,
            Some(NOW - Duration::days(7)),
            "days wins over since"
        );
        assert_eq!(w.until, None);
        assert_eq!(w.pairs(), vec![("days", "7".to_owned())]);
        assert_eq!(w.describe(), "the last 7 days");
        let w = Window::parse(
            &q(&[("since", "2024-05-01"), ("until", "2024-05-03T12:00:00Z")]),
            NOW,
        )
        .unwrap();
        let again: HashMap<String, String> = w
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Window::parse(&again, NOW).unwrap(), w);
        assert_eq!(w.describe(), "2024-05-01 00:00 UTC – 2024-05-03 12:00 UTC");
        assert!(Window::parse(&q(&[("days", "-1")]), NOW)
            .unwrap_err()
            .starts_with("days"));
        assert!(Window::parse(&q(&[("until", "soon")]), NOW)
            .unwrap_err()
            .contains("until"));
        assert!(
            Window::parse(&q(&[("since", "2024-05-03"), ("until", "2024-05-01")]), NOW)
                .unwrap_err()
                .contains("before until")
        );
        let w = Window::parse(&q(&[("days", "all"), ("since", "2024-05-03")]), NOW).unwrap();
        assert!(w.is_all(), "the form's \"All time\" drops a custom window");
    }
}
