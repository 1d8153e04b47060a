//! DescribeLogDirs (key 35): the one log directory (the data directory), its partitions'
//! sizes on disk and, from v4, the file system's total and usable bytes.

use std::collections::{HashMap, HashSet};

use exacta_types::ErrorCode;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::partitions::Broker;

pub fn handle(broker: &Broker, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let dir = &broker.config.data_dir;
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_error_code(ErrorCode::None.code())
        .with_log_dir(StrBytes::from_string(absolute.display().to_string()));
    let (total, usable) = disk_space(&absolute).unwrap_or((-1, -1));
    result.total_bytes = total;
    result.usable_bytes = usable;
    // Hash lookups: a client's lists (up to a frame's size) cost one pass, not a scan per
    // partition.
    let wanted: Option<HashMap<String, HashSet<i32>>> = request.topics.map(|topics| {
        let mut wanted: HashMap<String, HashSet<i32>> = HashMap::new();
        for t in topics {
            wanted
                .entry(t.topic.to_string())
                .or_default()
                .extend(t.partitions);
        }
        wanted
    });
    for topic in broker.topics() {
        let partitions: Option<&HashSet<i32>> = match &wanted {
            None => None,
            Some(map) => match map.get(&topic.name) {
                Some(p) => Some(p),
                None => continue,
            },
        };
        let mut out = DescribeLogDirsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.name.clone())));
        for p in &topic.partitions {
            if partitions.is_some_and(|want| !want.contains(&p.index)) {
                continue;
            }
            let (_, bytes) = p.log_size();
            out.partitions.push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(bytes as i64)
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
        if !out.partitions.is_empty() {
            result.topics.push(out);
        }
    }
    DescribeLogDirsResponse::default()
        .with_error_code(ErrorCode::None.code())
        .with_results(vec![result])
}

/// Total and available bytes of the file system holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    let s = rustix::fs::statvfs(dir).ok()?;
    let block = s.f_frsize as i64;
    Some((s.f_blocks as i64 * block, s.f_bavail as i64 * block))
}
