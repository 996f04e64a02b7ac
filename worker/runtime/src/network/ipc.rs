//! Arrow IPC over frames. A channel carries one Arrow IPC *stream*: a persistent
//! [`StreamWriter`] on the sender writes the schema message once (the `Schema` frame, sent
//! right after the handshake) and then, per batch, the batch's dictionary messages and its
//! record-batch message (one `Batch` frame).
//!
//! Why a persistent stream rather than each batch on its own: the schema crosses the wire
//! once instead of with every batch, and dictionary-encoded columns keep their dictionary
//! state (sent once, then only replacements) in arrow's own tracker.
//!
//! The receiver splits a frame into its IPC messages (continuation marker, metadata length,
//! metadata, body, every length checked against the frame) and decodes each with arrow's
//! [`FileDecoder`], which keeps the dictionaries across batches and slices the bodies out of
//! the frame without copying. Not arrow's `StreamDecoder`: it holds back a message with an
//! empty body (a batch of zero rows or zero columns) that ends its input until more bytes
//! arrive, which a frame-at-a-time reader never gives it. Not `StreamReader`: it reads
//! through a blocking `Read` and allocates a message's declared body size before reading it.
//!
//! Each `Batch` frame must hold exactly one record batch, last; anything else is an error.

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::try_schema_from_ipc_buffer;
use arrow::ipc::reader::FileDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::ipc::{Block, MessageHeader, MetadataVersion, root_as_message};
use arrow::record_batch::RecordBatch;

use super::channel::ChannelId;
use super::error::NetworkError;

/// The sender's end of a channel's IPC stream.
pub(crate) struct BatchEncoder {
    channel: ChannelId,
    schema: SchemaRef,
    writer: StreamWriter<Vec<u8>>,
}

impl BatchEncoder {
    /// Starts the stream; returns the encoder and the schema message for the `Schema` frame.
    pub(crate) fn new(channel: ChannelId, schema: SchemaRef) -> Result<(Self, Vec<u8>), NetworkError> {
        let mut writer = StreamWriter::try_new(Vec::new(), &schema)
            .map_err(|source| NetworkError::Ipc { channel, source })?;
        let schema_message = std::mem::take(writer.get_mut());
        Ok((Self { channel, schema, writer }, schema_message))
    }

    /// Encodes one batch (with any dictionary messages it needs) for a `Batch` frame.
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, NetworkError> {
        self.check_schema(batch)?;
        self.writer.write(batch).map_err(|source| NetworkError::Ipc { channel: self.channel, source })?;
        Ok(std::mem::take(self.writer.get_mut()))
    }

    /// The IPC stream is typed by the schema sent first: a batch of other column types would
    /// be misread on the other side, so it is refused here.
    fn check_schema(&self, batch: &RecordBatch) -> Result<(), NetworkError> {
        let want = self.schema.fields();
        let got = batch.schema_ref().fields();
        let mismatch = |detail: String| NetworkError::SchemaMismatch { channel: self.channel, detail };
        if want.len() != got.len() {
            return Err(mismatch(format!("{} columns, the channel has {}", got.len(), want.len())));
        }
        for (w, g) in want.iter().zip(got.iter()) {
            if w.data_type() != g.data_type() {
                return Err(mismatch(format!(
                    "column {} is {}, the channel's column {} is {}",
                    g.name(),
                    g.data_type(),
                    w.name(),
                    w.data_type()
                )));
            }
        }
        Ok(())
    }
}

/// The metadata version [`StreamWriter`] writes by default, and so the only one accepted.
const VERSION: MetadataVersion = MetadataVersion::V5;

const CONTINUATION_MARKER: [u8; 4] = [0xff; 4];

/// The receiver's end of a channel's IPC stream.
pub(crate) struct BatchDecoder {
    channel: ChannelId,
    /// Set by the schema frame.
    decoder: Option<FileDecoder>,
}

impl BatchDecoder {
    pub(crate) fn new(channel: ChannelId) -> Self {
        Self { channel, decoder: None }
    }

    fn ipc(&self, source: arrow::error::ArrowError) -> NetworkError {
        NetworkError::Ipc { channel: self.channel, source }
    }

    fn protocol(&self, detail: String) -> NetworkError {
        NetworkError::Protocol { channel: self.channel, detail }
    }

    /// Reads the `Schema` frame that starts the stream.
    pub(crate) fn schema(&mut self, message: Vec<u8>) -> Result<SchemaRef, NetworkError> {
        if self.decoder.is_some() {
            return Err(self.protocol("a second schema frame".into()));
        }
        let schema = SchemaRef::new(try_schema_from_ipc_buffer(&message).map_err(|e| self.ipc(e))?);
        self.decoder = Some(FileDecoder::new(schema.clone(), VERSION));
        Ok(schema)
    }

    /// Reads one `Batch` frame: any dictionary messages, then exactly one record batch.
    pub(crate) fn batch(&mut self, messages: Vec<u8>) -> Result<RecordBatch, NetworkError> {
        let channel = self.channel;
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(self.protocol("a batch frame before the schema frame".into()));
        };
        let protocol = |detail: String| NetworkError::Protocol { channel, detail };
        let ipc = |source| NetworkError::Ipc { channel, source };
        let frame = Buffer::from_vec(messages);
        let mut offset = 0;
        while offset < frame.len() {
            let rest = &frame[offset..];
            if rest.len() < 8 || rest[..4] != CONTINUATION_MARKER {
                return Err(protocol(format!("no IPC message header at byte {offset} of a batch frame")));
            }
            let meta_len = i32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            let meta_len = usize::try_from(meta_len)
                .ok()
                .filter(|&len| len > 0 && 8 + len <= rest.len())
                .ok_or_else(|| {
                    protocol(format!("IPC metadata length {meta_len} at byte {offset} overruns the frame"))
                })?;
            let message = root_as_message(&rest[8..8 + meta_len])
                .map_err(|err| protocol(format!("IPC metadata at byte {offset}: {err}")))?;
            let body_len = usize::try_from(message.bodyLength())
                .ok()
                .filter(|&len| 8 + meta_len + len <= rest.len())
                .ok_or_else(|| {
                    protocol(format!(
                        "IPC body length {} at byte {offset} overruns the frame",
                        message.bodyLength()
                    ))
                })?;
            let header_len = 8 + meta_len;
            let block = Block::new(offset as i64, header_len as i32, body_len as i64);
            let data = frame.slice_with_length(offset, header_len + body_len);
            offset += header_len + body_len;
            match message.header_type() {
                MessageHeader::DictionaryBatch => decoder.read_dictionary(&block, &data).map_err(ipc)?,
                MessageHeader::RecordBatch => {
                    if offset != frame.len() {
                        return Err(protocol("a batch frame holds more than one record batch".into()));
                    }
                    return decoder
                        .read_record_batch(&block, &data)
                        .map_err(ipc)?
                        .ok_or_else(|| protocol("an empty IPC message in a batch frame".into()));
                }
                other => return Err(protocol(format!("a {other:?} IPC message in a batch frame"))),
            }
        }
        Err(protocol("a batch frame without a record batch".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};

    use super::*;

    fn channel() -> ChannelId {
        ChannelId::new(0, 1, 2)
    }

    #[test]
    fn dictionary_columns_keep_their_dictionaries_across_batches() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("d", dict, true)]));
        let (mut encoder, schema_message) = BatchEncoder::new(channel(), schema.clone()).expect("encoder");
        let mut decoder = BatchDecoder::new(channel());
        assert_eq!(decoder.schema(schema_message).expect("schema"), schema);
        for values in [vec!["a", "b", "a"], vec!["b", "c"]] {
            let array: DictionaryArray<Int32Type> = values.into_iter().map(Some).collect();
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(array) as ArrayRef]).expect("batch");
            let decoded = decoder.batch(encoder.encode(&batch).expect("encode")).expect("decode");
            assert_eq!(decoded, batch);
        }
    }

    #[test]
    fn batches_without_rows_or_columns_round_trip() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let (mut encoder, schema_message) = BatchEncoder::new(channel(), schema.clone()).expect("encoder");
        let mut decoder = BatchDecoder::new(channel());
        decoder.schema(schema_message).expect("schema");
        let empty = RecordBatch::new_empty(schema);
        assert_eq!(decoder.batch(encoder.encode(&empty).expect("encode")).expect("decode"), empty);

        let no_columns = Arc::new(Schema::empty());
        let (mut encoder, schema_message) =
            BatchEncoder::new(channel(), no_columns.clone()).expect("encoder");
        let mut decoder = BatchDecoder::new(channel());
        decoder.schema(schema_message).expect("schema");
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(5));
        let counted = RecordBatch::try_new_with_options(no_columns, vec![], &options).expect("batch");
        let decoded = decoder.batch(encoder.encode(&counted).expect("encode")).expect("decode");
        assert_eq!(decoded.num_rows(), 5);
    }

    #[test]
    fn a_batch_of_another_schema_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let (mut encoder, _) = BatchEncoder::new(channel(), schema).expect("encoder");
        let other = RecordBatch::try_from_iter([("a", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)])
            .expect("batch");
        let err = encoder.encode(&other).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "channel s0[1]→s1[2]: batch does not match the channel's schema: column a is Utf8, the channel's column a is Int64"
        );
    }

    #[test]
    fn malformed_ipc_payloads_are_errors() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let (mut encoder, schema_message) = BatchEncoder::new(channel(), schema.clone()).expect("encoder");
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef])
                .expect("batch");
        let encoded = encoder.encode(&batch).expect("encode");

        let mut fresh = BatchDecoder::new(channel());
        let err = fresh.batch(encoded.clone()).expect_err("no schema yet");
        assert!(err.to_string().contains("a batch frame before the schema frame"), "{err}");

        let mut decoder = BatchDecoder::new(channel());
        decoder.schema(schema_message.clone()).expect("schema");
        let err = decoder.schema(schema_message).expect_err("second schema");
        assert!(err.to_string().contains("a second schema frame"), "{err}");
        let err = decoder.batch(encoded[..encoded.len() - 8].to_vec()).expect_err("cut");
        assert!(err.to_string().contains("overruns the frame"), "{err}");
        let mut twice = encoded.clone();
        twice.extend_from_slice(&encoded);
        let err = decoder.batch(twice).expect_err("two batches");
        assert!(err.to_string().contains("more than one record batch"), "{err}");
        let err = decoder.batch(vec![0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0, 1, 2, 3]).expect_err("garbage");
        assert!(err.to_string().contains("overruns the frame"), "{err}");
        let err = decoder.batch(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]).expect_err("garbage");
        assert!(err.to_string().contains("no IPC message header at byte 0"), "{err}");
        let mut meta_garbage = vec![0xff, 0xff, 0xff, 0xff, 8, 0, 0, 0];
        meta_garbage.extend_from_slice(&[0x55; 8]);
        let err = decoder.batch(meta_garbage).expect_err("garbage");
        assert!(err.to_string().contains("IPC metadata at byte 0"), "{err}");
        // The decoder is still good after rejected frames.
        assert_eq!(decoder.batch(encoded).expect("decode"), batch);

        let mut decoder = BatchDecoder::new(channel());
        let err = decoder.schema(vec![
            0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ]);
        assert!(matches!(err, Err(NetworkError::Ipc { .. })), "{err:?}");
    }
}
