//! No dialect panics on hostile input: truncated fixtures, fixtures with any field replaced by a
//! value of the wrong type or range, random byte flips, and every fixture sent to every dialect.
//! What they accept keeps the store's identity rules (non-empty instance, pipeline and run key).

mod common;

use cistern_dialects::{
    cdevents, github, gitlab, jobserv, Headers, Inbound, ParseOptions, Rejection,
};
use common::*;
use serde_json::{json, Value};

type Parser = fn(&Headers, &[u8], &ParseOptions) -> Result<Vec<Inbound>, Rejection>;

/// (label, parser, headers, body) for every fixture, with the headers its sender would use.
fn cases() -> Vec<(String, Parser, Headers, Vec<u8>)> {
    let mut out: Vec<(String, Parser, Headers, Vec<u8>)> = Vec::new();
    for (name, body) in fixtures("jobserv") {
        out.push((
            format!("jobserv/{name}"),
            jobserv::parse,
            Headers::default(),
            body,
        ));
    }
    for (name, body) in fixtures("github") {
        let event = name.split('.').next().unwrap().to_owned();
        out.push((
            format!("github/{name}"),
            github::parse,
            headers(&[("X-GitHub-Event", &event)]),
            body,
        ));
    }
    for (name, body) in fixtures("gitlab") {
        let event = if name.starts_with("job") {
            "Job Hook"
        } else {
            "Pipeline Hook"
        };
        out.push((
            format!("gitlab/{name}"),
            gitlab::parse,
            headers(&[("X-Gitlab-Event", event)]),
            body,
        ));
    }
    for (name, body) in fixtures("cdevents") {
        out.push((
            format!("cdevents/{name}"),
            cdevents::parse,
            Headers::default(),
            body,
        ));
    }
    out
}

/// What an accepted report must keep, whatever the input.
fn check(label: &str, items: &[Inbound]) {
    for item in items {
        match item {
            Inbound::Run(r) => {
                assert!(!r.instance.guid.is_empty(), "{label}: empty instance");
                assert!(!r.pipeline.full_name.is_empty(), "{label}: empty pipeline");
                assert!(!r.run_key.is_empty(), "{label}: empty run key");
                assert!(
                    r.duration_ms.is_none_or(|d| d >= 0),
                    "{label}: negative duration"
                );
                for s in &r.stages {
                    assert!(!s.name.is_empty(), "{label}: unnamed stage");
                    assert!(
                        s.duration_ms.is_none_or(|d| d >= 0),
                        "{label}: stage duration"
                    );
                    for st in &s.steps {
                        assert!(!st.name.is_empty(), "{label}: unnamed step");
                        assert!(
                            st.duration_ms.is_none_or(|d| d >= 0),
                            "{label}: step duration"
                        );
                    }
                }
            }
            Inbound::Incident(i) => {
                assert!(
                    !i.id.is_empty() && !i.source.is_empty(),
                    "{label}: incident identity"
                )
            }
            Inbound::CommitTime { sha, .. } => assert!(!sha.is_empty(), "{label}: empty sha"),
            _ => {}
        }
    }
}

fn run(label: &str, parser: Parser, h: &Headers, body: &[u8]) -> Option<Vec<Inbound>> {
    let out = parser(h, body, &opts());
    match &out {
        Ok(items) => check(label, items),
        // A refusal always says why.
        Err(e) => assert!(!e.errors().is_empty(), "{label}: refused without a reason"),
    }
    out.ok()
}

#[test]
fn every_fixture_is_accepted_by_its_dialect() {
    for (label, parser, h, body) in cases() {
        let items =
            parser(&h, &body, &opts()).unwrap_or_else(|e| panic!("{label}: {}", e.summary()));
        check(&label, &items);
    }
}

#[test]
fn truncated_bodies_are_refused_without_panicking() {
    // A ping is acknowledged without reading its body.
    for (label, parser, h, body) in cases().into_iter().filter(|c| !c.0.ends_with("ping.json")) {
        let end = body.trim_ascii_end().len();
        let step = (end / 300).max(1);
        for cut in (0..end).step_by(step).chain(end.saturating_sub(3)..end) {
            let out = parser(&h, &body[..cut], &opts());
            assert!(out.is_err(), "{label} cut at {cut} was accepted");
        }
    }
}

/// Values of every wrong type and range.
fn hostile_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(""),
        json!({}),
        json!(-1),
        json!("2021-07-26T18:1é0000"),
        json!(true),
        json!(0),
        json!(1e300),
        json!(i64::MAX),
        json!(-9.5),
        json!("   "),
        json!("9999-12-31T23:59:59Z"),
        json!("1970-01-01T00:00:00Z"),
        json!("ééééé"),
        json!([]),
        json!([1, {}]),
        json!({}),
        json!({"id": {}}),
    ]
}

/// Every path of `v` (object keys and array indexes), depth first.
fn paths(v: &Value, prefix: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathSeg::Key(k.clone()));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathSeg::Index(i));
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[PathSeg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match seg {
        PathSeg::Key(k) => &mut v[k.as_str()],
        PathSeg::Index(i) => &mut v[*i],
    })
}

#[test]
fn any_field_of_any_type_is_refused_or_accepted_but_never_panics() {
    let values = hostile_values();
    for (label, parser, h, body) in cases() {
        let base: Value = serde_json::from_slice(&body).unwrap();
        let mut all = Vec::new();
        paths(&base, &mut Vec::new(), &mut all);
        // Objects no dialect reads are covered by their root alone (the tests stay quick).
        let unread = [
            "owner",
            "license",
            "organization",
            "installation",
            "hook",
            "head_repository",
            "merge_request",
            "source_pipeline",
            "artifacts_file",
            "links",
            "customData",
            "runner",
        ];
        all.retain(|p| {
            p.iter()
                .rev()
                .skip(1)
                .all(|seg| !matches!(seg, PathSeg::Key(k) if unread.contains(&k.as_str())))
        });
        for (i, path) in all.iter().enumerate() {
            // Every path gets the first five values and three of the others, in turn.
            let rest = &values[5..];
            let picked = values[..5]
                .iter()
                .chain((0..3).map(|j| &rest[(i * 3 + j) % rest.len()]));
            for hostile in picked {
                let mut v = base.clone();
                *at(&mut v, path) = hostile.clone();
                run(
                    &format!("{label} {path:?} = {hostile}"),
                    parser,
                    &h,
                    v.to_string().as_bytes(),
                );
            }
            // And the field removed.
            let mut v = base.clone();
            if let Some((PathSeg::Key(k), parent)) = path.split_last() {
                if let Some(o) = at(&mut v, parent).as_object_mut() {
                    o.remove(k);
                }
            }
            run(
                &format!("{label} {path:?} removed"),
                parser,
                &h,
                v.to_string().as_bytes(),
            );
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    // xorshift64*: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for (label, parser, h, body) in cases() {
        for _ in 0..200 {
            let mut b = body.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() % b.len() as u64) as usize;
                b[i] = (next() & 0xff) as u8;
            }
            run(&label, parser, &h, &b);
        }
    }
}

#[test]
fn every_fixture_sent_to_every_dialect_never_panics() {
    let parsers: [(&str, Parser); 4] = [
        ("jobserv", jobserv::parse),
        ("github", github::parse),
        ("gitlab", gitlab::parse),
        ("cdevents", cdevents::parse),
    ];
    let header_sets = [
        Headers::default(),
        headers(&[("X-GitHub-Event", "workflow_run")]),
        headers(&[("X-GitHub-Event", "workflow_job")]),
        headers(&[("X-Gitlab-Event", "Pipeline Hook")]),
        headers(&[("X-Gitlab-Event", "Job Hook")]),
        headers(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "dev.cdevents.taskrun.started.0.2.0"),
        ]),
        headers(&[("Content-Type", "application/cloudevents+json")]),
        headers(&[("Content-Type", "application/cloudevents-batch+json")]),
    ];
    for (label, _, _, body) in cases() {
        for (name, parser) in parsers {
            for h in &header_sets {
                run(&format!("{label} as {name}"), parser, h, &body);
            }
        }
    }
}
