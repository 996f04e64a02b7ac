//! `FOR SYSTEM_TIME AS OF l.ts` (Flink's temporal join against a versioned table), peeled
//! off before DataFusion parses the job: sqlparser's generic dialect does not take table
//! versions, and DataFusion would ignore one. Like the DDL extensions ([`crate::ddl`]), the
//! clause is found with sqlparser's own tokenizer, recorded with the table it follows, and
//! blanked with spaces, so positions still point into the user's SQL. The join translation
//! then plans a join with that table on its right as a temporal join.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::ddl::normalize_ident;
use crate::error::SqlError;

/// One `table FOR SYSTEM_TIME AS OF column` in the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedRead {
    /// The versioned table (normalized name).
    pub table: String,
    /// The last part of the `AS OF` column reference (normalized).
    pub as_of: String,
    pub location: Location,
}

/// `sql` with every `FOR SYSTEM_TIME AS OF <column>` blanked, and what was found.
pub fn peel(sql: &str) -> Result<(String, Vec<VersionedRead>), SqlError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.location, e.message))?;
    let sig: Vec<&TokenWithSpan> =
        tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).collect();
    let word = |t: &TokenWithSpan, k: Keyword| matches!(&t.token, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    let mut reads = Vec::new();
    let mut blank: Vec<(Location, Location)> = Vec::new();
    let mut i = 0;
    while i + 3 < sig.len() {
        let clause = word(sig[i], Keyword::FOR)
            && word(sig[i + 1], Keyword::SYSTEM_TIME)
            && word(sig[i + 2], Keyword::AS)
            && word(sig[i + 3], Keyword::OF);
        if !clause {
            i += 1;
            continue;
        }
        let at = sig[i].span.start;
        // The table: the name right before the clause (`a.b` parts joined).
        let mut parts = Vec::new();
        let mut k = i;
        while k > 0 {
            match &sig[k - 1].token {
                Token::Word(w) if parts.len() % 2 == 0 => {
                    parts.push(normalize_ident(&w.value, w.quote_style.is_some()))
                }
                Token::Period if parts.len() % 2 == 1 => parts.push(".".into()),
                _ => break,
            }
            k -= 1;
        }
        parts.reverse();
        let table: String = parts.concat();
        // The column: identifiers joined by periods.
        let mut j = i + 4;
        let mut as_of = None;
        while j < sig.len() {
            match &sig[j].token {
                Token::Word(w) => as_of = Some(normalize_ident(&w.value, w.quote_style.is_some())),
                _ => break,
            }
            j += 1;
            if j < sig.len() && sig[j].token == Token::Period {
                j += 1;
            } else {
                break;
            }
        }
        let (Some(as_of), false) = (as_of, table.is_empty()) else {
            return Err(SqlError::at(
                at,
                "FOR SYSTEM_TIME AS OF needs a table before it and a column after it",
            )
            .with_hint("JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency"));
        };
        blank.push((at, sig[j - 1].span.end));
        reads.push(VersionedRead { table, as_of, location: at });
        i = j;
    }
    let mut out = String::with_capacity(sql.len());
    let (mut line, mut column) = (1u64, 1u64);
    for ch in sql.chars() {
        let here = Location { line, column };
        let hidden = ch != '\n'
            && blank.iter().any(|(from, to)| {
                (from.line, from.column) <= (here.line, here.column)
                    && (here.line, here.column) < (to.line, to.column)
            });
        out.push(if hidden { ' ' } else { ch });
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok((out, reads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clause_is_blanked_and_recorded_with_its_table() {
        let sql = "SELECT * FROM orders o\n  JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.c = r.c";
        let (peeled, reads) = peel(sql).expect("peels");
        let clause = "FOR SYSTEM_TIME AS OF o.ts";
        assert_eq!(peeled, sql.replace(clause, &" ".repeat(clause.len())));
        assert_eq!(
            reads,
            vec![VersionedRead {
                table: "rates".into(),
                as_of: "ts".into(),
                location: Location { line: 2, column: 14 }
            }]
        );
        let (same, none) = peel("SELECT 'FOR SYSTEM_TIME AS OF x' FROM t").expect("peels");
        assert_eq!((same.as_str(), none.len()), ("SELECT 'FOR SYSTEM_TIME AS OF x' FROM t", 0));
        assert!(peel("SELECT * FROM t FOR SYSTEM_TIME AS OF 5").is_err());
    }
}
