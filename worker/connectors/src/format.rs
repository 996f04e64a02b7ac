//! Record formats: bytes ↔ Arrow rows of a table, a batch at a time.
//!
//! `raw`: the value is the UTF-8 text of the single payload column, cast (vectorized, Arrow's
//! cast kernels) to the column's type; surrounding whitespace is ignored. `json`: one JSON
//! object per record, fields by column name (Arrow's JSON decoder). A record whose value does
//! not decode is reported back with its index and the reason, never an error for the batch.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use arrow::compute::{cast, concat_batches, filter};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;

use crate::json_encoders::FastEncoders;
use crate::{ConnectorError, ConnectorTable, MetadataField, options::Format};

/// One record as a source read it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub partition: i32,
    pub offset: i64,
}

/// Decoded rows, plus the records that did not decode (index into the input, reason).
#[derive(Debug)]
pub struct DecodedBatch {
    pub batch: RecordBatch,
    pub bad: Vec<(usize, String)>,
}

/// Payload columns (one row per record), whether each record decoded, and the bad records.
type PayloadColumns = (Vec<ArrayRef>, Vec<bool>, Vec<(usize, String)>);

/// Decodes records into batches of a table's connector schema.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    schema: SchemaRef,
    format: Format,
    payload: Vec<usize>,
    payload_schema: SchemaRef,
    metadata: Vec<(usize, MetadataField)>,
}

impl RecordDecoder {
    pub fn new(table: &ConnectorTable, format: Format) -> Result<Self, ConnectorError> {
        let payload: Vec<usize> = (0..table.schema.fields().len())
            .filter(|i| !table.metadata.iter().any(|(m, _)| m == i))
            .collect();
        if format == Format::Raw && payload.len() != 1 {
            return Err(ConnectorError::Options {
                table: table.name.clone(),
                message: format!(
                    "format 'raw' needs exactly one payload column, the table has {}",
                    payload.len()
                ),
            });
        }
        let payload_schema =
            Arc::new(Schema::new(payload.iter().map(|&i| table.schema.field(i).clone()).collect::<Vec<_>>()));
        Ok(Self {
            schema: Arc::clone(&table.schema),
            format,
            payload,
            payload_schema,
            metadata: table.metadata.clone(),
        })
    }

    pub fn decode(&self, records: &[RecordRef<'_>]) -> Result<DecodedBatch, ConnectorError> {
        let (payload_columns, good, bad) = match self.format {
            Format::Raw => self.decode_raw(records)?,
            Format::Json => self.decode_json(records)?,
        };
        let mask = BooleanArray::from(good.clone());
        let kept: Vec<usize> = good.iter().enumerate().filter(|(_, g)| **g).map(|(i, _)| i).collect();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        for (column, array) in self.payload.iter().zip(payload_columns) {
            columns[*column] = Some(if array.len() == kept.len() {
                array
            } else {
                filter(&array, &mask).map_err(ConnectorError::arrow("filtering bad records"))?
            });
        }
        for &(column, field) in &self.metadata {
            let target = self.schema.field(column).data_type();
            let array: ArrayRef = match field {
                MetadataField::Timestamp => Arc::new(TimestampMillisecondArray::from(
                    kept.iter().map(|&i| records[i].timestamp_ms).collect::<Vec<_>>(),
                )),
                MetadataField::Partition => {
                    Arc::new(Int32Array::from(kept.iter().map(|&i| records[i].partition).collect::<Vec<_>>()))
                }
                MetadataField::Offset => {
                    Arc::new(Int64Array::from(kept.iter().map(|&i| records[i].offset).collect::<Vec<_>>()))
                }
            };
            let array = if array.data_type() == target {
                array
            } else {
                cast(&array, target).map_err(ConnectorError::arrow("metadata column"))?
            };
            columns[column] = Some(array);
        }
        let columns: Vec<ArrayRef> = columns.into_iter().flatten().collect();
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(kept.len()));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
            .map_err(ConnectorError::arrow("assembling decoded batch"))?;
        Ok(DecodedBatch { batch, bad })
    }

    /// Returns the payload columns (one row per record, bad ones included as nulls for raw),
    /// the per-record good flags and the bad records.
    fn decode_raw(&self, records: &[RecordRef<'_>]) -> Result<PayloadColumns, ConnectorError> {
        let text: StringArray = records
            .iter()
            .map(|r| r.value.and_then(|v| std::str::from_utf8(v).ok()).map(str::trim))
            .collect();
        let target = self.payload_schema.field(0).data_type();
        let options = CastOptions { safe: true, ..Default::default() };
        let typed = cast_with_options(&text, target, &options)
            .map_err(ConnectorError::arrow("casting raw values"))?;
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let reason = match record.value {
                None => Some("record has no value".to_string()),
                Some(_) if text.is_null(i) => Some("value is not UTF-8 text".to_string()),
                Some(_) if typed.is_null(i) => Some(format!("'{}' is not a valid {target}", text.value(i))),
                Some(_) => None,
            };
            good.push(reason.is_none());
            if let Some(reason) = reason {
                bad.push((i, reason));
            }
        }
        Ok((vec![typed], good, bad))
    }

    fn decode_json(&self, records: &[RecordRef<'_>]) -> Result<PayloadColumns, ConnectorError> {
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        let mut batches = Vec::new();
        for (i, record) in records.iter().enumerate() {
            // One decoder per record keeps a bad record from poisoning its neighbours; the
            // decoder itself is cheap next to JSON parsing.
            let decoded = match record.value {
                None => Err("record has no value".to_string()),
                Some(value) => self.decode_json_value(value),
            };
            match decoded {
                Ok(batch) => {
                    batches.push(batch);
                    good.push(true);
                }
                Err(reason) => {
                    good.push(false);
                    bad.push((i, reason));
                }
            }
        }
        let batch = concat_batches(&self.payload_schema, &batches)
            .map_err(ConnectorError::arrow("concatenating JSON rows"))?;
        Ok((batch.columns().to_vec(), good, bad))
    }

    fn decode_json_value(&self, value: &[u8]) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(Arc::clone(&self.payload_schema))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let consumed = decoder.decode(value).map_err(|e| e.to_string())?;
        if consumed != value.len() && !value[consumed..].iter().all(u8::is_ascii_whitespace) {
            return Err("trailing bytes after the JSON value".into());
        }
        match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) if batch.num_rows() == 1 => Ok(batch),
            _ => Err("expected exactly one JSON object".into()),
        }
    }
}

/// Encodes rows into record values.
#[derive(Debug, Clone, Copy)]
pub struct RecordEncoder {
    format: Format,
}

impl RecordEncoder {
    pub fn new(format: Format) -> Self {
        Self { format }
    }

    /// One value per row. `raw` writes the single column as text (Arrow's cast: floats keep a
    /// decimal point, e.g. `70.0`); NULL becomes an empty value.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, ConnectorError> {
        match self.format {
            Format::Raw => {
                if batch.num_columns() != 1 {
                    return Err(ConnectorError::Delivery(format!(
                        "format 'raw' writes exactly one column, the sink gets {}",
                        batch.num_columns()
                    )));
                }
                let text = cast(batch.column(0), &DataType::Utf8)
                    .map_err(ConnectorError::arrow("formatting raw values"))?;
                let text = text.as_string::<i32>();
                Ok((0..text.len())
                    .map(|i| if text.is_null(i) { Vec::new() } else { text.value(i).as_bytes().to_vec() })
                    .collect())
            }
            Format::Json => {
                let mut buffer = Vec::new();
                let mut writer = json_lines_writer(&mut buffer);
                writer.write(batch).map_err(ConnectorError::arrow("writing JSON"))?;
                writer.finish().map_err(ConnectorError::arrow("writing JSON"))?;
                drop(writer);
                Ok(buffer
                    .split(|b| *b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect())
            }
        }
    }
}

impl RecordEncoder {
    /// Appends every row to `out`, one per line (`\n`-terminated), without a buffer per row:
    /// what line-oriented sinks (files, stdout) write.
    pub fn encode_lines(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
        match self.format {
            Format::Json => {
                let mut writer = json_lines_writer(&mut *out);
                writer.write(batch).map_err(ConnectorError::arrow("writing JSON"))?;
                writer.finish().map_err(ConnectorError::arrow("writing JSON"))?;
            }
            Format::Raw => {
                for value in self.encode(batch)? {
                    out.extend_from_slice(&value);
                    out.push(b'\n');
                }
            }
        }
        Ok(())
    }
}

/// arrow-json's line writer, with timestamps and strings written by [`FastEncoders`] (the same text,
/// without `fmt`).
fn json_lines_writer<W: std::io::Write>(out: W) -> arrow::json::LineDelimitedWriter<W> {
    arrow::json::WriterBuilder::new()
        .with_encoder_factory(Arc::new(FastEncoders))
        .build::<_, arrow::json::writer::LineDelimited>(out)
}

/// Encodes rows' key columns into record keys: one column is its text (Arrow's cast to
/// text, as `raw` values); several are a JSON array of their texts (`["ann","3"]`), NULL as
/// JSON `null`. A NULL single key column is an empty key. Equal keys give equal bytes, so
/// Kafka's partitioner sends every record of a key to the same partition.
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    columns: Vec<usize>,
}

impl KeyEncoder {
    /// `columns`: indices of the key columns in the batches to encode.
    pub fn new(columns: Vec<usize>) -> Self {
        Self { columns }
    }

    /// One key per row, or `None` when there are no key columns.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Option<Vec<Vec<u8>>>, ConnectorError> {
        if self.columns.is_empty() {
            return Ok(None);
        }
        let mut texts = Vec::with_capacity(self.columns.len());
        for &index in &self.columns {
            if index >= batch.num_columns() {
                return Err(ConnectorError::Delivery(format!(
                    "key column {index} is missing: the sink gets {} columns",
                    batch.num_columns()
                )));
            }
            texts.push(
                cast(batch.column(index), &DataType::Utf8)
                    .map_err(ConnectorError::arrow("formatting keys"))?,
            );
        }
        let texts: Vec<&StringArray> = texts.iter().map(|t| t.as_string::<i32>()).collect();
        let keys = (0..batch.num_rows())
            .map(|row| match texts.as_slice() {
                [one] => {
                    if one.is_null(row) {
                        Vec::new()
                    } else {
                        one.value(row).as_bytes().to_vec()
                    }
                }
                many => {
                    let values: Vec<serde_json::Value> = many
                        .iter()
                        .map(|t| {
                            if t.is_null(row) {
                                serde_json::Value::Null
                            } else {
                                serde_json::Value::String(t.value(row).to_string())
                            }
                        })
                        .collect();
                    serde_json::Value::Array(values).to_string().into_bytes()
                }
            })
            .collect();
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::Float64Array;
    use arrow::datatypes::{Field, TimeUnit};

    use super::*;

    fn table(fields: Vec<Field>, metadata: Vec<(usize, MetadataField)>) -> ConnectorTable {
        ConnectorTable {
            name: "t".into(),
            schema: Arc::new(Schema::new(fields)),
            metadata,
            primary_key: Vec::new(),
            options: BTreeMap::new(),
        }
    }

    fn record(value: &str, ts: i64) -> RecordRef<'_> {
        RecordRef { value: Some(value.as_bytes()), timestamp_ms: Some(ts), partition: 3, offset: ts }
    }

    #[test]
    fn lines_are_the_records_one_per_line() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)])),
            vec![Arc::new(Float64Array::from(vec![Some(1.5), None, Some(70.0)]))],
        )
        .expect("batch");
        for format in [Format::Raw, Format::Json] {
            let encoder = RecordEncoder::new(format);
            let mut lines = Vec::new();
            encoder.encode_lines(&batch, &mut lines).expect("encodes");
            let mut joined = Vec::new();
            for record in encoder.encode(&batch).expect("encodes") {
                joined.extend_from_slice(&record);
                joined.push(b'\n');
            }
            assert_eq!(String::from_utf8_lossy(&lines), String::from_utf8_lossy(&joined), "{format:?}");
        }
    }

    #[test]
    fn raw_integers_decode_and_bad_ones_are_reported() {
        let t = table(
            vec![
                Field::new("v", DataType::Int64, true),
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ],
            vec![(1, MetadataField::Timestamp)],
        );
        let decoder = RecordDecoder::new(&t, Format::Raw).expect("decoder");
        let records =
            [record("55", 1), record(" 7\n", 2), record("abc", 3), record("4.5", 4), record("100", 5)];
        let decoded = decoder.decode(&records).expect("decodes");
        let values: Vec<i64> =
            decoded.batch.column(0).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec();
        assert_eq!(values, vec![55, 7, 100]);
        let ts: Vec<i64> = decoded
            .batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
            .values()
            .to_vec();
        assert_eq!(ts, vec![1, 2, 5]);
        assert_eq!(decoded.bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2, 3]);
        assert!(decoded.bad[0].1.contains("'abc'"), "{}", decoded.bad[0].1);
    }

    #[test]
    fn json_records_decode_one_by_one() {
        let t = table(
            vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)],
            Vec::new(),
        );
        let decoder = RecordDecoder::new(&t, Format::Json).expect("decoder");
        let records = [record(r#"{"a": 1, "b": "x"}"#, 1), record("{not json", 2), record(r#"{"a": 2}"#, 3)];
        let decoded = decoder.decode(&records).expect("decodes");
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(decoded.bad.len(), 1);
        assert_eq!(decoded.bad[0].0, 1);
    }

    #[test]
    fn raw_floats_encode_like_python_str() {
        let schema = Arc::new(Schema::new(vec![Field::new("avg", DataType::Float64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(vec![70.0, 200.0 / 3.0, 0.5]))])
                .expect("batch");
        let encoded = RecordEncoder::new(Format::Raw).encode(&batch).expect("encodes");
        let text: Vec<String> = encoded.into_iter().map(|v| String::from_utf8(v).expect("utf8")).collect();
        assert_eq!(text, vec!["70.0", "66.66666666666667", "0.5"]);
    }

    #[test]
    fn keys_are_the_column_text_or_a_json_array_of_texts() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("ann"), None, Some("b\"o")])),
                Arc::new(Int64Array::from(vec![Some(3), Some(4), None])),
                Arc::new(Float64Array::from(vec![1.5, 2.0, 3.0])),
            ],
        )
        .expect("batch");
        assert_eq!(KeyEncoder::new(Vec::new()).encode(&batch).expect("encode"), None);
        let one = KeyEncoder::new(vec![0]).encode(&batch).expect("encode").expect("keys");
        assert_eq!(one, vec![b"ann".to_vec(), Vec::new(), b"b\"o".to_vec()]);
        let int = KeyEncoder::new(vec![1]).encode(&batch).expect("encode").expect("keys");
        assert_eq!(int, vec![b"3".to_vec(), b"4".to_vec(), Vec::new()]);
        let two = KeyEncoder::new(vec![0, 1]).encode(&batch).expect("encode").expect("keys");
        let two: Vec<String> = two.into_iter().map(|k| String::from_utf8(k).expect("utf8")).collect();
        assert_eq!(two, vec![r#"["ann","3"]"#, r#"[null,"4"]"#, r#"["b\"o",null]"#]);
        assert!(KeyEncoder::new(vec![3]).encode(&batch).is_err());
    }
}
