//! `SET` statements of a job: the two settings Millrace takes. Flink's
//! `table.exec.state.ttl` (how long a regular join keeps a row and an updating aggregate a
//! key; `0` or absent: forever), with Flink's duration syntax (`3600000`, `100 ms`, `30 s`,
//! `10 min`, `1 h`, `2 d`); and `state.max-bytes`, the limit on the operator state each
//! process holds, with Flink's memory-size syntax (`1073741824`, `512 mb`, `2 gb`; see
//! `millrace_runtime::state_budget`). Any other key is refused, with its position.

use datafusion::sql::sqlparser::ast::{Expr, Set, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Location;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use millrace_runtime::state_budget::{STATE_MAX_BYTES, parse_bytes};

use crate::error::SqlError;

/// The setting's key, as Flink spells it.
pub const STATE_TTL: &str = "table.exec.state.ttl";

/// What one `SET` statement sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `table.exec.state.ttl` in ms (`None`: no TTL, state kept forever).
    StateTtl(Option<i64>),
    /// `state.max-bytes`.
    StateMaxBytes(u64),
}

/// The setting a `SET` statement gives.
pub fn setting(set: Set, at: Location) -> Result<Setting, SqlError> {
    let hint =
        format!("SET '{STATE_TTL}' = '1 h' or SET '{STATE_MAX_BYTES}' = '2 gb' (the settings a job takes)");
    let Set::SingleAssignment { variable, values, .. } = set else {
        return Err(SqlError::at(at, "unsupported SET statement").with_hint(hint));
    };

    let key: String = variable
        .0
        .iter()
        .map(|part| part.to_string().trim_matches(|c| c == '\'' || c == '"' || c == '`').to_string())
        .collect::<Vec<_>>()
        .join(".");
    if key != STATE_TTL && key != STATE_MAX_BYTES {
        return Err(SqlError::at(at, format!("unknown setting '{key}'")).with_hint(hint));
    }
    let text = match values.as_slice() {
        [Expr::Value(v)] => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        _ => return Err(SqlError::at(at, format!("'{key}' takes one value")).with_hint(hint)),
    };
    if key == STATE_MAX_BYTES {
        return match parse_bytes(&text) {
            Some(bytes) if bytes > 0 => Ok(Setting::StateMaxBytes(bytes)),
            _ => Err(SqlError::at(at, format!("'{text}' is not a memory size")).with_hint(format!(
                "SET '{STATE_MAX_BYTES}' = '2 gb' (bytes, kb, mb, gb, tb; binary multiples)"
            ))),
        };
    }
    let ms = parse_duration_ms(&text)
        .ok_or_else(|| SqlError::at(at, format!("'{text}' is not a duration")).with_hint(hint))?;
    Ok(Setting::StateTtl((ms > 0).then_some(ms)))
}

/// Where every `SET` keyword of the job starts, in order (sqlparser's tokenizer, so strings
/// and comments are never misread).
pub fn set_keywords(sql: &str) -> Vec<Location> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else { return Vec::new() };
    tokens
        .into_iter()
        .filter(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::SET))
        .map(|t| t.span.start)
        .collect()
}

/// Flink's `TimeUtils.parseDuration`: a whole number and an optional unit (none: ms).
fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_read_as_flink_reads_them() {
        assert_eq!(parse_duration_ms("3600000"), Some(3_600_000));
        assert_eq!(parse_duration_ms("1 h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("10min"), Some(600_000));
        assert_eq!(parse_duration_ms("30 s"), Some(30_000));
        assert_eq!(parse_duration_ms("100 ms"), Some(100));
        assert_eq!(parse_duration_ms("2 d"), Some(172_800_000));
        assert_eq!(parse_duration_ms("1 fortnight"), None);
        assert_eq!(parse_duration_ms("h"), None);
    }
}
