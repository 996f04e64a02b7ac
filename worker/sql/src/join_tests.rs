//! Planning tests of joins: the stages and branches a join plans into, the join kind each
//! condition gives, and the joins refused with line, column and hint.

use millrace_runtime::operators::{JoinKind, JoinSpec, JoinType, WindowAssigner};
use millrace_runtime::{Exchange, OperatorSpec};

use crate::{JobPlan, SqlError, plan_job};

const TABLES: &str = "CREATE TABLE orders (id BIGINT, customer BIGINT, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'file', path = '/dev/null', format = 'json');
CREATE TABLE payments (order_id BIGINT, paid BIGINT, pts TIMESTAMP(3),
  WATERMARK FOR pts AS pts - INTERVAL '1' SECOND) WITH (connector = 'file', path = '/dev/null', format = 'json');
CREATE TABLE out (id BIGINT, amount BIGINT, paid BIGINT) WITH (connector = 'stdout', format = 'json');
";

fn plan(query: &str) -> Result<JobPlan, SqlError> {
    plan_job(&format!("{TABLES}{query}"))
}

fn join_of(plan: &JobPlan) -> &JoinSpec {
    let stage = &plan.dataflow.stages[plan.dataflow.branches[0].into];
    match &stage.operators[0] {
        OperatorSpec::Join(spec) => spec,
        other => panic!("not a join: {other:?}\n{}", plan.dataflow.explain()),
    }
}

#[test]
fn an_interval_join_hash_exchanges_both_inputs_into_one_stage() {
    let plan = plan(
        "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o LEFT JOIN payments p
           ON o.id = p.order_id AND o.ts BETWEEN p.pts - INTERVAL '5' SECOND AND p.pts + INTERVAL '10' SECOND;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dataflow = &plan.dataflow;
    assert_eq!(dataflow.stage_count(), 3, "{}", dataflow.explain());
    assert_eq!(dataflow.branches.len(), 1);
    let branch = &dataflow.branches[0];
    assert_eq!((branch.source.table.as_str(), branch.into), ("payments", 1));
    assert!(matches!(&branch.exchange, Exchange::Hash(k) if k.len() == 1));
    assert!(matches!(&dataflow.stages[1].input, Exchange::Hash(k) if k.len() == 1));
    assert_eq!(dataflow.upstreams(1), vec![0, 2]);
    assert_eq!(plan.join_sources.len(), 1);
    let join = join_of(&plan);
    assert_eq!(join.join_type, JoinType::Left);
    assert_eq!(
        join.kind,
        JoinKind::Interval { left_time: 3, right_time: 2, lower_ms: -5_000, upper_ms: 10_000 }
    );
}

#[test]
fn comparison_pairs_either_way_round_give_the_same_bounds() {
    for condition in [
        "o.ts >= p.pts - INTERVAL '5' SECOND AND o.ts <= p.pts + INTERVAL '10' SECOND",
        "p.pts + INTERVAL '10' SECOND >= o.ts AND p.pts - INTERVAL '5' SECOND <= o.ts",
        "p.pts BETWEEN o.ts - INTERVAL '10' SECOND AND o.ts + INTERVAL '5' SECOND",
        "o.ts > p.pts - INTERVAL '5.001' SECOND AND o.ts < p.pts + INTERVAL '10.001' SECOND",
    ] {
        let plan = plan(&format!(
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN payments p ON o.id = p.order_id AND {condition};"
        ))
        .unwrap_or_else(|e| panic!("{condition}: {e}"));
        assert_eq!(
            join_of(&plan).kind,
            JoinKind::Interval { left_time: 3, right_time: 2, lower_ms: -5_000, upper_ms: 10_000 },
            "{condition}"
        );
    }
}

#[test]
fn two_window_aggregates_joined_on_their_windows_are_a_window_join() {
    let plan = plan(
        "INSERT INTO out SELECT o.customer, o.n, p.n FROM
           (SELECT customer, tumble(ts, INTERVAL '10' SECOND) AS ws, window_end(ts) AS we, COUNT(*) AS n
              FROM orders GROUP BY customer, tumble(ts, INTERVAL '10' SECOND)) o
           FULL JOIN
           (SELECT order_id, tumble(pts, INTERVAL '10' SECOND) AS ws, window_end(pts) AS we, COUNT(*) AS n
              FROM payments GROUP BY order_id, tumble(pts, INTERVAL '10' SECOND)) p
           ON o.customer = p.order_id AND o.ws = p.ws AND o.we = p.we;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.dataflow.stage_count(), 5, "{}", plan.dataflow.explain());
    let join = join_of(&plan);
    assert_eq!(join.join_type, JoinType::Full);
    assert_eq!(join.kind, JoinKind::Window { left_end: 2, right_end: 2 });
    assert_eq!(join.left_keys.len(), 3, "key, window start and end are hashed");
}

#[test]
fn an_unbounded_inner_join_is_regular_and_takes_the_state_ttl() {
    let query =
        "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN payments p ON o.id = p.order_id;";
    let join = |sql: &str| plan(sql).map(|p| join_of(&p).kind).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(join(query), JoinKind::Regular { ttl_ms: None });
    assert_eq!(
        join(&format!("SET 'table.exec.state.ttl' = '1 h';\n{query}")),
        JoinKind::Regular { ttl_ms: Some(3_600_000) }
    );
    assert_eq!(
        join(&format!("SET table.exec.state.ttl = '90 s';\n{query}")),
        JoinKind::Regular { ttl_ms: Some(90_000) }
    );
    // One bound alone does not bound the state: a regular join with a condition.
    assert_eq!(
        join(
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN payments p ON o.id = p.order_id AND o.ts >= p.pts;"
        ),
        JoinKind::Regular { ttl_ms: None }
    );
}

fn refused(sql: &str) -> SqlError {
    match plan(sql) {
        Ok(plan) => panic!("planned: {}", plan.dataflow.explain()),
        Err(err) => err,
    }
}

#[test]
fn joins_that_cannot_run_are_refused_with_a_position_and_a_hint() {
    let cases = [
        (
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN payments p ON o.amount > p.paid;",
            "at least one equality",
        ),
        (
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o, payments p WHERE o.id = p.order_id;",
            "at least one equality",
        ),
        (
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o LEFT JOIN payments p ON o.id = p.order_id;",
            "would need retractions",
        ),
        (
            "INSERT INTO out SELECT a.id, a.amount, b.amount FROM orders a JOIN orders b ON a.id = b.id;",
            "read twice",
        ),
        (
            "INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN
               (SELECT order_id, COUNT(*) AS paid FROM payments GROUP BY order_id) p ON o.id = p.order_id;",
            "updating result",
        ),
    ];
    for (sql, message) in cases {
        let err = refused(sql);
        assert!(err.message.contains(message), "{sql}: {err}");
        assert_eq!((err.line, err.column), (6, 1), "{sql}: {err}");
        assert!(err.hint.is_some(), "{sql}: {err}");
    }
    let err = refused(
        "INSERT INTO out SELECT o.customer, o.n, p.n FROM
           (SELECT customer, tumble(ts, INTERVAL '10' SECOND) AS ws, COUNT(*) AS n
              FROM orders GROUP BY customer, tumble(ts, INTERVAL '10' SECOND)) o
           JOIN
           (SELECT order_id, tumble(pts, INTERVAL '10' SECOND) AS ws, COUNT(*) AS n
              FROM payments GROUP BY order_id, tumble(pts, INTERVAL '10' SECOND)) p
           ON o.customer = p.order_id AND o.ws = p.ws;",
    );
    assert!(err.message.contains("window_end"), "{err}");
    let err = refused(
        "SET 'parallelism.default' = '4';
INSERT INTO out SELECT o.id, o.amount, p.paid FROM orders o JOIN payments p ON o.id = p.order_id;",
    );
    assert!(err.message.contains("unknown setting 'parallelism.default'"), "{err}");
    assert_eq!((err.line, err.column), (6, 1), "{err}");
}

const RATES: &str = "CREATE TABLE rates (currency STRING, rate BIGINT, rts TIMESTAMP(3),
  PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR rts AS rts - INTERVAL '1' SECOND) WITH (connector = 'file', path = '/dev/null', format = 'json');
CREATE TABLE priced (id BIGINT, amount BIGINT, rate BIGINT) WITH (connector = 'stdout', format = 'json');
CREATE TABLE sales (id BIGINT, currency STRING, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'file', path = '/dev/null', format = 'json');
";

#[test]
fn for_system_time_as_of_plans_a_temporal_join_on_the_primary_key() {
    let plan = plan_job(&format!(
        "{RATES}INSERT INTO priced SELECT s.id, s.amount, r.rate FROM sales s
           LEFT JOIN rates FOR SYSTEM_TIME AS OF s.ts AS r ON s.currency = r.currency;"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let join = join_of(&plan);
    assert_eq!(join.join_type, JoinType::Left);
    assert_eq!(join.kind, JoinKind::Temporal { left_time: 3, right_time: 2 });
}

#[test]
fn temporal_joins_that_cannot_run_are_refused_at_the_clause() {
    let cases = [
        ("FULL JOIN rates FOR SYSTEM_TIME AS OF s.ts AS r ON s.currency = r.currency", "INNER or LEFT"),
        (
            "JOIN rates FOR SYSTEM_TIME AS OF s.id AS r ON s.currency = r.currency",
            "event-time attribute 'ts'",
        ),
        ("JOIN rates FOR SYSTEM_TIME AS OF s.ts AS r ON s.amount = r.rate", "primary key (currency)"),
    ];
    for (join, message) in cases {
        let sql = format!("{RATES}INSERT INTO priced SELECT s.id, s.amount, r.rate FROM sales s\n  {join};");
        let err = plan_job(&sql).err().unwrap_or_else(|| panic!("{join} planned"));
        assert!(err.message.contains(message), "{join}: {err}");
        let line = RATES.lines().count() as u64 + 2;
        assert_eq!(err.line, line, "{join}: {err}");
        assert!(err.hint.is_some(), "{join}: {err}");
    }
    let err = plan_job(&format!(
        "{RATES}INSERT INTO priced SELECT 1, rate, rate * 2 FROM rates FOR SYSTEM_TIME AS OF rts;"
    ))
    .err()
    .unwrap_or_else(|| panic!("planned"));
    assert!(err.message.contains("right side of a temporal join"), "{err}");
}

/// `GROUP BY ws, we` over a window aggregate's window start and end: a window aggregate over
/// those windows (attached), keyed by the end, with the end an event-time attribute after it.
#[test]
fn a_group_by_over_the_window_columns_of_a_window_aggregate_is_a_window_aggregate() {
    let plan = plan(
        "INSERT INTO out SELECT MAX(n), COUNT(*), SUM(n) FROM
           (SELECT customer, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS ws, window_end(ts) AS we,
                   COUNT(*) AS n FROM orders GROUP BY customer, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND))
           GROUP BY ws, we;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dataflow = &plan.dataflow;
    assert_eq!(dataflow.stage_count(), 3, "{}", dataflow.explain());
    let OperatorSpec::WindowAggregate(cascade) = &dataflow.stages[2].operators[0] else {
        panic!("not a window aggregate: {}", dataflow.explain())
    };
    // The input is (customer, ws, we, n) after the projection; the end stays a key.
    assert_eq!(cascade.assigner, WindowAssigner::Attached { start: 1, end: 2 });
    assert_eq!((cascade.window_position, cascade.keys.len()), (0, 1));
    assert!(matches!(&dataflow.stages[2].input, Exchange::Hash(k) if k.len() == 1));
    assert!(plan.dataflow.changelog.is_none(), "append-only, not an updating aggregate");

    // Only one of the two window columns: an updating aggregate, as before.
    let plan = plan_job(&format!(
        "{TABLES}CREATE TABLE totals (ws TIMESTAMP(3), n BIGINT, PRIMARY KEY (ws) NOT ENFORCED)
           WITH (connector = 'upsert-kafka', topic = 't', format = 'json');
         INSERT INTO totals SELECT ws, MAX(n) FROM
           (SELECT customer, tumble(ts, INTERVAL '10' SECOND) AS ws, COUNT(*) AS n
              FROM orders GROUP BY customer, tumble(ts, INTERVAL '10' SECOND)) GROUP BY ws;"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.dataflow.changelog.is_some(), "{}", plan.dataflow.explain());
}

/// Nexmark q5's shape: a window aggregate joined on its window with a window aggregate over
/// the windows of another, the rest of the condition a residual; and q7's: the bids joined
/// with a window aggregate on its window_end (an event-time attribute), bounds in WHERE.
#[test]
fn window_attributes_propagate_into_window_and_interval_joins() {
    let q5 = plan(
        "INSERT INTO out SELECT a.customer, a.n, m.maxn FROM
           (SELECT customer, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS ws, window_end(ts) AS we,
                   COUNT(*) AS n FROM orders GROUP BY customer, hop(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) a
           JOIN
           (SELECT MAX(c.n) AS maxn, c.ws, c.we FROM
              (SELECT order_id, hop(pts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS ws, window_end(pts) AS we,
                      COUNT(*) AS n FROM payments GROUP BY order_id, hop(pts, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) c
              GROUP BY c.ws, c.we) m
           ON a.ws = m.ws AND a.we = m.we AND a.n >= m.maxn;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let join = join_of(&q5);
    assert_eq!(join.kind, JoinKind::Window { left_end: 2, right_end: 2 });
    assert_eq!(join.left_keys.len(), 2, "window start and end");
    assert!(join.filter.as_ref().is_some_and(|f| f.to_string().contains(">=")), "{:?}", join.filter);
    assert_eq!(q5.dataflow.branches[0].stages.len(), 3, "{}", q5.dataflow.explain());

    let q7 = plan(
        "INSERT INTO out SELECT o.id, o.amount, w.top FROM orders o
           JOIN (SELECT MAX(paid) AS top, window_end(pts) AS we
                 FROM payments GROUP BY tumble(pts, INTERVAL '10' SECOND)) w
           ON o.amount = w.top
           WHERE o.ts BETWEEN w.we - INTERVAL '10' SECOND AND w.we;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        join_of(&q7).kind,
        JoinKind::Interval { left_time: 3, right_time: 1, lower_ms: -10_000, upper_ms: 0 }
    );
}

#[test]
fn a_window_aggregate_over_windows_emitted_again_is_refused() {
    let err = plan_job(
        "CREATE TABLE late_orders (customer BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'file', path = '/dev/null', format = 'json', allowed_lateness_ms = '1000');
CREATE TABLE out (n BIGINT) WITH (connector = 'stdout', format = 'json');
INSERT INTO out SELECT MAX(n) FROM
  (SELECT customer, tumble(ts, INTERVAL '10' SECOND) AS ws, window_end(ts) AS we, COUNT(*) AS n
     FROM late_orders GROUP BY customer, tumble(ts, INTERVAL '10' SECOND)) GROUP BY ws, we;",
    )
    .map(|p| p.dataflow.explain())
    .expect_err("refused");
    assert!(err.message.contains("allowed_lateness_ms"), "{err}");
    assert!(err.hint.is_some(), "{err}");
}
