//! The offsets table: per (group, topic, partition) the next offset to consume and an owner
//! token. Rows and the offsets they consumed commit in one PostgreSQL transaction, so the
//! table always says exactly which records are in the database.
//!
//! The owner token fences zombies. An instance that is assigned a partition *claims* it:
//! the token goes up by one in a committed transaction and the instance remembers the new
//! value. Every batch then advances a partition's offset only where the token is still its
//! own and the offset is still the one it started from; otherwise the whole transaction
//! rolls back. A paused or partitioned instance that lost a partition can therefore never
//! commit rows for it after its successor claimed it, and a commit whose outcome was lost
//! with the connection is recognised rather than repeated.

use postgres::{Client, Transaction};

use crate::table::ident;
use crate::SinkError;

/// No offset stored yet: the consumer starts where `start_from` says.
pub const NONE: i64 = -1;

/// A claimed partition: the token this instance owns it with and its next offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub token: i64,
    pub next: i64,
}

/// What advancing one partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    Done,
    /// Another instance claimed the partition since.
    Fenced,
    /// The offset already equals the new one under our token: an earlier attempt of this
    /// very transaction committed (its acknowledgement was lost with the connection).
    AlreadyCommitted,
}

pub struct Offsets {
    table: String,
    group: String,
}

impl Offsets {
    pub fn new(table: &str, group: &str) -> Self {
        Self {
            table: table.split('.').map(ident).collect::<Vec<_>>().join("."),
            group: group.to_string(),
        }
    }

    /// Create the table if absent (two instances starting at once may race: retried).
    pub fn ensure(&self, client: &mut Client) -> Result<(), SinkError> {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (\
               group_id text NOT NULL, topic text NOT NULL, partition integer NOT NULL, \
               next_offset bigint NOT NULL, owner_token bigint NOT NULL, \
               owner text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), \
               PRIMARY KEY (group_id, topic, partition))",
            self.table
        );
        let mut last = None;
        for _ in 0..3 {
            match client.batch_execute(&ddl) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(SinkError::postgres(
            format!("creating the offsets table {}", self.table),
            last.expect("three attempts"),
        ))
    }

    /// Claim PARTITIONS of TOPIC for OWNER in one transaction: each token goes up by one.
    pub fn claim(
        &self,
        client: &mut Client,
        owner: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Claim>, postgres::Error> {
        let sql = format!(
            "INSERT INTO {t} AS o (group_id, topic, partition, next_offset, owner_token, owner) \
             VALUES ($1, $2, $3, {NONE}, 1, $4) \
             ON CONFLICT (group_id, topic, partition) DO UPDATE \
               SET owner_token = o.owner_token + 1, owner = EXCLUDED.owner, updated_at = now() \
             RETURNING owner_token, next_offset",
            t = self.table
        );
        let mut tx = client.transaction()?;
        let statement = tx.prepare(&sql)?;
        let mut claims = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let row = tx.query_one(&statement, &[&self.group, topic, partition, &owner])?;
            claims.push(Claim {
                token: row.get(0),
                next: row.get(1),
            });
        }
        tx.commit()?;
        Ok(claims)
    }

    /// Inside the batch's transaction: move TOPIC/PARTITION from FROM to TO if CLAIM's
    /// token still owns it.
    pub fn advance(
        &self,
        tx: &mut Transaction<'_>,
        topic: &str,
        partition: i32,
        claim: Claim,
        to: i64,
    ) -> Result<Advance, postgres::Error> {
        let updated = tx.execute(
            &format!(
                "UPDATE {} SET next_offset = $1, updated_at = now() \
                 WHERE group_id = $2 AND topic = $3 AND partition = $4 \
                   AND owner_token = $5 AND next_offset = $6",
                self.table
            ),
            &[
                &to,
                &self.group,
                &topic,
                &partition,
                &claim.token,
                &claim.next,
            ],
        )?;
        if updated == 1 {
            return Ok(Advance::Done);
        }
        let now = tx.query_opt(
            &format!(
                "SELECT owner_token, next_offset FROM {} \
                 WHERE group_id = $1 AND topic = $2 AND partition = $3",
                self.table
            ),
            &[&self.group, &topic, &partition],
        )?;
        Ok(match now {
            Some(r) if r.get::<_, i64>(0) == claim.token && r.get::<_, i64>(1) == to => {
                Advance::AlreadyCommitted
            }
            _ => Advance::Fenced,
        })
    }
}
