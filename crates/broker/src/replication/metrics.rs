//! A cluster node's replication and quorum metrics, appended to the Prometheus exposition:
//! per partition this broker leads, each follower's lag (the leader's log end minus the
//! follower's as of its last fetch) and whether the partition is under-replicated; the
//! leaderships this broker took; and the metadata quorum as this node sees it (Raft term,
//! whether it leads, last log and applied index, commit latency of its proposals).

use std::fmt::Write;

use super::Role;
use crate::cluster::ClusterRuntime;
use crate::metrics::{counter, escape, gauge_header, METRICS};
use crate::partitions::Broker;

pub fn render(out: &mut String, broker: &Broker, cluster: &ClusterRuntime) {
    let mut lags = Vec::new();
    let mut under = Vec::new();
    let mut led = 0u64;
    for topic in broker.topics() {
        for p in &topic.partitions {
            let Role::Leader(l) = p.role_now() else {
                continue;
            };
            led += 1;
            let end = p.log_end_offset();
            for &r in l.replicas.iter().filter(|&&r| r != l.me) {
                // A follower not heard from in this epoch is as far behind as the log.
                let theirs = l
                    .followers
                    .get(&r)
                    .map_or(l.epoch_start.min(end), |f| f.log_end);
                lags.push((topic.name.clone(), p.index, r, (end - theirs).max(0)));
            }
            under.push((
                topic.name.clone(),
                p.index,
                u8::from(l.isr.len() < l.replicas.len()),
            ));
        }
    }
    gauge_header(
        out,
        "exacta_partition_replica_lag",
        "Records a follower is behind this leader (log end minus its log end at its last fetch).",
    );
    for (topic, index, replica, lag) in &lags {
        let _ = writeln!(
            out,
            "exacta_partition_replica_lag{{topic=\"{}\",partition=\"{index}\",replica=\"{replica}\"}} {lag}",
            escape(topic)
        );
    }
    gauge_header(
        out,
        "exacta_partition_under_replicated",
        "1 when a partition this broker leads has fewer in-sync replicas than replicas.",
    );
    for (topic, index, flag) in &under {
        let _ = writeln!(
            out,
            "exacta_partition_under_replicated{{topic=\"{}\",partition=\"{index}\"}} {flag}",
            escape(topic)
        );
    }
    gauge_header(
        out,
        "exacta_under_replicated_partitions",
        "Partitions this broker leads that are under-replicated.",
    );
    let count = under.iter().filter(|(_, _, f)| *f == 1).count();
    let _ = writeln!(out, "exacta_under_replicated_partitions {count}");
    gauge_header(
        out,
        "exacta_partitions_led",
        "Partitions this broker leads.",
    );
    let _ = writeln!(out, "exacta_partitions_led {led}");
    counter(
        out,
        "exacta_leader_changes_total",
        "Partition leaderships this broker took (each under a new leader epoch).",
        METRICS
            .leader_changes
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let quorum = cluster.node.quorum_status();
    for (name, help, value) in [
        (
            "exacta_raft_term",
            "The metadata quorum's current Raft term.",
            quorum.term,
        ),
        (
            "exacta_raft_leader",
            "1 while this node leads the metadata quorum (the active controller).",
            u64::from(quorum.leader),
        ),
        (
            "exacta_raft_last_log_index",
            "Index of the last metadata log entry on this node.",
            quorum.last_log_index,
        ),
        (
            "exacta_raft_applied_index",
            "Index of the last metadata log entry this node applied.",
            quorum.applied_index,
        ),
    ] {
        gauge_header(out, name, help);
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(out, "# HELP exacta_raft_commit_duration_seconds Metadata changes proposed by this node until the quorum committed them.\n# TYPE exacta_raft_commit_duration_seconds histogram");
    METRICS
        .quorum_commit_seconds
        .render(out, "exacta_raft_commit_duration_seconds", "");
}
