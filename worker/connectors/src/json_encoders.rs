//! JSON text of time-zone-less timestamps and of strings, written straight into the output
//! buffer: the same text arrow-json writes, for less CPU. [`FastEncoders`] is the encoder
//! factory the JSON formats hand arrow-json's writers.
//!
//! - **Timestamps** without a time zone: arrow-json writes them through `fmt` and chrono's
//!   `Debug` (`"2023-11-14T22:13:20.001"`), a fifth of the CPU of a Nexmark q0 run (generator
//!   to a JSON file). Here the calendar date comes from the day number (Howard Hinnant's
//!   `civil_from_days`), then the time of day, then the fraction as chrono prints it (none
//!   when zero, else 3, 6 or 9 digits, the fewest that hold it). An array is taken only when
//!   all its values fall in years 0000–9999, where chrono prints four-digit years; arrow-json's
//!   own encoder writes any other array, and every timestamp with a time zone.
//! - **Strings**: arrow-json escapes every string through serde_json, byte by byte. A string
//!   with nothing to escape (no control character, `"` or `\`) is copied whole here; any
//!   other goes through serde_json's escaping as before.

use arrow::array::{
    Array, ArrowPrimitiveType, AsArray, GenericStringArray, OffsetSizeTrait, StringViewArray,
};
use arrow::datatypes::{
    DataType, FieldRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::json::writer::NullableEncoder;
use arrow::json::{Encoder, EncoderFactory, EncoderOptions};

const SECONDS_PER_DAY: i64 = 86_400;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Days from 1970-01-01 to 0000-01-01 and to 9999-12-31.
const FIRST_FOUR_DIGIT_DAY: i64 = -719_528;
const LAST_FOUR_DIGIT_DAY: i64 = 2_932_896;

/// The encoder factory for arrow-json's writers: naive timestamps of every unit, and strings.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastEncoders;

impl EncoderFactory for FastEncoders {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let strings: Option<Box<dyn Encoder + 'a>> = match array.data_type() {
            DataType::Utf8 => Some(Box::new(StringEncoder(array.as_string::<i32>()))),
            DataType::LargeUtf8 => Some(Box::new(StringEncoder(array.as_string::<i64>()))),
            DataType::Utf8View => Some(Box::new(StringViewEncoder(array.as_string_view()))),
            _ => None,
        };
        if let Some(encoder) = strings {
            return Ok(Some(NullableEncoder::new(encoder, array.nulls().cloned())));
        }
        let encoder = match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, None) => encoder::<TimestampSecondType>(array, 1),
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                encoder::<TimestampMillisecondType>(array, 1_000)
            }
            DataType::Timestamp(TimeUnit::Microsecond, None) => {
                encoder::<TimestampMicrosecondType>(array, 1_000_000)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, None) => {
                encoder::<TimestampNanosecondType>(array, NANOS_PER_SECOND)
            }
            _ => None,
        };
        Ok(encoder.map(|encoder| NullableEncoder::new(Box::new(encoder), array.nulls().cloned())))
    }
}

fn encoder<'a, T: ArrowPrimitiveType<Native = i64>>(
    array: &'a dyn Array,
    per_second: i64,
) -> Option<NaiveTimestampEncoder<'a>> {
    let values = array.as_primitive::<T>().values();
    let day = |value: i64| value.div_euclid(per_second).div_euclid(SECONDS_PER_DAY);
    let in_range = |value: &i64| (FIRST_FOUR_DIGIT_DAY..=LAST_FOUR_DIGIT_DAY).contains(&day(*value));
    values.iter().all(in_range).then_some(NaiveTimestampEncoder { values, per_second })
}

/// Writes one array's values, each `per_second` units to the second.
struct NaiveTimestampEncoder<'a> {
    values: &'a [i64],
    per_second: i64,
}

impl Encoder for NaiveTimestampEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let value = self.values[idx];
        let seconds = value.div_euclid(self.per_second);
        let nanos = value.rem_euclid(self.per_second) * (NANOS_PER_SECOND / self.per_second);
        let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        out.push(b'"');
        push_digits(out, year, 4);
        out.push(b'-');
        push_digits(out, month, 2);
        out.push(b'-');
        push_digits(out, day, 2);
        out.push(b'T');
        push_digits(out, second_of_day / 3_600, 2);
        out.push(b':');
        push_digits(out, second_of_day / 60 % 60, 2);
        out.push(b':');
        push_digits(out, second_of_day % 60, 2);
        if nanos != 0 {
            out.push(b'.');
            if nanos % 1_000_000 == 0 {
                push_digits(out, nanos / 1_000_000, 3);
            } else if nanos % 1_000 == 0 {
                push_digits(out, nanos / 1_000, 6);
            } else {
                push_digits(out, nanos, 9);
            }
        }
        out.push(b'"');
    }
}

struct StringEncoder<'a, O: OffsetSizeTrait>(&'a GenericStringArray<O>);

impl<O: OffsetSizeTrait> Encoder for StringEncoder<'_, O> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        push_json_string(self.0.value(idx), out);
    }
}

struct StringViewEncoder<'a>(&'a StringViewArray);

impl Encoder for StringViewEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        push_json_string(self.0.value(idx), out);
    }
}

/// Appends `text` as a JSON string: copied whole when serde_json would escape none of its
/// bytes (control characters, `"` and `\` are all it escapes), else by serde_json.
fn push_json_string(text: &str, out: &mut Vec<u8>) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
    }
}

/// Appends the `width` lowest decimal digits of `value` (non-negative), zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: i64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // from 0000-03-01, so a leap day ends its year
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, PrimitiveArray, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use arrow::json::writer::LineDelimited;
    use arrow::json::{LineDelimitedWriter, WriterBuilder};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn lines(batch: &RecordBatch, ours: bool) -> String {
        let mut out = Vec::new();
        if ours {
            let mut writer = WriterBuilder::new()
                .with_encoder_factory(Arc::new(FastEncoders))
                .build::<_, LineDelimited>(&mut out);
            writer.write(batch).expect("writes");
            writer.finish().expect("finishes");
        } else {
            let mut writer = LineDelimitedWriter::new(&mut out);
            writer.write(batch).expect("writes");
            writer.finish().expect("finishes");
        }
        String::from_utf8(out).expect("UTF-8")
    }

    fn column<T: ArrowPrimitiveType<Native = i64>>(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(values.iter().copied().collect::<PrimitiveArray<T>>())
    }

    /// Values across years 0000–9999 and the edges around them, some whole seconds, some
    /// whole milliseconds or microseconds, some NULL.
    fn values(per_second: i64) -> Vec<Option<i64>> {
        let mut rng = SmallRng::seed_from_u64(per_second as u64);
        // Nanoseconds span only the years 1677–2262: all of i64.
        let first = (FIRST_FOUR_DIGIT_DAY * SECONDS_PER_DAY).saturating_mul(per_second);
        let last = ((LAST_FOUR_DIGIT_DAY + 1) * SECONDS_PER_DAY).saturating_mul(per_second) - 1;
        let mut values: Vec<Option<i64>> =
            vec![Some(first), Some(last), Some(0), Some(-1), Some(1), Some(951_782_400 * per_second), None];
        for i in 0..20_000 {
            let value = rng.random_range(first..=last);
            let rounded = match i % 4 {
                0 => value - value.rem_euclid(per_second),
                1 if per_second >= 1_000 => value - value.rem_euclid(per_second / 1_000),
                2 if per_second >= 1_000_000 => value - value.rem_euclid(per_second / 1_000_000),
                _ => value,
            };
            values.push((i % 97 != 0).then_some(rounded));
        }
        values
    }

    #[test]
    fn every_unit_is_written_as_arrow_json_writes_it() {
        let columns: Vec<(TimeUnit, ArrayRef)> = vec![
            (TimeUnit::Second, column::<TimestampSecondType>(&values(1))),
            (TimeUnit::Millisecond, column::<TimestampMillisecondType>(&values(1_000))),
            (TimeUnit::Microsecond, column::<TimestampMicrosecondType>(&values(1_000_000))),
            (TimeUnit::Nanosecond, column::<TimestampNanosecondType>(&values(NANOS_PER_SECOND))),
        ];
        for (unit, array) in columns {
            let schema = Schema::new(vec![Field::new("ts", DataType::Timestamp(unit, None), true)]);
            let batch = RecordBatch::try_new(Arc::new(schema), vec![array]).expect("batch");
            let (ours, arrows) = (lines(&batch, true), lines(&batch, false));
            for (line, (ours, arrows)) in ours.lines().zip(arrows.lines()).enumerate() {
                assert_eq!(ours, arrows, "{unit:?}, line {line}");
            }
            assert_eq!(ours.lines().count(), arrows.lines().count());
        }
    }

    #[test]
    fn strings_are_written_as_arrow_json_writes_them() {
        let texts = [
            Some("plain"),
            Some(""),
            None,
            Some("quote \" and backslash \\"),
            Some("tab\tnewline\n\u{1}\u{1f}"),
            Some("delete \u{7f}, é, 日本, 🦀"),
            Some("</script>"),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(texts.iter().copied().collect::<arrow::array::StringArray>()),
            Arc::new(texts.iter().copied().collect::<arrow::array::LargeStringArray>()),
            Arc::new(texts.iter().copied().collect::<StringViewArray>()),
        ];
        for array in columns {
            let schema = Schema::new(vec![Field::new("s", array.data_type().clone(), true)]);
            let batch = RecordBatch::try_new(Arc::new(schema), vec![array]).expect("batch");
            assert_eq!(lines(&batch, true), lines(&batch, false), "{}", batch.schema().field(0).data_type());
        }
    }

    #[test]
    fn a_year_outside_0000_to_9999_leaves_the_array_to_arrow_json() {
        let day = SECONDS_PER_DAY * 1_000;
        for outside in [(FIRST_FOUR_DIGIT_DAY - 1) * day, (LAST_FOUR_DIGIT_DAY + 1) * day] {
            let array = column::<TimestampMillisecondType>(&[Some(0), Some(outside)]);
            assert!(encoder::<TimestampMillisecondType>(array.as_ref(), 1_000).is_none());
        }
        let inside = column::<TimestampMillisecondType>(&[Some(FIRST_FOUR_DIGIT_DAY * day)]);
        assert!(encoder::<TimestampMillisecondType>(inside.as_ref(), 1_000).is_some());
    }
}
