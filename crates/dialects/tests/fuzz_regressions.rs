//! Every input that once crashed a fuzz target (`fuzz/`, `scripts/fuzz.sh`), replayed through
//! the same checks on stable Rust: `tests/fuzz-regressions/<target>/<name>` holds the input as the
//! fuzzer saw it.

use cistern_dialects::{cdevents, github, gitlab, jobserv, Headers, Inbound, ParseOptions};

fn opts() -> ParseOptions {
    ParseOptions {
        max_log_bytes: 4096,
        now: time::OffsetDateTime::from_unix_timestamp(1_717_200_000).unwrap(),
    }
}

fn check(name: &str, out: Result<Vec<Inbound>, cistern_dialects::Rejection>) {
    match out {
        Err(e) => assert!(!e.errors().is_empty(), "{name}: a refusal without a reason"),
        Ok(items) => {
            for item in items {
                if let Inbound::Run(r) = item {
                    assert!(!r.instance.guid.is_empty(), "{name}");
                    assert!(!r.pipeline.full_name.is_empty(), "{name}");
                    assert!(!r.run_key.is_empty(), "{name}");
                    assert!(r.duration_ms.is_none_or(|d| d >= 0), "{name}");
                }
            }
        }
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Replays one input as its target did.
fn replay(target: &str, name: &str, data: &[u8]) {
    let (first, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
    match target {
        "json" => {
            if let Ok(v) = cistern_dialects::json::parse(data, "body") {
                let again = cistern_dialects::json::parse(v.to_string().as_bytes(), "body")
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(v, again, "{name}: parse → render → parse changed the value");
            }
        }
        "sei" => check(name, cistern_dialects::sei::parse(data, &opts())),
        "allstacks" => check(name, cistern_dialects::allstacks::parse(data, &opts())),
        "propelo" => {
            let _ = cistern_dialects::propelo::parse(data, &opts());
        }
        "jobserv" => check(name, jobserv::parse(&Headers::default(), data, &opts())),
        "github" => {
            let events = ["workflow_run", "workflow_job", "ping", "push", ""];
            let h = headers(&[("X-GitHub-Event", events[first as usize % events.len()])]);
            check(name, github::parse(&h, rest, &opts()));
        }
        "gitlab" => {
            let events = ["Pipeline Hook", "Job Hook", "Push Hook", ""];
            let h = headers(&[("X-Gitlab-Event", events[first as usize % events.len()])]);
            check(name, gitlab::parse(&h, rest, &opts()));
        }
        "cdevents" => {
            let h = match first % 4 {
                0 => Headers::default(),
                1 => headers(&[("content-type", "application/cloudevents+json")]),
                2 => headers(&[("content-type", "application/cloudevents-batch+json")]),
                _ => headers(&[
                    ("ce-specversion", "1.0"),
                    ("ce-id", "fuzz-1"),
                    ("ce-source", "/fuzz"),
                    ("ce-type", "dev.cdevents.pipelinerun.finished.0.1.1"),
                ]),
            };
            check(name, cdevents::parse(&h, rest, &opts()));
        }
        "multipart" => {
            let types = [
                "multipart/form-data; boundary=XYZ",
                "multipart/form-data; boundary=\"a b\"",
                "multipart/form-data; boundary=------------------------d74496d66958873e",
                "multipart/form-data",
            ];
            let _ = cistern_dialects::multipart::split(
                types[first as usize % types.len()],
                bytes::Bytes::copy_from_slice(rest),
            );
        }
        "logzip" => {
            use cistern_dialects::logzip::{LogZip, ZipLimits};
            if let Ok(mut zip) = LogZip::open(data.to_vec(), ZipLimits::default()) {
                for entry in ["log", "0", "a/b", ""] {
                    let _ = zip.read_tail(entry, 4096);
                }
            }
        }
        other => panic!("{name}: no replay for fuzz target {other:?}; add one here"),
    }
}

#[test]
fn inputs_that_once_crashed_a_fuzz_target_are_handled() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).expect("fuzz-regressions directory") {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue;
        }
        let t = target.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let name = format!("{t}/{}", input.file_name().unwrap().to_string_lossy());
            replay(&t, &name, &std::fs::read(&input).unwrap());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no regression inputs found under {}",
        root.display()
    );
}
