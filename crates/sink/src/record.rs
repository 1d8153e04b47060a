//! A consumed record, owned, and the two built-in ways to turn one into a row: `json` (the
//! value is a JSON object whose fields name columns) and `raw` (the record's coordinates,
//! key, value, headers and timestamp as columns).

use rdkafka::message::{Headers, Message};
use serde_json::{json, Map, Value};

/// A row for the sink's table: column name to value. PostgreSQL converts each value to its
/// column's type (`json_populate_recordset`); bytea takes `"\\x..."` hex text.
pub type Row = Map<String, Value>;

/// One record as the sink saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch, when the record carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    pub(crate) fn from_message<M: Message>(m: &M) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        }
    }

    /// `topic/partition@offset`, how errors name a record.
    pub fn coordinates(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// `--format json`: the value, a JSON object, is the row.
pub fn json_row(record: &Record) -> Result<Vec<Row>, String> {
    let value = record
        .value
        .as_deref()
        .ok_or("the record has no value (a tombstone); a JSON object is expected")?;
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(row)) => Ok(vec![row]),
        Ok(other) => Err(format!(
            "the value is JSON but not an object (it is {})",
            kind(&other)
        )),
        Err(e) => Err(format!("the value is not valid JSON: {e}")),
    }
}

/// `--format raw`: columns topic, partition, offset, key, value, headers, timestamp.
pub fn raw_row(record: &Record) -> Result<Vec<Row>, String> {
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v.as_deref().map(String::from_utf8_lossy)}))
        .collect();
    let mut row = Map::new();
    row.insert("topic".into(), json!(record.topic));
    row.insert("partition".into(), json!(record.partition));
    row.insert("offset".into(), json!(record.offset));
    row.insert("key".into(), bytea(record.key.as_deref()));
    row.insert("value".into(), bytea(record.value.as_deref()));
    row.insert("headers".into(), Value::Array(headers));
    row.insert(
        "timestamp".into(),
        record.timestamp_ms.map_or(Value::Null, |ms| json!(utc(ms))),
    );
    Ok(vec![row])
}

/// The columns `raw_row` fills.
pub const RAW_COLUMNS: [&str; 7] = [
    "topic",
    "partition",
    "offset",
    "key",
    "value",
    "headers",
    "timestamp",
];

fn bytea(bytes: Option<&[u8]>) -> Value {
    bytes.map_or(Value::Null, |b| {
        let mut s = String::with_capacity(2 + 2 * b.len());
        s.push_str("\\x");
        for byte in b {
            s.push_str(&format!("{byte:02x}"));
        }
        Value::String(s)
    })
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Milliseconds since the epoch as an ISO 8601 UTC timestamp PostgreSQL reads.
fn utc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_796_260_136_171), "2026-12-03T01:08:56.171Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_rows_are_objects_with_reasons_otherwise() {
        let mut r = Record {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            key: None,
            value: Some(br#"{"id": 1}"#.to_vec()),
            headers: vec![],
            timestamp_ms: None,
        };
        assert_eq!(json_row(&r).unwrap()[0]["id"], 1);
        r.value = Some(b"[1]".to_vec());
        assert!(json_row(&r).unwrap_err().contains("an array"));
        r.value = Some(b"{oops".to_vec());
        assert!(json_row(&r).unwrap_err().contains("not valid JSON"));
        r.value = None;
        assert!(json_row(&r).unwrap_err().contains("tombstone"));
        r.key = Some(vec![0xab, 0x01]);
        assert_eq!(raw_row(&r).unwrap()[0]["key"], "\\xab01");
    }
}
