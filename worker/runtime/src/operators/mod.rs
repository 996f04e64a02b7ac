//! The operators, one file each. They are built from specs the SQL planner produces.

mod filter;
mod over_rows;
mod projection;
mod window_aggregate;

pub use filter::FilterOperator;
pub use over_rows::{OverFunction, OverRowsOperator, OverRowsSpec};
pub use projection::ProjectionOperator;
pub use window_aggregate::{WindowAggregateOperator, WindowAggregateSpec, WindowAssigner};
