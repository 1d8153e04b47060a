//! Three quorum members on loopback ports, as separate Rafts talking TCP: a leader is
//! elected, metadata commands reach every member, the leader's loss elects another within a
//! second or two and writes go on, and the stopped member restarts from its disk and catches up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use exacta_cluster::{Command, Node, NodeId, Response};
use tokio::net::TcpListener;

async fn listener(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("a loopback port")
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn leader_of(nodes: &[&Node]) -> Option<NodeId> {
    let mut seen = None;
    for n in nodes {
        let l = n.leader().await?;
        if seen.is_some_and(|s| s != l) || !nodes.iter().any(|m| m.id == l) {
            return None;
        }
        seen = Some(l);
    }
    seen
}

fn all(nodes: &[Option<Node>]) -> Vec<&Node> {
    nodes.iter().flatten().collect()
}

async fn register(node: &Node, id: NodeId) -> Response {
    node.raft
        .client_write(Command::RegisterBroker {
            id,
            address: format!("127.0.0.{id}:9092"),
            incarnation: 0,
        })
        .await
        .expect("a committed write")
        .data
}

async fn start(id: NodeId, root: &Path, port: u16, voters: &BTreeMap<NodeId, String>) -> Node {
    start_on(id, root, listener(port).await, voters).await
}

async fn start_on(
    id: NodeId,
    root: &Path,
    listener: TcpListener,
    voters: &BTreeMap<NodeId, String>,
) -> Node {
    Node::start(
        id,
        &root.join(id.to_string()),
        listener,
        voters,
        exacta_cluster::node::DEFAULT_SESSION_TIMEOUT,
    )
    .await
    .expect("the node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_fail_over_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let mut ports = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        let l = listener(0).await;
        ports.push(l.local_addr().unwrap().port());
        listeners.push(l);
    }
    let voters: BTreeMap<NodeId, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", ports[id as usize - 1])))
        .collect();
    let mut nodes = Vec::new();
    for (id, l) in (1..=3u64).zip(listeners) {
        nodes.push(Some(start_on(id, root.path(), l, &voters).await));
    }

    wait_until("a leader", Duration::from_secs(10), || async {
        leader_of(&all(&nodes)).await.is_some()
    })
    .await;
    let leader = leader_of(&all(&nodes)).await.unwrap();
    let at = |id: NodeId| (id - 1) as usize;
    assert_eq!(
        register(nodes[at(leader)].as_ref().unwrap(), 1).await,
        Response::Done
    );
    wait_until(
        "broker 1 on every member",
        Duration::from_secs(5),
        || async {
            for n in all(&nodes) {
                if !n.state.metadata().await.brokers.contains_key(&1) {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // The leader goes away: the other two elect one of themselves and keep writing.
    let lost = Instant::now();
    nodes[at(leader)].take().unwrap().stop().await;
    wait_until("a new leader", Duration::from_secs(10), || async {
        leader_of(&all(&nodes)).await.is_some_and(|l| l != leader)
    })
    .await;
    let failover = lost.elapsed();
    let second = leader_of(&all(&nodes)).await.unwrap();
    assert_eq!(
        register(nodes[at(second)].as_ref().unwrap(), 2).await,
        Response::Done
    );
    println!("leader {leader} stopped; {second} leads after {failover:?}");
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // The old leader restarts from its own disk and learns what it missed.
    nodes[at(leader)] = Some(start(leader, root.path(), ports[at(leader)], &voters).await);
    wait_until(
        "the restarted member to catch up",
        Duration::from_secs(10),
        || async {
            let m = nodes[at(leader)].as_ref().unwrap().state.metadata().await;
            m.brokers.contains_key(&1) && m.brokers.contains_key(&2)
        },
    )
    .await;
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_on_the_cluster_port_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let root = tempfile::tempdir().unwrap();
    let l = listener(0).await;
    let addr = l.local_addr().unwrap();
    let voters = BTreeMap::from([(1, addr.to_string())]);
    let node = Node::start(
        1,
        &root.path().join("1"),
        l,
        &voters,
        exacta_cluster::node::DEFAULT_SESSION_TIMEOUT,
    )
    .await
    .unwrap();
    wait_until(
        "the lone member to lead",
        Duration::from_secs(10),
        || async { node.leader().await == Some(1) },
    )
    .await;
    let oversized = u32::MAX.to_be_bytes().to_vec();
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"{oops");
    for frame in [oversized, garbage] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&frame).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the node answers a hostile frame by closing")
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed without a reply");
    }
    assert_eq!(register(&node, 7).await, Response::Done);
    node.stop().await;
}
