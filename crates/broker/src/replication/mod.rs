//! Partition replication in a cluster, Kafka's ISR design under the Raft metadata quorum
//! (docs/cluster.md): each partition has a leader, which takes every write, and followers,
//! which fetch from it ([`fetcher`]) and append its batches as they are (same offsets, same
//! leader epochs, the producer state rebuilt from them).
//!
//! - The **high watermark** on a leader is the smallest offset durable on every in-sync
//!   replica: its own durable offset by the flush rule and each ISR follower's log end
//!   offset as of its last fetch (a follower fetches offset N only after its log below N
//!   is written, and fsynced when the flush rule asks for an fsync per append). It never
//!   moves back. acks=all is answered once it passes the batch.
//! - A follower's high watermark is the leader's, as of its last fetch, capped by its own
//!   log end; a new leader starts from it and exposes nothing more until its ISR confirms.
//! - Leader epochs fence stale leaders and readers: requests naming another epoch are
//!   answered FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH, and a follower truncates its log
//!   where it diverges from its new leader's (OffsetForLeaderEpoch, KIP-101/279).
//! - [`follow`] applies the quorum's metadata to this broker: topics, roles, fetchers.
//! - [`isr`]: the leader's ISR changes (shrink laggards, expand caught-up followers).

pub mod fetcher;
pub mod follow;
pub mod isr;
pub mod metrics;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use exacta_types::ErrorCode;

use crate::partitions::{ApiError, Partition};

/// A replica's part in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A single-node broker: the high watermark is what is durable here.
    Single,
    /// This broker leads the partition.
    Leader(Leadership),
    /// This broker fetches the partition from its leader.
    Follower(Following),
    /// The partition is placed on other brokers.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub me: i32,
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The log end offset when this epoch began (a follower joins the ISR only past it).
    pub epoch_start: i64,
    /// When this broker took the lead in this epoch (ms): followers not heard from yet
    /// count as caught up then.
    pub since_ms: i64,
    /// Each follower's progress as of its last fetch in this epoch.
    pub followers: HashMap<i32, Progress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The follower's log end offset (everything below it is on the follower).
    pub log_end: i64,
    /// When the follower was last caught up (ms): a fetch from at least the leader's log
    /// end as of the follower's previous fetch means it was caught up at that previous
    /// fetch (Kafka's rule: under steady writes a follower never fetches from the very
    /// end, yet is in sync).
    pub caught_up_ms: i64,
    /// The previous fetch: when, and the leader's log end then.
    pub last_fetch_ms: i64,
    pub leader_end_at_last_fetch: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Following {
    pub leader: i32,
    pub epoch: i32,
    /// Whether the log was cut where it diverges from this leader's (done once per epoch).
    pub truncated: bool,
}

/// No current leader epoch given (skip the check).
const NO_EPOCH: i32 = -1;

impl Partition {
    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of this replica's role.
    pub fn role_now(&self) -> Role {
        if !self.replicated.load(Ordering::Acquire) {
            return Role::Single;
        }
        self.role().clone()
    }

    /// Whether the partition is replicated (its high watermark waits for followers).
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// The leader epoch this broker serves the partition at, after checking that it leads
    /// it and that the client's REQUESTED epoch (-1: unchecked) is that one.
    pub fn check_leader(&self, requested: i32) -> Result<i32, ApiError> {
        if !self.is_replicated() {
            // A single node leads at epoch 0 (Metadata says so).
            check_epoch(requested, 0, &self.topic, self.index)?;
            return Ok(0);
        }
        let current = match &*self.role() {
            Role::Single => 0,
            Role::Leader(l) => l.epoch,
            Role::Follower(_) | Role::Absent => return Err(self.not_leader()),
        };
        check_epoch(requested, current, &self.topic, self.index)?;
        Ok(current)
    }

    /// How many replicas are in sync (1 on a single node); NOT_LEADER_OR_FOLLOWER when this
    /// broker does not lead the partition.
    pub fn in_sync_replicas(&self) -> Result<usize, ApiError> {
        if !self.is_replicated() {
            return Ok(1);
        }
        match &*self.role() {
            Role::Leader(l) => Ok(l.isr.len()),
            _ => Err(self.not_leader()),
        }
    }

    fn not_leader(&self) -> ApiError {
        ApiError::new(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "this broker does not lead {}-{}; refresh metadata",
                self.topic, self.index
            ),
        )
    }

    /// Recomputes a leader's high watermark from its own durable offset and its ISR
    /// followers' log ends (see the module docs).
    pub(crate) fn recompute_high_watermark(&self) {
        let role = self.role();
        let Role::Leader(l) = &*role else {
            return;
        };
        let mut hw = self.local_durable.load(Ordering::Acquire);
        for f in l.isr.iter().filter(|&&f| f != l.me) {
            match l.followers.get(f) {
                Some(p) => hw = hw.min(p.log_end),
                // Not heard from in this epoch yet: nothing new is committed.
                None => return,
            }
        }
        drop(role);
        self.advance_high_watermark(hw);
    }

    /// Leads the partition at EPOCH with REPLICAS and ISR (ME among them). A new epoch
    /// starts with no follower progress; the same epoch keeps it (an ISR change).
    pub(crate) fn lead(&self, me: i32, epoch: i32, replicas: Vec<i32>, isr: Vec<i32>) {
        {
            // Lock order: the log, then the role (as appends take them).
            let mut log = self.log();
            log.set_leader_epoch(epoch);
            let durable = if self.write_rules().flush.per_append() {
                log.flushed_offset()
            } else {
                log.log_end_offset()
            };
            let log_end = log.log_end_offset();
            let mut role = self.role();
            let followers = match &*role {
                // The same epoch: an ISR change. A follower it took out (the controller
                // fenced it, or it lagged) must fetch again before it can be taken back,
                // so a dead broker's last progress does not re-add it.
                Role::Leader(l) if l.epoch == epoch => l
                    .followers
                    .iter()
                    .filter(|(r, _)| isr.contains(r) || !l.isr.contains(r))
                    .map(|(r, p)| (*r, *p))
                    .collect(),
                _ => {
                    tracing::info!(topic = %self.topic, partition = self.index, epoch, "leading");
                    crate::metrics::Metrics::add(&crate::metrics::METRICS.leader_changes, 1);
                    HashMap::new()
                }
            };
            let (epoch_start, since_ms) = match &*role {
                Role::Leader(l) if l.epoch == epoch => (l.epoch_start, l.since_ms),
                _ => (log_end, crate::now_ms()),
            };
            self.local_durable.store(durable, Ordering::Release);
            *role = Role::Leader(Leadership {
                me,
                epoch,
                replicas,
                isr,
                epoch_start,
                since_ms,
                followers,
            });
            self.replicated.store(true, Ordering::Release);
        }
        self.recompute_high_watermark();
    }

    /// Follows LEADER at EPOCH (a new epoch means truncating first).
    pub(crate) fn follow(&self, leader: i32, epoch: i32) {
        // Lock order: the log, then the role (as appends take them).
        let mut log = self.log();
        let mut role = self.role();
        if matches!(&*role, Role::Follower(f) if f.leader == leader && f.epoch == epoch) {
            return;
        }
        tracing::info!(topic = %self.topic, partition = self.index, leader, epoch, "following");
        log.set_leader_epoch(epoch);
        drop(log);
        *role = Role::Follower(Following {
            leader,
            epoch,
            truncated: false,
        });
        self.replicated.store(true, Ordering::Release);
    }

    /// The partition is placed elsewhere.
    pub(crate) fn set_absent(&self) {
        *self.role() = Role::Absent;
        self.replicated.store(true, Ordering::Release);
    }

    /// A follower's fetch (Fetch with a replica id): checks leadership and epoch, records
    /// the follower's log end (FETCH_OFFSET), moves the high watermark, and reads from
    /// there up to this log's end. Returns the records, the high watermark and the log
    /// start offset.
    pub fn replica_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        epoch: i32,
        max_bytes: usize,
    ) -> Result<(bytes::Bytes, i64, i64), ApiError> {
        let (log_start, log_end) = {
            let log = self.log();
            (log.log_start_offset(), log.log_end_offset())
        };
        {
            let mut role = self.role();
            let Role::Leader(l) = &mut *role else {
                return Err(self.not_leader());
            };
            check_epoch(epoch, l.epoch, &self.topic, self.index)?;
            if replica == l.me || !l.replicas.contains(&replica) {
                return Err(ApiError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "broker {replica} is not a replica of {}-{}",
                        self.topic, self.index
                    ),
                ));
            }
            // A follower's log ends within the leader's once it has truncated; any other
            // offset is refused before it can count as progress (and move the HW).
            if !(log_start..=log_end).contains(&fetch_offset) {
                return Err(ApiError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "replica fetch offset {fetch_offset} outside {log_start}..={log_end} of {}-{}",
                        self.topic, self.index
                    ),
                ));
            }
            let now = crate::now_ms();
            let progress = l.followers.entry(replica).or_insert(Progress {
                log_end: fetch_offset,
                caught_up_ms: l.since_ms,
                last_fetch_ms: now,
                leader_end_at_last_fetch: i64::MAX,
            });
            progress.log_end = fetch_offset;
            if fetch_offset >= log_end {
                progress.caught_up_ms = now;
            } else if fetch_offset >= progress.leader_end_at_last_fetch {
                progress.caught_up_ms = progress.caught_up_ms.max(progress.last_fetch_ms);
            }
            progress.last_fetch_ms = now;
            progress.leader_end_at_last_fetch = log_end;
        }
        self.recompute_high_watermark();
        let log = self.log();
        let read = log.read(fetch_offset, max_bytes, log_end)?;
        Ok((read.records, self.high_watermark(), read.log_start_offset))
    }

    /// The ISR this leader would have now (laggards out, caught-up followers in), if that
    /// differs from the current one: `(epoch, new isr)`.
    pub(crate) fn isr_change(&self, lag_max_ms: i64) -> Option<(i32, Vec<i32>)> {
        let role = self.role();
        let Role::Leader(l) = &*role else {
            return None;
        };
        let now = crate::now_ms();
        let hw = self.high_watermark();
        let mut isr: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                let caught_up_ms = l.followers.get(&r).map_or(l.since_ms, |p| p.caught_up_ms);
                r == l.me || now - caught_up_ms <= lag_max_ms
            })
            .collect();
        for (&r, p) in &l.followers {
            let caught_up = p.log_end >= hw && p.log_end >= l.epoch_start;
            if !isr.contains(&r) && caught_up && now - p.caught_up_ms <= lag_max_ms {
                isr.push(r);
            }
        }
        isr.sort_by_key(|r| l.replicas.iter().position(|x| x == r));
        let mut current = l.isr.clone();
        current.sort_by_key(|r| l.replicas.iter().position(|x| x == r));
        (isr != current).then_some((l.epoch, isr))
    }

    /// Resolves once the high watermark passes OFFSET, written under leader EPOCH (0 on a
    /// single node): true if this broker still leads at EPOCH then (the records are
    /// committed), false as soon as it does not (they may be truncated by the new leader).
    pub async fn committed_at(&self, offset: i64, epoch: i32) -> bool {
        let mut hw = self.high_watermark.subscribe();
        loop {
            if self.check_leader(epoch).is_err() {
                return false;
            }
            if *hw.borrow_and_update() > offset {
                return self.check_leader(epoch).is_ok();
            }
            // Leadership changes do not move the watermark: look again now and then.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), hw.changed()).await;
        }
    }

    /// A new leader's wait before its coordinators load: resolves true once the high
    /// watermark has reached the log end this replica had on the call (everything the
    /// previous leader may have answered is committed), false as soon as STILL_WANTED says
    /// the wait is moot (the leadership moved on).
    pub async fn committed_to_log_end(&self, still_wanted: impl Fn() -> bool) -> bool {
        let end = self.log_end_offset();
        while self.high_watermark() < end {
            if !still_wanted() {
                return false;
            }
            let wait = self.wait_for_high_watermark(end - 1);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), wait).await;
        }
        true
    }

    /// This replica's log end offset.
    pub fn log_end_offset(&self) -> i64 {
        self.log().log_end_offset()
    }

    /// A follower at EPOCH cuts its log where it diverges from its leader's: the leader's
    /// log ends at LEADER_END for LEADER_EPOCH (its answer to OffsetForLeaderEpoch for this
    /// log's newest epoch). An undefined answer (the leader knows no such epoch, or this
    /// log has none) cuts to the high watermark, which every in-sync replica has.
    pub(crate) fn truncate_for_leader(
        &self,
        epoch: i32,
        leader_epoch: i32,
        leader_end: i64,
    ) -> Result<(), ApiError> {
        {
            let mut log = self.log();
            let cut = if leader_epoch < 0 || leader_end < 0 {
                self.high_watermark()
            } else {
                let (_, own_end) = log.epoch_end_offset(leader_epoch);
                let own_end = if own_end < 0 {
                    log.log_end_offset()
                } else {
                    own_end
                };
                leader_end.min(own_end)
            };
            if cut < log.log_end_offset() {
                if cut < self.high_watermark() {
                    tracing::warn!(topic = %self.topic, partition = self.index, cut, hw = self.high_watermark(),
                        "truncating below the high watermark");
                }
                log.truncate_to(cut)?;
            }
        }
        let mut role = self.role();
        if let Role::Follower(f) = &mut *role {
            if f.epoch == epoch {
                f.truncated = true;
            }
        }
        Ok(())
    }

    /// A follower appends RECORDS fetched from its leader (fsynced before returning when
    /// the flush rule fsyncs every append) and takes the leader's high watermark, capped by
    /// its own log end.
    pub(crate) fn append_from_leader(
        self: &Arc<Self>,
        epoch: i32,
        records: &[u8],
        leader_hw: i64,
    ) -> Result<(), ApiError> {
        let per_append = self.write_rules().flush.per_append();
        let log_end = {
            let mut log = self.log();
            if !matches!(&*self.role(), Role::Follower(f) if f.epoch == epoch) {
                // The role changed since the fetch was sent: drop its answer.
                return Ok(());
            }
            if !records.is_empty() {
                log.append_replica(records)?;
                if per_append {
                    log.flush();
                }
            }
            log.log_end_offset()
        };
        if !records.is_empty() {
            if per_append {
                self.flushed(log_end);
            } else {
                self.after_append(log_end - 1);
            }
        }
        self.advance_high_watermark(leader_hw.min(log_end));
        Ok(())
    }

    /// OffsetForLeaderEpoch on this replica: `(epoch, end offset)`.
    pub fn epoch_end_offset(&self, requested: i32) -> (i32, i64) {
        self.log().epoch_end_offset(requested)
    }
}

/// FENCED_LEADER_EPOCH for an older epoch, UNKNOWN_LEADER_EPOCH for a newer one (the
/// client knows a leader this broker has not heard of yet).
fn check_epoch(requested: i32, current: i32, topic: &str, partition: i32) -> Result<(), ApiError> {
    if requested == NO_EPOCH || requested == current {
        return Ok(());
    }
    let code = if requested < current {
        ErrorCode::FencedLeaderEpoch
    } else {
        ErrorCode::UnknownLeaderEpoch
    };
    Err(ApiError::new(
        code,
        format!("{topic}-{partition} is at leader epoch {current}, the request names {requested}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;
    use crate::partitions::Broker;

    /// A cluster node's partition led here (node 1, epoch 3, replicas 1-3) holding one
    /// record, with a replica fetch from each follower as hostile or honest as asked.
    #[test]
    fn replica_fetches_are_checked_before_they_count_as_progress() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            voters: Some("1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3".into()),
            node_id: 1,
            ..BrokerConfig::default()
        })
        .unwrap();
        let topic = broker
            .create_topic("t", 1, Default::default(), false)
            .unwrap();
        let p = Arc::clone(&topic.partitions[0]);
        assert_eq!(
            p.role_now(),
            Role::Absent,
            "no role before the metadata gives one"
        );
        p.lead(1, 3, vec![1, 2, 3], vec![1, 2, 3]);
        let mut batch = exacta_wire::batch::build_batch(
            &[b"r".to_vec()],
            1_700_000_000_000,
            kafka_protocol::records::Compression::None,
        );
        let (info, epoch) = p.append_as_leader(&mut batch).unwrap();
        assert_eq!((info.base_offset, epoch), (0, 3));
        let code = |r: Result<_, ApiError>| r.map(|_| ()).unwrap_err().code;
        assert_eq!(
            code(p.replica_fetch(2, 2, 3, 1 << 20)),
            ErrorCode::OffsetOutOfRange
        );
        assert_eq!(
            code(p.replica_fetch(2, i64::MAX, 3, 1 << 20)),
            ErrorCode::OffsetOutOfRange
        );
        assert_eq!(
            code(p.replica_fetch(3, -1, 3, 1 << 20)),
            ErrorCode::OffsetOutOfRange
        );
        assert_eq!(
            code(p.replica_fetch(7, 1, 3, 1 << 20)),
            ErrorCode::NotLeaderOrFollower
        );
        assert_eq!(
            code(p.replica_fetch(1, 1, 3, 1 << 20)),
            ErrorCode::NotLeaderOrFollower
        );
        assert_eq!(
            code(p.replica_fetch(2, 1, 2, 1 << 20)),
            ErrorCode::FencedLeaderEpoch
        );
        assert_eq!(
            code(p.replica_fetch(2, 1, 4, 1 << 20)),
            ErrorCode::UnknownLeaderEpoch
        );
        // None of that moved the high watermark: no follower has confirmed anything.
        assert_eq!(p.high_watermark(), 0);
        // Follower 2 at offset 0 gets the record; both at 1 commit it once it is durable.
        let (records, hw, _) = p.replica_fetch(2, 0, 3, 1 << 20).unwrap();
        assert!(!records.is_empty());
        assert_eq!(hw, 0);
        p.replica_fetch(2, 1, 3, 1 << 20).unwrap();
        assert_eq!(p.high_watermark(), 0, "follower 3 has not confirmed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while p.high_watermark() < 1 && std::time::Instant::now() < deadline {
            p.replica_fetch(3, 1, 3, 1 << 20).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(p.high_watermark(), 1);
        assert_eq!(p.in_sync_replicas().unwrap(), 3);
    }
}
