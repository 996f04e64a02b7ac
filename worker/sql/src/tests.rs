//! Planning tests: the seed jobs plan into the expected dataflows, and bad SQL fails with the
//! right line and column.

use millrace_runtime::operators::{OverFrame, OverTime};
use millrace_runtime::{Exchange, OperatorSpec, TimeAttribute};

use crate::plan_job;

fn seed(name: &str) -> String {
    let path = format!("{}/../../examples/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn seed_a_plans_a_global_over_window_of_three_rows() {
    let plan = plan_job(&seed("seed-a-rolling-average.sql")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.source.name, "input");
    assert_eq!(plan.sink.name, "output");
    assert!(matches!(plan.dataflow.source.time, TimeAttribute::ProcessingTime { column: 1 }));
    assert_eq!(plan.source.options["dlq_topic"], "input-topic-dlq");
    let stages = &plan.dataflow.stages;
    assert_eq!(stages.len(), 2, "{}", plan.dataflow.explain());
    assert!(matches!(stages[1].input, Exchange::Single));
    let over = stages[1].operators.iter().find_map(|op| match op {
        OperatorSpec::OverWindow(spec) => Some(spec),
        _ => None,
    });
    let over = over.unwrap_or_else(|| panic!("no OVER operator in {}", plan.dataflow.explain()));
    assert_eq!(over.functions.len(), 2);
    assert!(over.functions.iter().all(|f| f.frame == OverFrame::Rows { preceding: Some(2) }));
    assert_eq!(over.time, OverTime::Processing);
    assert_eq!(plan.dataflow.output_schema.field(0).data_type(), &arrow::datatypes::DataType::Float64);
}

#[test]
fn seed_b_plans_global_tumbling_windows_on_both_time_kinds() {
    for (file, event_time) in
        [("seed-b-tumbling-average.sql", false), ("seed-b-tumbling-average-event-time.sql", true)]
    {
        let plan = plan_job(&seed(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let window = plan.dataflow.stages[1].operators.iter().find_map(|op| match op {
            OperatorSpec::WindowAggregate(spec) => Some(spec),
            _ => None,
        });
        let window = window.unwrap_or_else(|| panic!("no window in {}", plan.dataflow.explain()));
        assert_eq!(window.assigner, millrace_runtime::operators::WindowAssigner::Tumbling { size_ms: 3000 });
        assert!(window.keys.is_empty());
        assert!(matches!(plan.dataflow.stages[1].input, Exchange::Single));
        match plan.dataflow.source.time {
            TimeAttribute::EventTime { column: 1, max_out_of_orderness_ms: 1000, idle_timeout_ms: None } => {
                assert!(event_time)
            }
            TimeAttribute::ProcessingTime { column: 1 } => assert!(!event_time),
            other => panic!("{file}: unexpected time {other:?}"),
        }
    }
}

#[test]
fn keyed_hopping_window_uses_a_hash_exchange() {
    let sql = "CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) WITH (connector = 'kafka', topic = 'b', format = 'json');
               CREATE TABLE out (auction BIGINT, window_start TIMESTAMP(3), bids BIGINT, top BIGINT) WITH (connector = 'stdout');
               INSERT INTO out SELECT auction, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS w, COUNT(*), MAX(price)
               FROM bids GROUP BY auction, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)";
    let plan = plan_job(sql).unwrap_or_else(|e| panic!("{e}"));
    let stage = &plan.dataflow.stages[1];
    assert!(matches!(&stage.input, Exchange::Hash(keys) if keys.len() == 1));
    let OperatorSpec::WindowAggregate(spec) = &stage.operators[0] else {
        panic!("{}", plan.dataflow.explain())
    };
    assert_eq!(
        spec.assigner,
        millrace_runtime::operators::WindowAssigner::Hopping { size_ms: 10_000, slide_ms: 2_000 }
    );
    assert_eq!(spec.window_position, 1);
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let err =
        plan_job("CREATE TABLE t (v BIGINT) WITH (connector = 'kafka');\nINSERT INTO t SELEC v FROM t;")
            .expect_err("invalid");
    assert_eq!((err.line, err.column), (2, 15), "{err}");
}

#[test]
fn unknown_columns_point_at_the_column() {
    let sql = "CREATE TABLE t (v BIGINT) WITH (connector = 'kafka');\nCREATE TABLE s (v BIGINT) WITH (connector = 'kafka');\nINSERT INTO s\nSELECT w FROM t;";
    let err = plan_job(sql).expect_err("invalid");
    assert!(err.message.contains('w'), "{err}");
    assert_eq!((err.line, err.column), (4, 8), "{err}");
}

#[test]
fn unsupported_plans_are_refused_before_running() {
    let sql = "CREATE TABLE t (v BIGINT) WITH (connector = 'kafka');\nCREATE TABLE s (v BIGINT) WITH (connector = 'kafka');\nINSERT INTO s SELECT v FROM t ORDER BY v;";
    let err = plan_job(sql).expect_err("ORDER BY is unbounded");
    assert_eq!(err.line, 3, "{err}");
    let sql = "CREATE TABLE t (v BIGINT, ts TIMESTAMP) WITH (connector = 'kafka');\nCREATE TABLE s (v DOUBLE) WITH (connector = 'kafka');\nINSERT INTO s SELECT AVG(v) FROM t GROUP BY tumble(ts, INTERVAL '3' SECOND);";
    let err = plan_job(sql).expect_err("ts is no time attribute");
    assert!(err.message.contains("time attribute"), "{err}");
    assert!(err.hint.is_some());
}

#[test]
fn watermark_must_name_a_declared_timestamp() {
    let sql = "CREATE TABLE t (\n  v BIGINT,\n  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND\n) WITH (connector = 'kafka');";
    let err = plan_job(sql).expect_err("ts is not declared");
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn idle_timeout_is_a_time_option_not_a_connector_option() {
    let sql = "CREATE TABLE t (v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
                 WITH (connector = 'kafka', topic = 't', watermark_idle_timeout_ms = '5000');
               CREATE TABLE s (v BIGINT) WITH (connector = 'stdout');
               INSERT INTO s SELECT v FROM t";
    let plan = plan_job(sql).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        plan.dataflow.source.time,
        TimeAttribute::EventTime { idle_timeout_ms: Some(5000), .. }
    ));
    assert!(!plan.source.options.contains_key("watermark_idle_timeout_ms"));
    let err = plan_job(&sql.replace("WATERMARK FOR ts AS ts", "w BIGINT")).expect_err("needs a watermark");
    assert!(err.message.contains("needs a WATERMARK"), "{err}");
}

#[test]
fn every_seed_example_plans() {
    let dir = format!("{}/../../examples/seed", env!("CARGO_MANIFEST_DIR"));
    let mut planned = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "sql") {
            let sql = std::fs::read_to_string(&path).expect("readable example");
            plan_job(&sql).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            planned += 1;
        }
    }
    assert!(planned >= 4, "found only {planned} examples");
}

const CLICKS: &str = "CREATE TABLE clicks (user_id STRING, v BIGINT, ts TIMESTAMP(3),
                 WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'kafka', topic = 'c', format = 'json' OPTIONS);
               CREATE TABLE out (user_id STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT)
                 WITH (connector = 'stdout');\n";

fn clicks_job(options: &str, query: &str) -> String {
    format!("{}{query}", CLICKS.replace(" OPTIONS", options))
}

#[test]
fn session_and_cumulate_windows_plan_with_window_end() {
    use millrace_runtime::operators::{WindowAssigner, WindowOutputColumn};
    let session = clicks_job(
        ", allowed_lateness_ms = '5000'",
        "INSERT INTO out SELECT user_id, session(ts, INTERVAL '30' SECOND) AS window_start, window_end(ts) AS window_end, COUNT(*)
         FROM clicks GROUP BY user_id, session(ts, INTERVAL '30' SECOND)",
    );
    let plan = plan_job(&session).unwrap_or_else(|e| panic!("{e}"));
    let stage = &plan.dataflow.stages[1];
    assert!(matches!(&stage.input, Exchange::Hash(keys) if keys.len() == 1));
    let OperatorSpec::SessionWindow(spec) = &stage.operators[0] else {
        panic!("{}", plan.dataflow.explain())
    };
    assert_eq!((spec.gap_ms, spec.allowed_lateness_ms, spec.late_side_output), (30_000, 5_000, false));
    assert_eq!(spec.output_columns, vec![WindowOutputColumn::WindowEnd, WindowOutputColumn::Aggregate(0)]);
    assert!(!plan.source.options.contains_key("allowed_lateness_ms"));

    let cumulate = clicks_job(
        ", late_topic = 'clicks-late'",
        "INSERT INTO out SELECT user_id, cumulate(ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND), window_end(ts), COUNT(*)
         FROM clicks GROUP BY user_id, cumulate(ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND)",
    );
    let plan = plan_job(&cumulate).unwrap_or_else(|e| panic!("{e}"));
    let OperatorSpec::WindowAggregate(spec) = &plan.dataflow.stages[1].operators[0] else {
        panic!("{}", plan.dataflow.explain())
    };
    assert_eq!(spec.assigner, WindowAssigner::Cumulate { step_ms: 1000, max_size_ms: 4000 });
    assert!(spec.late_side_output);
    let late = plan.dataflow.late_output.as_ref().expect("a late output");
    assert_eq!(late.stage, 1);
    assert_eq!(late.schema.fields().len(), 3, "the late rows are the window stage's input rows");
    assert_eq!(plan.source.late_output, Some(crate::LateTarget::Topic("clicks-late".into())));
    assert!(!plan.source.options.contains_key("late_topic"));
}

#[test]
fn bad_window_and_lateness_options_are_refused() {
    let query = "INSERT INTO out SELECT user_id, cumulate(ts, INTERVAL '2' SECOND, INTERVAL '3' SECOND), window_end(ts), COUNT(*)
         FROM clicks GROUP BY user_id, cumulate(ts, INTERVAL '2' SECOND, INTERVAL '3' SECOND)";
    let err = plan_job(&clicks_job("", query)).expect_err("3 s is no multiple of 2 s");
    assert!(err.message.contains("multiple of step"), "{err}");
    let no_window = "INSERT INTO out SELECT user_id, ts AS window_start, ts AS window_end, v FROM clicks";
    let err = plan_job(&clicks_job(", late_path = '/tmp/late.json'", no_window)).expect_err("no window");
    assert!(err.message.contains("no window aggregate"), "{err}");
    let err = plan_job(&clicks_job(", allowed_lateness_ms = 'soon'", no_window)).expect_err("not a number");
    assert!(err.message.contains("allowed_lateness_ms"), "{err}");
    let err =
        plan_job(&clicks_job(", late_path = 'a', late_topic = 'b'", no_window)).expect_err("two outputs");
    assert!(err.message.contains("one late side output"), "{err}");
    let wrong_end = "INSERT INTO out SELECT user_id, session(ts, INTERVAL '3' SECOND), window_end(ts + INTERVAL '1' SECOND), COUNT(*)
         FROM clicks GROUP BY user_id, session(ts, INTERVAL '3' SECOND)";
    let err = plan_job(&clicks_job("", wrong_end)).expect_err("window_end of another time");
    assert!(err.message.contains("window_end"), "{err}");
}

/// One line: the sink is on line 2, the query on line 3.
const UPDATING_SOURCE: &str = "CREATE TABLE clicks (user_id STRING, page STRING, amount BIGINT, pt AS PROCTIME()) WITH (connector = 'kafka', topic = 'c', format = 'json');\n";

/// A job of `UPDATING_SOURCE`, a sink (line 2) and a query (line 3).
fn updating_job(sink: &str, query: &str) -> String {
    format!("{UPDATING_SOURCE}{sink}\n{query}")
}

const PER_USER_UPSERT: &str = "CREATE TABLE per_user (user_id STRING, n BIGINT, total BIGINT, PRIMARY KEY (user_id) NOT ENFORCED) WITH (connector = 'upsert-kafka', topic = 'o', format = 'json');";

fn find_operator(plan: &crate::JobPlan, pick: impl Fn(&OperatorSpec) -> bool) -> Option<&OperatorSpec> {
    plan.dataflow.stages.iter().flat_map(|s| &s.operators).find(|op| pick(op))
}

#[test]
fn keyed_updating_aggregates_plan_as_upsert_streams_keyed_by_the_group_columns() {
    let sql = updating_job(
        PER_USER_UPSERT,
        "INSERT INTO per_user SELECT user_id, COUNT(*), SUM(amount) FROM clicks GROUP BY user_id HAVING SUM(amount) < 10",
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.sink.primary_key, vec![0]);
    let stage = &plan.dataflow.stages[1];
    assert!(matches!(&stage.input, Exchange::Hash(keys) if keys.len() == 1), "{}", plan.dataflow.explain());
    let OperatorSpec::UpdatingAggregate(spec) = &stage.operators[0] else {
        panic!("{}", plan.dataflow.explain())
    };
    assert_eq!((spec.keys.len(), spec.aggregates.len(), spec.is_insert_only()), (1, 2, false));
    assert!(
        stage
            .operators
            .iter()
            .any(|op| matches!(op, OperatorSpec::UpsertFilter { key, .. } if key == &vec![0])),
        "HAVING becomes an upsert filter: {}",
        plan.dataflow.explain()
    );
    assert!(!stage.operators.iter().any(|op| matches!(op, OperatorSpec::Filter(_))));
    assert_eq!(plan.dataflow.changelog, Some(millrace_runtime::Changelog { key: vec![0] }));

    // WHERE over the aggregated subquery, with the key selected last and renamed.
    let sink = "CREATE TABLE out (n BIGINT, who STRING, PRIMARY KEY (who) NOT ENFORCED) WITH (connector = 'upsert-kafka', topic = 'o');";
    let sql = updating_job(
        sink,
        "INSERT INTO out SELECT c, user_id AS who FROM (SELECT user_id, COUNT(*) AS c FROM clicks GROUP BY user_id) AS per WHERE c > 1",
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.dataflow.changelog, Some(millrace_runtime::Changelog { key: vec![1] }));
    assert!(find_operator(&plan, |op| matches!(op, OperatorSpec::UpsertFilter { .. })).is_some());
}

#[test]
fn global_aggregates_and_distinct_plan() {
    let sink = "CREATE TABLE out (n BIGINT) WITH (connector = 'stdout', format = 'json');";
    let plan = plan_job(&updating_job(sink, "INSERT INTO out SELECT COUNT(*) FROM clicks"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(plan.dataflow.stages[1].input, Exchange::Single));
    assert_eq!(plan.dataflow.changelog, Some(millrace_runtime::Changelog { key: Vec::new() }));

    let sink = "CREATE TABLE out (user_id STRING, page STRING) WITH (connector = 'kafka', topic = 'o');";
    for query in [
        "INSERT INTO out SELECT DISTINCT user_id, page FROM clicks",
        "INSERT INTO out SELECT user_id, page FROM clicks GROUP BY user_id, page",
    ] {
        let plan = plan_job(&updating_job(sink, query)).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(matches!(&plan.dataflow.stages[1].input, Exchange::Hash(keys) if keys.len() == 2));
        let op = find_operator(&plan, |op| matches!(op, OperatorSpec::UpdatingAggregate(_)));
        assert!(
            matches!(op, Some(OperatorSpec::UpdatingAggregate(spec)) if spec.is_insert_only()),
            "{query}: {}",
            plan.dataflow.explain()
        );
        assert_eq!(plan.dataflow.changelog, None, "{query}: DISTINCT is append-only");
    }

    // COUNT(DISTINCT) keeps DataFusion's distinct flag, in updating and window aggregates.
    let plan = plan_job(&updating_job(
        PER_USER_UPSERT,
        "INSERT INTO per_user SELECT user_id, COUNT(DISTINCT page), SUM(DISTINCT amount) FROM clicks GROUP BY user_id",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(OperatorSpec::UpdatingAggregate(spec)) =
        find_operator(&plan, |op| matches!(op, OperatorSpec::UpdatingAggregate(_)))
    else {
        panic!("{}", plan.dataflow.explain())
    };
    assert!(spec.aggregates.iter().all(|a| a.is_distinct()));
}

#[test]
fn updating_aggregates_take_the_state_ttl_and_jobs_the_state_limit() {
    let query = "INSERT INTO per_user SELECT user_id, COUNT(*), SUM(amount) FROM clicks GROUP BY user_id";
    let aggregate_ttl = |sql: &str| {
        let plan = plan_job(sql).unwrap_or_else(|e| panic!("{e}"));
        match find_operator(&plan, |op| matches!(op, OperatorSpec::UpdatingAggregate(_))) {
            Some(OperatorSpec::UpdatingAggregate(spec)) => (spec.ttl_ms, plan.state_max_bytes),
            _ => panic!("{}", plan.dataflow.explain()),
        }
    };
    assert_eq!(aggregate_ttl(&updating_job(PER_USER_UPSERT, query)), (None, None));
    let sql = format!(
        "SET 'table.exec.state.ttl' = '10 min';\nSET 'state.max-bytes' = '2 gb';\n{}",
        updating_job(PER_USER_UPSERT, query)
    );
    assert_eq!(aggregate_ttl(&sql), (Some(600_000), Some(2 << 30)));
    let sink = "CREATE TABLE out (user_id STRING) WITH (connector = 'kafka', topic = 'o', format = 'json');";
    let distinct = format!(
        "SET 'table.exec.state.ttl' = '1 h';\n{}",
        updating_job(sink, "INSERT INTO out SELECT DISTINCT user_id FROM clicks")
    );
    assert_eq!(aggregate_ttl(&distinct), (Some(3_600_000), None));

    // A size that is not one is refused where it is written.
    let err = plan_job(&format!("SET 'state.max-bytes' = 'lots';\n{}", updating_job(PER_USER_UPSERT, query)))
        .expect_err("not a size");
    assert!(err.message.contains("'lots' is not a memory size"), "{err}");
    assert_eq!((err.line, err.column), (1, 1), "{err}");
}

#[test]
fn updating_queries_into_append_only_kafka_are_refused_with_a_position() {
    let sink = "CREATE TABLE out (user_id STRING, n BIGINT) WITH (connector = 'kafka', topic = 'o', format = 'json');";
    let err = plan_job(&updating_job(
        sink,
        "INSERT INTO out SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id",
    ))
    .expect_err("kafka is append-only");
    assert!(err.message.contains("doesn't support consuming update changes"), "{err}");
    assert!(err.hint.as_deref().is_some_and(|h| h.contains("upsert-kafka")), "{err}");
    assert_eq!((err.line, err.column), (3, 1), "{err}");

    let keyed = "CREATE TABLE out (user_id STRING, n BIGINT, PRIMARY KEY (user_id) NOT ENFORCED) WITH (connector = 'kafka', topic = 'o');";
    let err = plan_job(&updating_job(keyed, "INSERT INTO out SELECT user_id, 1 FROM clicks"))
        .expect_err("kafka has no PK");
    assert!(err.message.contains("cannot declare a PRIMARY KEY"), "{err}");
    assert_eq!(err.line, 2, "{err}");
}

#[test]
fn upsert_keys_must_match_the_sinks_primary_key() {
    let no_key =
        "CREATE TABLE out (user_id STRING, n BIGINT) WITH (connector = 'upsert-kafka', topic = 'o');";
    let err = plan_job(&updating_job(
        no_key,
        "INSERT INTO out SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id",
    ))
    .expect_err("no primary key");
    assert!(err.message.contains("needs a primary key"), "{err}");
    assert_eq!(err.line, 2, "{err}");
    let by_page = "CREATE TABLE out (user_id STRING, page STRING, n BIGINT, PRIMARY KEY (user_id) NOT ENFORCED) WITH (connector = 'upsert-kafka', topic = 'o');";
    let err = plan_job(&updating_job(
        by_page,
        "INSERT INTO out SELECT user_id, page, COUNT(*) FROM clicks GROUP BY user_id, page",
    ))
    .expect_err("the key is (user_id, page)");
    assert!(
        err.message.contains("(user_id, page)") && err.message.contains("PRIMARY KEY (user_id)"),
        "{err}"
    );
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn projections_dropping_the_upsert_key_are_refused() {
    let sink = "CREATE TABLE out (n BIGINT) WITH (connector = 'stdout');";
    let err = plan_job(&updating_job(
        sink,
        "INSERT INTO out SELECT n FROM (SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id) AS per",
    ))
    .expect_err("the key is dropped");
    assert!(err.message.contains("drops the column 'user_id'"), "{err}");
    assert!(err.hint.is_some());
    assert_eq!((err.line, err.column), (3, 1), "{err}");
    let sink = "CREATE TABLE out (u STRING, n BIGINT) WITH (connector = 'stdout');";
    let err = plan_job(&updating_job(
        sink,
        "INSERT INTO out SELECT upper(user_id), COUNT(*) FROM clicks GROUP BY user_id",
    ))
    .expect_err("a computed key is not the key");
    assert!(err.message.contains("drops the column"), "{err}");
}

#[test]
fn windows_and_aggregates_over_updating_results_are_refused() {
    let sink = "CREATE TABLE out (user_id STRING, n BIGINT) WITH (connector = 'stdout');";
    let inner = "(SELECT user_id, COUNT(*) AS c, MAX(pt) AS pt FROM clicks GROUP BY user_id) AS per";
    for (query, what) in [
        (
            format!(
                "INSERT INTO out SELECT user_id, COUNT(*) OVER (PARTITION BY user_id ORDER BY pt ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM {inner}"
            ),
            "an OVER window",
        ),
        (
            format!(
                "INSERT INTO out SELECT user_id, SUM(c) FROM {inner} GROUP BY user_id, tumble(pt, INTERVAL '1' SECOND)"
            ),
            "a window aggregate",
        ),
        (format!("INSERT INTO out SELECT user_id, SUM(c) FROM {inner} GROUP BY user_id"), "a GROUP BY"),
    ] {
        let err = plan_job(&updating_job(sink, &query)).expect_err("needs retractions");
        assert!(
            err.message.starts_with(what) && err.message.contains("updating aggregate"),
            "{query}: {err}"
        );
        assert_eq!(err.line, 3, "{err}");
    }
}

const EVENTS: &str = "CREATE TABLE events (user_id STRING, v BIGINT, tags STRING[], ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'kafka', topic = 'e', format = 'json');
CREATE TABLE pevents (user_id STRING, v BIGINT, pt AS PROCTIME()) WITH (connector = 'kafka', topic = 'p', format = 'json');
CREATE TABLE out (user_id STRING, s BIGINT) WITH (connector = 'stdout');\n";

fn over_spec(query: &str) -> Result<millrace_runtime::operators::OverWindowSpec, crate::SqlError> {
    let plan = plan_job(&format!("{EVENTS}{query}"))?;
    let stage = plan.dataflow.stages.last().expect("a stage");
    match &stage.operators[0] {
        OperatorSpec::OverWindow(spec) => {
            assert_eq!(matches!(stage.input, Exchange::Single), spec.partition_by.is_empty());
            Ok(spec.clone())
        }
        _ => panic!("no OVER stage in {}", plan.dataflow.explain()),
    }
}

#[test]
fn over_windows_plan_rows_and_range_frames_on_both_time_kinds() {
    let spec = over_spec(
        "INSERT INTO out SELECT user_id, SUM(v) OVER (PARTITION BY user_id ORDER BY ts
           RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM events",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.time, OverTime::Event);
    assert_eq!(spec.partition_by.len(), 1);
    assert_eq!(spec.functions[0].frame, OverFrame::Range { preceding_ms: Some(10_000) });

    let spec = over_spec(
        "INSERT INTO out SELECT user_id, SUM(v) OVER (ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM events",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (spec.time, spec.functions[0].frame),
        (OverTime::Event, OverFrame::Rows { preceding: Some(3) })
    );

    // DataFusion's default frame with ORDER BY: RANGE UNBOUNDED PRECEDING.
    let spec = over_spec(
        "INSERT INTO out SELECT user_id, SUM(v) OVER (PARTITION BY user_id ORDER BY pt) FROM pevents",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (spec.time, spec.functions[0].frame),
        (OverTime::Processing, OverFrame::Range { preceding_ms: None })
    );

    let spec = over_spec(
        "INSERT INTO out SELECT user_id, COUNT(*) OVER (ORDER BY pt RANGE BETWEEN CURRENT ROW AND CURRENT ROW) FROM pevents",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.functions[0].frame, OverFrame::Range { preceding_ms: Some(0) });
}

#[test]
fn bad_over_windows_are_refused_with_a_position() {
    // The INSERT starts on line 4, column 1 of the job (after the three CREATE TABLEs).
    let cases = [
        (
            "SUM(v) OVER (ORDER BY v ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
            "must ORDER BY a time attribute",
        ),
        ("SUM(v) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING)", "FOLLOWING"),
        ("SUM(v) OVER (ORDER BY ts RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)", "FOLLOWING"),
        ("SUM(v) OVER (ORDER BY ts DESC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)", "DESC"),
        ("SUM(v) OVER (PARTITION BY user_id)", "need ORDER BY"),
        ("SUM(v) OVER (ORDER BY ts GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW)", "unsupported OVER frame"),
    ];
    for (window, message) in cases {
        let Err(err) = over_spec(&format!("INSERT INTO out\nSELECT user_id, {window} FROM events")) else {
            panic!("{window} planned");
        };
        assert!(err.message.contains(message), "{window}: {err}");
        assert_eq!((err.line, err.column), (4, 1), "{window}: {err}");
    }
    let Err(err) = over_spec(
        "INSERT INTO out SELECT user_id, SUM(v) OVER (ORDER BY ts RANGE BETWEEN 5 PRECEDING AND CURRENT ROW) FROM events",
    ) else {
        panic!("a number is no interval");
    };
    assert_eq!(err.line, 4, "{err}");
    assert!(err.message.contains("day-time INTERVAL") && err.message.contains("month"), "{err}");
}

#[test]
fn count_windows_plan_keyed_and_global() {
    let sql = format!(
        "{EVENTS}CREATE TABLE counts (user_id STRING, w BIGINT, n BIGINT, s BIGINT) WITH (connector = 'stdout');
         INSERT INTO counts SELECT user_id, count_window(3) AS w, COUNT(*), SUM(v) FROM events GROUP BY user_id, count_window(3)"
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    let stage = &plan.dataflow.stages[1];
    assert!(matches!(&stage.input, Exchange::Hash(keys) if keys.len() == 1));
    let OperatorSpec::CountWindow(spec) = &stage.operators[0] else { panic!("{}", plan.dataflow.explain()) };
    assert_eq!((spec.size, spec.slide, spec.window_position), (3, 3, 1));
    assert_eq!(plan.dataflow.output_schema.field(1).data_type(), &arrow::datatypes::DataType::Int64);

    let sql = format!(
        "{EVENTS}CREATE TABLE counts (w BIGINT, s BIGINT) WITH (connector = 'stdout');
         INSERT INTO counts SELECT count_window(5, 2), SUM(v) FROM events GROUP BY count_window(5, 2)"
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(plan.dataflow.stages[1].input, Exchange::Single));
    let OperatorSpec::CountWindow(spec) = &plan.dataflow.stages[1].operators[0] else {
        panic!("{}", plan.dataflow.explain())
    };
    assert_eq!((spec.size, spec.slide), (5, 2));
}

#[test]
fn bad_count_windows_are_refused() {
    for (group, message) in [
        ("count_window(2, 3)", "bad arguments"),
        ("count_window(0)", "positive integer"),
        ("count_window(v)", "positive integer"),
        ("count_window('3')", "integer"),
    ] {
        let sql = format!(
            "{EVENTS}CREATE TABLE counts (w BIGINT, s BIGINT) WITH (connector = 'stdout');
INSERT INTO counts SELECT {group}, SUM(v) FROM events GROUP BY {group}"
        );
        let err = plan_job(&sql).expect_err(group);
        assert!(err.message.contains(message), "{group}: {err}");
        assert_eq!(err.line, 5, "{group}: {err}");
    }
    let sql = format!(
        "{EVENTS}CREATE TABLE counts (w BIGINT, e TIMESTAMP(3)) WITH (connector = 'stdout');
INSERT INTO counts SELECT count_window(2), window_end(ts) FROM events GROUP BY count_window(2)"
    );
    let err = plan_job(&sql).expect_err("no window end");
    assert!(err.message.contains("window_end"), "{err}");
}

#[test]
fn unnest_chains_into_the_source_stage() {
    for query in [
        "INSERT INTO tags SELECT user_id, UNNEST(tags) AS tag FROM events",
        "INSERT INTO tags SELECT user_id, UNNEST(string_to_array(user_id, '-')) FROM events",
    ] {
        let sql = format!(
            "{EVENTS}CREATE TABLE tags (user_id STRING, tag STRING) WITH (connector = 'stdout');\n{query}"
        );
        let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert_eq!(plan.dataflow.stages.len(), 1, "{}", plan.dataflow.explain());
        assert!(
            plan.dataflow.stages[0].operators.iter().any(|op| matches!(op, OperatorSpec::Unnest(_))),
            "{}",
            plan.dataflow.explain()
        );
    }
}

#[test]
fn cross_join_unnest_is_refused_with_a_hint() {
    let sql = format!(
        "{EVENTS}CREATE TABLE tags (user_id STRING, tag STRING) WITH (connector = 'stdout');
INSERT INTO tags SELECT user_id, tag FROM events CROSS JOIN UNNEST(events.tags) AS t(tag)"
    );
    let err = plan_job(&sql).expect_err("a join");
    assert!(err.message.contains("CROSS JOIN UNNEST"), "{err}");
    assert!(err.hint.as_deref().is_some_and(|h| h.contains("SELECT id, UNNEST(tags)")), "{err}");
    assert_eq!((err.line, err.column), (5, 1), "{err}");
}
