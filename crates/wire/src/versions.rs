//! The API versions Exacta serves: the single source for ApiVersions and for the router.
//!
//! Every API is served up to the newest version the `kafka-protocol` request and response
//! codecs both know (Kafka 4.1's, except OffsetCommit/OffsetFetch v10 and InitProducerId v6,
//! whose request codecs stop at v9 and v5 in kafka-protocol 0.18), so clients infer Kafka 4.x. Advertise only what is
//! implemented: a client picks the highest common version, so an over-claim breaks it.

use kafka_protocol::messages::ApiKey;

/// One served API and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    /// The minimum told to clients in ApiVersions; below `min` only for Produce (see
    /// [`PRODUCE_ADVERTISED_MIN`]).
    pub advertised_min: i16,
}

const fn range(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange {
        key,
        min,
        max,
        advertised_min: min,
    }
}

/// Produce is advertised from v0 although only v3+ (magic 2 batches) is served, exactly
/// as Kafka 4.0 does (KAFKA-18659): librdkafka up to 2.11 disables gzip, snappy and lz4
/// unless the advertised Produce range includes v0. Clients pick the highest common
/// version, so none sends v0-v2; one that did would have its connection closed.
pub const PRODUCE_ADVERTISED_MIN: i16 = 0;

/// Transaction protocol version the broker finalizes in ApiVersions (KIP-890 feature
/// `transaction.version`): 2 means EndTxn v5 bumps the epoch and Produce v12 /
/// TxnOffsetCommit v5 add partitions implicitly.
pub const TRANSACTION_VERSION: i16 = 2;

/// Every API the broker answers, in ApiKey order.
pub const SUPPORTED: &[ApiRange] = &[
    ApiRange {
        advertised_min: PRODUCE_ADVERTISED_MIN,
        ..range(ApiKey::Produce, 3, 13)
    },
    range(ApiKey::Fetch, 4, 18),
    range(ApiKey::ListOffsets, 1, 10),
    range(ApiKey::Metadata, 0, 13),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 6),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 6),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::DescribeAcls, 1, 3),
    range(ApiKey::CreateAcls, 1, 3),
    range(ApiKey::DeleteAcls, 1, 3),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::InitProducerId, 0, 5),
    range(ApiKey::OffsetForLeaderEpoch, 2, 4),
    range(ApiKey::AddPartitionsToTxn, 0, 5),
    range(ApiKey::AddOffsetsToTxn, 0, 4),
    range(ApiKey::EndTxn, 0, 5),
    range(ApiKey::TxnOffsetCommit, 0, 5),
    range(ApiKey::ElectLeaders, 0, 2),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::AlterPartitionReassignments, 0, 1),
    range(ApiKey::ListPartitionReassignments, 0, 0),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DescribeCluster, 0, 2),
    range(ApiKey::DescribeProducers, 0, 0),
    range(ApiKey::DescribeTransactions, 0, 0),
    range(ApiKey::ListTransactions, 0, 2),
    range(ApiKey::WriteTxnMarkers, 1, 1),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ConsumerGroupDescribe, 0, 1),
    range(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// The served range for `key`, if the broker implements it.
pub fn supported(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|r| (r.min..=r.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_ranges_fit_inside_the_codecs() {
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(r.min <= r.max, "{:?}", r.key);
            assert!(
                codec.min <= r.min && r.max <= codec.max,
                "{:?} {}..{} outside codec {}..{}",
                r.key,
                r.min,
                r.max,
                codec.min,
                codec.max
            );
        }
    }

    #[test]
    fn api_versions_serves_v0_to_v4() {
        assert!(is_supported(ApiKey::ApiVersions, 0));
        assert!(is_supported(ApiKey::ApiVersions, 4));
        assert!(!is_supported(ApiKey::ApiVersions, 5));
        // AddPartitionsToTxn: the client form v0-v3 and the batched broker form v4-v5.
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 4));
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 5));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 6));
    }
}
