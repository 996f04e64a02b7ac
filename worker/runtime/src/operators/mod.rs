//! The operators, one file each. They are built from specs the SQL planner produces.

mod filter;
mod over_rows;
mod projection;
mod session_window;
mod updating_aggregate;
mod upsert_filter;
mod window_aggregate;
mod window_output;

pub use filter::FilterOperator;
pub use over_rows::{OverFunction, OverRowsOperator, OverRowsSpec};
pub use projection::ProjectionOperator;
pub use session_window::{SessionWindowOperator, SessionWindowSpec};
pub use updating_aggregate::{UpdatingAggregateOperator, UpdatingAggregateSpec};
pub use upsert_filter::UpsertFilterOperator;
pub use window_aggregate::{WindowAggregateOperator, WindowAggregateSpec, WindowAssigner};
pub use window_output::WindowOutputColumn;
