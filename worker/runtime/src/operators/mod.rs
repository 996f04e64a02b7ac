//! The operators, one file each. They are built from specs the SQL planner produces.

mod accumulator_state;
mod count_window;
mod filter;
mod group_keys;
mod group_ttl;
mod join;
mod join_side;
mod over_frame;
mod over_window;
mod projection;
mod session_window;
mod state_table;
mod temporal_join;
mod top_n;
mod unnest;
mod updating_aggregate;
mod upsert_filter;
mod window_aggregate;
mod window_output;

pub use count_window::{CountWindowOperator, CountWindowSpec};
pub use filter::FilterOperator;
pub use join::{JoinKind, JoinOperator, JoinSpec, JoinType};
pub use over_frame::{OverFrame, OverFunction};
pub use over_window::{OverTime, OverWindowOperator, OverWindowSpec};
pub use projection::ProjectionOperator;
pub use session_window::{SessionWindowOperator, SessionWindowSpec};
pub use temporal_join::TemporalJoinOperator;
pub use top_n::{TopNOperator, TopNSpec};
pub use unnest::{UnnestOperator, UnnestSpec};
pub use updating_aggregate::{UpdatingAggregateOperator, UpdatingAggregateSpec};
pub use upsert_filter::UpsertFilterOperator;
pub use window_aggregate::{WindowAggregateOperator, WindowAggregateSpec, WindowAssigner};
pub use window_output::WindowOutputColumn;
