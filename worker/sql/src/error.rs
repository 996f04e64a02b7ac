//! Errors of SQL planning, always with a line and column in the job's SQL text (1-based), so
//! that `run`, the API server and the operator can point at the offending spot.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::tokenizer::Location;

/// A job's SQL could not be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column}){}", hint.as_ref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
pub struct SqlError {
    pub message: String,
    pub line: u64,
    pub column: u64,
    pub hint: Option<String>,
}

impl SqlError {
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: location.line.max(1),
            column: location.column.max(1),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Converts a DataFusion error, preferring the span of its diagnostic (DataFusion attaches
    /// one when `collect_spans` is on), then the position sqlparser writes into its messages
    /// ("… at Line: L, Column: C"), then `fallback` (the statement's start).
    pub fn from_datafusion(err: &DataFusionError, fallback: Location) -> Self {
        let message = strip_position(&root_message(err));
        if let Some(span) = err.diagnostic().and_then(|d| d.span).filter(|s| s.start.line > 0) {
            return Self::at(Location { line: span.start.line, column: span.start.column }, message);
        }
        match sqlparser_position(&err.to_string()) {
            Some(location) => Self::at(location, message),
            None => Self::at(fallback, message),
        }
    }
}

fn root_message(err: &DataFusionError) -> String {
    match err.diagnostic() {
        Some(d) => d.message.clone(),
        None => err.strip_backtrace().to_string(),
    }
}

const POSITION_MARKER: &str = " at Line: ";

/// sqlparser reports positions only inside its message text, as " at Line: L, Column: C".
fn sqlparser_position(message: &str) -> Option<Location> {
    let rest = &message[message.rfind(POSITION_MARKER)? + POSITION_MARKER.len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Location { line: line.trim().parse().ok()?, column: column.parse().ok()? })
}

fn strip_position(message: &str) -> String {
    match message.rfind(POSITION_MARKER) {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sqlparser_positions() {
        let p = sqlparser_position("sql parser error: Expected: ), found: x at Line: 3, Column: 17");
        assert_eq!(p, Some(Location { line: 3, column: 17 }));
        assert_eq!(sqlparser_position("no position"), None);
        assert_eq!(strip_position("Expected: ), found: x at Line: 3, Column: 17"), "Expected: ), found: x");
    }
}
