//! Planner tests of Top-N (`ROW_NUMBER() … WHERE rn <= N`): its upsert key, the
//! deduplication case, and what is refused with a position.

use millrace_runtime::{Changelog, Exchange, OperatorSpec};

use crate::plan_job;

/// Bids with an event-time attribute (line 1), a sink (line 2), a query (line 3).
fn job(sink: &str, query: &str) -> String {
    format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'kafka', topic = 'b', format = 'json');\n{sink}\n{query}"
    )
}

const FILE_SINK: &str = "CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3), rn BIGINT) WITH (connector = 'file', path = '/tmp/o.json', format = 'json');";
const FILE_SINK_NO_RANK: &str = "CREATE TABLE out (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3)) WITH (connector = 'file', path = '/tmp/o.json', format = 'json');";

fn top_n_spec(plan: &crate::JobPlan) -> &millrace_runtime::operators::TopNSpec {
    plan.dataflow
        .stages
        .iter()
        .flat_map(|s| &s.operators)
        .find_map(|op| match op {
            OperatorSpec::TopN(spec) => Some(spec),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Top-N in {}", plan.dataflow.explain()))
}

#[test]
fn a_top_n_is_an_upsert_stream_keyed_by_partition_and_row_number() {
    let sql = job(
        FILE_SINK,
        "INSERT INTO out SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) WHERE rn < 4",
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    let spec = top_n_spec(&plan);
    assert_eq!((spec.limit, spec.partition_by.len(), spec.ties_to_latest), (3, 1, false));
    assert!(spec.order_by[0].1.descending);
    let stage =
        plan.dataflow.stages.iter().find(|s| matches!(s.operators.first(), Some(OperatorSpec::TopN(_))));
    assert!(matches!(stage.map(|s| &s.input), Some(Exchange::Hash(k)) if k.len() == 1));
    assert_eq!(plan.dataflow.changelog, Some(Changelog { key: vec![0, 4] }));

    // No PARTITION BY: one instance ranks every row.
    let sql = job(
        FILE_SINK,
        "INSERT INTO out SELECT * FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY price DESC) AS rn FROM bid) WHERE rn <= 5",
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.dataflow.changelog, Some(Changelog { key: vec![4] }));
    assert!(plan.dataflow.stages.iter().any(|s| matches!(s.input, Exchange::Single)));
}

#[test]
fn a_deduplication_may_drop_the_row_number_and_keeps_the_last_row_of_a_time() {
    let sql = job(
        FILE_SINK_NO_RANK,
        "INSERT INTO out SELECT auction, bidder, price, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY ts DESC) AS rn FROM bid) WHERE rn = 1",
    );
    let plan = plan_job(&sql).unwrap_or_else(|e| panic!("{e}"));
    let spec = top_n_spec(&plan);
    assert_eq!((spec.limit, spec.ties_to_latest), (1, true));
    // The key is (bidder, auction), at their positions in the output.
    assert_eq!(plan.dataflow.changelog, Some(Changelog { key: vec![1, 0] }));

    // Ordered by a column that is no time attribute: a Top-1, earlier rows win ties.
    let sql = sql.replace("ORDER BY ts DESC", "ORDER BY price DESC");
    assert!(!top_n_spec(&plan_job(&sql).unwrap_or_else(|e| panic!("{e}"))).ties_to_latest);
}

#[test]
fn what_a_top_n_cannot_be_is_refused_with_a_position() {
    let ranked = "(SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid)";
    let refused = |sink: &str, query: &str, expect: &str| {
        let err = plan_job(&job(sink, query)).expect_err(expect);
        assert_eq!(err.line, 3, "{err}");
        err.to_string()
    };
    let err = refused(
        FILE_SINK_NO_RANK,
        &format!("INSERT INTO out SELECT auction, bidder, price, ts FROM {ranked} WHERE rn <= 3"),
        "rn dropped",
    );
    assert!(err.contains("rn") && err.contains("Top-N"), "{err}");
    let err =
        refused(FILE_SINK, &format!("INSERT INTO out SELECT * FROM {ranked} WHERE rn > 3"), "no upper bound");
    assert!(err.contains("bound on the row number"), "{err}");
    let err =
        refused(FILE_SINK, &format!("INSERT INTO out SELECT * FROM {ranked} WHERE rn <= 0"), "keeps none");
    assert!(err.contains("at least one row"), "{err}");
    let err =
        refused(FILE_SINK, &format!("INSERT INTO out SELECT * FROM {ranked} WHERE price <= 3"), "not rn");
    assert!(err.contains("must bound the row number"), "{err}");
    let err = refused(FILE_SINK, &format!("INSERT INTO out SELECT * FROM {ranked}"), "no rank filter");
    assert!(err.contains("works as a Top-N"), "{err}");
    let err = refused(
        FILE_SINK,
        "INSERT INTO out SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction + 1 ORDER BY price) AS rn FROM bid) WHERE rn <= 2",
        "computed partition",
    );
    assert!(err.contains("partitions by columns"), "{err}");
    let err = refused(
        FILE_SINK,
        "INSERT INTO out SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction) AS rn FROM bid) WHERE rn <= 2",
        "no ORDER BY",
    );
    assert!(err.contains("ORDER BY"), "{err}");
    // A Top-N's result is updating: it cannot feed a window or an aggregate.
    let sink = "CREATE TABLE n (auction BIGINT, c BIGINT) WITH (connector = 'file', path = '/tmp/n.json', format = 'json');";
    let err = refused(
        sink,
        &format!("INSERT INTO n SELECT auction, COUNT(*) FROM {ranked} WHERE rn <= 2 GROUP BY auction"),
        "aggregate over updates",
    );
    assert!(err.contains("retractions"), "{err}");
}
