//! Flink's streaming DDL extensions, peeled off before DataFusion parses the job.
//!
//! DataFusion's parser (sqlparser) takes `CREATE TABLE t (…) WITH (k = 'v', …)` as is, but not
//! three column-list elements Flink jobs use:
//!
//! - `WATERMARK FOR ts AS ts - INTERVAL '5' SECOND` (event time with bounded out-of-orderness),
//! - `pt AS PROCTIME()` (a processing-time attribute),
//! - `ts TIMESTAMP(3) METADATA FROM 'timestamp'` (a column read from the Kafka record).
//!
//! We find them with sqlparser's own tokenizer (so strings, comments and quoted identifiers
//! are handled exactly as the parser will), record them, and blank their characters out with
//! spaces. The text keeps its lines and columns, so every later parser or planner position
//! still points into the user's SQL.

use std::collections::HashMap;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::SqlError;

/// A `WATERMARK FOR col AS expr` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkClause {
    pub column: String,
    /// The SQL text of the watermark expression, to be planned against the table schema.
    pub expr_sql: String,
    pub location: Location,
}

/// A column whose value comes from the record's metadata rather than its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    pub column: String,
    /// `timestamp`, `partition` or `offset` (validated by the planner).
    pub key: String,
    pub location: Location,
}

/// The extensions of one `CREATE TABLE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableExtensions {
    pub watermark: Option<WatermarkClause>,
    pub proctime: Option<(String, Location)>,
    pub metadata: Vec<MetadataColumn>,
}

/// The job text with extensions blanked, and what was found per table (normalized name).
#[derive(Debug, Clone, Default)]
pub struct PeeledSql {
    pub sql: String,
    pub tables: HashMap<String, TableExtensions>,
}

/// Identifiers as DataFusion normalizes them: unquoted ones fold to lower case.
pub fn normalize_ident(value: &str, quoted: bool) -> String {
    if quoted { value.to_string() } else { value.to_lowercase() }
}

/// Finds and blanks the extensions in every `CREATE TABLE` of `sql`.
pub fn peel_extensions(sql: &str) -> Result<PeeledSql, SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.location, e.message))?;
    let sig: Vec<&TokenWithSpan> =
        tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).collect();
    let text = SourceText::new(sql);
    let mut blank: Vec<(usize, usize)> = Vec::new();
    let mut tables = HashMap::new();

    let mut i = 0;
    while i + 1 < sig.len() {
        if !(is_keyword(sig[i], Keyword::CREATE) && is_keyword(sig[i + 1], Keyword::TABLE)) {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        let mut name = String::new();
        while j < sig.len() && sig[j].token != Token::LParen {
            match &sig[j].token {
                Token::Word(w)
                    if w.quote_style.is_none()
                        && matches!(w.keyword, Keyword::IF | Keyword::NOT | Keyword::EXISTS)
                        && name.is_empty() => {}
                Token::Word(w) => name.push_str(&normalize_ident(&w.value, w.quote_style.is_some())),
                Token::Period => name.push('.'),
                _ => break,
            }
            j += 1;
        }
        if j >= sig.len() || sig[j].token != Token::LParen {
            i = j;
            continue;
        }
        // Split the column list at depth-1 commas.
        let open = j;
        let mut depth = 0usize;
        let mut elements: Vec<(usize, usize)> = Vec::new();
        let mut commas: Vec<usize> = Vec::new();
        let mut start = open + 1;
        let mut close = None;
        for (k, t) in sig.iter().enumerate().skip(open) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        elements.push((start, k));
                        close = Some(k);
                        break;
                    }
                }
                Token::Comma if depth == 1 => {
                    elements.push((start, k));
                    commas.push(k);
                    start = k + 1;
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let mut ext = TableExtensions::default();
        let mut removed = vec![false; elements.len()];
        for (e, &(from, to)) in elements.iter().enumerate() {
            let element = &sig[from..to];
            if let Some(found) = watermark_clause(element, &text)? {
                if ext.watermark.is_some() {
                    return Err(SqlError::at(element[0].span.start, "a table can have only one WATERMARK"));
                }
                ext.watermark = Some(found);
                removed[e] = true;
            } else if let Some(found) = proctime_column(element) {
                ext.proctime = Some(found);
                removed[e] = true;
            } else if let Some((found, metadata_at)) = metadata_column(element)? {
                ext.metadata.push(found);
                let first = element[metadata_at];
                let last = element[element.len() - 1];
                blank.push((text.offset(first.span.start), text.offset(last.span.end)));
            }
        }
        // Blank removed elements together with one adjacent comma, keeping the list valid.
        for (e, &(from, to)) in elements.iter().enumerate() {
            if !removed[e] || from >= to {
                continue;
            }
            let comma = if e > 0 { commas.get(e - 1) } else { commas.get(e) };
            let mut lo = text.offset(sig[from].span.start);
            let mut hi = text.offset(sig[to - 1].span.end);
            if let Some(&c) = comma {
                lo = lo.min(text.offset(sig[c].span.start));
                hi = hi.max(text.offset(sig[c].span.end));
            }
            blank.push((lo, hi));
        }
        if ext != TableExtensions::default() {
            tables.insert(name, ext);
        }
        i = close + 1;
    }

    let mut out: Vec<char> = Vec::with_capacity(sql.len());
    for (offset, ch) in sql.char_indices() {
        let hidden = ch != '\n' && blank.iter().any(|&(lo, hi)| offset >= lo && offset < hi);
        out.push(if hidden { ' ' } else { ch });
    }
    Ok(PeeledSql { sql: out.into_iter().collect(), tables })
}

fn is_keyword(t: &TokenWithSpan, keyword: Keyword) -> bool {
    matches!(&t.token, Token::Word(w) if w.keyword == keyword && w.quote_style.is_none())
}

fn is_word(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn ident(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) => Some(normalize_ident(&w.value, w.quote_style.is_some())),
        _ => None,
    }
}

fn watermark_clause(
    element: &[&TokenWithSpan],
    text: &SourceText<'_>,
) -> Result<Option<WatermarkClause>, SqlError> {
    if element.len() < 2 || !is_word(element[0], "WATERMARK") || !is_keyword(element[1], Keyword::FOR) {
        return Ok(None);
    }
    let at = element[0].span.start;
    let usage = "expected WATERMARK FOR <column> AS <column> - INTERVAL '<n>' SECOND";
    let column = element.get(2).and_then(|t| ident(t)).ok_or_else(|| SqlError::at(at, usage))?;
    if element.len() < 5 || !is_keyword(element[3], Keyword::AS) {
        return Err(SqlError::at(at, usage));
    }
    let expr_sql = text.slice(element[4].span.start, element[element.len() - 1].span.end).to_string();
    Ok(Some(WatermarkClause { column, expr_sql, location: element[4].span.start }))
}

fn proctime_column(element: &[&TokenWithSpan]) -> Option<(String, Location)> {
    let [name, as_kw, function, open, close] = element else { return None };
    (is_keyword(as_kw, Keyword::AS)
        && is_word(function, "PROCTIME")
        && open.token == Token::LParen
        && close.token == Token::RParen)
        .then(|| ident(name).map(|n| (n, name.span.start)))
        .flatten()
}

/// `name TYPE … METADATA [FROM 'key'] [VIRTUAL]`: returns the column and where METADATA starts.
fn metadata_column(element: &[&TokenWithSpan]) -> Result<Option<(MetadataColumn, usize)>, SqlError> {
    let Some(at) = element.iter().position(|t| is_word(t, "METADATA")) else { return Ok(None) };
    let Some(column) = element.first().and_then(|t| ident(t)) else { return Ok(None) };
    let rest = &element[at + 1..];
    let key = match rest {
        [] => column.clone(),
        [v] if is_word(v, "VIRTUAL") => column.clone(),
        [from, key, ..] if is_keyword(from, Keyword::FROM) => match &key.token {
            Token::SingleQuotedString(k) => k.clone(),
            _ => return Err(SqlError::at(key.span.start, "expected a quoted metadata key after FROM")),
        },
        _ => return Err(SqlError::at(element[at].span.start, "expected METADATA [FROM '<key>'] [VIRTUAL]")),
    };
    Ok(Some((MetadataColumn { column, key, location: element[0].span.start }, at)))
}

/// Maps sqlparser locations (1-based line, 1-based column in characters) to byte offsets.
struct SourceText<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceText<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, line_starts }
    }

    fn offset(&self, location: Location) -> usize {
        let Some(&start) = self.line_starts.get((location.line as usize).saturating_sub(1)) else {
            return self.sql.len();
        };
        let line = &self.sql[start..];
        let column = (location.column as usize).saturating_sub(1);
        start + line.char_indices().nth(column).map_or(line.len(), |(i, _)| i)
    }

    fn slice(&self, from: Location, to: Location) -> &'a str {
        &self.sql[self.offset(from)..self.offset(to)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "CREATE TABLE Clicks (\n  user_id BIGINT,\n  ts TIMESTAMP(3) METADATA FROM 'timestamp',\n  pt AS PROCTIME(),\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n) WITH (connector = 'kafka', topic = 'clicks');";

    #[test]
    fn peels_watermark_proctime_and_metadata_keeping_positions() {
        let peeled = peel_extensions(DDL).expect("peels");
        let ext = &peeled.tables["clicks"];
        let wm = ext.watermark.as_ref().expect("watermark");
        assert_eq!(wm.column, "ts");
        assert_eq!(wm.expr_sql, "ts - INTERVAL '5' SECOND");
        assert_eq!(wm.location, Location { line: 5, column: 23 });
        assert_eq!(ext.proctime.as_ref().map(|p| p.0.as_str()), Some("pt"));
        assert_eq!(ext.metadata[0].key, "timestamp");
        assert_eq!(peeled.sql.len(), DDL.len(), "same length, positions kept");
        assert_eq!(peeled.sql.lines().count(), DDL.lines().count());
        assert!(
            !peeled.sql.contains("WATERMARK")
                && !peeled.sql.contains("PROCTIME")
                && !peeled.sql.contains("METADATA")
        );
        assert!(peeled.sql.contains("ts TIMESTAMP(3)"));
        // What is left parses as plain SQL.
        datafusion::sql::parser::DFParser::parse_sql(&peeled.sql).expect("parses after peeling");
    }

    #[test]
    fn leaves_strings_and_other_statements_alone() {
        let sql = "CREATE TABLE t (v TEXT) WITH (topic = 'WATERMARK FOR x');\nINSERT INTO s SELECT 'pt AS PROCTIME()' FROM t;";
        let peeled = peel_extensions(sql).expect("peels");
        assert_eq!(peeled.sql, sql);
        assert!(peeled.tables.is_empty());
    }

    #[test]
    fn malformed_watermark_reports_its_position() {
        let err = peel_extensions("CREATE TABLE t (\n  ts TIMESTAMP,\n  WATERMARK FOR ts ts\n)")
            .expect_err("fails");
        assert_eq!((err.line, err.column), (3, 3));
    }
}
