//! The validate phase (pure): a StreamJob's spec checked as [`millrace_crds`] says, and its
//! SQL compiled by the engine's own planner, so that a job the engine would refuse is refused
//! here with the planner's message, line and column, before anything is deployed.

use millrace_crds::v1alpha1::StreamJob;
use millrace_crds::v1alpha1::validation::validate_stream_job;

use super::error::Error;

/// What validation yields for the build phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidJob {
    /// The planner's explain output (logical plan, then the streaming dataflow), for the
    /// `plan.txt` key of the plan ConfigMap.
    pub explain: String,
}

/// Checks the spec, then plans the SQL. Spec violations come first: they are cheaper and
/// all reported at once.
pub fn validate(job: &StreamJob) -> Result<ValidJob, Error> {
    validate_stream_job(job)?;
    let plan = millrace_sql::plan_job(&job.spec.sql)?;
    Ok(ValidJob { explain: format!("{}\n{}", plan.logical_plan, plan.dataflow.explain()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> StreamJob {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn the_seed_job_plans_and_explains_itself() {
        let valid = validate(&job(include_str!("../../tests/fixtures/stream_job/seed.yaml"))).expect("valid");
        assert!(valid.explain.contains("Filter"), "{}", valid.explain);
    }

    #[test]
    fn invalid_sql_is_refused_with_line_and_column() {
        let err = validate(&job(include_str!("../../tests/fixtures/stream_job/invalid-sql.yaml")))
            .expect_err("invalid SQL");
        let Error::InvalidSql(sql) = &err else { panic!("expected InvalidSql, got {err:?}") };
        assert_eq!(sql.line, 6, "{sql}");
        assert!(sql.column > 1, "{sql}");
        assert!(err.to_string().contains("line 6, column"), "{err}");
    }

    #[test]
    fn an_invalid_spec_is_refused_before_planning() {
        let mut j = job(include_str!("../../tests/fixtures/stream_job/seed.yaml"));
        j.spec.parallelism = 300;
        let err = validate(&j).expect_err("parallelism above maxParallelism");
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(err.to_string().contains("exceeds spec.maxParallelism"), "{err}");
    }
}
