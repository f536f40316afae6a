//! Which environment a deployment went to, for senders that have no field of that name in
//! their own format: SEI custom CI/CD runs (seed 000) and Allstacks custom CD jobs (seed 003).
//!
//! The first found wins, in this order:
//! 1. an `environment` field of the body (SEI also takes `env`);
//! 2. a parameter (`job_run_params`) named `ENVIRONMENT`, `ENV` or `DEPLOY_ENV`, in that order,
//!    names compared case-insensitively;
//! 3. an Allstacks `optional` entry whose key is `environment` (case-insensitive).

use cistern_core::{CustomField, Param};
use serde_json::Value;

/// Parameter names that name the environment, most explicit first.
pub const PARAM_NAMES: [&str; 3] = ["ENVIRONMENT", "ENV", "DEPLOY_ENV"];

/// The environment of a run: the explicit field, else the first matching parameter, else the
/// matching custom field. Blank values count as absent.
pub fn environment_of(
    explicit: Option<String>,
    params: &[Param],
    custom_fields: &[CustomField],
) -> Option<String> {
    explicit
        .or_else(|| {
            PARAM_NAMES.iter().find_map(|name| {
                params
                    .iter()
                    .find(|p| p.name.trim().eq_ignore_ascii_case(name))
                    .and_then(|p| text(&p.value))
            })
        })
        .or_else(|| {
            custom_fields
                .iter()
                .find(|f| f.key.trim().eq_ignore_ascii_case("environment"))
                .and_then(|f| text(&f.value))
        })
}

/// A parameter value as text: a string, or a number's decimal text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cistern_core::CustomFieldType;
    use serde_json::json;

    fn p(name: &str, value: Value) -> Param {
        Param {
            name: name.into(),
            value,
            kind: Some("StringParameterValue".into()),
        }
    }

    #[test]
    fn the_order_is_field_then_parameters_then_custom_fields() {
        let params = vec![
            p("deploy_env", json!("staging")),
            p("Env", json!("qa")),
            p("version", json!(1)),
        ];
        let custom = vec![CustomField {
            key: "Environment".into(),
            kind: CustomFieldType::String,
            value: json!("prod-eu"),
        }];
        assert_eq!(
            environment_of(Some("prod".into()), &params, &custom).as_deref(),
            Some("prod")
        );
        // ENV comes before DEPLOY_ENV, whatever the order of the parameters.
        assert_eq!(
            environment_of(None, &params, &custom).as_deref(),
            Some("qa")
        );
        assert_eq!(
            environment_of(None, &params[..1], &custom).as_deref(),
            Some("staging")
        );
        assert_eq!(
            environment_of(None, &[], &custom).as_deref(),
            Some("prod-eu")
        );
        assert_eq!(environment_of(None, &[p("ENV", json!(" "))], &[]), None);
        assert_eq!(environment_of(None, &params[2..], &[]), None);
    }
}
