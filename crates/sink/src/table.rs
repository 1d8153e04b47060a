//! The target table as PostgreSQL describes it, the checks every row passes before it is
//! sent (each field names a column, each value has the column's kind), and the statement
//! that writes a batch: one `INSERT ... SELECT ... FROM json_populate_recordset(...)`, so that
//! PostgreSQL itself converts each JSON value to its column's type.

use std::collections::{BTreeSet, HashMap};

use postgres::Client;
use serde_json::Value;

use crate::config::Mode;
use crate::record::{kind, Row};
use crate::SinkError;

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// As `format_type` prints it, e.g. `bigint`, `character varying(20)`.
    pub type_name: String,
    /// `pg_type.typcategory`: N numeric, S string, B boolean, D date/time, A array, ...
    category: char,
    base: String,
    generated: bool,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// Schema-qualified and quoted, safe to put in SQL.
    pub quoted: String,
    pub columns: Vec<Column>,
    index: HashMap<String, usize>,
    mode: Mode,
    key: Option<String>,
}

impl Table {
    /// Look TABLE up; a missing table or key column is an error naming it.
    pub fn load(
        client: &mut Client,
        table: &str,
        mode: Mode,
        key: Option<&str>,
    ) -> Result<Self, SinkError> {
        let pg = |e| SinkError::postgres(format!("looking up table {table}"), e);
        let found = client
            .query_opt(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
                &[&table],
            )
            .map_err(pg)?;
        let Some(found) = found else {
            return Err(SinkError::Config(format!(
                "table {table} does not exist (create it first; see docs/sink.md)"
            )));
        };
        let quoted: String = found.get(0);
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                        t.typcategory::text, t.typname::text, a.attgenerated::text <> '' \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&table],
            )
            .map_err(pg)?;
        let columns: Vec<Column> = rows
            .iter()
            .map(|r| Column {
                name: r.get(0),
                type_name: r.get(1),
                category: r.get::<_, String>(2).chars().next().unwrap_or('X'),
                base: r.get(3),
                generated: r.get(4),
            })
            .collect();
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let t = Self {
            quoted,
            columns,
            index,
            mode,
            key: key.map(str::to_string),
        };
        if let Some(key) = key {
            t.require(&[key])?;
        }
        Ok(t)
    }

    /// Every one of COLUMNS exists (and can be written).
    pub fn require(&self, columns: &[&str]) -> Result<(), SinkError> {
        for name in columns {
            match self.index.get(*name).map(|&i| &self.columns[i]) {
                None => {
                    return Err(SinkError::Config(format!(
                        "table {} has no column {name}",
                        self.quoted
                    )))
                }
                Some(c) if c.generated => {
                    return Err(SinkError::Config(format!(
                        "column {name} of table {} is generated and cannot be written",
                        self.quoted
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Why ROW cannot go into this table, naming the column; None when it can.
    pub fn check_row(&self, row: &Row) -> Result<(), String> {
        for (field, value) in row {
            let Some(c) = self.index.get(field).map(|&i| &self.columns[i]) else {
                return Err(format!(
                    "field {field:?} is not a column of {}",
                    self.quoted
                ));
            };
            if c.generated {
                return Err(format!("column {field} is generated and cannot be written"));
            }
            if !c.accepts(value) {
                return Err(format!(
                    "column {field} is {} but the value is {} ({})",
                    c.type_name,
                    kind(value),
                    short(value)
                ));
            }
        }
        if let Some(key) = &self.key {
            if row.get(key).is_none_or(Value::is_null) {
                return Err(format!("the upsert key column {key} is missing or null"));
            }
        }
        Ok(())
    }

    /// The statement writing rows that carry COLUMNS (in table order) from `$1`, a JSON
    /// array of objects.
    pub fn insert_sql(&self, columns: &BTreeSet<usize>) -> String {
        let names: Vec<String> = columns
            .iter()
            .map(|&i| ident(&self.columns[i].name))
            .collect();
        let list = names.join(", ");
        let mut sql = format!(
            "INSERT INTO {t} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{t}, $1::text::json)",
            t = self.quoted
        );
        if let (Mode::Upsert, Some(key)) = (self.mode, &self.key) {
            let key = ident(key);
            let set: Vec<String> = names
                .iter()
                .filter(|n| **n != key)
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            if set.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({key}) DO NOTHING"));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({key}) DO UPDATE SET {}",
                    set.join(", ")
                ));
            }
        }
        sql
    }

    /// The columns ROWS carry, as indexes in table order.
    pub fn columns_of<'a>(&self, rows: impl Iterator<Item = &'a Row>) -> BTreeSet<usize> {
        let mut set = BTreeSet::new();
        for row in rows {
            set.extend(row.keys().filter_map(|k| self.index.get(k).copied()));
        }
        set
    }

    /// The upsert key of ROW, for keeping the last row per key in a batch.
    pub fn key_of(&self, row: &Row) -> Option<String> {
        self.key
            .as_ref()
            .and_then(|k| row.get(k))
            .map(Value::to_string)
    }

    pub fn upsert(&self) -> bool {
        self.mode == Mode::Upsert
    }
}

impl Column {
    fn accepts(&self, v: &Value) -> bool {
        match (self.category, v) {
            (_, Value::Null) => true,
            _ if matches!(self.base.as_str(), "json" | "jsonb") => true,
            ('N', Value::Number(n)) => match self.base.as_str() {
                "int2" => n.as_i64().is_some_and(|x| i16::try_from(x).is_ok()),
                "int4" => n.as_i64().is_some_and(|x| i32::try_from(x).is_ok()),
                "int8" => n.as_i64().is_some(),
                _ => true,
            },
            ('N', _) => false,
            ('B', v) => v.is_boolean(),
            ('A', v) => v.is_array(),
            ('S' | 'D' | 'E' | 'I' | 'T', v) => v.is_string(),
            ('U', v) if matches!(self.base.as_str(), "bytea" | "uuid") => v.is_string(),
            _ => true,
        }
    }
}

/// A double-quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 40 {
        return s;
    }
    let mut end = 40;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
