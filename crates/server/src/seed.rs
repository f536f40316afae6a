//! A realistic history, for demos, screenshots and the dashboard's tests: three projects with
//! eight pipelines on two CI/CD instances, weeks of runs with stages, steps and failure logs,
//! deployments to staging and prod that ship the commits CI built, broken streaks and their
//! recoveries, instance heartbeats, satellites (one well, one degraded, one stale), and a few
//! rejected posts. Given the master key ([`SeedOptions::master`]), also named secrets, signed
//! sources with their latest events, and three subscriptions created partway through the history,
//! whose deliveries play out against receivers that behave like real ones: a chat hook that
//! mostly answers and crashes on some messages, a deployment tracker timing out for the last
//! hours, and a decommissioned legacy receiver whose subscription ends up disabled. Their
//! attempts go through the store's own claim and record calls and the delivery worker's rules.
//!
//! Every run is an SEI payload parsed by the SEI dialect and written with [`WriteOp::Runs`],
//! exactly as `POST /v1/custom-cicd` would store it (its raw body is the event's body). Writes are
//! sent many at a time so the store's group commit batches them. The same seed gives the same
//! runs (the same execution ids, results and commits; their times follow `now`), so seeding
//! twice updates the runs instead of doubling them.

use std::sync::Arc;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use cistern_core::FieldError;
use cistern_dialects::{sei, Inbound, ParseOptions};
use cistern_store::{
    AttemptRecord, ClaimRequest, DeliveryAttempt, DeliveryFilter, DeliveryFormat, DeliveryStatus,
    EventRecord, EventStatus, EventType, HeartbeatRecord, NextStep, PageRequest,
    SatelliteHeartbeat, Store, StoreError, Subscription, Tenant, WriteOp,
};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Runs to write.
    pub runs: usize,
    /// Days of history, ending at `now`.
    pub days: u32,
    /// Tenant slug (created when missing).
    pub tenant: String,
    /// Seed of the random generator.
    pub seed: u64,
    /// Writes in flight at once.
    pub concurrency: usize,
    /// The end of the history.
    pub now: OffsetDateTime,
    /// Pipelines: the eight hand-written ones, and services made from their shapes beyond that
    /// (on four instances instead of two).
    pub pipelines: usize,
    /// The hub's master key: with it, named secrets (encrypted with it, so the hub can use
    /// them), signed sources and subscriptions with their deliveries are written too.
    pub master: Option<Arc<crate::secrets::MasterKey>>,
}

/// From this many runs on, a history has 50 pipelines on 4 instances (else 8 on 2).
pub const LARGE: usize = 100_000;

impl SeedOptions {
    /// `runs` runs over the last `days` days for the `default` tenant (50 pipelines from
    /// [`LARGE`] runs on, else 8).
    pub fn new(runs: usize, days: u32) -> Self {
        Self {
            runs,
            days,
            tenant: "default".into(),
            seed: 8,
            concurrency: 512,
            pipelines: if runs >= LARGE { 50 } else { 8 },
            now: OffsetDateTime::now_utc(),
            master: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SeedSummary {
    /// Runs written.
    pub runs: u64,
    /// Of which deployments.
    pub deployments: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Pipelines.
    pub pipelines: usize,
    /// Instances (with a heartbeat each).
    pub instances: usize,
    /// Rejected events recorded.
    pub rejected_events: u64,
    /// Satellites (with a heartbeat each).
    pub satellites: usize,
    /// Signed sources.
    pub sources: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Deliveries of the subscriptions, by status: delivered, pending, failed.
    pub deliveries: [u64; 3],
}

/// Why seeding stopped.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The options make no history.
    #[error("{0}")]
    Options(String),
    /// A generated payload did not parse (a bug of the generator).
    #[error("generated payload refused by the SEI dialect: {0}")]
    Payload(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret or a source could not be written.
    #[error("{0}")]
    Admin(String),
}

struct InstanceSpec {
    guid: &'static str,
    name: &'static str,
    kind: &'static str,
    url: &'static str,
    details: fn() -> Value,
    heartbeat_age: Duration,
}

/// The first two serve the small history; a large one (see [`SeedOptions::pipelines`]) spreads
/// its extra pipelines over all four.
static INSTANCES: [InstanceSpec; 4] = [
    InstanceSpec {
        guid: "6f1c2d3e-4b5a-4c6d-8e7f-a1b2c3d4e5f6",
        name: "jenkins-main",
        kind: "jenkins",
        url: "https://jenkins.example.com",
        details: || {
            json!({"jenkins_version": "2.462.3", "plugin_version": "1.2.9", "java_version": "17.0.12",
                   "agents": 6, "os": "Linux amd64"})
        },
        heartbeat_age: Duration::minutes(2),
    },
    InstanceSpec {
        guid: "0b9e8d7c-6a5f-4e3d-9c2b-1a0f9e8d7c6b",
        name: "gitlab-runners",
        kind: "custom",
        url: "https://gitlab.example.com",
        details: || json!({"gitlab_version": "17.3.1", "runner_version": "17.3.0", "executor": "docker"}),
        heartbeat_age: Duration::hours(3),
    },
    InstanceSpec {
        guid: "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a",
        name: "jenkins-east",
        kind: "jenkins",
        url: "https://jenkins-east.example.com",
        details: || {
            json!({"jenkins_version": "2.462.3", "plugin_version": "1.2.9", "java_version": "21.0.4",
                   "agents": 12, "os": "Linux amd64"})
        },
        heartbeat_age: Duration::minutes(1),
    },
    InstanceSpec {
        guid: "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
        name: "jenkins-west",
        kind: "jenkins",
        url: "https://jenkins-west.example.com",
        details: || {
            json!({"jenkins_version": "2.452.1", "plugin_version": "1.2.8", "java_version": "17.0.11",
                   "agents": 8, "os": "Linux arm64"})
        },
        heartbeat_age: Duration::minutes(4),
    },
];

/// The pipelines of a history of `n` (at least the eight hand-written ones): the extra ones are
/// services of three pipelines each (build, deploy to staging, deploy to prod) made from the
/// hand-written shapes, spread over the four instances.
fn pipeline_specs(n: usize) -> Vec<&'static PipelineSpec> {
    let mut out: Vec<&'static PipelineSpec> = PIPELINES.iter().collect();
    for k in 0..n.saturating_sub(PIPELINES.len()) {
        let service = k / 3;
        let (name, template, kind, weight) = match k % 3 {
            0 => ("build", &PIPELINES[1], Kind::Ci, 8),
            1 => ("deploy-staging", &PIPELINES[2], Kind::Deploy("staging"), 2),
            _ => ("deploy-prod", &PIPELINES[3], Kind::Deploy("prod"), 1),
        };
        // Leaked once per seeding: a handful of small strings for a command that then exits
        // (or a test), so the generator keeps reading `&'static` specs like the fixed ones.
        let project: &'static str = Box::leak(format!("svc{service:02}").into_boxed_str());
        out.push(Box::leak(Box::new(PipelineSpec {
            project,
            name,
            instance: service % INSTANCES.len(),
            kind,
            weight,
            fail_rate: template.fail_rate,
            minutes: template.minutes,
            drift: template.drift,
            stages: template.stages,
        })));
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ci,
    Deploy(&'static str),
}

struct StageSpec {
    name: &'static str,
    share: f64,
    steps: &'static [&'static str],
    /// Relative chance that a failing run fails here.
    blame: u32,
    logs: &'static [&'static str],
}

struct PipelineSpec {
    project: &'static str,
    name: &'static str,
    instance: usize,
    kind: Kind,
    weight: u32,
    fail_rate: f64,
    minutes: f64,
    /// Duration growth over the whole history (0.25 = a quarter slower at the end).
    drift: f64,
    stages: &'static [StageSpec],
}

const LOG_TESTS: &str = "> cargo test --workspace --locked
   Compiling shop-api v1.4.0 (/builds/shop/api)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 41.27s
     Running unittests src/lib.rs (target/debug/deps/shop_api-5c1e0f3d2b)
running 214 tests
test orders::tests::checkout_total ... ok
test orders::tests::refund_rounding ... FAILED
test orders::tests::vat_by_country ... ok

failures:

---- orders::tests::refund_rounding stdout ----
thread 'orders::tests::refund_rounding' panicked at src/orders.rs:214:9:
assertion `left == right` failed
  left: 1999
 right: 2000

test result: FAILED. 213 passed; 1 failed; 0 ignored; 0 measured
error: test failed, to rerun pass `-p shop-api --lib`";

const LOG_JEST: &str = "$ npm test -- --ci
PASS src/cart/Cart.test.tsx
FAIL src/checkout/Payment.test.tsx
  ● Payment › shows the card error from the gateway

    TypeError: Cannot read properties of undefined (reading 'message')

      41 |   const err = response.error;
    > 42 |   setError(err.message);
         |                ^
      43 | }

Tests:       1 failed, 187 passed, 188 total
npm ERR! Test failed.  See above for more details.";

const LOG_NPM: &str = "$ npm ci
added 1412 packages in 38s
$ npm run build
> shop-web@3.8.0 build
> vite build
vite v5.4.2 building for production...
✓ 812 modules transformed.
error during build:
Error: [vite]: Rollup failed to resolve import \"@shop/ui/Badge\" from \"src/cart/CartLine.tsx\".
npm ERR! code ELIFECYCLE
npm ERR! errno 1";

const LOG_MVN: &str = "[INFO] --- maven-surefire-plugin:3.2.5:test (default-test) @ ledger ---
[INFO] Running com.example.ledger.PostingServiceTest
[ERROR] Tests run: 48, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 3.912 s <<< FAILURE!
[ERROR] com.example.ledger.PostingServiceTest.reversalKeepsBalance  Time elapsed: 0.041 s  <<< FAILURE!
org.opentest4j.AssertionFailedError: expected: <0.00> but was: <0.01>
	at com.example.ledger.PostingServiceTest.reversalKeepsBalance(PostingServiceTest.java:133)
[INFO] BUILD FAILURE
[ERROR] Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin:3.2.5:test";

const LOG_COMPILE: &str = "> cargo build --release --locked
   Compiling shop-api v1.4.0 (/builds/shop/api)
error[E0308]: mismatched types
   --> src/payments/gateway.rs:88:24
    |
88  |         let amount: u64 = order.total();
    |                     ---   ^^^^^^^^^^^^^ expected `u64`, found `Decimal`
error: could not compile `shop-api` (lib) due to 1 previous error";

const LOG_HELM: &str = "$ helm upgrade --install shop ./chart --namespace shop --wait --timeout 5m
Release \"shop\" has been upgraded. Happy Helming!
$ kubectl rollout status deployment/shop-api -n shop --timeout=300s
Waiting for deployment \"shop-api\" rollout to finish: 1 of 3 updated replicas are available...
Waiting for deployment \"shop-api\" rollout to finish: 1 of 3 updated replicas are available...
error: deployment \"shop-api\" exceeded its progress deadline
Back-off restarting failed container api in pod shop-api-7f9c6d5b8-x2l4q
Exception in thread \"main\" java.lang.IllegalStateException: DATABASE_URL is not set";

const LOG_SMOKE: &str = "$ ./scripts/smoke.sh https://shop.example.com
GET /healthz -> 200 (41 ms)
GET /api/v1/catalog -> 200 (118 ms)
POST /api/v1/cart -> 502 (30012 ms)
smoke test failed: POST /api/v1/cart answered 502 Bad Gateway
ERROR: 1 of 3 checks failed";

const LOG_E2E: &str = "Running 36 tests using 4 workers
  ✓  checkout › guest can pay with a card (12.4s)
  ✘  checkout › saved address is offered (30.0s)
    Error: Timed out 30000ms waiting for expect(locator).toBeVisible()
    Locator: getByRole('radio', { name: 'Home, 12 Rue des Lilas' })
  ✓  search › typo tolerance (4.1s)
  1 failed
  35 passed (4.2m)";

const LOG_TERRAFORM: &str = "$ terraform plan -input=false -out=tfplan
module.network.aws_vpc.main: Refreshing state... [id=vpc-0a1b2c3d]
Error: Error acquiring the state lock

  Lock Info:
    ID:        4c1f0d2e-9b8a-7c6d-5e4f-3a2b1c0d9e8f
    Operation: OperationTypeApply
    Who:       ci@runner-7

Terraform acquires a state lock to protect the state from being written by multiple users.";

const LOG_SCAN: &str =
    "$ trivy image --exit-code 1 --severity CRITICAL registry.example.com/payments/ledger:latest
Total: 1 (CRITICAL: 1)
┌──────────────┬────────────────┬──────────┬───────────────────┐
│   Library    │ Vulnerability  │ Severity │ Installed Version │
├──────────────┼────────────────┼──────────┼───────────────────┤
│ libexpat1    │ CVE-2024-45491 │ CRITICAL │ 2.5.0-1           │
└──────────────┴────────────────┴──────────┴───────────────────┘
error: image scan failed: 1 critical vulnerability";

const CHECKOUT: StageSpec = StageSpec {
    name: "Checkout",
    share: 0.04,
    steps: &["git clone"],
    blame: 0,
    logs: &[],
};

static PIPELINES: [PipelineSpec; 8] = [
    PipelineSpec {
        project: "shop",
        name: "web-build",
        instance: 0,
        kind: Kind::Ci,
        weight: 12,
        fail_rate: 0.07,
        minutes: 9.0,
        drift: 0.1,
        stages: &[
            CHECKOUT,
            StageSpec {
                name: "Build",
                share: 0.36,
                steps: &["npm ci", "vite build"],
                blame: 1,
                logs: &[LOG_NPM],
            },
            StageSpec {
                name: "Test",
                share: 0.45,
                steps: &["unit tests", "lint"],
                blame: 4,
                logs: &[LOG_JEST],
            },
            StageSpec {
                name: "Package",
                share: 0.15,
                steps: &["docker build", "docker push"],
                blame: 0,
                logs: &[],
            },
        ],
    },
    PipelineSpec {
        project: "shop",
        name: "api-build",
        instance: 0,
        kind: Kind::Ci,
        weight: 12,
        fail_rate: 0.09,
        minutes: 14.0,
        drift: 0.35,
        stages: &[
            CHECKOUT,
            StageSpec {
                name: "Compile",
                share: 0.32,
                steps: &["cargo build"],
                blame: 1,
                logs: &[LOG_COMPILE],
            },
            StageSpec {
                name: "Test",
                share: 0.5,
                steps: &["unit tests", "integration tests"],
                blame: 4,
                logs: &[LOG_TESTS],
            },
            StageSpec {
                name: "Package",
                share: 0.14,
                steps: &["docker build", "docker push"],
                blame: 0,
                logs: &[],
            },
        ],
    },
    PipelineSpec {
        project: "shop",
        name: "deploy-staging",
        instance: 0,
        kind: Kind::Deploy("staging"),
        weight: 6,
        fail_rate: 0.06,
        minutes: 6.0,
        drift: 0.0,
        stages: &[
            StageSpec {
                name: "Fetch artifacts",
                share: 0.1,
                steps: &["download images"],
                blame: 0,
                logs: &[],
            },
            StageSpec {
                name: "Deploy",
                share: 0.7,
                steps: &["helm upgrade", "wait for rollout"],
                blame: 3,
                logs: &[LOG_HELM],
            },
            StageSpec {
                name: "Smoke test",
                share: 0.2,
                steps: &["smoke.sh"],
                blame: 2,
                logs: &[LOG_SMOKE],
            },
        ],
    },
    PipelineSpec {
        project: "shop",
        name: "deploy-prod",
        instance: 0,
        kind: Kind::Deploy("prod"),
        weight: 4,
        fail_rate: 0.1,
        minutes: 8.0,
        drift: 0.0,
        stages: &[
            StageSpec {
                name: "Approval",
                share: 0.2,
                steps: &["change ticket"],
                blame: 0,
                logs: &[],
            },
            StageSpec {
                name: "Deploy",
                share: 0.6,
                steps: &["helm upgrade", "wait for rollout"],
                blame: 3,
                logs: &[LOG_HELM],
            },
            StageSpec {
                name: "Verify",
                share: 0.2,
                steps: &["smoke.sh"],
                blame: 2,
                logs: &[LOG_SMOKE],
            },
        ],
    },
    PipelineSpec {
        project: "payments",
        name: "ledger-ci",
        instance: 1,
        kind: Kind::Ci,
        weight: 8,
        fail_rate: 0.06,
        minutes: 18.0,
        drift: -0.15,
        stages: &[
            CHECKOUT,
            StageSpec {
                name: "Build",
                share: 0.3,
                steps: &["mvn package"],
                blame: 0,
                logs: &[],
            },
            StageSpec {
                name: "Test",
                share: 0.5,
                steps: &["unit tests", "contract tests"],
                blame: 4,
                logs: &[LOG_MVN],
            },
            StageSpec {
                name: "Security scan",
                share: 0.16,
                steps: &["trivy"],
                blame: 1,
                logs: &[LOG_SCAN],
            },
        ],
    },
    PipelineSpec {
        project: "payments",
        name: "ledger-deploy",
        instance: 1,
        kind: Kind::Deploy("prod"),
        weight: 3,
        fail_rate: 0.08,
        minutes: 10.0,
        drift: 0.0,
        stages: &[
            StageSpec {
                name: "Migrate database",
                share: 0.3,
                steps: &["flyway migrate"],
                blame: 1,
                logs: &[LOG_MVN],
            },
            StageSpec {
                name: "Deploy",
                share: 0.55,
                steps: &["helm upgrade", "wait for rollout"],
                blame: 3,
                logs: &[LOG_HELM],
            },
            StageSpec {
                name: "Verify",
                share: 0.15,
                steps: &["smoke.sh"],
                blame: 1,
                logs: &[LOG_SMOKE],
            },
        ],
    },
    PipelineSpec {
        project: "platform",
        name: "infra-plan",
        instance: 1,
        kind: Kind::Ci,
        weight: 4,
        fail_rate: 0.05,
        minutes: 4.0,
        drift: 0.0,
        stages: &[
            StageSpec {
                name: "Init",
                share: 0.2,
                steps: &["terraform init"],
                blame: 0,
                logs: &[],
            },
            StageSpec {
                name: "Plan",
                share: 0.7,
                steps: &["terraform plan"],
                blame: 3,
                logs: &[LOG_TERRAFORM],
            },
            StageSpec {
                name: "Policy check",
                share: 0.1,
                steps: &["conftest"],
                blame: 1,
                logs: &[LOG_TERRAFORM],
            },
        ],
    },
    PipelineSpec {
        project: "shop",
        name: "nightly-e2e",
        instance: 0,
        kind: Kind::Ci,
        weight: 2,
        fail_rate: 0.22,
        minutes: 42.0,
        drift: 0.2,
        stages: &[
            StageSpec {
                name: "Provision",
                share: 0.15,
                steps: &["create namespace", "seed data"],
                blame: 0,
                logs: &[],
            },
            StageSpec {
                name: "E2E tests",
                share: 0.8,
                steps: &["checkout flow", "search flow", "account flow"],
                blame: 5,
                logs: &[LOG_E2E],
            },
            StageSpec {
                name: "Teardown",
                share: 0.05,
                steps: &["delete namespace"],
                blame: 0,
                logs: &[],
            },
        ],
    },
];

fn repo_of(project: &str) -> String {
    match project {
        "shop" => "https://github.com/example/shop".into(),
        "payments" => "https://gitlab.example.com/payments/ledger".into(),
        "platform" => "https://github.com/example/platform".into(),
        other => format!("https://github.com/example/{other}"),
    }
}

const PEOPLE: [&str; 6] = ["alice", "bob", "chen", "dana", "emeka", "farah"];
const FEATURE_BRANCHES: [&str; 5] = [
    "feature/checkout-v2",
    "fix/refund-rounding",
    "feature/search-typos",
    "chore/deps",
    "feature/ledger-export",
];

/// Per-project commit stream: commits pushed to main, in order.
#[derive(Default)]
struct Repo {
    main: Vec<String>,
}

#[derive(Default)]
struct PipelineState {
    build: i64,
    /// Failing runs left in the current broken streak.
    broken: u32,
    /// Index into the project's main commits of the next commit not yet deployed.
    shipped: usize,
}

/// Generates the history's run payloads in time order.
struct Generator {
    rng: SmallRng,
    starts: Vec<i64>,
    next: usize,
    since_ms: i64,
    span_ms: i64,
    now_ms: i64,
    repos: Vec<(&'static str, Repo)>,
    specs: Vec<&'static PipelineSpec>,
    state: Vec<PipelineState>,
    weights_total: u32,
}

/// One generated run: its SEI payload and what it is.
struct Generated {
    payload: Value,
    finished_ms: i64,
    deployment: bool,
    failed: bool,
}

fn hex_id(rng: &mut SmallRng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push_str(&format!("{:016x}", rng.random::<u64>()));
    }
    s.truncate(len);
    s
}

impl Generator {
    fn new(opts: &SeedOptions) -> Self {
        let rng = SmallRng::seed_from_u64(opts.seed);
        // Start times come from their own stream: how many draws they take depends on the
        // calendar, and the runs themselves (ids, results, commits) must not.
        let mut times = SmallRng::seed_from_u64(opts.seed ^ 0x5eed_7143);
        let now_ms = cistern_core::to_millis(opts.now);
        // Leave the last hour free so even the longest run has finished by `now`.
        let until_ms = now_ms - 3_600_000;
        let since_ms = now_ms - i64::from(opts.days) * 86_400_000;
        let span_ms = (until_ms - since_ms).max(1);
        let specs = pipeline_specs(opts.pipelines);
        let mut starts: Vec<i64> = (0..opts.runs)
            .map(|_| since_ms + working_hours_offset(&mut times, since_ms, span_ms))
            .collect();
        starts.sort_unstable();
        Self {
            rng,
            starts,
            next: 0,
            since_ms,
            span_ms,
            now_ms,
            repos: {
                let mut repos: Vec<(&'static str, Repo)> = Vec::new();
                for p in &specs {
                    if !repos.iter().any(|(name, _)| *name == p.project) {
                        repos.push((p.project, Repo::default()));
                    }
                }
                repos
            },
            state: specs.iter().map(|_| PipelineState::default()).collect(),
            weights_total: specs.iter().map(|p| p.weight).sum(),
            specs,
        }
    }

    fn pick_pipeline(&mut self) -> usize {
        let mut n = self.rng.random_range(0..self.weights_total);
        for (i, p) in self.specs.iter().enumerate() {
            if n < p.weight {
                return i;
            }
            n -= p.weight;
        }
        0
    }

    fn repo(&mut self, project: &str) -> &mut Repo {
        let i = self
            .repos
            .iter()
            .position(|(p, _)| *p == project)
            .unwrap_or(0);
        &mut self.repos[i].1
    }

    /// The start of the next run, if any is left.
    fn next_start(&self) -> Option<i64> {
        self.starts.get(self.next).copied()
    }

    fn next_run(&mut self) -> Option<Generated> {
        let start_ms = *self.starts.get(self.next)?;
        self.next += 1;
        let pi = self.pick_pipeline();
        let spec = self.specs[pi];
        let progress = (start_ms - self.since_ms) as f64 / self.span_ms as f64;

        // Failures come in streaks: a pipeline breaks, stays red a few runs, then recovers.
        self.state[pi].build += 1;
        let build = self.state[pi].build;
        let failed = if self.state[pi].broken > 0 {
            self.state[pi].broken -= 1;
            true
        } else if self.rng.random_bool(spec.fail_rate) {
            self.state[pi].broken = match self.rng.random_range(0..10) {
                0..=5 => 0,
                6..=8 => 1,
                _ => 3,
            };
            true
        } else {
            false
        };

        // Commits: CI on main usually builds a new commit; deployments ship what main built since
        // the last successful deployment.
        let person = PEOPLE[self.rng.random_range(0..PEOPLE.len())];
        let (branch, commits, trigger) = match spec.kind {
            Kind::Ci => {
                if spec.name == "nightly-e2e" {
                    let head = self.repo(spec.project).main.last().cloned();
                    (
                        "main".to_owned(),
                        head.into_iter().collect(),
                        "timer".to_owned(),
                    )
                } else if self.rng.random_bool(0.75) {
                    let new = self.rng.random_bool(0.8) || self.repo(spec.project).main.is_empty();
                    let sha = if new {
                        let sha = hex_id(&mut self.rng, 40);
                        self.repo(spec.project).main.push(sha.clone());
                        sha
                    } else {
                        self.repo(spec.project)
                            .main
                            .last()
                            .cloned()
                            .unwrap_or_default()
                    };
                    ("main".to_owned(), vec![sha], format!("push by {person}"))
                } else {
                    let b = FEATURE_BRANCHES[self.rng.random_range(0..FEATURE_BRANCHES.len())];
                    let sha = hex_id(&mut self.rng, 40);
                    (
                        b.to_owned(),
                        vec![sha],
                        format!("merge request by {person}"),
                    )
                }
            }
            Kind::Deploy(_) => {
                let shipped = self.state[pi].shipped;
                let main = &self.repo(spec.project).main;
                let mut commits: Vec<String> = main.iter().skip(shipped).cloned().collect();
                if commits.is_empty() {
                    commits.extend(main.last().cloned());
                }
                let end = main.len();
                if !failed {
                    self.state[pi].shipped = end;
                }
                ("main".to_owned(), commits, person.to_owned())
            }
        };

        // Duration: the pipeline's typical length, drifting over the history, with noise.
        let noise = 0.75 + self.rng.random::<f64>() * 0.6;
        let total_ms = (spec.minutes * 60_000.0 * (1.0 + spec.drift * progress) * noise) as i64;
        let result_word = if !failed {
            "SUCCESS"
        } else if spec.kind == Kind::Ci && self.rng.random_bool(0.08) {
            "ERROR"
        } else {
            "FAILURE"
        };

        let blame_total: u32 = spec.stages.iter().map(|s| s.blame).sum();
        let failing_stage = if failed && blame_total > 0 {
            let mut n = self.rng.random_range(0..blame_total);
            spec.stages.iter().position(|s| {
                if n < s.blame {
                    true
                } else {
                    n -= s.blame;
                    false
                }
            })
        } else {
            None
        };

        let mut stages = Vec::with_capacity(spec.stages.len());
        let mut t = start_ms + 1_000;
        let mut stopped = false;
        for (si, s) in spec.stages.iter().enumerate() {
            if stopped {
                stages.push(json!({"displayName": s.name, "result": "NOT_BUILT", "state": "SKIPPED", "steps": []}));
                continue;
            }
            let fails_here = failing_stage == Some(si);
            let mut stage_ms =
                (total_ms as f64 * s.share * (0.85 + self.rng.random::<f64>() * 0.3)) as i64;
            if fails_here {
                stage_ms = (stage_ms as f64 * (0.4 + self.rng.random::<f64>() * 0.5)) as i64;
            }
            let failing_step = if fails_here {
                Some(self.rng.random_range(0..s.steps.len()))
            } else {
                None
            };
            let mut steps = Vec::with_capacity(s.steps.len());
            let mut st_t = t;
            let per_step = stage_ms / s.steps.len().max(1) as i64;
            for (k, name) in s.steps.iter().enumerate() {
                if failing_step.is_some_and(|f| k > f) {
                    break;
                }
                let d = (per_step as f64 * (0.6 + self.rng.random::<f64>() * 0.8)) as i64;
                let mut step = json!({"displayName": name, "result": "SUCCESS", "state": "FINISHED",
                    "startTime": st_t, "durationInMillis": d});
                if failing_step == Some(k) {
                    step["result"] = json!(result_word);
                    if !s.logs.is_empty() {
                        let log = s.logs[self.rng.random_range(0..s.logs.len())];
                        step["log"] = json!(log);
                    }
                }
                steps.push(step);
                st_t += d + 200;
            }
            let stage_end = st_t.max(t + stage_ms);
            let mut stage = json!({"displayName": s.name, "result": "SUCCESS", "state": "FINISHED",
                "startTime": t, "durationInMillis": stage_end - t, "steps": steps});
            if fails_here {
                stage["result"] = json!(result_word);
                stopped = true;
            }
            stages.push(stage);
            t = stage_end + 500;
        }
        let mut duration_ms = (t - start_ms).max(1_000);
        if start_ms + duration_ms > self.now_ms - 60_000 {
            duration_ms = (self.now_ms - 60_000 - start_ms).max(1_000);
        }
        let finished_ms = start_ms + duration_ms;

        let inst = &INSTANCES[spec.instance];
        let full_name = format!("{}/{}", spec.project, spec.name);
        let env = match spec.kind {
            Kind::Deploy(e) => Some(e),
            Kind::Ci => None,
        };
        let version = format!("1.{}.{}", 4 + build / 200, build);
        let mut params =
            vec![json!({"name": "GIT_BRANCH", "value": branch, "type": "StringParameterValue"})];
        let mut artifacts = Vec::new();
        match spec.kind {
            Kind::Deploy(e) => {
                params.push(
                    json!({"name": "TARGET_ENV", "value": e, "type": "StringParameterValue"}),
                );
                params.push(
                    json!({"name": "DRY_RUN", "value": false, "type": "BooleanParameterValue"}),
                );
                artifacts.push(json!({"input": true, "output": false, "type": "container", "name": spec.project,
                    "location": format!("registry.example.com/{}/{}", spec.project, spec.project), "qualifier": version}));
            }
            Kind::Ci => {
                if !failed && spec.stages.iter().any(|s| s.name == "Package") {
                    artifacts.push(json!({"input": false, "output": true, "type": "container", "name": spec.name,
                        "location": format!("registry.example.com/{}/{}", spec.project, spec.name), "qualifier": version,
                        "hash": format!("sha256:{}", hex_id(&mut self.rng, 64))}));
                }
            }
        }
        let cfr = env == Some("prod") && !failed && self.rng.random_bool(0.03);
        let trigger_chain = if trigger == "timer" {
            json!([{"id": "TimerTrigger", "type": "TimerTriggerCause"}])
        } else if trigger.starts_with("push") || trigger.starts_with("merge") {
            json!([{"id": "SCMTrigger", "type": "SCMTriggerCause"}])
        } else {
            json!([{"id": person, "type": "UserIdCause"}])
        };
        let mut payload = json!({
            "pipeline": spec.name,
            "job_full_name": full_name,
            "qualified_name": full_name,
            "project_name": spec.project,
            "instance_name": inst.name,
            "instance_guid": inst.guid,
            "instance_url": inst.url,
            "instance_type": inst.kind,
            "start_time": start_ms,
            "duration": duration_ms,
            "result": result_word,
            "build_number": build,
            "execution_id": format!("{}-{}-{}", spec.project, spec.name, hex_id(&mut self.rng, 12)),
            "user_id": trigger,
            "branch_name": branch,
            "repo_url": repo_of(spec.project),
            "scm_commit_ids": commits,
            "ci": env.is_none(),
            "cd": env.is_some(),
            "job_run_params": params,
            "artifacts": artifacts,
            "trigger_chain": trigger_chain,
            "web_url": if inst.kind == "jenkins" {
                format!("{}/job/{}/job/{}/{}/", inst.url, spec.project, spec.name, build)
            } else {
                format!("{}/{}/{}/-/pipelines/{}", inst.url, spec.project, spec.name, build)
            },
            "job_run": {"stages": stages},
        });
        if let Some(e) = env {
            payload["environment"] = json!(e);
        }
        if cfr {
            payload["cfr_status"] = json!(true);
        }
        Some(Generated {
            payload,
            finished_ms,
            deployment: env.is_some(),
            failed,
        })
    }
}

/// An offset into the span, favouring weekdays and working hours (UTC).
fn working_hours_offset(rng: &mut SmallRng, since_ms: i64, span_ms: i64) -> i64 {
    loop {
        let off = rng.random_range(0..span_ms);
        let t = cistern_core::from_millis(since_ms + off);
        let weekend = matches!(t.weekday(), time::Weekday::Saturday | time::Weekday::Sunday);
        let hour = t.hour();
        let mut keep: f64 = if (8..19).contains(&hour) { 1.0 } else { 0.15 };
        if weekend {
            keep *= 0.2;
        }
        if rng.random_bool(keep) {
            return off;
        }
    }
}

fn event(
    tenant: &Tenant,
    endpoint: &str,
    dialect: &str,
    body: Vec<u8>,
    at: OffsetDateTime,
) -> EventRecord {
    EventRecord {
        tenant_id: Some(tenant.id.clone()),
        endpoint: endpoint.to_owned(),
        dialect: dialect.to_owned(),
        request_type: None,
        content_type: Some("application/json".into()),
        body: Arc::from(body.as_slice()),
        received_at: at,
        status: EventStatus::Accepted,
        http_status: 201,
        errors: Vec::new(),
        key_id: None,
        source_id: None,
        dedupe_key: None,
    }
}

/// Writes the history; see [`seed_with_progress`].
pub async fn seed(store: &Arc<dyn Store>, opts: &SeedOptions) -> Result<SeedSummary, SeedError> {
    seed_with_progress(store, opts, |_| {}).await
}

/// Writes the history, calling `progress` with the runs written so far every few thousand runs.
pub async fn seed_with_progress(
    store: &Arc<dyn Store>,
    opts: &SeedOptions,
    mut progress: impl FnMut(u64),
) -> Result<SeedSummary, SeedError> {
    if opts.days == 0 {
        return Err(SeedError::Options("--days must be at least 1".into()));
    }
    let tenant = match store.tenant_by_slug(&opts.tenant).await? {
        Some(t) => t,
        None => store.create_tenant(&opts.tenant, false).await?,
    };
    let parse_opts = ParseOptions {
        max_log_bytes: 1 << 20,
        now: opts.now,
    };
    let mut summary = SeedSummary {
        pipelines: opts.pipelines.max(PIPELINES.len()),
        instances: if opts.pipelines > PIPELINES.len() {
            INSTANCES.len()
        } else {
            2
        },
        ..SeedSummary::default()
    };

    // The subscriptions arrive partway through the history: the runs before them are written
    // first, the runs after them queue deliveries in the outbox as they are written.
    let mut gen = Generator::new(opts);
    let span = Duration::days(i64::from(opts.days.min(SUBSCRIPTION_DAYS)));
    let subs_from = opts.now - span;
    let mut subs = Vec::new();
    if let Some(master) = &opts.master {
        let cut = cistern_core::to_millis(subs_from);
        write_runs(
            store,
            &tenant,
            &mut gen,
            Some(cut),
            opts,
            &parse_opts,
            &mut summary,
            &mut progress,
        )
        .await?;
        summary.sources = sources_and_secrets(store, master, &tenant, opts).await?;
        subs = subscriptions(store, &tenant, subs_from).await?;
        summary.subscriptions = subs.len();
    }
    write_runs(
        store,
        &tenant,
        &mut gen,
        None,
        opts,
        &parse_opts,
        &mut summary,
        &mut progress,
    )
    .await?;
    progress(summary.runs);

    for inst in INSTANCES.iter().take(summary.instances) {
        let at = opts.now - inst.heartbeat_age;
        let details = (inst.details)();
        let body = json!({"request_type": "JenkinsHeartbeat", "payload": {"instance_guid": inst.guid,
            "instance_name": inst.name, "url": inst.url, "details": details}});
        let mut ev = event(
            &tenant,
            "/v1/generic-requests",
            "propelo",
            body.to_string().into_bytes(),
            at,
        );
        ev.request_type = Some("JenkinsHeartbeat".into());
        ev.http_status = 200;
        store
            .write(WriteOp::Heartbeat {
                event: ev,
                tenant: tenant.clone(),
                heartbeat: HeartbeatRecord {
                    instance_guid: inst.guid.into(),
                    name: Some(inst.name.into()),
                    url: Some(inst.url.into()),
                    kind: Some(inst.kind.into()),
                    at,
                    details,
                },
            })
            .await?;
    }

    // Posts a misconfigured sender would make, refused with the dialect's own reasons.
    let start_s = (cistern_core::to_millis(opts.now) - 7_200_000) / 1000;
    let bad: [(String, Duration); 3] = [
        (
            json!({"pipeline": "release", "job_full_name": "shop/release", "qualified_name": "shop/release",
                "instance_name": "jenkins-main", "instance_guid": INSTANCES[0].guid,
                "start_time": start_s, "duration": 61_000, "result": "SUCCESS"})
            .to_string(),
            Duration::hours(2),
        ),
        (
            json!({"pipeline": "release", "job_full_name": "shop/release", "qualified_name": "shop/release",
                "instance_name": "jenkins-main", "instance_guid": INSTANCES[0].guid,
                "start_time": start_s * 1000, "duration": 61_000, "result": "greenish"})
            .to_string(),
            Duration::hours(5),
        ),
        (
            "{\u{201c}pipeline\u{201d}: \u{201c}release\u{201d}}".to_owned(),
            Duration::days(1),
        ),
    ];
    for (body, age) in bad {
        let errors = match sei::parse(body.as_bytes(), &parse_opts) {
            Ok(_) => continue,
            Err(rej) => rej.errors(),
        };
        let mut ev = event(
            &tenant,
            "/v1/custom-cicd",
            "sei",
            body.into_bytes(),
            opts.now - age,
        );
        ev.status = EventStatus::Rejected;
        ev.http_status = 400;
        ev.errors = errors;
        store.write(WriteOp::Reject { event: ev }).await?;
        summary.rejected_events += 1;
    }

    summary.satellites = satellites(store, &tenant, opts).await?;
    if !subs.is_empty() {
        summary.deliveries = play_deliveries(store, &tenant, &subs, opts.now, opts.seed).await?;
    }
    // The history's closed days go into the metrics rollups now, not on the first read.
    store.refresh_rollups().await?;
    Ok(summary)
}

/// Writes the generator's runs that start before `before_ms` (all of them without it).
#[allow(clippy::too_many_arguments)]
async fn write_runs(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    gen: &mut Generator,
    before_ms: Option<i64>,
    opts: &SeedOptions,
    parse_opts: &ParseOptions,
    summary: &mut SeedSummary,
    progress: &mut impl FnMut(u64),
) -> Result<(), SeedError> {
    // The generator's state is sequential, so payloads are made here, in order; serializing and
    // parsing each one runs as its own task on the runtime's workers, many at once. The writes
    // are then handed to the store in the history's order (several in flight, so its group
    // commit fills its batches): deliveries are queued in the order of their events, as a live
    // hub would queue them.
    let tasks = std::iter::from_fn(|| {
        if let (Some(cut), Some(next)) = (before_ms, gen.next_start()) {
            if next >= cut {
                return None;
            }
        }
        let g = gen.next_run()?;
        let tenant = tenant.clone();
        let parse_opts = parse_opts.clone();
        Some(tokio::spawn(async move {
            let body =
                serde_json::to_vec(&g.payload).map_err(|e| SeedError::Payload(e.to_string()))?;
            let runs = match sei::parse(&body, &parse_opts) {
                Ok(items) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        Inbound::Run(r) => Some(*r),
                        _ => None,
                    })
                    .collect(),
                Err(rej) => return Err(SeedError::Payload(rej.summary())),
            };
            let at = cistern_core::from_millis(g.finished_ms + 800);
            let op = WriteOp::Runs {
                event: event(&tenant, "/v1/custom-cicd", "sei", body, at),
                tenant,
                runs,
            };
            Ok::<_, SeedError>((op, g.deployment, g.failed))
        }))
    });
    let concurrency = opts.concurrency.max(1);
    let mut writes = futures::stream::iter(tasks)
        .buffered(concurrency)
        .map(|parsed| {
            let store = Arc::clone(store);
            async move {
                let (op, deployment, failed) = parsed
                    .map_err(|e| SeedError::Payload(format!("a parse task failed: {e}")))??;
                store.write(op).await?;
                Ok::<_, SeedError>((deployment, failed))
            }
        })
        .buffered(concurrency);
    while let Some(done) = writes.next().await {
        let (deployment, failed) = done?;
        summary.runs += 1;
        summary.deployments += u64::from(deployment);
        summary.failed += u64::from(failed);
        if summary.runs.is_multiple_of(5_000) {
            progress(summary.runs);
        }
    }
    Ok(())
}

/// Days before `now` the subscriptions were created (at most the history's length).
const SUBSCRIPTION_DAYS: u32 = 14;

/// Named secrets (random values, encrypted with the master key like `cistern secrets set`), and
/// signed sources with a few events each; both are left alone when they exist already.
async fn sources_and_secrets(
    store: &Arc<dyn Store>,
    master: &crate::secrets::MasterKey,
    tenant: &Tenant,
    opts: &SeedOptions,
) -> Result<usize, SeedError> {
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x05ec_7e75);
    let grace = crate::config::Config::default().secret_grace_hours;
    let names = SUBSCRIPTIONS
        .iter()
        .map(|s| s.secret)
        .chain(SOURCES.iter().filter_map(|s| s.secret));
    for name in names {
        if store.get_secret(&tenant.id, name).await?.is_some() {
            continue;
        }
        let value = hex_id(&mut rng, 48);
        crate::routes::admin::set_secret(
            store.as_ref(),
            master,
            grace,
            &tenant.id,
            name,
            value.as_bytes(),
        )
        .await
        .map_err(|e| SeedError::Admin(e.detail.clone()))?;
    }
    let existing: HashSet<String> = store
        .list_sources(&tenant.id)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    for spec in &SOURCES {
        if existing.contains(spec.name) {
            continue;
        }
        let source = crate::routes::admin::new_source(
            store.as_ref(),
            &tenant.id,
            spec.kind,
            spec.secret,
            Some(spec.name),
        )
        .await
        .map_err(|e| SeedError::Admin(e.detail.clone()))?;
        for ev in spec.events {
            let mut rec = event(
                tenant,
                "/v1/hooks/{source_id}",
                spec.kind,
                ev.body.as_bytes().to_vec(),
                opts.now - ev.age,
            );
            rec.request_type = Some(ev.request_type.into());
            rec.source_id = Some(source.id.clone());
            rec.http_status = ev.http_status;
            let op = match ev.refused {
                Some(why) => {
                    rec.status = EventStatus::Rejected;
                    rec.errors = vec![FieldError::new("", why)];
                    WriteOp::Reject { event: rec }
                }
                None => WriteOp::Signals {
                    event: rec,
                    tenant: tenant.clone(),
                    runs: Vec::new(),
                    incidents: Vec::new(),
                    commit_times: Vec::new(),
                },
            };
            store.write(op).await?;
        }
    }
    Ok(SOURCES.len())
}

struct SourceEvent {
    age: Duration,
    request_type: &'static str,
    http_status: u16,
    /// Why it was refused, when it was.
    refused: Option<&'static str>,
    body: &'static str,
}

struct SourceSpec {
    name: &'static str,
    kind: &'static str,
    secret: Option<&'static str>,
    events: &'static [SourceEvent],
}

static SOURCES: [SourceSpec; 3] = [
    SourceSpec {
        name: "GitHub example org",
        kind: "github",
        secret: Some("github-org"),
        events: &[
            SourceEvent {
                age: Duration::days(2),
                request_type: "ping",
                http_status: 202,
                refused: None,
                body: r#"{"zen":"Keep it logically awesome.","hook_id":481516,"hook":{"type":"Organization","events":["workflow_run","workflow_job"]}}"#,
            },
            SourceEvent {
                age: Duration::minutes(12),
                request_type: "workflow_job",
                http_status: 202,
                refused: None,
                body: r#"{"action":"queued","workflow_job":{"id":29679449,"run_id":10423811,"name":"lint","head_branch":"main","status":"queued"},"repository":{"full_name":"example/shop"}}"#,
            },
        ],
    },
    SourceSpec {
        name: "GitLab payments",
        kind: "gitlab",
        secret: Some("gitlab-payments"),
        events: &[
            SourceEvent {
                age: Duration::days(1),
                request_type: "Job Hook",
                http_status: 202,
                refused: None,
                body: r#"{"object_kind":"build","build_id":1977,"build_name":"rspec","build_stage":"test","build_status":"created","project_name":"payments / ledger"}"#,
            },
            SourceEvent {
                age: Duration::hours(3),
                request_type: "Pipeline Hook",
                http_status: 401,
                refused: Some("X-Gitlab-Token does not match the source's secret"),
                body: r#"{"object_kind":"pipeline","object_attributes":{"id":31,"ref":"main","status":"success","duration":63},"project":{"path_with_namespace":"payments/ledger"}}"#,
            },
        ],
    },
    SourceSpec {
        name: "Incident bot",
        kind: "standard",
        secret: Some("incident-bot"),
        events: &[],
    },
];

/// How a seeded subscription's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Receiver {
    /// A chat hook: answers, except a rare 502 and a crash on feature-branch messages.
    Chat,
    /// A deployment tracker: answers, but has been timing out for the last hours.
    Tracker,
    /// A legacy receiver, decommissioned partway: its name stopped resolving.
    Legacy,
}

struct SubSpec {
    id: &'static str,
    url: &'static str,
    secret: &'static str,
    format: DeliveryFormat,
    events: &'static [EventType],
    only_failures: bool,
    pipeline: Option<&'static str>,
    receiver: Receiver,
}

// Hosts under `.example` (RFC 2606) never resolve: a hub serving a seeded database sends
// nothing anywhere when it retries these deliveries.
static SUBSCRIPTIONS: [SubSpec; 3] = [
    SubSpec {
        id: "sub_seed_chat_alerts",
        url: "https://chat.example/hooks/T024BE7LD/B08ALERTS",
        secret: "chat-hook",
        format: DeliveryFormat::Native,
        events: &[EventType::RunCompleted],
        only_failures: true,
        pipeline: None,
        receiver: Receiver::Chat,
    },
    SubSpec {
        id: "sub_seed_deploy_tracker",
        url: "https://deploys.example/api/v1/cdevents",
        secret: "deploy-tracker",
        format: DeliveryFormat::Cdevents,
        events: &[EventType::DeploymentCompleted],
        only_failures: false,
        pipeline: None,
        receiver: Receiver::Tracker,
    },
    SubSpec {
        id: "sub_seed_legacy_jobserv",
        url: "https://legacy-ci.example/jobserv/webhook",
        secret: "legacy-ci",
        format: DeliveryFormat::Jobserv,
        events: &[EventType::RunCompleted],
        only_failures: false,
        pipeline: Some("payments/ledger-ci"),
        receiver: Receiver::Legacy,
    },
];

/// Creates the subscriptions (those missing), as of `at`; returns each with its receiver.
async fn subscriptions(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    at: OffsetDateTime,
) -> Result<Vec<(String, Receiver)>, SeedError> {
    let mut out = Vec::new();
    for spec in &SUBSCRIPTIONS {
        if store.get_subscription(&tenant.id, spec.id).await?.is_none() {
            store
                .create_subscription(&Subscription {
                    id: spec.id.into(),
                    tenant_id: tenant.id.clone(),
                    url: spec.url.into(),
                    secret_name: spec.secret.into(),
                    format: spec.format,
                    headers: Vec::new(),
                    events: spec.events.to_vec(),
                    only_failures: spec.only_failures,
                    pipeline: spec.pipeline.map(str::to_owned),
                    branch: None,
                    project: None,
                    enabled: true,
                    disabled_reason: None,
                    disabled_at: None,
                    failing_since: None,
                    created_at: at,
                    updated_at: at,
                })
                .await?;
        }
        out.push((spec.id.to_owned(), spec.receiver));
    }
    Ok(out)
}

/// What a receiver answered: the status and `Retry-After`, or why nothing came; the body; how
/// long it took.
type Answer = (
    Result<(u16, Option<std::time::Duration>), String>,
    Option<String>,
    i64,
);

fn answer(
    receiver: Receiver,
    message: &Value,
    at: OffsetDateTime,
    made: usize,
    now: OffsetDateTime,
    rng: &mut SmallRng,
) -> Answer {
    let quick = rng.random_range(60..420);
    match receiver {
        Receiver::Chat => {
            let branch = message["branch"].as_str().unwrap_or("");
            if branch.contains('/') {
                (
                    Ok((500, None)),
                    Some(r#"{"error":"TypeError: Cannot read properties of undefined (reading 'login')"}"#.into()),
                    quick,
                )
            } else if made == 1 && rng.random_bool(0.06) {
                (
                    Ok((502, None)),
                    Some("<html><body><h1>502 Bad Gateway</h1></body></html>".into()),
                    quick * 30,
                )
            } else {
                (Ok((200, None)), Some(r#"{"ok":true}"#.into()), quick)
            }
        }
        Receiver::Tracker => {
            if now - at < Duration::hours(5) {
                (
                    Err("timed out after 10000 ms (delivery_timeout)".into()),
                    None,
                    10_000,
                )
            } else if made == 1 && rng.random_bool(0.05) {
                (
                    Ok((503, Some(std::time::Duration::from_secs(120)))),
                    Some("Service Unavailable: deploying a new version".into()),
                    quick,
                )
            } else {
                (Ok((202, None)), Some(r#"{"accepted":1}"#.into()), quick)
            }
        }
        Receiver::Legacy => (
            Err("error sending request for url (https://legacy-ci.example/jobserv/webhook): client error (Connect): dns error: failed to lookup address information: Name or service not known".into()),
            None,
            rng.random_range(2..40),
        ),
    }
}

/// Plays the deliveries of the seeded subscriptions that were never attempted, in time order,
/// through the store's claim and record calls with the delivery worker's verdicts and its
/// sustained-failure rule, as if a worker had run all along; returns how many ended delivered,
/// pending and failed.
async fn play_deliveries(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    subs: &[(String, Receiver)],
    now: OffsetDateTime,
    seed: u64,
) -> Result<[u64; 3], SeedError> {
    let config = crate::config::Config::default();
    let schedule = crate::delivery::schedule::RetrySchedule::parse(&config.delivery_schedule)
        .map_err(SeedError::Options)?;
    let disable_after = crate::config::parse_duration(&config.delivery_disable_after)
        .map_err(SeedError::Options)?;
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xde11_7e55);
    let receivers: HashMap<&str, Receiver> = subs.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    // The legacy receiver went away a little before the middle of the subscriptions' life.
    let created = match store
        .get_subscription(&tenant.id, SUBSCRIPTIONS[2].id)
        .await?
    {
        Some(s) => s.created_at,
        None => now,
    };
    let decommissioned = now - (now - created) * 0.46;

    // When each fresh delivery is next due (first: its event's time).
    let mut due: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut sub_of: HashMap<String, String> = HashMap::new();
    let mut queue: BinaryHeap<Reverse<(i64, String)>> = BinaryHeap::new();
    // Subscriptions that are disabled: their deliveries wait, nobody claims them.
    let mut off: HashSet<String> = HashSet::new();
    for (sub, _) in subs {
        if store
            .get_subscription(&tenant.id, sub)
            .await?
            .is_some_and(|s| !s.enabled)
        {
            off.insert(sub.clone());
        }
        let mut cursor = None;
        loop {
            let page = store
                .list_deliveries(
                    &tenant.id,
                    sub,
                    &DeliveryFilter {
                        status: Some(DeliveryStatus::Pending),
                        ..DeliveryFilter::default()
                    },
                    &PageRequest { limit: 500, cursor },
                )
                .await?;
            for d in page.items.iter().filter(|d| d.attempts == 0) {
                let at = d.next_attempt_at.unwrap_or(d.created_at);
                queue.push(Reverse((cistern_core::to_millis(at), d.id.clone())));
                due.insert(d.id.clone(), at);
                sub_of.insert(d.id.clone(), sub.clone());
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let step = Duration::minutes(30);
    while let Some(Reverse((first, _))) = queue.peek().cloned() {
        let first = cistern_core::from_millis(first);
        if first > now {
            break;
        }
        let clock = (first + step).min(now);
        let mut live = false;
        while let Some(Reverse((t, id))) = queue.peek() {
            if *t > cistern_core::to_millis(clock) {
                break;
            }
            live |= sub_of.get(id).is_some_and(|s| !off.contains(s));
            queue.pop();
        }
        if !live {
            continue;
        }
        let claimed = store
            .claim_deliveries(&ClaimRequest {
                node: "seed".into(),
                token: uuid::Uuid::new_v4().to_string(),
                now: clock,
                lease_until: clock + Duration::hours(1),
                limit: 100_000,
                per_subscription: 100_000,
            })
            .await?;
        // Another subscription's deliveries (a database in use) are given back untouched.
        let (mine, others): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|d| {
            due.contains_key(&d.id) && receivers.contains_key(d.subscription.id.as_str())
        });
        for d in &others {
            store
                .release_deliveries(&d.token, std::slice::from_ref(&d.id))
                .await?;
        }
        let mut records = Vec::with_capacity(mine.len());
        for d in mine {
            let started = due[&d.id];
            let made = (d.tries + 1) as usize;
            let message: Value = serde_json::from_str(&d.message).unwrap_or(Value::Null);
            let receiver = receivers[d.subscription.id.as_str()];
            let (answer, body, took) = match receiver {
                Receiver::Legacy if started < decommissioned => (
                    Ok((200, None)),
                    Some("OK".into()),
                    rng.random_range(40..200),
                ),
                r => answer(r, &message, started, made, now, &mut rng),
            };
            let ended = started + Duration::milliseconds(took);
            let code = answer.as_ref().ok().map(|(c, _)| *c);
            let v = crate::delivery::verdict(&schedule, made, answer, &d.id, started, ended);
            if let NextStep::RetryAt(t) = v.next {
                due.insert(d.id.clone(), t);
                queue.push(Reverse((cistern_core::to_millis(t), d.id.clone())));
            }
            records.push(AttemptRecord {
                delivery_id: d.id.clone(),
                token: d.token.clone(),
                tenant_id: d.tenant_id.clone(),
                subscription_id: d.subscription.id.clone(),
                attempt: DeliveryAttempt {
                    attempt: d.attempts + 1,
                    started_at: started,
                    duration_ms: took,
                    status_code: code,
                    response_body: body,
                    error: v.error,
                    node: Some("node-seed".into()),
                },
                next: v.next,
                disable: v.disable,
            });
        }
        if records.is_empty() {
            continue;
        }
        records.sort_by_key(|r| r.attempt.started_at);
        // Recorded as of the batch's last answer (delivery and disable times follow it).
        let clock = records
            .iter()
            .map(|r| r.attempt.started_at + Duration::milliseconds(r.attempt.duration_ms))
            .max()
            .unwrap_or(clock)
            .min(now);
        let health = store.record_attempts(&records, clock).await?;
        off.extend(
            health
                .iter()
                .filter(|h| !h.enabled)
                .map(|h| h.subscription_id.clone()),
        );
        for (tenant_id, sub, reason) in
            crate::delivery::to_disable(&health, &records, clock, disable_after)
        {
            store
                .set_subscription_enabled(&tenant_id, &sub, false, Some(&reason), clock)
                .await?;
            off.insert(sub);
        }
    }
    let mut counts = [0u64; 3];
    for (sub, _) in subs {
        for (i, status) in [
            DeliveryStatus::Delivered,
            DeliveryStatus::Pending,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .enumerate()
        {
            let mut cursor = None;
            loop {
                let page = store
                    .list_deliveries(
                        &tenant.id,
                        sub,
                        &DeliveryFilter {
                            status: Some(status),
                            ..DeliveryFilter::default()
                        },
                        &PageRequest { limit: 500, cursor },
                    )
                    .await?;
                counts[i] += page.items.len() as u64;
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
    }
    Ok(counts)
}

/// A seeded satellite's last heartbeat.
struct SatSpec {
    id: &'static str,
    version: &'static str,
    /// How long ago it arrived.
    age: Duration,
    spool: i64,
    /// How long ago it last forwarded something.
    forward: Duration,
    error: Option<&'static str>,
    details: Value,
}

/// Satellites: one well, one degraded (its last heartbeat reports an error), one stale.
async fn satellites(
    store: &Arc<dyn Store>,
    tenant: &Tenant,
    opts: &SeedOptions,
) -> Result<usize, SeedError> {
    let now = opts.now;
    let current = env!("CARGO_PKG_VERSION");
    let specs = [
        SatSpec {
            id: "plant-berlin",
            version: current,
            age: Duration::seconds(40),
            spool: 0,
            forward: Duration::minutes(2),
            error: None,
            details: json!({"spool_bytes": 0, "spool_bound_bytes": 1_073_741_824u64,
                   "integrations": [{"id": "jenkins-main", "application": "jenkins", "poll_seconds": 60}]}),
        },
        SatSpec {
            id: "plant-lyon",
            version: "0.0.9",
            age: Duration::seconds(25),
            spool: 37,
            forward: Duration::hours(2),
            error: Some("GET https://gitlab.plant-lyon.example/api/v4/projects/12/pipelines: 503 Service Unavailable"),
            details: json!({"spool_bytes": 5_872_311, "spool_bound_bytes": 1_073_741_824u64,
                   "integrations": [{"id": "gitlab-lyon", "application": "gitlab", "poll_seconds": 120}]}),
        },
        SatSpec {
            id: "lab-rack-2",
            version: current,
            age: Duration::hours(3),
            spool: 4,
            forward: Duration::hours(3),
            error: None,
            details: json!({"spool_bytes": 18_204, "spool_bound_bytes": 268_435_456u64, "integrations": []}),
        },
    ];
    let first_seen = now - Duration::days(i64::from(opts.days));
    for spec in &specs {
        let hb = |at: OffsetDateTime| SatelliteHeartbeat {
            satellite_id: spec.id.into(),
            version: spec.version.into(),
            config_hash: Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                format!("{} {}", spec.id, spec.version).as_bytes(),
            ))),
            sent_at: at - Duration::milliseconds(180),
            received_at: at,
            interval_seconds: 60,
            spool_depth: spec.spool,
            last_forward_at: Some(now - spec.forward),
            last_error: spec.error.map(str::to_owned),
            details: spec.details.clone(),
        };
        store
            .put_satellite_heartbeat(&tenant.id, &hb(first_seen))
            .await?;
        store
            .put_satellite_heartbeat(&tenant.id, &hb(now - spec.age))
            .await?;
    }
    Ok(specs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_and_tell_a_story() {
        let mut opts = SeedOptions::new(400, 28);
        opts.now = time::macros::datetime!(2024-06-01 12:00 UTC);
        let mut gen = Generator::new(&opts);
        let parse_opts = ParseOptions {
            max_log_bytes: 1 << 20,
            now: opts.now,
        };
        let (mut deploys, mut failed, mut logs, mut n) = (0, 0, 0, 0);
        let mut last_start = i64::MIN;
        while let Some(g) = gen.next_run() {
            n += 1;
            let body = serde_json::to_vec(&g.payload).unwrap();
            let items = sei::parse(&body, &parse_opts).expect("generated payload parses");
            let Inbound::Run(r) = &items[0] else {
                panic!("not a run")
            };
            let start = cistern_core::to_millis(r.started_at);
            assert!(start >= last_start, "runs come in time order");
            last_start = start;
            assert!(r.finished_at.unwrap() <= opts.now);
            assert!(!r.stages.is_empty());
            deploys += usize::from(r.cd);
            failed += usize::from(r.result.is_failed());
            if r.cd {
                assert!(
                    !r.commits.is_empty() || deploys < 3,
                    "deployments ship commits"
                );
                assert!(r.environment.is_some());
            }
            if r.result.is_failed() {
                let has_log = r
                    .stages
                    .iter()
                    .flat_map(|s| s.steps.iter())
                    .any(|s| s.log.is_some());
                logs += usize::from(has_log);
            }
        }
        assert_eq!(n, 400);
        assert!(deploys > 40 && deploys < 160, "{deploys} deployments");
        assert!(failed > 10 && failed < 120, "{failed} failures");
        assert!(logs * 10 >= failed * 8, "most failures carry a log");
    }

    #[tokio::test]
    async fn seeding_twice_keeps_one_of_each_admin_thing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            cistern_store::sqlite::SqliteStore::open(
                &dir.path().join("c.db"),
                &cistern_store::StoreSettings::default(),
            )
            .await
            .unwrap(),
        );
        let master = crate::secrets::MasterKey::load(None, &dir.path().join("c.key")).unwrap();
        let mut opts = SeedOptions::new(300, 12);
        opts.concurrency = 16;
        opts.master = Some(Arc::new(master));
        let first = seed(&store, &opts).await.unwrap();
        assert_eq!(
            (first.sources, first.subscriptions, first.satellites),
            (3, 3, 3)
        );
        let [delivered, pending, failed] = first.deliveries;
        assert!(
            delivered > 0 && pending + failed > 0,
            "{:?}",
            first.deliveries
        );
        let tenant = store.tenant_by_slug("default").await.unwrap().unwrap();
        let secrets = store.list_secrets(&tenant.id).await.unwrap();
        assert_eq!(secrets.len(), 6);
        // Every delivery was played: none is left unattempted but those a disabled
        // subscription holds.
        for s in store.list_subscriptions(&tenant.id).await.unwrap() {
            let page = store
                .list_deliveries(
                    &tenant.id,
                    &s.id,
                    &DeliveryFilter::default(),
                    &PageRequest {
                        limit: 500,
                        cursor: None,
                    },
                )
                .await
                .unwrap();
            if s.enabled {
                assert!(page.items.iter().all(|d| d.attempts > 0), "{}", s.id);
            }
        }

        let again = seed(&store, &opts).await.unwrap();
        assert_eq!(again.deliveries, first.deliveries, "nothing new to deliver");
        assert_eq!(store.list_sources(&tenant.id).await.unwrap().len(), 3);
        assert_eq!(store.list_subscriptions(&tenant.id).await.unwrap().len(), 3);
        assert_eq!(store.list_satellites(&tenant.id).await.unwrap().len(), 3);
        let after = store.list_secrets(&tenant.id).await.unwrap();
        assert!(
            after.iter().all(|s| s.previous_valid_until.is_none()),
            "no secret was rotated"
        );
        // The secrets are the hub's: its master key opens them.
        let key = crate::secrets::MasterKey::load(None, &dir.path().join("c.key")).unwrap();
        let (value, _) = crate::secrets::reveal(store.as_ref(), &key, &tenant.id, "chat-hook")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value.len(), 48);
    }

    #[test]
    fn a_large_history_has_fifty_pipelines_on_four_instances() {
        let specs = super::pipeline_specs(50);
        let names: HashSet<(&str, &str)> = specs.iter().map(|p| (p.project, p.name)).collect();
        assert_eq!(names.len(), 50);
        let instances: HashSet<usize> = specs.iter().map(|p| p.instance).collect();
        assert_eq!(instances.len(), 4);
        assert!(specs
            .iter()
            .any(|p| p.kind == Kind::Deploy("prod") && p.project.starts_with("svc")));
        assert_eq!(SeedOptions::new(LARGE, 365).pipelines, 50);
        assert_eq!(SeedOptions::new(4_000, 42).pipelines, 8);
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let mut opts = SeedOptions::new(50, 7);
        opts.now = time::macros::datetime!(2024-06-01 12:00 UTC);
        let a: Vec<Vec<u8>> = {
            let mut g = Generator::new(&opts);
            std::iter::from_fn(|| g.next_run().map(|r| r.payload.to_string().into_bytes()))
                .collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut g = Generator::new(&opts);
            std::iter::from_fn(|| g.next_run().map(|r| r.payload.to_string().into_bytes()))
                .collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn another_day_makes_the_same_runs_at_other_times() {
        let ids = |now: OffsetDateTime| -> Vec<(String, String)> {
            let mut opts = SeedOptions::new(200, 14);
            opts.now = now;
            let mut g = Generator::new(&opts);
            std::iter::from_fn(|| g.next_run())
                .map(|r| {
                    (
                        r.payload["execution_id"].as_str().unwrap().to_owned(),
                        r.payload["result"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let monday = time::macros::datetime!(2024-06-03 12:00 UTC);
        assert_eq!(ids(monday), ids(monday + time::Duration::days(5)));
    }
}
