//! DescribeCluster (key 60): on a single node, this broker, which is also the controller;
//! in a cluster, every registered broker and the quorum's active controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::Node;

pub fn handle(node: &Node, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let broker = &node.broker;
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = request.endpoint_type.max(1);
    response.cluster_id = StrBytes::from_string(broker.config.cluster_id.clone());
    response.cluster_authorized_operations = i32::MIN;
    let (brokers, controller) = match &node.cluster {
        Some(cluster) => (
            cluster.brokers(),
            cluster.node.current_leader().map_or(-1, |l| l as i32),
        ),
        None => (
            vec![(
                broker.config.node_id,
                broker.config.advertised().to_string(),
            )],
            broker.config.node_id,
        ),
    };
    response.controller_id = BrokerId(controller);
    response.brokers = brokers
        .into_iter()
        .map(|(id, address)| {
            let (host, port) = crate::advertised_host_port(&address).unwrap_or_default();
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    response
}
