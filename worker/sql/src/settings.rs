//! `SET` statements of a job: the one setting Millrace takes, Flink's
//! `table.exec.state.ttl` (how long a regular join keeps a row; `0` or absent: forever),
//! with Flink's duration syntax (`3600000`, `100 ms`, `30 s`, `10 min`, `1 h`, `2 d`).
//! Any other key is refused, with its position.

use datafusion::sql::sqlparser::ast::{Expr, Set, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Location;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::SqlError;

/// The setting's key, as Flink spells it.
pub const STATE_TTL: &str = "table.exec.state.ttl";

/// The TTL in ms a `SET` statement gives (`None`: no TTL, state kept forever).
pub fn state_ttl(set: Set, at: Location) -> Result<Option<i64>, SqlError> {
    let hint = format!("SET '{STATE_TTL}' = '1 h' (the only setting a job takes)");
    let Set::SingleAssignment { variable, values, .. } = set else {
        return Err(SqlError::at(at, "unsupported SET statement").with_hint(hint));
    };

    let key: String = variable
        .0
        .iter()
        .map(|part| part.to_string().trim_matches(|c| c == '\'' || c == '"' || c == '`').to_string())
        .collect::<Vec<_>>()
        .join(".");
    if key != STATE_TTL {
        return Err(SqlError::at(at, format!("unknown setting '{key}'")).with_hint(hint));
    }
    let text = match values.as_slice() {
        [Expr::Value(v)] => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            other => other.to_string(),
        },
        _ => return Err(SqlError::at(at, format!("'{STATE_TTL}' takes one duration")).with_hint(hint)),
    };
    let ms = parse_duration_ms(&text)
        .ok_or_else(|| SqlError::at(at, format!("'{text}' is not a duration")).with_hint(hint))?;
    Ok((ms > 0).then_some(ms))
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
