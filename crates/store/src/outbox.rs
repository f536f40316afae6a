//! The rules of the transactional outbox, shared by both backends: which events a run write
//! causes, which subscriptions an event matches, and the snapshot a message keeps. The writers
//! apply them inside the transaction that writes the run, so an acknowledged run always has its
//! notifications queued.

use cistern_core::glob::Glob;
use cistern_core::{IncidentReport, RunResult};

use crate::{EventType, Subscription};

/// What the outbox needs to know about a run just written.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// The run's id.
    pub run_id: String,
    /// True when the write created the run.
    pub created: bool,
    /// The result stored before this write (`None` for a new run).
    pub previous: Option<RunResult>,
    /// The result after it.
    pub result: RunResult,
    /// A deployment.
    pub cd: bool,
    /// Pipeline full name.
    pub pipeline_full_name: String,
    /// Pipeline display name.
    pub pipeline_name: String,
    /// Project.
    pub project: Option<String>,
    /// Branch.
    pub branch: Option<String>,
}

/// The events a run write causes: `run.started` for a run created queued or running;
/// `run.completed` (and `deployment.completed` for a CD run) when the run reaches a finished
/// result it did not have before — so a repeated report that changes nothing notifies nobody.
pub fn run_events(f: &RunFacts) -> Vec<EventType> {
    let mut out = Vec::new();
    if !f.result.is_finished() {
        if f.created {
            out.push(EventType::RunStarted);
        }
        return out;
    }
    let newly_finished = match f.previous {
        None => true,
        Some(prev) => !prev.is_finished() || prev != f.result,
    };
    if newly_finished {
        out.push(EventType::RunCompleted);
        if f.cd {
            out.push(EventType::DeploymentCompleted);
        }
    }
    out
}

fn glob_matches(glob: &str, candidates: &[Option<&str>]) -> bool {
    // Globs are checked when a subscription is saved; one that no longer parses matches nothing.
    let Ok(g) = Glob::parse(glob) else {
        return false;
    };
    candidates.iter().flatten().any(|c| g.matches(c))
}

/// True when a run event goes to `sub`: the event is subscribed, and every filter the
/// subscription sets holds (failures only; pipeline glob on the full name or the name; branch
/// glob; project).
pub fn run_matches(sub: &Subscription, event: EventType, f: &RunFacts) -> bool {
    if !sub.enabled || !sub.events.contains(&event) {
        return false;
    }
    if sub.only_failures
        && !(matches!(
            event,
            EventType::RunCompleted | EventType::DeploymentCompleted
        ) && f.result.is_failed())
    {
        return false;
    }
    if let Some(g) = &sub.pipeline {
        if !glob_matches(g, &[Some(&f.pipeline_full_name), Some(&f.pipeline_name)]) {
            return false;
        }
    }
    if let Some(g) = &sub.branch {
        if !glob_matches(g, &[f.branch.as_deref()]) {
            return false;
        }
    }
    if let Some(p) = &sub.project {
        if f.project.as_deref() != Some(p.as_str()) {
            return false;
        }
    }
    true
}

/// True when an opened incident goes to `sub`. An incident counts as a failure; the pipeline
/// glob applies to the incident's service; an incident has no branch or project, so a
/// subscription filtering on either does not receive incidents.
pub fn incident_matches(sub: &Subscription, inc: &IncidentReport) -> bool {
    if !sub.enabled || !sub.events.contains(&EventType::IncidentOpened) {
        return false;
    }
    if sub.branch.is_some() || sub.project.is_some() {
        return false;
    }
    match &sub.pipeline {
        Some(g) => glob_matches(g, &[inc.service.as_deref()]),
        None => true,
    }
}

/// The snapshot of a run kept with its message: the run as the API shows it, without logs
/// (they can be large; receivers fetch `GET /api/v1/runs/{id}` for them).
pub fn run_snapshot(mut run: cistern_core::Run) -> String {
    run.log = None;
    for stage in &mut run.stages {
        stage.log = None;
        for step in &mut stage.steps {
            step.log = None;
        }
    }
    serde_json::to_string(&run).unwrap_or_else(|_| "{}".into())
}

/// The snapshot of an incident kept with its message.
pub fn incident_snapshot(inc: &IncidentReport) -> String {
    let rfc = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    serde_json::json!({
        "id": inc.id,
        "source": inc.source,
        "service": inc.service,
        "environment": inc.environment,
        "detected_at": rfc(inc.detected_at),
        "resolved_at": rfc(inc.resolved_at),
        "description": inc.description,
        "url": inc.url,
    })
    .to_string()
}

/// Puts the subscriptions with due work in a random rotation, so that when a claim is full, the
/// same subscriptions do not always come first.
pub fn fair_order<T>(v: &mut [T]) {
    if v.len() > 1 {
        let k = (uuid::Uuid::new_v4().as_u128() % v.len() as u128) as usize;
        v.rotate_left(k);
    }
}

/// A subscription's headers as the text of their column (a JSON list of `{name, value}`).
pub fn headers_text(headers: &[crate::TargetHeader]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

/// Reads a column of headers (unreadable text reads as none).
pub fn headers_from_text(s: &str) -> Vec<crate::TargetHeader> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Joins event types for a column.
pub fn events_text(events: &[EventType]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a column of joined event types (unknown words are skipped).
pub fn events_from_text(s: &str) -> Vec<EventType> {
    s.split(',').filter_map(EventType::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeliveryFormat;

    fn facts(created: bool, previous: Option<RunResult>, result: RunResult, cd: bool) -> RunFacts {
        RunFacts {
            run_id: "r".into(),
            created,
            previous,
            result,
            cd,
            pipeline_full_name: "team/deploy-api".into(),
            pipeline_name: "deploy-api".into(),
            project: Some("Platform".into()),
            branch: Some("main".into()),
        }
    }

    fn sub() -> Subscription {
        Subscription {
            id: "s".into(),
            tenant_id: "t".into(),
            url: "http://x".into(),
            secret_name: "k".into(),
            format: DeliveryFormat::Native,
            headers: Vec::new(),
            events: crate::ALL_EVENT_TYPES.to_vec(),
            only_failures: false,
            pipeline: None,
            branch: None,
            project: None,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            failing_since: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn events_of_a_run_write() {
        use EventType::*;
        use RunResult::*;
        assert_eq!(
            run_events(&facts(true, None, Running, false)),
            vec![RunStarted]
        );
        assert_eq!(
            run_events(&facts(true, None, Queued, false)),
            vec![RunStarted]
        );
        assert_eq!(
            run_events(&facts(false, Some(Queued), Running, false)),
            vec![]
        );
        assert_eq!(
            run_events(&facts(true, None, Success, false)),
            vec![RunCompleted]
        );
        assert_eq!(
            run_events(&facts(false, Some(Running), Failure, true)),
            vec![RunCompleted, DeploymentCompleted]
        );
        assert_eq!(
            run_events(&facts(false, Some(Success), Success, true)),
            vec![]
        );
        assert_eq!(
            run_events(&facts(false, Some(Failure), Success, false)),
            vec![RunCompleted],
            "a rerun that changes the result is news"
        );
    }

    #[test]
    fn filters() {
        let f = facts(true, None, RunResult::Failure, false);
        let ok = facts(true, None, RunResult::Success, false);
        let mut s = sub();
        assert!(run_matches(&s, EventType::RunCompleted, &f));
        s.only_failures = true;
        assert!(run_matches(&s, EventType::RunCompleted, &f));
        assert!(!run_matches(&s, EventType::RunCompleted, &ok));
        assert!(!run_matches(&s, EventType::RunStarted, &f));
        s.only_failures = false;
        s.pipeline = Some("deploy-*".into());
        assert!(run_matches(&s, EventType::RunCompleted, &f), "name");
        s.pipeline = Some("team/*".into());
        assert!(run_matches(&s, EventType::RunCompleted, &f), "full name");
        s.pipeline = Some("build-*".into());
        assert!(!run_matches(&s, EventType::RunCompleted, &f));
        s.pipeline = None;
        s.branch = Some("release/*".into());
        assert!(!run_matches(&s, EventType::RunCompleted, &f));
        s.branch = Some("ma?n".into());
        assert!(run_matches(&s, EventType::RunCompleted, &f));
        s.project = Some("Other".into());
        assert!(!run_matches(&s, EventType::RunCompleted, &f));
        s.project = Some("Platform".into());
        assert!(run_matches(&s, EventType::RunCompleted, &f));
        s.events = vec![EventType::RunStarted];
        assert!(!run_matches(&s, EventType::RunCompleted, &f));
        let mut d = sub();
        d.enabled = false;
        assert!(!run_matches(&d, EventType::RunCompleted, &f));
    }

    #[test]
    fn incident_filters() {
        let inc = IncidentReport {
            id: "i".into(),
            source: "/mon".into(),
            service: Some("api".into()),
            environment: None,
            detected_at: None,
            resolved_at: None,
            description: None,
            url: None,
        };
        let mut s = sub();
        s.only_failures = true;
        assert!(incident_matches(&s, &inc));
        s.pipeline = Some("a*".into());
        assert!(incident_matches(&s, &inc));
        s.pipeline = Some("b*".into());
        assert!(!incident_matches(&s, &inc));
        s.pipeline = None;
        s.branch = Some("main".into());
        assert!(!incident_matches(&s, &inc));
    }
}
