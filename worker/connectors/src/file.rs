//! Files and stdout: a file source reads one record per line (a bounded input), a file sink
//! appends one record per line, stdout prints them.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use millrace_types::{SourceEvent, SourcePartition};

use crate::format::{RecordDecoder, RecordEncoder, RecordRef};
use crate::options::{FileConfig, Format};
use crate::{ConnectorError, SinkContext, SourceContext};

const LINES_PER_BATCH: usize = 4096;

pub(crate) fn run_source(config: FileConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    // A file is one partition, read by instance 0.
    let assigned = if ctx.subtask == 0 { vec![SourcePartition(0)] } else { Vec::new() };
    if !ctx.emit(SourceEvent::Assigned(assigned)) || ctx.subtask != 0 {
        ctx.emit(SourceEvent::End);
        return Ok(());
    }
    let decoder = RecordDecoder::new(&ctx.table, config.format)?;
    let io = |source| ConnectorError::Io { context: format!("reading {}", config.path.display()), source };
    let reader = BufReader::new(File::open(&config.path).map_err(io)?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let mut lines = Vec::with_capacity(LINES_PER_BATCH);
    let mut offset = 0i64;
    let mut read = reader.lines();
    loop {
        lines.clear();
        for line in read.by_ref().take(LINES_PER_BATCH) {
            lines.push(line.map_err(io)?);
        }
        if lines.is_empty() {
            ctx.emit(SourceEvent::End);
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
    while let Some(batch) = ctx.input.blocking_recv() {
        let mut buffer = Vec::new();
        encoder.encode_lines(&batch, &mut buffer)?;
        out.write_all(&buffer).map_err(&io)?;
        out.flush().map_err(&io)?;
        ctx.written(batch.num_rows(), buffer.len());
    }
    Ok(())
}
