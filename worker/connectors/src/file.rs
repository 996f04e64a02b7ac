//! Files and stdout: a file source reads one record per line (a bounded input), a file sink
//! appends one record per line, stdout prints them.
//!
//! A file source's checkpoint position is the number of lines it has read (undecodable ones
//! included); a restored job skips that many lines.
//!
//! An upsert stream (an updating query, see [`millrace_types::changelog`]) is written as a
//! visible changelog: `json` lines get an `"op"` field first (`{"op":"+U","k":"a","n":2}`),
//! `raw` lines are Flink's print format, the row kind and the value in brackets (`+U[2]`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use millrace_types::changelog::split_row_kinds;
use millrace_types::{SourceEvent, SourcePartition};

use crate::format::{RecordDecoder, RecordEncoder, RecordRef};
use crate::options::{FileConfig, Format};
use crate::{ConnectorError, SinkContext, SourceContext};

const LINES_PER_BATCH: usize = 4096;

/// The field that carries a changelog row's kind in `json` lines.
const OP_FIELD: &str = "op";

pub(crate) fn run_source(config: FileConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    // A file is one partition, read by instance 0.
    let assigned = if ctx.subtask == 0 { vec![SourcePartition(0)] } else { Vec::new() };
    if !ctx.emit(SourceEvent::Assigned(assigned)) || ctx.subtask != 0 {
        ctx.emit(SourceEvent::End { positions: Default::default() });
        return Ok(());
    }
    let decoder = RecordDecoder::new(&ctx.table, config.format)?;
    let io = |source| ConnectorError::Io { context: format!("reading {}", config.path.display()), source };
    let reader = BufReader::new(File::open(&config.path).map_err(io)?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut lines = Vec::with_capacity(LINES_PER_BATCH);
    let mut offset = ctx.restored_position(SourcePartition(0)).unwrap_or(0).max(0);
    let mut read = reader.lines();
    for line in read.by_ref().take(offset as usize) {
        line.map_err(io)?;
    }
    loop {
        if !ctx.barrier_if_due(|| [(SourcePartition(0), offset)].into()) {
            return Ok(());
        }
        lines.clear();
        for line in read.by_ref().take(LINES_PER_BATCH) {
            lines.push(line.map_err(io)?);
        }
        if lines.is_empty() {
            ctx.emit(SourceEvent::End { positions: [(SourcePartition(0), offset)].into() });
            return Ok(());
        }
        let records: Vec<RecordRef<'_>> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| RecordRef {
                value: Some(l.as_bytes()),
                timestamp_ms: Some(now),
                partition: 0,
                offset: offset + i as i64,
            })
            .collect();
        offset += lines.len() as i64;
        let decoded = decoder.decode(&records)?;
        ctx.dropped(decoded.bad.len(), "undecodable line");
        if decoded.batch.num_rows() > 0
            && !ctx.emit(SourceEvent::Batch { partition: SourcePartition(0), batch: decoded.batch })
        {
            return Ok(());
        }
    }
}

pub(crate) fn run_file_sink(config: FileConfig, ctx: SinkContext) -> Result<(), ConnectorError> {
    let io = |source| ConnectorError::Io { context: format!("writing {}", config.path.display()), source };
    // Several sink instances append to one file: each batch is written in one call.
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&config.path).map_err(io)?;
    write_lines(config.format, ctx, BufWriter::new(file), io)
}

pub(crate) fn run_stdout_sink(format: Format, ctx: SinkContext) -> Result<(), ConnectorError> {
    let io = |source| ConnectorError::Io { context: "writing stdout".into(), source };
    write_lines(format, ctx, std::io::stdout(), io)
}

fn write_lines<W: Write>(
    format: Format,
    mut ctx: SinkContext,
    mut out: W,
    io: impl Fn(std::io::Error) -> ConnectorError,
) -> Result<(), ConnectorError> {
    let encoder = RecordEncoder::new(format);
    while let Some(batch) = ctx.next_batch()? {
        let mut buffer = Vec::new();
        match changelog_lines(&encoder, format, &batch)? {
            Some(lines) => {
                for value in lines {
                    buffer.extend_from_slice(&value);
                    buffer.push(b'\n');
                }
            }
            None => encoder.encode_lines(&batch, &mut buffer)?,
        }
        out.write_all(&buffer).map_err(&io)?;
        out.flush().map_err(&io)?;
        ctx.written(batch.num_rows(), buffer.len());
    }
    Ok(())
}

/// One line per row of an upsert stream, showing its row kind; `None` for an append-only
/// batch (no row-kind column), which is written as plain lines.
fn changelog_lines(
    encoder: &RecordEncoder,
    format: Format,
    batch: &RecordBatch,
) -> Result<Option<Vec<Vec<u8>>>, ConnectorError> {
    let (logical, kinds) = split_row_kinds(batch).map_err(ConnectorError::arrow("reading row kinds"))?;
    let Some(kinds) = kinds else {
        return Ok(None);
    };
    match format {
        Format::Json => {
            let mut fields = vec![Field::new(OP_FIELD, DataType::Utf8, false)];
            fields.extend(logical.schema().fields().iter().map(|f| f.as_ref().clone()));
            let mut columns: Vec<ArrayRef> =
                vec![Arc::new(StringArray::from_iter_values(kinds.iter().map(|k| k.short_string())))];
            columns.extend(logical.columns().iter().cloned());
            let with_op = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                .map_err(ConnectorError::arrow("adding the op field"))?;
            encoder.encode(&with_op).map(Some)
        }
        Format::Raw => Ok(Some(
            encoder
                .encode(&logical)?
                .into_iter()
                .zip(&kinds)
                .map(|(value, kind)| {
                    let mut line = format!("{}[", kind.short_string()).into_bytes();
                    line.extend_from_slice(&value);
                    line.push(b']');
                    line
                })
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use millrace_types::RowKind;
    use millrace_types::changelog::{row_kind_array, with_row_kind};

    use super::*;

    #[test]
    fn changelog_rows_show_their_row_kind() {
        let logical =
            Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(with_row_kind(&logical)),
            vec![
                Arc::new(StringArray::from(vec!["a", "a"])),
                Arc::new(Int64Array::from(vec![1, 2])),
                row_kind_array([RowKind::Insert, RowKind::UpdateAfter]),
            ],
        )
        .expect("batch");
        let lines = |format| {
            changelog_lines(&RecordEncoder::new(format), format, &batch)
                .expect("encodes")
                .expect("an upsert batch")
                .into_iter()
                .map(|l| String::from_utf8(l).expect("utf8"))
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(Format::Json), vec![r#"{"op":"+I","k":"a","n":1}"#, r#"{"op":"+U","k":"a","n":2}"#]);
        let one = RecordBatch::try_new(
            Arc::new(with_row_kind(&Schema::new(vec![Field::new("n", DataType::Int64, true)]))),
            vec![Arc::new(Int64Array::from(vec![7])), row_kind_array([RowKind::Delete])],
        )
        .expect("batch");
        let raw = changelog_lines(&RecordEncoder::new(Format::Raw), Format::Raw, &one).expect("encodes");
        assert_eq!(raw, Some(vec![b"-D[7]".to_vec()]));
        let append = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![7]))],
        )
        .expect("batch");
        let plain = changelog_lines(&RecordEncoder::new(Format::Raw), Format::Raw, &append).expect("encodes");
        assert_eq!(plain, None, "append-only batches are written as plain lines");
    }
}
