//! The new consumer group protocol (KIP-848) as a state machine: joins, epochs, revocation
//! before reassignment, fencing, static members, timeouts, member-epoch checks on commits,
//! mixed protocols, regular expressions, and replay of the records.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use exacta_coordinator::consumer::{Assignment, HeartbeatRequest, HeartbeatResponse, TopicCatalog};
use exacta_coordinator::group::*;
use exacta_types::ErrorCode;
use uuid::Uuid;

#[derive(Default)]
struct Catalog {
    topics: BTreeMap<String, (Uuid, i32)>,
    version: Cell<u64>,
}

impl Catalog {
    fn with(topics: &[(&str, i32)]) -> Self {
        let c = Catalog::default();
        let mut c = c;
        for (name, n) in topics {
            c.add(name, *n);
        }
        c
    }
    fn add(&mut self, name: &str, partitions: i32) {
        self.topics
            .insert(name.to_string(), (Uuid::new_v4(), partitions));
        self.version.set(self.version.get() + 1);
    }
    fn id(&self, name: &str) -> Uuid {
        self.topics[name].0
    }
}

impl TopicCatalog for Catalog {
    fn by_name(&self, name: &str) -> Option<(Uuid, i32)> {
        self.topics.get(name).copied()
    }
    fn name_of(&self, id: Uuid) -> Option<String> {
        self.topics
            .iter()
            .find(|(_, (i, _))| *i == id)
            .map(|(n, _)| n.clone())
    }
    fn names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }
    fn version(&self) -> u64 {
        self.version.get()
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        consumer_session_timeout_ms: 10_000,
        consumer_heartbeat_interval_ms: 1_000,
        ..GroupConfig::default()
    }
}

fn join(member: &str, topics: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 5_000,
        subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
        owned: Some(Assignment::new()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        version: 1,
        ..HeartbeatRequest::default()
    }
}

fn beat(member: &str, epoch: i32, owned: Option<&Assignment>) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: owned.cloned(),
        version: 1,
        ..HeartbeatRequest::default()
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// A member as a well-behaved client runs it: it owns what the coordinator last gave it.
struct Client {
    id: String,
    epoch: i32,
    owned: Assignment,
}

struct Harness {
    c: GroupCoordinator,
    log: Vec<Record>,
    topics: Catalog,
}

impl Harness {
    fn new(topics: &[(&str, i32)]) -> Self {
        Harness {
            c: GroupCoordinator::new(config()),
            log: Vec::new(),
            topics: Catalog::with(topics),
        }
    }
    fn send(&mut self, req: &HeartbeatRequest, now: i64) -> HeartbeatResponse {
        let (r, records) = self.c.consumer_heartbeat(req, &self.topics, now);
        self.log.extend(records);
        r
    }
    fn join(&mut self, id: &str, topics: &[&str], now: i64) -> Client {
        let r = self.send(&join(id, topics), now);
        assert_eq!(r.error, ErrorCode::None, "{:?}", r.message);
        Client {
            id: id.to_string(),
            epoch: r.member_epoch,
            owned: r.assignment.expect("a join gets its assignment"),
        }
    }
    /// One heartbeat of `client`, which then owns what it was given.
    fn beat(&mut self, client: &mut Client, now: i64) -> HeartbeatResponse {
        let r = self.send(&beat(&client.id, client.epoch, Some(&client.owned)), now);
        if r.error == ErrorCode::None {
            client.epoch = r.member_epoch;
            if let Some(a) = &r.assignment {
                client.owned = a.clone();
            }
        }
        r
    }
    fn describe(&self) -> exacta_coordinator::consumer::ConsumerGroupDescription {
        self.c
            .describe_consumer_group("g")
            .expect("a consumer group")
    }
}

/// No partition is owned by two clients.
fn assert_exclusive(clients: &[&Client]) {
    let mut seen = BTreeSet::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                assert!(seen.insert((*t, *p)), "{t}-{p} owned twice");
            }
        }
    }
}

#[test]
fn members_share_partitions_and_revoke_before_reassignment() {
    let mut h = Harness::new(&[("t", 6)]);
    let mut a = h.join("a", &["t"], 0);
    assert_eq!(a.epoch, 1);
    assert_eq!(count(&a.owned), 6);
    let mut b = h.join("b", &["t"], 10);
    assert_eq!(b.epoch, 2);
    assert_eq!(count(&b.owned), 0, "a still holds every partition");
    assert_exclusive(&[&a, &b]);
    // a learns it must revoke three; it keeps epoch 1 until it has.
    let r = h.beat(&mut a, 20);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(count(&a.owned), 3);
    assert_eq!(h.describe().state.name(), "Reconciling");
    // Acknowledged (owned no longer lists them): a moves to epoch 2.
    let r = h.beat(&mut a, 30);
    assert_eq!(r.member_epoch, 2);
    assert_exclusive(&[&a, &b]);
    h.beat(&mut b, 40);
    assert_eq!(count(&b.owned), 3);
    assert_exclusive(&[&a, &b]);
    assert_eq!(h.describe().state.name(), "Stable");
    // b leaves: a gets everything back at the next epoch.
    let r = h.send(&beat("b", b.epoch, None).tap(|r| r.member_epoch = -1), 50);
    assert_eq!((r.error, r.member_epoch), (ErrorCode::None, -1));
    h.beat(&mut a, 60);
    assert_eq!((a.epoch, count(&a.owned)), (3, 6));
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for HeartbeatRequest {}

#[test]
fn epochs_are_checked() {
    let mut h = Harness::new(&[("t", 2)]);
    let mut a = h.join("a", &["t"], 0);
    h.beat(&mut a, 1);
    let future = h.send(&beat("a", a.epoch + 1, Some(&a.owned)), 2);
    assert_eq!(future.error, ErrorCode::FencedMemberEpoch);
    assert!(future.message.unwrap().contains("greater member epoch"));
    let unknown = h.send(&beat("nobody", 1, None), 3);
    assert_eq!(unknown.error, ErrorCode::UnknownMemberId);
    // A lost answer: the previous epoch with a subset of the assignment is accepted.
    let mut b = h.join("b", &["t"], 4);
    h.beat(&mut a, 5);
    h.beat(&mut a, 6);
    h.beat(&mut b, 7);
    assert_eq!(a.epoch, 2);
    let retry = h.send(&beat("a", 1, Some(&a.owned)), 8);
    assert_eq!(retry.error, ErrorCode::None);
    let stale = h.send(&beat("b", 1, Some(&Assignment::new())), 9);
    assert_eq!(
        stale.error,
        ErrorCode::FencedMemberEpoch,
        "b never had epoch 1"
    );
    // The group is undisturbed.
    assert_eq!(h.beat(&mut a, 10).error, ErrorCode::None);
    assert_eq!(h.beat(&mut b, 11).error, ErrorCode::None);
}

#[test]
fn bad_requests_get_kafkas_errors() {
    let mut h = Harness::new(&[("t", 1)]);
    let r = h.send(
        &join("a", &["t"]).tap(|r| r.server_assignor = Some("sticky".into())),
        0,
    );
    assert_eq!(r.error, ErrorCode::UnsupportedAssignor);
    assert!(r.message.unwrap().contains("uniform, range"));
    let r = h.send(
        &join("a", &[]).tap(|r| {
            r.subscribed_topic_names = None;
            r.subscribed_topic_regex = Some("t(".into())
        }),
        0,
    );
    assert_eq!(r.error, ErrorCode::InvalidRegularExpression);
    // Hostile expressions: too long, too big once compiled, too deeply nested.
    for hostile in [
        "a*".repeat(200_000),
        "(((a{100}){100}){100})".to_string(),
        format!("{}a{}", "(".repeat(1000), ")".repeat(1000)),
    ] {
        let r = h.send(
            &join("a", &[]).tap(|r| {
                r.subscribed_topic_names = None;
                r.subscribed_topic_regex = Some(hostile)
            }),
            0,
        );
        assert_eq!(
            r.error,
            ErrorCode::InvalidRegularExpression,
            "{:?}",
            r.message
        );
    }
    let r = h.send(&join("a", &["t"]).tap(|r| r.rebalance_timeout_ms = -1), 0);
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    let r = h.send(&join("", &["t"]), 0);
    assert_eq!(r.error, ErrorCode::InvalidRequest, "v1 needs a member id");
    let r = h.send(&join("a", &["t"]).tap(|r| r.member_epoch = -3), 0);
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    let mut owned = Assignment::new();
    owned.insert(h.topics.id("t"), BTreeSet::from([0]));
    let r = h.send(&join("a", &["t"]).tap(|r| r.owned = Some(owned)), 0);
    assert_eq!(r.error, ErrorCode::InvalidRequest);
    // None of these created anything.
    assert!(h.c.describe_consumer_group("g").is_none());
    // v0: the coordinator names the member.
    let r = h.send(&join("", &["t"]).tap(|r| r.version = 0), 0);
    assert_eq!(r.error, ErrorCode::None);
    assert!(!r.member_id.unwrap().is_empty());
}

#[test]
fn sessions_and_rebalance_timeouts_fence_members() {
    let mut h = Harness::new(&[("t", 4)]);
    let mut a = h.join("a", &["t"], 0);
    let mut b = h.join("b", &["t"], 0);
    // a never acknowledges the revocation.
    h.send(&beat("a", a.epoch, Some(&a.owned)), 100);
    h.log.extend(h.c.consumer_tick(&h.topics, 4_000));
    assert_eq!(h.describe().members.len(), 2);
    h.beat(&mut b, 4_000);
    let records = h.c.consumer_tick(&h.topics, 5_200);
    assert!(!records.is_empty());
    assert_eq!(
        h.describe().members.len(),
        1,
        "a is fenced after its rebalance timeout"
    );
    assert_eq!(h.beat(&mut a, 5_300).error, ErrorCode::UnknownMemberId);
    h.beat(&mut b, 5_400);
    assert_eq!(count(&b.owned), 4);
    // b goes silent past its session.
    h.c.consumer_tick(&h.topics, 5_400 + 10_001);
    assert_eq!(h.describe().members.len(), 0);
    assert_eq!(h.describe().state.name(), "Empty");
}

#[test]
fn a_static_member_comes_back_to_its_partitions() {
    let mut h = Harness::new(&[("t", 4)]);
    let s = |id: &str| join(id, &["t"]).tap(|r| r.instance_id = Some("i1".into()));
    let r = h.send(&s("m1"), 0);
    let mut m1 = Client {
        id: "m1".into(),
        epoch: r.member_epoch,
        owned: r.assignment.unwrap(),
    };
    let mut other = h.join("o", &["t"], 1);
    h.beat(&mut m1, 2);
    h.beat(&mut m1, 3);
    h.beat(&mut other, 4);
    let mine = m1.owned.clone();
    assert_eq!(count(&mine), 2);
    let epoch_before = h.describe().group_epoch;
    // Another process with the same instance id cannot take over while m1 is in.
    assert_eq!(h.send(&s("m2"), 5).error, ErrorCode::UnreleasedInstanceId);
    // m1 leaves temporarily (-2): its partitions wait for it.
    let r = h.send(
        &beat("m1", m1.epoch, None).tap(|r| {
            r.member_epoch = -2;
            r.instance_id = Some("i1".into())
        }),
        6,
    );
    assert_eq!((r.error, r.member_epoch), (ErrorCode::None, -2));
    h.beat(&mut other, 7);
    assert_eq!(count(&other.owned), 2, "nothing moved");
    // It restarts as m2: same partitions, no rebalance.
    let r = h.send(&s("m2"), 8);
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.assignment.unwrap(), mine);
    assert_eq!(h.describe().group_epoch, epoch_before);
    // The old incarnation is fenced.
    let r = h.send(
        &beat("m1", m1.epoch, None).tap(|r| r.instance_id = Some("i1".into())),
        9,
    );
    assert_eq!(r.error, ErrorCode::FencedInstanceId);
}

#[test]
fn offset_commits_check_member_epochs() {
    let mut h = Harness::new(&[("t", 1)]);
    let mut a = h.join("a", &["t"], 0);
    h.beat(&mut a, 1);
    let p = [CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset: 7,
        leader_epoch: -1,
        metadata: None,
    }];
    let ok = h.c.commit_offsets("g", a.epoch, "a", None, &p, 9, 2);
    assert!(ok.is_ok());
    let stale = h.c.commit_offsets("g", a.epoch - 1, "a", None, &p, 9, 2);
    assert_eq!(stale.unwrap_err(), ErrorCode::StaleMemberEpoch);
    let old_api = h.c.commit_offsets("g", a.epoch, "a", None, &p, 8, 2);
    assert_eq!(old_api.unwrap_err(), ErrorCode::UnsupportedVersion);
    let zombie = h.c.commit_offsets("g", 1, "zombie", None, &p, 9, 2);
    assert_eq!(zombie.unwrap_err(), ErrorCode::UnknownMemberId);
    // Transactional: ILLEGAL_GENERATION for a stale epoch, UNKNOWN_MEMBER_ID for a fenced member.
    assert!(h
        .c
        .validate_txn_commit("g", a.epoch, "a", None, &p, 2)
        .is_ok());
    assert_eq!(
        h.c.validate_txn_commit("g", a.epoch + 1, "a", None, &p, 2)
            .unwrap_err(),
        ErrorCode::IllegalGeneration
    );
    assert!(
        h.c.validate_txn_commit("g", -1, "", None, &p, 2).is_ok(),
        "no member information"
    );
    h.c.consumer_tick(&h.topics, 100_000);
    assert_eq!(
        h.c.validate_txn_commit("g", a.epoch, "a", None, &p, 2)
            .unwrap_err(),
        ErrorCode::UnknownMemberId,
        "a zombie's late transactional commit"
    );
    // Offset fetches of members check the epoch too.
    assert_eq!(
        h.c.check_consumer_fetch("g", Some("a"), 1).unwrap_err(),
        ErrorCode::UnknownMemberId
    );
    assert!(h.c.check_consumer_fetch("g", None, -1).is_ok());
}

#[test]
fn classic_and_consumer_groups_do_not_mix() {
    let mut h = Harness::new(&[("t", 1)]);
    h.join("a", &["t"], 0);
    let mut out = h.c.join(
        JoinRequest {
            group_id: "g".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), bytes::Bytes::new())],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            ..JoinRequest::default()
        },
        1,
        1,
    );
    let Some((_, Reply::Join(j))) = out.replies.pop() else {
        panic!("answered at once")
    };
    assert_eq!(j.error, ErrorCode::InconsistentGroupProtocol);
    let listed = h.c.list_groups();
    assert_eq!(listed[0].group_type, "consumer");
    assert!(
        h.c.describe("g").is_none(),
        "DescribeGroups does not describe it"
    );
}

#[test]
fn regular_expressions_follow_new_topics() {
    let mut h = Harness::new(&[("orders-eu", 2), ("payments", 2)]);
    let r = h.send(
        &join("a", &[]).tap(|r| {
            r.subscribed_topic_names = None;
            r.subscribed_topic_regex = Some("orders-.*".into())
        }),
        0,
    );
    let mut a = Client {
        id: "a".into(),
        epoch: r.member_epoch,
        owned: r.assignment.unwrap(),
    };
    assert_eq!(count(&a.owned), 2);
    assert!(a.owned.contains_key(&h.topics.id("orders-eu")));
    h.topics.add("orders-us", 3);
    h.topics.add("xorders-us", 3);
    h.beat(&mut a, 1);
    assert_eq!(
        count(&a.owned),
        5,
        "the new matching topic joined the subscription"
    );
}

#[test]
fn replay_rebuilds_the_group() {
    let mut h = Harness::new(&[("t", 5)]);
    let mut a = h.join("a", &["t"], 0);
    let mut b = h.join("b", &["t"], 1);
    for t in 2..6 {
        h.beat(&mut a, t);
        h.beat(&mut b, t);
    }
    let mut again = GroupCoordinator::new(config());
    for r in &h.log {
        let (k, v) = r.to_key_value();
        again.apply(&Record::from_key_value(&k, v.as_deref()).unwrap(), 10);
    }
    let before = h.describe();
    let after = again.describe_consumer_group("g").unwrap();
    assert_eq!(before.group_epoch, after.group_epoch);
    assert_eq!(before.assignment_epoch, after.assignment_epoch);
    let values = |d: &exacta_coordinator::consumer::ConsumerGroupDescription| {
        d.members
            .iter()
            .map(|m| (m.value.clone(), m.target.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&before), values(&after));
    // The members go on heartbeating against the rebuilt state.
    h.c = again;
    assert_eq!(h.beat(&mut a, 11).error, ErrorCode::None);
    assert_eq!(h.beat(&mut b, 11).error, ErrorCode::None);
}

/// Random joins, heartbeats, leaves and crashes: no partition is ever owned twice, and once
/// things settle every partition is owned.
#[test]
fn random_membership_never_owns_a_partition_twice() {
    let mut h = Harness::new(&[("t1", 7), ("t2", 5)]);
    let mut clients: Vec<Client> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut next_id = 0;
    let mut now = 0;
    for _ in 0..3_000 {
        now += 50;
        match rand(20) {
            0 if clients.len() < 6 => {
                next_id += 1;
                clients.push(h.join(&format!("m{next_id}"), &["t1", "t2"], now));
            }
            1 if !clients.is_empty() => {
                let c = clients.remove(rand(clients.len()));
                h.send(
                    &beat(&c.id, c.epoch, None).tap(|r| r.member_epoch = -1),
                    now,
                );
            }
            _ if !clients.is_empty() => {
                let i = rand(clients.len());
                let r = h.beat(&mut clients[i], now);
                assert_eq!(r.error, ErrorCode::None, "{:?}", r.message);
            }
            _ => {}
        }
        let owned: Vec<&Client> = clients.iter().collect();
        assert_exclusive(&owned);
        h.c.consumer_tick(&h.topics, now);
    }
    for _ in 0..5 {
        for c in clients.iter_mut() {
            now += 1;
            h.beat(c, now);
        }
    }
    if !clients.is_empty() {
        let total: usize = clients.iter().map(|c| count(&c.owned)).sum();
        assert_eq!(total, 12);
        let loads: Vec<usize> = clients.iter().map(|c| count(&c.owned)).collect();
        assert!(
            loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
            "{loads:?}"
        );
        assert_eq!(h.describe().state.name(), "Stable");
    }
}
