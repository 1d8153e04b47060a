//! One batch: the records consumed since the last commit, the rows they become, the
//! records refused (to stop at, or for the dead-letter topic), and for each partition the
//! offset the batch moves it to. `write` puts the rows and, in the same transaction, the
//! offsets into PostgreSQL.

use std::collections::{BTreeMap, HashMap};

use postgres::Transaction;

use crate::record::{Record, Row};
use crate::table::Table;

pub type Partition = (String, i32);

/// The rows of a JSON array text carry at most this many bytes per statement.
const STATEMENT_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct Batch {
    pub records: Vec<Record>,
    /// (index into records, row), in consumption order.
    pub rows: Vec<(usize, Row)>,
    /// Refused records for the dead-letter topic, with the reason.
    pub dead: Vec<(usize, String)>,
    /// How many of `dead` are already acknowledged by the dead-letter topic.
    pub dead_sent: usize,
    /// Per partition, the next offset after this batch.
    pub advance: BTreeMap<Partition, i64>,
    /// Without a dead-letter topic: the first refused record and why (the sink stops after
    /// committing what came before it).
    pub stop: Option<(usize, String)>,
    /// Without a dead-letter topic: where each partition was cut.
    cut: HashMap<Partition, i64>,
}

impl Batch {
    /// Refuse record INDEX: to the dead-letter topic when there is one, otherwise cut its
    /// partition at it (its rows and everything after in that partition leave the batch).
    pub fn reject(&mut self, index: usize, reason: String, dead_letters: bool) {
        let r = &self.records[index];
        let partition = (r.topic.clone(), r.partition);
        if dead_letters {
            self.rows.retain(|(i, _)| *i != index);
            self.dead.push((index, reason));
            return;
        }
        let offset = r.offset;
        if self.cut.get(&partition).is_some_and(|&cut| cut <= offset) {
            return; // already cut before this record
        }
        let records = &self.records;
        self.rows.retain(|(i, _)| {
            let o = &records[*i];
            !(o.topic == partition.0 && o.partition == partition.1 && o.offset >= offset)
        });
        self.cut.insert(partition.clone(), offset);
        self.advance.insert(partition, offset);
        if self.stop.as_ref().is_none_or(|(i, _)| index < *i) {
            self.stop = Some((index, reason));
        }
    }

    /// The rows to write: for an upsert, only the last row per key.
    pub fn rows_to_write<'a>(&'a self, table: &Table) -> Vec<&'a Row> {
        if !table.upsert() {
            return self.rows.iter().map(|(_, r)| r).collect();
        }
        let mut last: HashMap<String, usize> = HashMap::new();
        for (n, (_, row)) in self.rows.iter().enumerate() {
            if let Some(k) = table.key_of(row) {
                last.insert(k, n);
            }
        }
        let mut keep: Vec<usize> = last.into_values().collect();
        keep.sort_unstable();
        keep.into_iter().map(|n| &self.rows[n].1).collect()
    }
}

/// Insert ROWS into TABLE inside TX, in statements of a few MB of JSON each.
pub fn insert(
    tx: &mut Transaction<'_>,
    table: &Table,
    rows: &[&Row],
) -> Result<u64, postgres::Error> {
    let mut written = 0;
    let mut start = 0;
    while start < rows.len() {
        let mut end = start;
        let mut text = String::from("[");
        while end < rows.len() && (end == start || text.len() < STATEMENT_BYTES) {
            if end > start {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(rows[end]).expect("a JSON map serializes"));
            end += 1;
        }
        text.push(']');
        let sql = table.insert_sql(&table.columns_of(rows[start..end].iter().copied()));
        written += tx.execute(&sql, &[&text])?;
        start = end;
    }
    Ok(written)
}

/// Which of BATCH's records PostgreSQL refuses, and why: each record's rows tried alone
/// behind a savepoint, in a transaction that is then rolled back.
pub fn locate(
    tx: &mut Transaction<'_>,
    table: &Table,
    batch: &Batch,
) -> Result<Vec<(usize, String)>, postgres::Error> {
    let mut refused = Vec::new();
    let mut n = 0;
    while n < batch.rows.len() {
        let index = batch.rows[n].0;
        let mut end = n;
        while end < batch.rows.len() && batch.rows[end].0 == index {
            end += 1;
        }
        let rows: Vec<&Row> = batch.rows[n..end].iter().map(|(_, r)| r).collect();
        tx.batch_execute("SAVEPOINT exacta_sink_record")?;
        match insert(tx, table, &rows) {
            Ok(_) => tx.batch_execute("RELEASE SAVEPOINT exacta_sink_record")?,
            Err(e) if crate::pg::classify(&e) == crate::pg::Failure::Data => {
                refused.push((index, postgres_reason(&e)));
                tx.batch_execute("ROLLBACK TO SAVEPOINT exacta_sink_record")?;
            }
            Err(e) => return Err(e),
        }
        n = end;
    }
    Ok(refused)
}

/// PostgreSQL's message for a refused row, with its detail.
pub fn postgres_reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("PostgreSQL refused the row: {} ({detail})", db.message()),
            None => format!("PostgreSQL refused the row: {}", db.message()),
        },
        None => e.to_string(),
    }
}
