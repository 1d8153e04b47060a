//! DescribeConfigs (key 32), AlterConfigs (key 33: the older form kafka-python, kafkajs
//! and older tools send, which replaces a resource's whole set of overrides) and
//! IncrementalAlterConfigs (key 44).
//!
//! Topics take every config Kafka 4.x knows ([`TOPIC_CONFIGS`]); alterations are
//! validated, persisted and applied to the live logs at once. APPEND and SUBTRACT work on
//! list configs, starting from the value in force (the broker default when the topic has
//! no override), as on Kafka. The BROKER resource shows every broker setting under its
//! Kafka name with its source; the dynamic ones change here, in the cluster-wide layer
//! (resource name `""`) or this node's (its id); see [`crate::broker_settings`].

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
use crate::broker_settings::{
    self, DynamicConfigs, Scope, SOURCE_DEFAULT, SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_TOPIC,
};
use crate::partitions::{ApiError, Broker};
use crate::topic_config::catalogue::{self, ConfigType};
use crate::topic_config::{TopicConfigs, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// The layer a BROKER resource name means: `""` the cluster-wide default, the node id
/// this node (`describing` allows the empty name's wording of Kafka's describe).
fn broker_scope(broker: &Broker, name: &str, describing: bool) -> Result<Scope, ApiError> {
    let node = broker.config.node_id;
    if name.is_empty() {
        Ok(Scope::ClusterDefault)
    } else if name.trim().parse::<i32>() == Ok(node) {
        Ok(Scope::Node)
    } else {
        let expected = if describing {
            format!("{node} or empty string")
        } else {
            node.to_string()
        };
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("Unexpected broker id, expected {expected}, but received {name}"),
        ))
    }
}

/// The broker resource: for this node every setting with its source; for the cluster
/// default only the dynamic defaults that are set (as Kafka).
fn describe_broker(
    broker: &Broker,
    scope: Scope,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    let dynamic = broker.dynamic_configs();
    let live = broker.live();
    match scope {
        Scope::ClusterDefault => dynamic
            .cluster_default
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, value)| {
                let kind = broker_settings::find(name).map_or(ConfigType::String, |s| s.kind);
                entry(
                    name,
                    Some(value.clone()),
                    SOURCE_DYNAMIC_DEFAULT_BROKER,
                    false,
                    kind as i8,
                )
            })
            .collect(),
        Scope::Node => broker_settings::SETTINGS
            .iter()
            .filter(|s| wanted(s.name))
            .map(|s| {
                entry(
                    s.name,
                    s.value(&live),
                    dynamic.source(s.name, &broker.config),
                    !s.is_dynamic(),
                    s.kind as i8,
                )
            })
            .collect(),
    }
}

/// Where a topic config's default comes from: the broker setting it follows (its
/// synonym), if that was set dynamically or in the config file.
fn default_source(dynamic: &DynamicConfigs, topic_config: &str, broker: &Broker) -> i8 {
    broker_settings::SETTINGS
        .iter()
        .find(|s| s.topic == Some(topic_config))
        .map_or(SOURCE_DEFAULT, |s| dynamic.source(s.name, &broker.config))
}

fn entry(
    name: &str,
    value: Option<String>,
    source: i8,
    read_only: bool,
    kind: i8,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(value.map(StrBytes::from_string))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_config_type(kind)
}

pub fn describe(broker: &Broker, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        // A set, so a request naming many keys costs one lookup per config, not a scan.
        let keys: Option<std::collections::HashSet<&str>> = resource
            .configuration_keys
            .as_ref()
            .map(|keys| keys.iter().map(|k| k.as_str()).collect());
        let wanted = |name: &str| keys.as_ref().is_none_or(|keys| keys.contains(name));
        match resource.resource_type {
            RESOURCE_TOPIC => match broker.topic(&resource.resource_name) {
                Some(topic) => {
                    let dynamic = broker.dynamic_configs();
                    let live = broker.live();
                    let resolved = TopicConfigs {
                        overrides: &topic.configs,
                        broker: &live,
                    };
                    result.configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|d| wanted(d.name))
                        .filter_map(|d| {
                            let (value, is_default) = resolved.value(d.name)?;
                            let source = if !is_default {
                                SOURCE_TOPIC
                            } else {
                                default_source(&dynamic, d.name, broker)
                            };
                            Some(entry(d.name, Some(value), source, false, d.kind as i8))
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
            RESOURCE_BROKER => match broker_scope(broker, &resource.resource_name, true) {
                Ok(scope) => result.configs = describe_broker(broker, scope, &wanted),
                Err(e) => {
                    result.error_code = e.code.code();
                    result.error_message = message(e.message);
                }
            },
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
                let live = broker.live();
                let kind = |n: &str| catalogue::find(n).map(|d| d.kind);
                let current = |n: &str| crate::topic_config::default_value(&live, n);
                for op in ops {
                    apply(configs, op, &kind, &current, "topic")?;
                }
                Ok(())
            },
            validate_only,
        ),
        RESOURCE_BROKER => broker_scope(broker, name, false).and_then(|scope| {
            broker.alter_dynamic_configs(
                scope,
                |configs| {
                    if replace {
                        configs.clear();
                    }
                    let live = broker.live();
                    let kind = |n: &str| broker_settings::find(n).map(|s| s.kind);
                    let current = |n: &str| broker_settings::find(n).and_then(|s| s.value(&live));
                    for op in ops {
                        apply(configs, op, &kind, &current, "broker")?;
                    }
                    Ok(())
                },
                validate_only,
            )
        }),
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

/// Applies one operation to a resource's overrides: SET, DELETE, and APPEND / SUBTRACT on
/// a list, starting from the value in force (`current`) when there is no override.
fn apply(
    configs: &mut BTreeMap<String, String>,
    op: &AlterableConfig,
    kind: &dyn Fn(&str) -> Option<ConfigType>,
    current: &dyn Fn(&str) -> Option<String>,
    what: &str,
) -> Result<(), ApiError> {
    let name = op.name.to_string();
    let value = op.value.as_ref().map(|v| v.to_string());
    let invalid = |m: String| Err(ApiError::new(ErrorCode::InvalidConfig, m));
    let Some(kind) = kind(&name) else {
        return invalid(format!("Unknown {what} config name: {name}"));
    };
    let is_list = kind == ConfigType::List;
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
                .or_else(|| current(&name))
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
