//! Which CI runs us, and what it tells about the run: read from its environment variables.
//!
//! Each CI has one function below that maps its variables onto [`CiContext`]; the generic
//! `CISTERN_*` variables then override whatever was detected. The mapping is documented per CI in
//! the README ("Report runs from any CI"); keep the two in step.

use sha2::{Digest, Sha256};

/// The CI systems the reporter recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiKind {
    /// GitHub Actions (`GITHUB_ACTIONS=true`).
    GithubActions,
    /// GitLab CI (`GITLAB_CI=true`).
    GitlabCi,
    /// Jenkins (`JENKINS_URL` set).
    Jenkins,
    /// Azure Pipelines (`TF_BUILD=True`).
    AzurePipelines,
    /// Buildkite (`BUILDKITE=true`).
    Buildkite,
    /// CircleCI (`CIRCLECI=true`).
    Circleci,
    /// Anything else: a cron script, a laptop, a CI not listed. `CISTERN_*` variables describe it.
    Generic,
}

impl CiKind {
    /// The name used as the instance name and in execution ids.
    pub fn as_str(self) -> &'static str {
        match self {
            CiKind::GithubActions => "github-actions",
            CiKind::GitlabCi => "gitlab-ci",
            CiKind::Jenkins => "jenkins",
            CiKind::AzurePipelines => "azure-pipelines",
            CiKind::Buildkite => "buildkite",
            CiKind::Circleci => "circleci",
            CiKind::Generic => "generic",
        }
    }
}

/// What the environment says about the current run. Every field is optional: a CI that does not
/// tell something leaves it out of the report rather than guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiContext {
    /// The CI system.
    pub kind: CiKind,
    /// The CI server's base URL (identifies the instance).
    pub server_url: Option<String>,
    /// The pipeline's display name (`--pipeline` and `CISTERN_PIPELINE` override it).
    pub pipeline: Option<String>,
    /// The pipeline's unique full name (repository-qualified where the CI has repositories).
    pub full_name: Option<String>,
    /// The CI's id of this run (workflow run, pipeline, build).
    pub run_id: Option<String>,
    /// Which attempt of the run this is, when the CI re-runs under the same id.
    pub attempt: Option<String>,
    /// The job within the run, so that several reporting jobs of one run stay apart.
    pub job: Option<String>,
    /// The run's number, when the CI numbers runs.
    pub build_number: Option<i64>,
    /// Branch (or tag) built.
    pub branch: Option<String>,
    /// Commit SHA built.
    pub commit: Option<String>,
    /// Repository URL (credentials removed).
    pub repo_url: Option<String>,
    /// Link to the run's page.
    pub run_url: Option<String>,
    /// Who or what triggered the run.
    pub triggered_by: Option<String>,
    /// The CI's own name for the current stage or job, the default stage of `report step`.
    pub stage: Option<String>,
    /// The job's status as the CI tells it late in a job (GitLab `after_script`, Azure), used by
    /// `report end` when no `--result` is given.
    pub job_status: Option<String>,
    /// An execution id given verbatim (`CISTERN_EXECUTION_ID`).
    pub execution_id: Option<String>,
    /// `CISTERN_CD`: the run is a deployment.
    pub cd: bool,
    /// `CISTERN_ENVIRONMENT`: the deployment's target environment.
    pub environment: Option<String>,
}

impl CiContext {
    fn new(kind: CiKind) -> Self {
        Self {
            kind,
            server_url: None,
            pipeline: None,
            full_name: None,
            run_id: None,
            attempt: None,
            job: None,
            build_number: None,
            branch: None,
            commit: None,
            repo_url: None,
            run_url: None,
            triggered_by: None,
            stage: None,
            job_status: None,
            execution_id: None,
            cd: false,
            environment: None,
        }
    }

    /// The execution id that identifies this run at the hub: `CISTERN_EXECUTION_ID`, else
    /// `<ci>-<run id>[-<attempt>][-<job>]`. `None` when the CI gives no run id (the caller then
    /// makes a random one, which the spool and the state file keep stable across retries).
    pub fn execution_id(&self) -> Option<String> {
        if let Some(id) = &self.execution_id {
            return Some(id.clone());
        }
        let run = self.run_id.as_deref()?;
        let mut id = format!("{}-{run}", self.kind.as_str());
        for part in [&self.attempt, &self.job].into_iter().flatten() {
            id.push('-');
            id.push_str(part);
        }
        Some(id)
    }

    /// A GUID for the CI instance, the same on every run of the same CI server: derived from the
    /// CI kind and its server URL, so no registration step is needed.
    pub fn instance_guid(&self) -> String {
        derive_guid(self.kind.as_str(), self.server_url.as_deref().unwrap_or(""))
    }
}

/// A UUID (version 8, "custom") from the SHA-256 of the CI kind and its URL. The URL is
/// normalized (case, trailing `/`) so `https://Jenkins.acme/` and `https://jenkins.acme` agree.
pub fn derive_guid(kind: &str, url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    let digest = Sha256::digest(format!("cistern-instance\n{kind}\n{url}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Reads the process environment (empty values count as unset).
pub fn detect() -> CiContext {
    detect_with(&|name| std::env::var(name).ok())
}

/// Reads the environment through `get`, so tests can hand in a map.
pub fn detect_with(get: &dyn Fn(&str) -> Option<String>) -> CiContext {
    let v = Vars(get);
    let mut ctx = if v.is_true("GITHUB_ACTIONS") {
        github(&v)
    } else if v.is_true("GITLAB_CI") {
        gitlab(&v)
    } else if v.is_true("TF_BUILD") {
        azure(&v)
    } else if v.is_true("BUILDKITE") {
        buildkite(&v)
    } else if v.is_true("CIRCLECI") {
        circleci(&v)
    } else if v.get("JENKINS_URL").is_some() || v.get("JENKINS_HOME").is_some() {
        jenkins(&v)
    } else {
        CiContext::new(CiKind::Generic)
    };
    overrides(&v, &mut ctx);
    ctx.repo_url = ctx.repo_url.map(|u| strip_credentials(&u));
    ctx.commit = ctx.commit.filter(|c| is_commit_sha(c));
    ctx
}

struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn any(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.get(n))
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|s| matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
    }

    fn number(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|s| s.parse().ok())
    }
}

fn github(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::GithubActions);
    let server = v
        .get("GITHUB_SERVER_URL")
        .unwrap_or_else(|| "https://github.com".into());
    let repo = v.get("GITHUB_REPOSITORY");
    c.pipeline = v.get("GITHUB_WORKFLOW");
    c.full_name = qualified(repo.as_deref(), c.pipeline.as_deref());
    c.run_id = v.get("GITHUB_RUN_ID");
    c.attempt = v.get("GITHUB_RUN_ATTEMPT");
    c.job = v.get("GITHUB_JOB");
    c.build_number = v.number("GITHUB_RUN_NUMBER");
    // On pull requests GITHUB_REF_NAME is `<n>/merge`; the head branch is what people look for.
    c.branch = v.any(&["GITHUB_HEAD_REF", "GITHUB_REF_NAME"]);
    c.commit = v.get("GITHUB_SHA");
    if let Some(repo) = &repo {
        c.repo_url = Some(format!("{}/{repo}", server.trim_end_matches('/')));
        c.run_url = c
            .run_id
            .as_ref()
            .map(|id| format!("{}/{repo}/actions/runs/{id}", server.trim_end_matches('/')));
    }
    c.triggered_by = v.any(&["GITHUB_TRIGGERING_ACTOR", "GITHUB_ACTOR"]);
    c.stage = v.get("GITHUB_JOB");
    c.server_url = Some(server);
    c
}

fn gitlab(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::GitlabCi);
    c.server_url = v.get("CI_SERVER_URL");
    let path = v.get("CI_PROJECT_PATH");
    c.pipeline = v.get("CI_PROJECT_NAME").or_else(|| path.clone());
    c.full_name = path;
    c.run_id = v.get("CI_PIPELINE_ID");
    // A retried GitLab job gets a new job id, so the job id is also the attempt.
    c.job = v.get("CI_JOB_ID");
    c.build_number = v.number("CI_PIPELINE_IID");
    c.branch = v.any(&["CI_COMMIT_REF_NAME", "CI_COMMIT_BRANCH", "CI_COMMIT_TAG"]);
    c.commit = v.get("CI_COMMIT_SHA");
    c.repo_url = v.get("CI_PROJECT_URL");
    c.run_url = v.any(&["CI_PIPELINE_URL", "CI_JOB_URL"]);
    c.triggered_by = v.any(&["GITLAB_USER_LOGIN", "GITLAB_USER_EMAIL"]);
    c.stage = v.get("CI_JOB_STAGE");
    c.job_status = v.get("CI_JOB_STATUS");
    c
}

fn jenkins(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::Jenkins);
    c.server_url = v.get("JENKINS_URL");
    c.pipeline = v.get("JOB_NAME");
    c.full_name = c.pipeline.clone();
    c.run_id = v.any(&["BUILD_NUMBER", "BUILD_ID"]);
    c.build_number = v.number("BUILD_NUMBER");
    c.branch = v
        .any(&["BRANCH_NAME", "GIT_BRANCH", "GIT_LOCAL_BRANCH"])
        .map(|b| short_branch(&b, true));
    c.commit = v.get("GIT_COMMIT");
    c.repo_url = v.get("GIT_URL");
    c.run_url = v.get("BUILD_URL");
    // Jenkins names the user only with the build-user-vars plugin; pull requests name their author.
    c.triggered_by = v.any(&["BUILD_USER_ID", "BUILD_USER", "CHANGE_AUTHOR"]);
    c.stage = v.get("STAGE_NAME");
    c
}

fn azure(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::AzurePipelines);
    c.server_url = v.get("SYSTEM_COLLECTIONURI");
    let project = v.get("SYSTEM_TEAMPROJECT");
    c.pipeline = v.get("BUILD_DEFINITIONNAME");
    c.full_name = qualified(project.as_deref(), c.pipeline.as_deref());
    c.run_id = v.get("BUILD_BUILDID");
    c.attempt = v.get("SYSTEM_JOBATTEMPT");
    c.job = v.get("SYSTEM_JOBNAME");
    // BUILD_BUILDNUMBER is often a date like 20240328.1; the numeric build id stands in then.
    c.build_number = v.number("BUILD_BUILDNUMBER").or(v.number("BUILD_BUILDID"));
    c.branch = v
        .any(&[
            "SYSTEM_PULLREQUEST_SOURCEBRANCH",
            "BUILD_SOURCEBRANCH",
            "BUILD_SOURCEBRANCHNAME",
        ])
        .map(|b| short_branch(&b, false));
    c.commit = v.get("BUILD_SOURCEVERSION");
    c.repo_url = v.get("BUILD_REPOSITORY_URI");
    c.run_url = match (&c.server_url, &project, &c.run_id) {
        (Some(s), Some(p), Some(id)) => Some(format!(
            "{}/{p}/_build/results?buildId={id}",
            s.trim_end_matches('/')
        )),
        _ => None,
    };
    c.triggered_by = v.any(&["BUILD_REQUESTEDFOR", "BUILD_REQUESTEDFOREMAIL"]);
    c.stage = v.any(&["SYSTEM_STAGEDISPLAYNAME", "SYSTEM_JOBDISPLAYNAME"]);
    c.job_status = v.get("AGENT_JOBSTATUS");
    c
}

fn buildkite(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::Buildkite);
    let org = v.get("BUILDKITE_ORGANIZATION_SLUG");
    c.server_url = Some(match &org {
        Some(o) => format!("https://buildkite.com/{o}"),
        None => "https://buildkite.com".into(),
    });
    let slug = v.get("BUILDKITE_PIPELINE_SLUG");
    c.pipeline = v.get("BUILDKITE_PIPELINE_NAME").or_else(|| slug.clone());
    c.full_name = qualified(org.as_deref(), slug.as_deref());
    c.run_id = v.get("BUILDKITE_BUILD_ID");
    // A retried Buildkite job gets a new job id.
    c.job = v.get("BUILDKITE_JOB_ID");
    c.build_number = v.number("BUILDKITE_BUILD_NUMBER");
    c.branch = v.any(&["BUILDKITE_BRANCH", "BUILDKITE_TAG"]);
    c.commit = v.get("BUILDKITE_COMMIT");
    c.repo_url = v.get("BUILDKITE_REPO");
    c.run_url = v.get("BUILDKITE_BUILD_URL");
    c.triggered_by = v.any(&["BUILDKITE_BUILD_CREATOR", "BUILDKITE_BUILD_CREATOR_EMAIL"]);
    c.stage = v.any(&["BUILDKITE_LABEL", "BUILDKITE_STEP_KEY"]);
    c
}

fn circleci(v: &Vars<'_>) -> CiContext {
    let mut c = CiContext::new(CiKind::Circleci);
    c.server_url = Some("https://circleci.com".into());
    let user = v.get("CIRCLE_PROJECT_USERNAME");
    c.pipeline = v.get("CIRCLE_PROJECT_REPONAME");
    c.full_name = qualified(user.as_deref(), c.pipeline.as_deref());
    c.run_id = v.get("CIRCLE_WORKFLOW_ID");
    c.job = v.get("CIRCLE_JOB");
    c.build_number = v.number("CIRCLE_BUILD_NUM");
    c.branch = v.any(&["CIRCLE_BRANCH", "CIRCLE_TAG"]);
    c.commit = v.get("CIRCLE_SHA1");
    c.repo_url = v.get("CIRCLE_REPOSITORY_URL");
    c.run_url = v.get("CIRCLE_BUILD_URL");
    c.triggered_by = v.get("CIRCLE_USERNAME");
    c.stage = v.get("CIRCLE_JOB");
    c
}

/// `CISTERN_*` variables win over what the CI said.
fn overrides(v: &Vars<'_>, c: &mut CiContext) {
    if let Some(p) = v.get("CISTERN_PIPELINE") {
        c.pipeline = Some(p.clone());
        c.full_name = Some(p);
    }
    let set = |slot: &mut Option<String>, name: &str| {
        if let Some(x) = v.get(name) {
            *slot = Some(x);
        }
    };
    set(&mut c.run_id, "CISTERN_RUN_ID");
    set(&mut c.attempt, "CISTERN_RUN_ATTEMPT");
    set(&mut c.job, "CISTERN_JOB");
    set(&mut c.branch, "CISTERN_BRANCH");
    set(&mut c.commit, "CISTERN_COMMIT");
    set(&mut c.repo_url, "CISTERN_REPO_URL");
    set(&mut c.run_url, "CISTERN_RUN_URL");
    set(&mut c.triggered_by, "CISTERN_TRIGGERED_BY");
    set(&mut c.stage, "CISTERN_STAGE");
    set(&mut c.execution_id, "CISTERN_EXECUTION_ID");
    set(&mut c.environment, "CISTERN_ENVIRONMENT");
    set(&mut c.server_url, "CISTERN_INSTANCE_URL");
    if let Some(n) = v.number("CISTERN_BUILD_NUMBER") {
        c.build_number = Some(n);
    }
    if v.is_true("CISTERN_CD") {
        c.cd = true;
    }
}

fn qualified(owner: Option<&str>, name: Option<&str>) -> Option<String> {
    match (owner, name) {
        (Some(o), Some(n)) => Some(format!("{o}/{n}")),
        (None, Some(n)) => Some(n.to_owned()),
        _ => None,
    }
}

/// `refs/heads/main` → `main`; with `remote`, also Jenkins' `origin/main` → `main`.
fn short_branch(b: &str, remote: bool) -> String {
    for prefix in ["refs/heads/", "refs/tags/"] {
        if let Some(rest) = b.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
    if remote {
        if let Some(rest) = b.strip_prefix("origin/") {
            return rest.to_owned();
        }
    }
    b.to_owned()
}

/// Removes `user:token@` from an http(s) URL: CI checkouts sometimes embed a token there.
pub fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_owned(),
    }
}

/// A commit id worth sending: 7 to 64 hexadecimal characters (some CIs put `HEAD` there).
fn is_commit_sha(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ctx(vars: &[(&str, &str)]) -> CiContext {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        detect_with(&move |k| map.get(k).cloned())
    }

    const SHA: &str = "6ce2cfec186fbf9ae9429ad22e32e7770f1eb1fb";

    #[test]
    fn github_actions() {
        let c = ctx(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_WORKFLOW", "CI"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_RUN_ID", "9876"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_RUN_NUMBER", "41"),
            ("GITHUB_JOB", "test"),
            ("GITHUB_REF_NAME", "17/merge"),
            ("GITHUB_HEAD_REF", "feature/x"),
            ("GITHUB_SHA", SHA),
            ("GITHUB_ACTOR", "octocat"),
        ]);
        assert_eq!(c.kind, CiKind::GithubActions);
        assert_eq!(c.pipeline.as_deref(), Some("CI"));
        assert_eq!(c.full_name.as_deref(), Some("acme/app/CI"));
        assert_eq!(c.build_number, Some(41));
        assert_eq!(c.branch.as_deref(), Some("feature/x"));
        assert_eq!(c.commit.as_deref(), Some(SHA));
        assert_eq!(c.repo_url.as_deref(), Some("https://github.com/acme/app"));
        assert_eq!(
            c.run_url.as_deref(),
            Some("https://github.com/acme/app/actions/runs/9876")
        );
        assert_eq!(c.triggered_by.as_deref(), Some("octocat"));
        assert_eq!(
            c.execution_id().as_deref(),
            Some("github-actions-9876-2-test")
        );
    }

    #[test]
    fn gitlab_ci() {
        let c = ctx(&[
            ("GITLAB_CI", "true"),
            ("CI_SERVER_URL", "https://gitlab.example.com"),
            ("CI_PROJECT_PATH", "group/app"),
            ("CI_PROJECT_NAME", "app"),
            ("CI_PIPELINE_ID", "555"),
            ("CI_PIPELINE_IID", "12"),
            ("CI_JOB_ID", "9001"),
            ("CI_JOB_STAGE", "test"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("CI_COMMIT_SHA", SHA),
            ("CI_PROJECT_URL", "https://gitlab.example.com/group/app"),
            (
                "CI_PIPELINE_URL",
                "https://gitlab.example.com/group/app/-/pipelines/555",
            ),
            ("GITLAB_USER_LOGIN", "alice"),
            ("CI_JOB_STATUS", "failed"),
        ]);
        assert_eq!(c.kind, CiKind::GitlabCi);
        assert_eq!(c.pipeline.as_deref(), Some("app"));
        assert_eq!(c.full_name.as_deref(), Some("group/app"));
        assert_eq!(c.build_number, Some(12));
        assert_eq!(c.stage.as_deref(), Some("test"));
        assert_eq!(c.job_status.as_deref(), Some("failed"));
        assert_eq!(c.execution_id().as_deref(), Some("gitlab-ci-555-9001"));
        assert_eq!(c.triggered_by.as_deref(), Some("alice"));
    }

    #[test]
    fn jenkins() {
        let c = ctx(&[
            ("JENKINS_URL", "https://ci.acme.io/"),
            ("JOB_NAME", "svc/deploy"),
            ("BUILD_NUMBER", "77"),
            ("BUILD_URL", "https://ci.acme.io/job/svc/job/deploy/77/"),
            ("GIT_BRANCH", "origin/release/1.2"),
            ("GIT_COMMIT", SHA),
            ("GIT_URL", "https://bot:s3cret@git.acme.io/svc.git"),
        ]);
        assert_eq!(c.kind, CiKind::Jenkins);
        assert_eq!(c.pipeline.as_deref(), Some("svc/deploy"));
        assert_eq!(c.build_number, Some(77));
        assert_eq!(c.branch.as_deref(), Some("release/1.2"));
        assert_eq!(c.repo_url.as_deref(), Some("https://git.acme.io/svc.git"));
        assert_eq!(c.execution_id().as_deref(), Some("jenkins-77"));
        // The trailing slash of JENKINS_URL does not make another instance.
        assert_eq!(
            c.instance_guid(),
            derive_guid("jenkins", "https://ci.acme.io")
        );
    }

    #[test]
    fn azure_pipelines() {
        let c = ctx(&[
            ("TF_BUILD", "True"),
            ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/acme/"),
            ("SYSTEM_TEAMPROJECT", "web"),
            ("BUILD_DEFINITIONNAME", "web-ci"),
            ("BUILD_BUILDID", "3141"),
            ("BUILD_BUILDNUMBER", "20240328.1"),
            ("SYSTEM_JOBATTEMPT", "1"),
            ("SYSTEM_JOBNAME", "Build"),
            ("BUILD_SOURCEBRANCH", "refs/heads/feature/login"),
            ("BUILD_SOURCEBRANCHNAME", "login"),
            ("BUILD_SOURCEVERSION", SHA),
            ("BUILD_REQUESTEDFOR", "Bob Builder"),
        ]);
        assert_eq!(c.full_name.as_deref(), Some("web/web-ci"));
        assert_eq!(c.build_number, Some(3141));
        assert_eq!(c.branch.as_deref(), Some("feature/login"));
        assert_eq!(
            c.run_url.as_deref(),
            Some("https://dev.azure.com/acme/web/_build/results?buildId=3141")
        );
        assert_eq!(
            c.execution_id().as_deref(),
            Some("azure-pipelines-3141-1-Build")
        );
    }

    #[test]
    fn buildkite_and_circleci() {
        let b = ctx(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_ORGANIZATION_SLUG", "acme"),
            ("BUILDKITE_PIPELINE_SLUG", "app"),
            ("BUILDKITE_BUILD_ID", "0190-aa"),
            ("BUILDKITE_JOB_ID", "0190-bb"),
            ("BUILDKITE_BUILD_NUMBER", "9"),
            ("BUILDKITE_BRANCH", "main"),
            ("BUILDKITE_COMMIT", "HEAD"),
            ("BUILDKITE_BUILD_CREATOR", "Carol"),
        ]);
        assert_eq!(b.full_name.as_deref(), Some("acme/app"));
        assert_eq!(b.commit, None, "HEAD is not a commit id");
        assert_eq!(
            b.execution_id().as_deref(),
            Some("buildkite-0190-aa-0190-bb")
        );
        let c = ctx(&[
            ("CIRCLECI", "true"),
            ("CIRCLE_PROJECT_USERNAME", "acme"),
            ("CIRCLE_PROJECT_REPONAME", "app"),
            ("CIRCLE_WORKFLOW_ID", "wf-1"),
            ("CIRCLE_JOB", "build"),
            ("CIRCLE_BUILD_NUM", "311"),
            ("CIRCLE_SHA1", SHA),
            ("CIRCLE_USERNAME", "dave"),
        ]);
        assert_eq!(c.pipeline.as_deref(), Some("app"));
        assert_eq!(c.build_number, Some(311));
        assert_eq!(c.execution_id().as_deref(), Some("circleci-wf-1-build"));
        assert_ne!(b.instance_guid(), c.instance_guid());
    }

    #[test]
    fn generic_overrides_win() {
        let c = ctx(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_WORKFLOW", "CI"),
            ("GITHUB_RUN_ID", "1"),
            ("CISTERN_PIPELINE", "nightly"),
            ("CISTERN_BRANCH", "prod"),
            ("CISTERN_BUILD_NUMBER", "5"),
            ("CISTERN_EXECUTION_ID", "exec-5"),
            ("CISTERN_CD", "1"),
        ]);
        assert_eq!(c.pipeline.as_deref(), Some("nightly"));
        assert_eq!(c.full_name.as_deref(), Some("nightly"));
        assert_eq!(c.branch.as_deref(), Some("prod"));
        assert_eq!(c.build_number, Some(5));
        assert_eq!(c.execution_id().as_deref(), Some("exec-5"));
        assert!(c.cd);
        let none = ctx(&[]);
        assert_eq!(none.kind, CiKind::Generic);
        assert_eq!(none.execution_id(), None);
        let cron = ctx(&[("CISTERN_RUN_ID", "2024-03-28")]);
        assert_eq!(cron.execution_id().as_deref(), Some("generic-2024-03-28"));
    }

    #[test]
    fn guid_is_stable_and_well_formed() {
        let g = derive_guid("jenkins", "https://ci.acme.io");
        assert_eq!(g, derive_guid("jenkins", "HTTPS://ci.acme.io/"));
        assert_ne!(g, derive_guid("gitlab-ci", "https://ci.acme.io"));
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "8");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(
            strip_credentials("https://x-token:abc@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            strip_credentials("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(strip_credentials("https://h/p@q"), "https://h/p@q");
    }
}
