//! Jenkins, through its JSON API: jobs (folders and multibranch projects walked), builds with
//! result, timestamp, duration and change sets (`allBuilds[…]{from,to}`, paged newest first),
//! and the stages of Pipeline builds from Blue Ocean's REST API when it is installed.
//!
//! Position, per job: the highest build number examined and the builds below it that were
//! still running then. A poll reads builds down to the lowest of those, reports each build
//! once it has finished, and forgets running builds that were deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{instance_guid, instance_name, is_commit_sha, tool_error, Context, PollError};
use crate::satellite::config::Integration;

/// Builds fetched per request.
pub const PAGE: u64 = 50;
/// Deepest folder nesting walked.
const MAX_DEPTH: usize = 8;
/// Fields of a build that are read.
const BUILD_FIELDS: &str = "number,result,building,timestamp,duration,url,changeSets[items[commitId]],changeSet[items[commitId]]";

/// A Jenkins poller.
pub struct Jenkins {
    base: String,
    user: Option<String>,
    token: Option<String>,
    client: reqwest::Client,
    guid: String,
    name: String,
}

/// The saved position.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JenkinsState {
    /// Per job full name.
    pub jobs: BTreeMap<String, JobCursor>,
}

/// Position in one job.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCursor {
    /// Highest build number examined.
    pub seen: u64,
    /// Builds at or below `seen` that were running when examined.
    #[serde(default)]
    pub running: BTreeSet<u64>,
}

impl JobCursor {
    /// Builds above this number are read.
    fn floor(&self) -> u64 {
        self.running
            .first()
            .map(|r| r.saturating_sub(1))
            .unwrap_or(self.seen)
            .min(self.seen)
    }
}

#[derive(Debug, Clone)]
struct Job {
    /// `folder/job`.
    full_name: String,
    /// `job`.
    name: String,
    /// Segments, for URLs.
    segments: Vec<String>,
    /// Jenkins class.
    class: String,
    /// The branch, for a job inside a multibranch project.
    branch: Option<String>,
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

impl Job {
    /// `/job/a/job/b`.
    fn path(&self) -> String {
        self.segments
            .iter()
            .map(|s| format!("/job/{}", enc(s)))
            .collect()
    }
}

impl Jenkins {
    /// A poller for `i` (its `url` is required by the config).
    pub fn new(i: &Integration, client: reqwest::Client) -> Result<Self, String> {
        let base = i
            .url
            .clone()
            .ok_or_else(|| format!("integration {}: jenkins needs a url", i.id))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            user: i.username.clone(),
            token: i.api_key.clone(),
            client,
            guid: instance_guid(i),
            name: instance_name(i, "jenkins"),
        })
    }

    /// GETs JSON; `None` for a 404.
    async fn get(&self, url: &str) -> Result<Option<Value>, PollError> {
        let mut req = self.client.get(url);
        if let Some(user) = &self.user {
            req = req.basic_auth(user, self.token.as_deref());
        } else if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| tool_error(url, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => " (check the integration's username and api_key)",
                _ => "",
            };
            return Err(PollError::Tool(format!("{url} answered {status}{hint}")));
        }
        resp.json::<Value>()
            .await
            .map(Some)
            .map_err(|e| PollError::Tool(format!("{url}: not JSON: {e}")))
    }

    async fn jobs(&self) -> Result<Vec<Job>, PollError> {
        let mut out = Vec::new();
        // (segments, inside a multibranch project)
        let mut todo: Vec<(Vec<String>, bool)> = vec![(Vec::new(), false)];
        while let Some((segments, multibranch)) = todo.pop() {
            let path: String = segments
                .iter()
                .map(|s| format!("/job/{}", enc(s)))
                .collect();
            let url = format!("{}{path}/api/json?tree=jobs[name,_class]", self.base);
            let Some(v) = self.get(&url).await? else {
                continue;
            };
            for j in v["jobs"].as_array().into_iter().flatten() {
                let Some(name) = j["name"].as_str() else {
                    continue;
                };
                let class = j["_class"].as_str().unwrap_or_default().to_owned();
                let mut seg = segments.clone();
                seg.push(name.to_owned());
                let is_folder = class.contains("Folder") || class.contains("MultiBranch");
                if is_folder {
                    if seg.len() < MAX_DEPTH {
                        todo.push((seg, class.contains("MultiBranch")));
                    }
                    continue;
                }
                out.push(Job {
                    full_name: seg.join("/"),
                    name: name.to_owned(),
                    branch: multibranch.then(|| name.to_owned()),
                    segments: seg,
                    class,
                });
            }
        }
        out.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        Ok(out)
    }

    /// One poll: every job, every build finished since the saved position. Returns how many
    /// runs were spooled.
    pub async fn poll(&self, ctx: &Context) -> Result<usize, PollError> {
        let mut state: JenkinsState = ctx.load();
        let mut spooled = 0;
        for job in self.jobs().await? {
            let cursor = state.jobs.get(&job.full_name).cloned();
            let floor = cursor.as_ref().map_or(0, JobCursor::floor);
            let mut builds: Vec<Value> = Vec::new();
            let mut start = 0;
            loop {
                let url = format!(
                    "{}{}/api/json?tree=allBuilds[{BUILD_FIELDS}]{{{start},{}}}",
                    self.base,
                    job.path(),
                    start + PAGE
                );
                let Some(v) = self.get(&url).await? else {
                    break;
                };
                let page = v["allBuilds"]
                    .as_array()
                    .or_else(|| v["builds"].as_array())
                    .cloned()
                    .unwrap_or_default();
                let len = page.len() as u64;
                let mut below = false;
                for b in page {
                    match b["number"].as_u64() {
                        Some(n) if n > floor => builds.push(b),
                        _ => below = true,
                    }
                }
                if below || len < PAGE {
                    break;
                }
                start += PAGE;
            }
            builds.sort_by_key(|b| b["number"].as_u64().unwrap_or(0));
            let mut c = cursor.unwrap_or_default();
            let fetched: BTreeSet<u64> =
                builds.iter().filter_map(|b| b["number"].as_u64()).collect();
            for b in &builds {
                let n = b["number"].as_u64().unwrap_or(0);
                if n <= c.seen && !c.running.contains(&n) {
                    continue;
                }
                if b["building"].as_bool().unwrap_or(false) || b["result"].is_null() {
                    c.running.insert(n);
                    continue;
                }
                let run = self.run(&job, b).await?;
                ctx.enqueue(&run).await?;
                c.running.remove(&n);
                spooled += 1;
            }
            // Running builds that are gone (deleted, or discarded by the log rotator).
            c.running.retain(|n| fetched.contains(n));
            c.seen = c.seen.max(fetched.last().copied().unwrap_or(0));
            if state.jobs.get(&job.full_name) != Some(&c) {
                state.jobs.insert(job.full_name.clone(), c);
                ctx.save(&state).await?;
            }
        }
        Ok(spooled)
    }

    /// The SEI run of a finished build.
    async fn run(&self, job: &Job, b: &Value) -> Result<Value, PollError> {
        let n = b["number"].as_u64().unwrap_or(0);
        let mut shas: Vec<String> = Vec::new();
        for set in b["changeSets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .chain(std::iter::once(b["changeSet"].clone()))
        {
            for item in set["items"].as_array().into_iter().flatten() {
                if let Some(id) = item["commitId"].as_str() {
                    if is_commit_sha(id) && !shas.iter().any(|s| s == id) {
                        shas.push(id.to_owned());
                    }
                }
            }
        }
        let mut run = json!({
            "pipeline": job.name,
            "job_full_name": job.full_name,
            "qualified_name": job.full_name,
            "instance_name": self.name,
            "instance_guid": self.guid,
            "instance_url": self.base,
            "instance_type": "jenkins",
            "execution_id": format!("{}#{n}", job.full_name),
            "build_number": n,
            "start_time": b["timestamp"].as_i64().unwrap_or(0),
            "duration": b["duration"].as_i64().unwrap_or(0).max(0),
            "result": b["result"].as_str().unwrap_or("UNKNOWN"),
            "scm_commit_ids": shas,
            "ci": true,
            "cd": false,
        });
        if let Some(url) = b["url"].as_str() {
            run["web_url"] = json!(url);
        }
        if let Some(branch) = &job.branch {
            run["branch_name"] = json!(branch);
        }
        if job.class.contains("WorkflowJob") {
            let stages = self.stages(job, n).await?;
            if !stages.is_empty() {
                run["job_run"] = json!({ "stages": stages });
            }
        }
        Ok(run)
    }

    /// Stages from Blue Ocean (`…/runs/{n}/nodes/`); none when Blue Ocean is not installed.
    async fn stages(&self, job: &Job, n: u64) -> Result<Vec<Value>, PollError> {
        let pipeline: String = job
            .segments
            .iter()
            .map(|s| format!("/pipelines/{}", enc(s)))
            .collect();
        let url = format!(
            "{}/blue/rest/organizations/jenkins{pipeline}/runs/{n}/nodes/",
            self.base
        );
        let nodes = match self.get(&url).await {
            Ok(Some(Value::Array(nodes))) => nodes,
            Ok(_) => return Ok(Vec::new()),
            // Blue Ocean is optional: a failure there does not hold back the run.
            Err(e) => {
                tracing::debug!(error = %e, "no Blue Ocean stages");
                return Ok(Vec::new());
            }
        };
        Ok(nodes
            .iter()
            .filter(|n| n["type"].as_str().is_none_or(|t| t == "STAGE"))
            .filter_map(|node| {
                let name = node["displayName"].as_str()?;
                let mut s = json!({"displayName": name});
                if let Some(r) = node["result"].as_str() {
                    s["result"] = json!(r);
                }
                if let Some(st) = node["state"].as_str() {
                    s["state"] = json!(st);
                }
                if let Some(d) = node["durationInMillis"].as_i64() {
                    s["durationInMillis"] = json!(d.max(0));
                }
                if let Some(t) = node["startTime"].as_str() {
                    s["startTime"] = json!(t);
                }
                Some(s)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_below_the_oldest_running_build() {
        let c = JobCursor {
            seen: 10,
            running: [7, 9].into_iter().collect(),
        };
        assert_eq!(c.floor(), 6);
        assert_eq!(
            JobCursor {
                seen: 10,
                running: BTreeSet::new()
            }
            .floor(),
            10
        );
        assert_eq!(enc("my job/é"), "my%20job%2F%C3%A9");
    }
}
