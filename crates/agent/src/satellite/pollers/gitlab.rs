//! GitLab, through the REST API v4: projects (`metadata.projects`, else every project the
//! token is a member of), pipelines updated since the saved position
//! (`/projects/:id/pipelines?updated_after=…&order_by=updated_at&sort=asc`, paged with
//! `X-Next-Page`), each finished pipeline with its details and jobs (stages and their jobs as
//! steps). Header `PRIVATE-TOKEN`.
//!
//! Position, per project: the newest `updated_at` examined and the pipelines examined at
//! exactly that instant (so a repeated boundary is not reported twice, whether GitLab's
//! `updated_after` includes it or not). A pipeline still running is passed over; when it
//! finishes its `updated_at` moves past the position and it comes back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{instance_guid, instance_name, is_commit_sha, tool_error, Context, PollError};
use crate::satellite::config::Integration;

/// Items per page.
pub const PER_PAGE: u32 = 100;
/// Most pages read per listing in one poll (the rest comes next poll).
const MAX_PAGES: u32 = 100;
/// Statuses of a finished pipeline.
const FINISHED: &[&str] = &["success", "failed", "canceled", "skipped"];

/// A GitLab poller.
pub struct Gitlab {
    base: String,
    token: String,
    client: reqwest::Client,
    guid: String,
    name: String,
    projects: Option<Vec<String>>,
}

/// The saved position.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitlabState {
    /// Per project id.
    pub projects: BTreeMap<String, ProjectCursor>,
}

/// Position in one project.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectCursor {
    /// `updated_at` of the newest pipeline examined, as GitLab wrote it.
    pub updated_after: Option<String>,
    /// Pipelines examined with exactly that `updated_at`.
    #[serde(default)]
    pub at_cursor: BTreeSet<u64>,
}

struct Project {
    id: String,
    path: String,
    name: String,
    web_url: Option<String>,
}

fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    v.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Gitlab {
    /// A poller for `i` (its `url` and `api_key` are required by the config).
    pub fn new(i: &Integration, client: reqwest::Client) -> Result<Self, String> {
        let base = i
            .url
            .clone()
            .ok_or_else(|| format!("integration {}: gitlab needs a url", i.id))?;
        let token = i
            .api_key
            .clone()
            .ok_or_else(|| format!("integration {}: gitlab needs an api_key", i.id))?;
        let projects = i
            .metadata
            .get("projects")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| match p {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect()
            });
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
            guid: instance_guid(i),
            name: instance_name(i, "gitlab"),
            projects,
        })
    }

    /// GETs JSON and the next page number (`X-Next-Page`).
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(Value, Option<u32>), PollError> {
        let url = format!("{}/api/v4{path}", self.base);
        let resp = self
            .client
            .get(&url)
            .header("PRIVATE-TOKEN", &self.token)
            .query(query)
            .send()
            .await
            .map_err(|e| tool_error(&url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => " (check the integration's api_key: a token with read_api)",
                404 => " (no such project, or the token cannot see it)",
                _ => "",
            };
            return Err(PollError::Tool(format!("{url} answered {status}{hint}")));
        }
        let next = resp
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let v = resp
            .json::<Value>()
            .await
            .map_err(|e| PollError::Tool(format!("{url}: not JSON: {e}")))?;
        Ok((v, next))
    }

    /// Every page of a listing.
    async fn all(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>, PollError> {
        let mut out = Vec::new();
        let mut page = 1;
        for _ in 0..MAX_PAGES {
            let mut q = query.to_vec();
            q.push(("per_page", PER_PAGE.to_string()));
            q.push(("page", page.to_string()));
            let (v, next) = self.get(path, &q).await?;
            out.extend(v.as_array().cloned().unwrap_or_default());
            match next {
                Some(n) if n > page => page = n,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn projects(&self) -> Result<Vec<Project>, PollError> {
        let listed = match &self.projects {
            Some(wanted) => {
                let mut v = Vec::new();
                for p in wanted {
                    v.push(self.get(&format!("/projects/{}", enc(p)), &[]).await?.0);
                }
                v
            }
            None => {
                self.all(
                    "/projects",
                    &[
                        ("membership", "true".into()),
                        ("simple", "true".into()),
                        ("order_by", "id".into()),
                        ("sort", "asc".into()),
                    ],
                )
                .await?
            }
        };
        Ok(listed
            .iter()
            .filter_map(|p| {
                let id = p["id"].as_u64()?.to_string();
                let path = p["path_with_namespace"].as_str().unwrap_or(&id).to_owned();
                Some(Project {
                    name: p["name"].as_str().unwrap_or(&path).to_owned(),
                    web_url: p["web_url"].as_str().map(str::to_owned),
                    id,
                    path,
                })
            })
            .collect())
    }

    /// One poll: every project, every pipeline finished since the saved position. Returns how
    /// many runs were spooled.
    pub async fn poll(&self, ctx: &Context) -> Result<usize, PollError> {
        let mut state: GitlabState = ctx.load();
        let mut spooled = 0;
        for project in self.projects().await? {
            let cursor = state.projects.get(&project.id).cloned().unwrap_or_default();
            let mut query = vec![
                ("order_by", "updated_at".to_owned()),
                ("sort", "asc".to_owned()),
            ];
            if let Some(after) = &cursor.updated_after {
                query.push(("updated_after", after.clone()));
            }
            let pipelines = self
                .all(&format!("/projects/{}/pipelines", project.id), &query)
                .await?;
            let cursor_at = cursor
                .updated_after
                .as_ref()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
            let mut next = cursor.clone();
            let mut next_at = cursor_at;
            for p in &pipelines {
                let (Some(id), Some(updated)) = (p["id"].as_u64(), parse_time(&p["updated_at"]))
                else {
                    continue;
                };
                if let Some(c) = cursor_at {
                    if updated < c || (updated == c && cursor.at_cursor.contains(&id)) {
                        continue;
                    }
                }
                let status = p["status"].as_str().unwrap_or_default();
                if FINISHED.contains(&status) {
                    let run = self.run(&project, id).await?;
                    ctx.enqueue(&run).await?;
                    spooled += 1;
                }
                // Examined: moves the position (a running one comes back when it finishes,
                // its updated_at then later than this).
                match next_at {
                    Some(t) if updated < t => {}
                    Some(t) if updated == t => {
                        next.at_cursor.insert(id);
                    }
                    _ => {
                        next_at = Some(updated);
                        next.updated_after = p["updated_at"].as_str().map(str::to_owned);
                        next.at_cursor = [id].into_iter().collect();
                    }
                }
            }
            if next != cursor {
                state.projects.insert(project.id.clone(), next);
                ctx.save(&state).await?;
            }
        }
        Ok(spooled)
    }

    /// The SEI run of a finished pipeline, with its jobs grouped by stage.
    async fn run(&self, project: &Project, id: u64) -> Result<Value, PollError> {
        let (p, _) = self
            .get(&format!("/projects/{}/pipelines/{id}", project.id), &[])
            .await?;
        let mut jobs = self
            .all(
                &format!("/projects/{}/pipelines/{id}/jobs", project.id),
                &[],
            )
            .await?;
        jobs.sort_by_key(|j| j["id"].as_u64().unwrap_or(0));
        let started = parse_time(&p["started_at"]).or_else(|| parse_time(&p["created_at"]));
        let finished = parse_time(&p["finished_at"]).or_else(|| parse_time(&p["updated_at"]));
        let duration_ms = match (p["duration"].as_f64(), started, finished) {
            (Some(d), _, _) => (d * 1000.0) as i64,
            (None, Some(s), Some(f)) => ms(f) - ms(s),
            _ => 0,
        }
        .max(0);
        let mut run = json!({
            "pipeline": project.name,
            "job_full_name": project.path,
            "qualified_name": project.path,
            "instance_name": self.name,
            "instance_guid": self.guid,
            "instance_url": self.base,
            "instance_type": "gitlab",
            "execution_id": format!("pipeline-{id}"),
            "build_number": p["iid"].as_u64().unwrap_or(id),
            "start_time": started.map(ms).unwrap_or(0),
            "duration": duration_ms,
            "result": p["status"].as_str().unwrap_or("unknown"),
            "ci": true,
            "cd": false,
        });
        if let Some(r) = p["ref"].as_str() {
            run["branch_name"] = json!(r);
        }
        if let Some(sha) = p["sha"].as_str().filter(|s| is_commit_sha(s)) {
            run["scm_commit_ids"] = json!([sha]);
        }
        if let Some(u) = p["web_url"].as_str() {
            run["web_url"] = json!(u);
        }
        if let Some(u) = p["user"]["username"].as_str() {
            run["user_id"] = json!(u);
        }
        if let Some(u) = &project.web_url {
            run["repo_url"] = json!(u);
        }
        let stages = stages(&jobs);
        if !stages.is_empty() {
            run["job_run"] = json!({ "stages": stages });
        }
        Ok(run)
    }
}

/// Jobs grouped by stage, in the order stages first appear; each stage's result is its worst
/// job's (a failure allowed to fail does not fail the stage).
fn stages(jobs: &[Value]) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut by_stage: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for j in jobs {
        let stage = j["stage"].as_str().unwrap_or("test").to_owned();
        if !by_stage.contains_key(&stage) {
            order.push(stage.clone());
        }
        by_stage.entry(stage).or_default().push(j);
    }
    order
        .iter()
        .map(|name| {
            let js = &by_stage[name];
            let status = |j: &&Value| j["status"].as_str().unwrap_or_default().to_owned();
            let counts = |s: &str| {
                js.iter()
                    .filter(|j| status(j) == s && !(s == "failed" && j["allow_failure"] == true))
                    .count()
            };
            let result = if counts("failed") > 0 {
                "failed"
            } else if counts("canceled") > 0 {
                "canceled"
            } else if js.iter().all(|j| status(j) == "skipped") {
                "skipped"
            } else {
                "success"
            };
            let start = js.iter().filter_map(|j| parse_time(&j["started_at"])).min();
            let end = js
                .iter()
                .filter_map(|j| parse_time(&j["finished_at"]))
                .max();
            let steps: Vec<Value> = js
                .iter()
                .map(|j| {
                    let mut s = json!({
                        "displayName": j["name"].as_str().unwrap_or("job"),
                        "result": status(j),
                    });
                    if let Some(d) = j["duration"].as_f64() {
                        s["durationInMillis"] = json!((d * 1000.0).max(0.0) as i64);
                    }
                    if let Some(t) = j["started_at"].as_str() {
                        s["startTime"] = json!(t);
                    }
                    if let Some(u) = j["web_url"].as_str() {
                        s["url"] = json!(u);
                    }
                    s
                })
                .collect();
            let mut stage = json!({"displayName": name, "result": result, "steps": steps});
            if let Some(s) = start {
                stage["startTime"] = json!(s.format(&Rfc3339).unwrap_or_default());
                if let Some(e) = end {
                    stage["durationInMillis"] = json!((ms(e) - ms(s)).max(0));
                }
            }
            stage
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_group_into_stages_with_the_worst_result() {
        let jobs = vec![
            json!({"id": 1, "name": "build", "stage": "build", "status": "success",
                   "started_at": "2024-03-28T05:00:00Z", "finished_at": "2024-03-28T05:01:00Z", "duration": 60.0}),
            json!({"id": 2, "name": "unit", "stage": "test", "status": "success",
                   "started_at": "2024-03-28T05:01:00Z", "finished_at": "2024-03-28T05:02:00Z", "duration": 60.0}),
            json!({"id": 3, "name": "lint", "stage": "test", "status": "failed", "allow_failure": true,
                   "started_at": "2024-03-28T05:01:00Z", "finished_at": "2024-03-28T05:03:00Z", "duration": 120.0}),
            json!({"id": 4, "name": "e2e", "stage": "test", "status": "failed",
                   "started_at": "2024-03-28T05:01:00Z", "finished_at": "2024-03-28T05:04:00Z", "duration": 180.0}),
        ];
        let s = stages(&jobs);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0]["displayName"], "build");
        assert_eq!(s[0]["result"], "success");
        assert_eq!(s[0]["durationInMillis"], 60_000);
        assert_eq!(s[1]["result"], "failed");
        assert_eq!(s[1]["steps"].as_array().unwrap().len(), 3);
        assert_eq!(s[1]["durationInMillis"], 180_000);
        assert_eq!(enc("group/app"), "group%2Fapp");
    }
}
