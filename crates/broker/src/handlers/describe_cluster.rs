//! DescribeCluster (key 60): this one broker, which is also the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::partitions::Broker;

pub fn handle(broker: &Broker, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = crate::advertised_host_port(broker.config.advertised()).unwrap_or_default();
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = request.endpoint_type.max(1);
    response.cluster_id = StrBytes::from_string(broker.config.cluster_id.clone());
    response.controller_id = BrokerId(broker.config.node_id);
    response.cluster_authorized_operations = i32::MIN;
    response.brokers = vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.config.node_id))
        .with_host(StrBytes::from_string(host))
        .with_port(port)];
    response
}
