//! Bounds on the values that identify rows (instance GUIDs, pipeline names, run keys, commit ids,
//! incident ids). They are index keys: PostgreSQL cannot index a value much beyond 2.7 kB, and no
//! sender needs one that long, so longer values are refused with the field and the rule instead
//! of failing the transaction.

use cistern_core::{FieldError, IncidentReport, RunReport};
use time::OffsetDateTime;

use crate::StoreError;

/// Longest identifying value, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

fn check(errors: &mut Vec<FieldError>, field: String, what: &str, value: &str) {
    if value.len() > MAX_KEY_BYTES {
        errors.push(FieldError::new(
            field,
            format!(
                "{what} is {} bytes long; at most {MAX_KEY_BYTES} bytes are accepted",
                value.len()
            ),
        ));
    }
}

/// Checks the identifying values of what one request reports; the prefix of each field is the
/// run's index when there are several (`runs[1].`), as the writers name them.
pub fn check_reports(
    runs: &[RunReport],
    incidents: &[IncidentReport],
    commit_times: &[(String, OffsetDateTime, Option<String>)],
) -> Result<(), StoreError> {
    let mut errors = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let p = if runs.len() > 1 {
            format!("runs[{i}].")
        } else {
            String::new()
        };
        check(
            &mut errors,
            format!("{p}instance_guid"),
            "the instance's GUID",
            &r.instance.guid,
        );
        check(
            &mut errors,
            format!("{p}job_full_name"),
            "the pipeline's full name",
            &r.pipeline.full_name,
        );
        check(
            &mut errors,
            format!("{p}execution_id"),
            "the run's key (execution id, build number or the sender's run id)",
            &r.run_key,
        );
        if let Some(c) = r.commits.iter().find(|c| c.sha.len() > MAX_KEY_BYTES) {
            check(&mut errors, format!("{p}commits"), "a commit id", &c.sha);
        }
    }
    for (i, inc) in incidents.iter().enumerate() {
        check(
            &mut errors,
            format!("incidents[{i}].id"),
            "the incident's id",
            &inc.id,
        );
        check(
            &mut errors,
            format!("incidents[{i}].source"),
            "the incident's source",
            &inc.source,
        );
    }
    for (sha, _, _) in commit_times {
        check(&mut errors, "commit".into(), "a commit id", sha);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Rejected(errors))
    }
}

/// Checks one instance GUID (a registration's or a heartbeat's).
pub fn check_guid(field: &str, guid: &str) -> Result<(), StoreError> {
    let mut errors = Vec::new();
    check(&mut errors, field.to_owned(), "the instance's GUID", guid);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Rejected(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_guids_are_refused_with_the_field() {
        assert!(check_guid("guid", &"g".repeat(MAX_KEY_BYTES)).is_ok());
        match check_guid("guid", &"g".repeat(MAX_KEY_BYTES + 1)) {
            Err(StoreError::Rejected(e)) => {
                assert_eq!(e[0].field, "guid");
                assert!(
                    e[0].message.contains("at most 1024 bytes"),
                    "{}",
                    e[0].message
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
