//! Request frames: a 4-byte big-endian size, a request header, a request body.
//!
//! [`decode_request`] turns one frame (size prefix removed) into a typed [`Request`] or a
//! [`DecodeError`] that tells the connection what to do: answer (ApiVersions at an unknown
//! version gets a v0 answer listing our ranges) or close the connection with a warning.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::versions;

/// Declares [`Request`] with one variant per served API, named as Kafka's `ApiKey`, and
/// the decoder that picks the variant.
macro_rules! requests {
    ($($api:ident($ty:ty)),* $(,)?) => {
        /// A decoded request of an API the broker serves.
        #[derive(Debug)]
        pub enum Request {
            $($api($ty)),*
        }

        fn decode_body(api_key: ApiKey, body: &mut Bytes, version: i16) -> Option<anyhow::Result<Request>> {
            match api_key {
                $(ApiKey::$api => Some(<$ty>::decode(body, version).map(Request::$api)),)*
                _ => None,
            }
        }

        /// The versions the request codec of `api_key` knows (it may know fewer than
        /// `ApiKey::valid_versions` says: kafka-protocol 0.18's OffsetCommit stops at v9).
        pub fn request_codec_versions(api_key: ApiKey) -> Option<(i16, i16)> {
            use kafka_protocol::protocol::Message;
            match api_key {
                $(ApiKey::$api => Some((<$ty>::VERSIONS.min, <$ty>::VERSIONS.max)),)*
                _ => None,
            }
        }

        /// Encodes a default (empty) request body of `api_key` at `version`; for tests and
        /// fuzzing seeds.
        pub fn encode_default_body(api_key: ApiKey, version: i16, buf: &mut BytesMut) -> anyhow::Result<()> {
            match api_key {
                $(ApiKey::$api => <$ty>::default().encode(buf, version),)*
                other => anyhow::bail!("{other:?} is not served"),
            }
        }
    };
}

requests! {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    SyncGroup(SyncGroupRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    ApiVersions(ApiVersionsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    DeleteRecords(DeleteRecordsRequest),
    InitProducerId(InitProducerIdRequest),
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    EndTxn(EndTxnRequest),
    TxnOffsetCommit(TxnOffsetCommitRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DescribeConfigs(DescribeConfigsRequest),
    AlterConfigs(AlterConfigsRequest),
    DescribeLogDirs(DescribeLogDirsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DeleteGroups(DeleteGroupsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    OffsetDelete(OffsetDeleteRequest),
    DescribeCluster(DescribeClusterRequest),
    DescribeProducers(DescribeProducersRequest),
    DescribeTransactions(DescribeTransactionsRequest),
    ListTransactions(ListTransactionsRequest),
    WriteTxnMarkers(WriteTxnMarkersRequest),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest),
    DescribeTopicPartitions(DescribeTopicPartitionsRequest),
    ElectLeaders(ElectLeadersRequest),
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    ListPartitionReassignments(ListPartitionReassignmentsRequest),
    DescribeAcls(DescribeAclsRequest),
    CreateAcls(CreateAclsRequest),
    DeleteAcls(DeleteAclsRequest),
}

/// Why a frame could not be turned into a [`Request`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{version} is not served")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

/// Decodes a frame whose size prefix has been removed.
pub fn decode_request(mut frame: Bytes) -> Result<(RequestHeader, Request), DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    if !versions::is_supported(api_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let malformed = |e: anyhow::Error| DecodeError::Malformed {
        api_key,
        version,
        correlation_id,
        reason: e.to_string(),
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(malformed)?;
    let request = match decode_body(api_key, &mut frame, version) {
        Some(decoded) => decoded.map_err(malformed)?,
        None => {
            return Err(DecodeError::UnsupportedVersion {
                api_key,
                version,
                correlation_id,
            })
        }
    };
    Ok((header, request))
}

/// Encodes a whole response frame: size prefix, response header, body.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // ApiVersions responses always use header v0, whatever the version (KIP-511).
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// A request frame without its size prefix, as [`decode_request`] takes it (tests and
/// tools that build requests by hand).
pub fn encode_request<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> anyhow::Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_static_str(
            "exacta",
        )));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, key.request_header_version(version))?;
    body.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        encode_request(key, version, 77, body).unwrap()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let frame = frame_of(ApiKey::Metadata, 12, &MetadataRequest::default());
        let (header, request) = decode_request(frame).expect("decodes");
        assert_eq!(header.correlation_id, 77);
        assert!(matches!(request, Request::Metadata(_)));
    }

    #[test]
    fn unknown_key_and_version_are_reported_with_correlation_id() {
        let mut frame = BytesMut::new();
        frame.put_i16(999);
        frame.put_i16(0);
        frame.put_i32(5);
        match decode_request(frame.freeze()) {
            Err(DecodeError::UnknownApiKey {
                api_key: 999,
                correlation_id: 5,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let frame = frame_of(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut raw = frame.to_vec();
        raw[2..4].copy_from_slice(&9i16.to_be_bytes());
        match decode_request(Bytes::from(raw)) {
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                version: 9,
                correlation_id: 77,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_body_is_malformed_not_a_panic() {
        let frame = frame_of(ApiKey::Metadata, 12, &MetadataRequest::default());
        for cut in 8..frame.len() {
            let _ = decode_request(frame.slice(..cut));
        }
        assert!(decode_request(frame.slice(..3)).is_err());
    }

    #[test]
    fn served_versions_are_known_to_the_request_codecs() {
        for r in crate::versions::SUPPORTED {
            let (min, max) = request_codec_versions(r.key).expect("every served API decodes");
            assert!(
                min <= r.min && r.max <= max,
                "{:?} served {}..={} but its request codec knows {min}..={max}",
                r.key,
                r.min,
                r.max
            );
        }
    }
}
