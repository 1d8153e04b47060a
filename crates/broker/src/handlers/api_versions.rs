//! ApiVersions (key 18): the versions of every API the broker serves.
//!
//! A request at a version we do not serve is answered by the server with
//! [`unsupported_version`]: a v0 response carrying UNSUPPORTED_VERSION and our ranges, so
//! the client retries at a version both sides know (Kafka's behaviour, KIP-511).

use exacta_types::ErrorCode;
use exacta_wire::frame::encode_response;
use exacta_wire::versions::SUPPORTED;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

/// The features the broker finalizes, at their newest level, as a Kafka 4.x cluster does:
/// `group.version` 1 is the KIP-848 consumer group protocol, `transaction.version` 2 is
/// KIP-890 (clients that know transaction protocol v2 use it when it is finalized).
pub const FEATURES: &[(&str, i16)] = &[
    ("group.version", 1),
    (
        "transaction.version",
        exacta_wire::versions::TRANSACTION_VERSION,
    ),
];

pub fn handle(_version: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.advertised_min)
                .with_max_version(r.max)
        })
        .collect();
    response.supported_features = FEATURES
        .iter()
        .map(|&(name, level)| {
            SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version(0)
                .with_max_version(level)
        })
        .collect();
    response.finalized_features_epoch = 1;
    response.finalized_features = FEATURES
        .iter()
        .map(|&(name, level)| {
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version_level(level)
                .with_max_version_level(level)
        })
        .collect();
    response
}

/// The v0 answer to an ApiVersions request at a version we do not serve.
pub fn unsupported_version(correlation_id: i32) -> Result<bytes::Bytes, String> {
    let mut response = handle(0);
    response.error_code = ErrorCode::UnsupportedVersion.code();
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &response)
}
