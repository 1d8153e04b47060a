//! DescribeConfigs (key 32), AlterConfigs (key 33: the older form kafka-python, kafkajs
//! and older tools send, which replaces a resource's whole set of overrides) and
//! IncrementalAlterConfigs (key 44).
//!
//! Topics support the configs in [`TOPIC_CONFIG_NAMES`] (retention, segments, compaction,
//! timestamps, sizes); alterations are validated, persisted and applied to the live logs
//! at once. APPEND and SUBTRACT work on the list `cleanup.policy`, starting from the value
//! in force (the broker default when the topic has no override), as on Kafka. Broker
//! configs are static (the TOML file) and described read-only.

use std::collections::BTreeMap;

use exacta_types::ErrorCode;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    alter_configs_response, AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::message;
use crate::partitions::{ApiError, Broker};
use crate::topic_config::{TopicConfigs, TOPIC_CONFIG_NAMES};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn config_type(name: &str) -> i8 {
    match name {
        "cleanup.policy" | "log.cleanup.policy" => 7, // LIST
        "min.cleanable.dirty.ratio" | "log.cleaner.min.cleanable.ratio" => 6, // DOUBLE
        "max.message.bytes" | "segment.bytes" => 3,   // INT
        "auto.create.topics.enable" | "log.cleaner.enable" => 1, // BOOLEAN
        "log.flush.policy" | "cluster.id" => 2,       // STRING
        _ => 5,                                       // LONG
    }
}

fn entry(name: &str, value: String, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_config_type(config_type(name))
}

pub fn describe(broker: &Broker, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
        };
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.topic(&resource.resource_name) {
                Some(topic) => {
                    let resolved = TopicConfigs {
                        overrides: &topic.configs,
                        broker: &broker.config,
                    };
                    result.configs = TOPIC_CONFIG_NAMES
                        .iter()
                        .filter(|n| wanted(n))
                        .filter_map(|name| {
                            let (value, is_default) = resolved.value(name)?;
                            let source = if is_default {
                                SOURCE_DEFAULT
                            } else {
                                SOURCE_TOPIC
                            };
                            Some(entry(name, value, source, false))
                        })
                        .collect();
                }
                None => {
                    result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                    result.error_message = message(format!(
                        "unknown topic '{}'",
                        resource.resource_name.as_str()
                    ));
                }
            },
            RESOURCE_BROKER => {
                let c = &broker.config;
                let flush = format!("{:?}", c.flush_policy).to_lowercase();
                let all = [
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                    ),
                    ("broker.id", c.node_id.to_string()),
                    ("log.cleaner.enable", c.cleaner_enable.to_string()),
                    (
                        "log.cleaner.delete.retention.ms",
                        c.delete_retention_ms.to_string(),
                    ),
                    (
                        "log.cleaner.min.cleanable.ratio",
                        c.min_cleanable_dirty_ratio.to_string(),
                    ),
                    ("log.cleanup.policy", c.cleanup_policy.clone()),
                    ("log.flush.policy", flush),
                    ("log.retention.bytes", c.retention_bytes.to_string()),
                    ("log.retention.ms", c.retention_ms.to_string()),
                    ("log.segment.bytes", c.segment_bytes.to_string()),
                    ("message.max.bytes", c.message_max_bytes.to_string()),
                    ("num.partitions", c.num_partitions.to_string()),
                    ("socket.request.max.bytes", c.frame_bytes_max.to_string()),
                ];
                result.configs = all
                    .into_iter()
                    .filter(|(n, _)| wanted(n))
                    .map(|(n, v)| entry(n, v, SOURCE_STATIC_BROKER, true))
                    .collect();
            }
            other => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = message(format!("unsupported resource type {other}"));
            }
        }
        response.results.push(result);
    }
    response
}

pub fn alter(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let (code, text) = alter_resource(
            broker,
            resource.resource_type,
            &resource.resource_name,
            &resource.configs,
            false,
            request.validate_only,
        );
        response.responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(text),
        );
    }
    response
}

/// AlterConfigs: each resource's overrides become exactly the ones given (a null value
/// drops that one); every other config returns to its default, as on Kafka.
pub fn alter_all(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let ops: Vec<AlterableConfig> = resource
            .configs
            .iter()
            .map(|c| {
                AlterableConfig::default()
                    .with_name(c.name.clone())
                    .with_config_operation(if c.value.is_some() { 0 } else { 1 })
                    .with_value(c.value.clone())
            })
            .collect();
        let (code, text) = alter_resource(
            broker,
            resource.resource_type,
            &resource.resource_name,
            &ops,
            true,
            request.validate_only,
        );
        response.responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
                .with_error_code(code)
                .with_error_message(text),
        );
    }
    response
}

/// Applies `ops` to one resource's overrides (after clearing them, with `replace`); the
/// answer's error code and message.
fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    ops: &[AlterableConfig],
    replace: bool,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    let outcome = match resource_type {
        RESOURCE_TOPIC => broker.alter_topic_configs(
            name,
            |configs| {
                if replace {
                    configs.clear();
                    // The internal topics' pinned overrides are not the client's to drop
                    // by leaving them out; changing them is refused by the policy check.
                    if exacta_types::is_internal_topic(name) {
                        configs.extend(crate::internal::pinned_configs());
                    }
                }
                for op in ops {
                    apply(configs, op, &broker.config)?;
                }
                Ok(())
            },
            validate_only,
        ),
        RESOURCE_BROKER => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "broker configs are static: edit the config file and restart",
        )),
        other => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    };
    match outcome {
        Ok(()) => (ErrorCode::None.code(), None),
        Err(e) => (e.code.code(), message(e.message)),
    }
}

fn apply(
    configs: &mut BTreeMap<String, String>,
    op: &AlterableConfig,
    defaults: &crate::config::BrokerConfig,
) -> Result<(), ApiError> {
    let name = op.name.to_string();
    let value = op.value.as_ref().map(|v| v.to_string());
    let invalid = |m: String| Err(ApiError::new(ErrorCode::InvalidConfig, m));
    if !TOPIC_CONFIG_NAMES.contains(&name.as_str()) {
        return invalid(format!(
            "unknown or unsupported topic config '{name}'; supported: {}",
            TOPIC_CONFIG_NAMES.join(", ")
        ));
    }
    let is_list = config_type(&name) == 7;
    match (op.config_operation, value) {
        (0, Some(v)) => {
            configs.insert(name, v);
        }
        (1, _) => {
            configs.remove(&name);
        }
        (2 | 3, Some(v)) if is_list => {
            let current = configs
                .get(&name)
                .cloned()
                .or_else(|| crate::topic_config::default_value(defaults, &name))
                .unwrap_or_default();
            let mut items: Vec<String> = crate::topic_config::list_items(&current)
                .map(str::to_string)
                .collect();
            if op.config_operation == 2 {
                if !items.contains(&v) {
                    items.push(v);
                }
            } else {
                items.retain(|i| *i != v);
            }
            configs.insert(name, items.join(","));
        }
        (2 | 3, _) => {
            return invalid(format!(
                "APPEND/SUBTRACT need a list config; '{name}' is not one"
            ))
        }
        (0, None) => return invalid(format!("SET of '{name}' needs a value")),
        (other, _) => return invalid(format!("unknown config operation {other}")),
    }
    Ok(())
}
