//! The bytes of one state file: a state table's rows as an Arrow IPC stream (schema first,
//! then the batches). Reading checks the stream and says which file is broken, so corrupt
//! checkpoint state is an error naming the file, never a panic.

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

/// Encodes `batches` (all of one schema; at least one) as an Arrow IPC stream.
pub fn encode(batches: &[RecordBatch]) -> Result<Bytes, String> {
    let first = batches.first().ok_or("no batches to encode")?;
    let mut writer = StreamWriter::try_new(Vec::new(), &first.schema()).map_err(|e| e.to_string())?;
    for batch in batches {
        writer.write(batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    Ok(Bytes::from(writer.into_inner().map_err(|e| e.to_string())?))
}

/// Decodes a file written by [`encode`]; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("not an Arrow IPC stream: {e}"))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| format!("corrupt Arrow IPC stream: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_round_trip_and_garbage_is_an_error() -> Result<(), String> {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])
            .map_err(|e| e.to_string())?;
        let bytes = encode(&[batch.clone(), batch.clone()])?;
        let back = decode(&bytes)?;
        assert_eq!(back, vec![batch.clone(), batch]);
        assert!(decode(b"not arrow").is_err());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err(), "a truncated file is an error");
        Ok(())
    }
}
