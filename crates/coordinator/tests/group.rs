//! The group coordinator state machine: join/sync/heartbeat transitions, generation
//! fencing, static membership, session expiry, offsets, and replay equivalence.

use bytes::Bytes;
use exacta_coordinator::group::*;
use exacta_types::ErrorCode;

fn config() -> GroupConfig {
    GroupConfig {
        min_session_timeout_ms: 100,
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

/// Drives a coordinator and remembers replies; records are "made durable" at once.
struct Harness {
    c: GroupCoordinator,
    log: Vec<Record>,
    replies: std::collections::HashMap<ReplyId, Reply>,
    next: ReplyId,
}

impl Harness {
    fn new() -> Self {
        Self {
            c: GroupCoordinator::new(config()),
            log: Vec::new(),
            replies: Default::default(),
            next: 0,
        }
    }
    fn absorb(&mut self, out: Output, now: i64) {
        for r in out.records {
            if matches!(r, Record::Offset { .. }) {
                self.c.apply(&r, now);
            }
            self.log.push(r);
        }
        for (id, reply) in out.replies {
            assert!(
                self.replies.insert(id, reply).is_none(),
                "reply {id} sent twice"
            );
        }
    }
    fn join(&mut self, req: JoinRequest, now: i64) -> ReplyId {
        self.next += 1;
        let out = self.c.join(req, self.next, now);
        self.absorb(out, now);
        self.next
    }
    fn sync(
        &mut self,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> ReplyId {
        self.next += 1;
        let req = SyncRequest {
            group_id: "g".into(),
            generation,
            member_id: member.into(),
            assignments,
            ..Default::default()
        };
        let out = self.c.sync(req, self.next, now);
        self.absorb(out, now);
        self.next
    }
    fn tick(&mut self, now: i64) {
        let out = self.c.tick(now);
        self.absorb(out, now);
    }
    fn join_reply(&self, id: ReplyId) -> Option<&JoinResponse> {
        match self.replies.get(&id) {
            Some(Reply::Join(r)) => Some(r),
            None => None,
            other => panic!("{other:?}"),
        }
    }
    fn sync_reply(&self, id: ReplyId) -> Option<&SyncResponse> {
        match self.replies.get(&id) {
            Some(Reply::Sync(r)) => Some(r),
            None => None,
            other => panic!("{other:?}"),
        }
    }
    /// A generation-less commit of `offset` for partition 0 of "t", made durable.
    fn simple_commit(&mut self, group: &str, offset: i64, now: i64) {
        let out = self
            .c
            .commit_offsets(
                group,
                -1,
                "",
                None,
                &[CommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                }],
                9,
                now,
            )
            .unwrap();
        let records = out.into_iter().filter_map(|(_, r)| r).collect();
        self.absorb(
            Output {
                records,
                replies: vec![],
            },
            now,
        );
    }

    /// A new dynamic member: MEMBER_ID_REQUIRED, then the real join.
    fn new_member(&mut self, now: i64) -> (String, ReplyId) {
        let first = self.join(join_req("", None), now);
        let r = self.join_reply(first).unwrap();
        assert_eq!(r.error, ErrorCode::MemberIdRequired);
        let id = r.member_id.clone();
        (id.clone(), self.join(join_req(&id, None), now))
    }
}

#[test]
fn two_members_join_sync_and_become_stable() {
    let mut h = Harness::new();
    let (a, ja) = h.new_member(0);
    // With no initial delay, a alone completes generation 1.
    let r = h.join_reply(ja).unwrap().clone();
    assert_eq!(
        (r.error, r.generation, r.leader.as_str()),
        (ErrorCode::None, 1, a.as_str())
    );
    assert_eq!(r.members.len(), 1, "the leader sees the members");
    // b joins: a must rejoin (heartbeat says so), b waits.
    let (b, jb) = h.new_member(10);
    assert!(h.join_reply(jb).is_none());
    assert_eq!(
        h.c.heartbeat("g", 1, &a, None, 20),
        ErrorCode::RebalanceInProgress
    );
    let ja2 = h.join(join_req(&a, None), 30);
    let (ra, rb) = (
        h.join_reply(ja2).unwrap().clone(),
        h.join_reply(jb).unwrap().clone(),
    );
    assert_eq!((ra.generation, rb.generation), (2, 2));
    assert_eq!(ra.leader, a);
    assert_eq!((ra.members.len(), rb.members.len()), (2, 0));
    // Follower syncs first and waits; the leader's assignment releases both.
    let sb = h.sync(&b, 2, vec![], 40);
    assert!(h.sync_reply(sb).is_none());
    let sa = h.sync(
        &a,
        2,
        vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ],
        50,
    );
    assert_eq!(
        h.sync_reply(sa).unwrap().assignment,
        Bytes::from_static(b"A")
    );
    assert_eq!(
        h.sync_reply(sb).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(h.c.describe("g").unwrap().state, GroupState::Stable);
    assert_eq!(h.c.heartbeat("g", 2, &b, None, 60), ErrorCode::None);
    assert!(
        matches!(h.log.last(), Some(Record::Group { value: Some(v), .. }) if v.generation == 2 && v.members.len() == 2)
    );
}

#[test]
fn stale_generation_and_unknown_member_are_fenced() {
    let mut h = Harness::new();
    let (a, _) = h.new_member(0);
    h.sync(&a, 1, vec![(a.clone(), Bytes::from_static(b"A"))], 1);
    assert_eq!(
        h.c.heartbeat("g", 0, &a, None, 2),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        h.c.heartbeat("g", 1, "nobody", None, 2),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        h.c.heartbeat("other", 1, &a, None, 2),
        ErrorCode::UnknownMemberId
    );
    let commit = |h: &mut Harness, generation, member: &str| {
        h.c.commit_offsets(
            "g",
            generation,
            member,
            None,
            &[CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            }],
            9,
            3,
        )
    };
    assert_eq!(
        commit(&mut h, 0, &a).unwrap_err(),
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        commit(&mut h, 1, "nobody").unwrap_err(),
        ErrorCode::UnknownMemberId
    );
    // A simple (generation -1) commit is refused while the group has members.
    assert_eq!(
        commit(&mut h, -1, "").unwrap_err(),
        ErrorCode::UnknownMemberId
    );
    assert!(commit(&mut h, 1, &a).is_ok());
    // During CompletingRebalance commits wait for the new generation.
    let (_b, _) = h.new_member(4);
    h.join(join_req(&a, None), 5);
    assert_eq!(
        commit(&mut h, 2, &a).unwrap_err(),
        ErrorCode::RebalanceInProgress
    );
    let sync = h.sync(&a, 1, vec![], 6);
    assert_eq!(
        h.sync_reply(sync).unwrap().error,
        ErrorCode::IllegalGeneration
    );
}

#[test]
fn expired_session_removes_member_and_rebalances() {
    let mut h = Harness::new();
    let (a, _) = h.new_member(0);
    let (b, jb) = h.new_member(1);
    let ja = h.join(join_req(&a, None), 2);
    let gen = h.join_reply(ja).unwrap().generation;
    h.sync(&a, gen, vec![], 3);
    h.sync(&b, gen, vec![], 3);
    assert!(h.join_reply(jb).is_some());
    // a keeps heartbeating, b goes silent past its 10 s session.
    for t in (1000..=12_000).step_by(1000) {
        assert_ne!(
            h.c.heartbeat("g", gen, &a, None, t),
            ErrorCode::UnknownMemberId
        );
        h.tick(t);
    }
    assert_eq!(
        h.c.heartbeat("g", gen, &b, None, 12_001),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        h.c.heartbeat("g", gen, &a, None, 12_001),
        ErrorCode::RebalanceInProgress
    );
    let ja = h.join(join_req(&a, None), 12_002);
    let r = h.join_reply(ja).unwrap();
    assert_eq!((r.generation, r.members.len()), (gen + 1, 1));
}

#[test]
fn leaving_last_member_empties_the_group() {
    let mut h = Harness::new();
    let (a, _) = h.new_member(0);
    h.sync(&a, 1, vec![], 1);
    let (errors, out) = h.c.leave("g", &[(a.clone(), None)], 2);
    h.absorb(out, 2);
    assert_eq!(errors, vec![ErrorCode::None]);
    assert_eq!(h.c.describe("g").unwrap().state, GroupState::Empty);
    assert_eq!(
        h.c.leave("g", &[(a, None)], 3).0,
        vec![ErrorCode::UnknownMemberId]
    );
    // Empty now: simple commits are allowed again.
    assert!(h.c.commit_offsets("g", -1, "", None, &[], 9, 4).is_ok());
}

#[test]
fn static_member_restart_keeps_generation_and_fences_the_old_instance() {
    let mut h = Harness::new();
    let ja = h.join(join_req("", Some("pod-1")), 0);
    let a = h.join_reply(ja).unwrap().member_id.clone();
    assert_eq!(
        h.join_reply(ja).unwrap().error,
        ErrorCode::None,
        "static members need no second join"
    );
    let jb = h.join(join_req("", Some("pod-2")), 1);
    let b = h.join_reply(jb).map(|r| r.member_id.clone());
    assert!(b.is_none());
    let ja = h.join(join_req(&a, Some("pod-1")), 2);
    let b = h.join_reply(jb).unwrap().member_id.clone();
    let gen = h.join_reply(ja).unwrap().generation;
    h.sync(
        &a,
        gen,
        vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ],
        3,
    );
    h.sync(&b, gen, vec![], 3);
    // pod-2 restarts: new member id, same generation, no rebalance, same assignment.
    let jb2 = h.join(join_req("", Some("pod-2")), 4);
    let r = h.join_reply(jb2).unwrap().clone();
    assert_eq!((r.error, r.generation), (ErrorCode::None, gen));
    assert_ne!(r.member_id, b);
    assert_eq!(h.c.describe("g").unwrap().state, GroupState::Stable);
    let s = h.sync(&r.member_id, gen, vec![], 5);
    assert_eq!(
        h.sync_reply(s).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    // The old incarnation is fenced everywhere.
    assert_eq!(
        h.c.heartbeat("g", gen, &b, Some("pod-2"), 6),
        ErrorCode::FencedInstanceId
    );
    let j = h.join(join_req(&b, Some("pod-2")), 6);
    assert_eq!(h.join_reply(j).unwrap().error, ErrorCode::FencedInstanceId);
    assert_eq!(
        h.c.heartbeat("g", gen, &a, Some("pod-1"), 7),
        ErrorCode::None
    );
}

#[test]
fn bad_joins_get_kafka_errors() {
    let mut h = Harness::new();
    let mut short = join_req("", None);
    short.session_timeout_ms = 1;
    let j = h.join(short, 0);
    assert_eq!(
        h.join_reply(j).unwrap().error,
        ErrorCode::InvalidSessionTimeout
    );
    let j = h.join(join_req("ghost", None), 0);
    assert_eq!(h.join_reply(j).unwrap().error, ErrorCode::UnknownMemberId);
    let (_a, _) = h.new_member(0);
    let mut other = join_req("", None);
    other.protocols = vec![("roundrobin-only".into(), Bytes::new())];
    other.require_known_member_id = false;
    let j = h.join(other, 1);
    assert_eq!(
        h.join_reply(j).unwrap().error,
        ErrorCode::InconsistentGroupProtocol
    );
}

#[test]
fn replay_rebuilds_the_durable_state() {
    let mut h = Harness::new();
    let (a, _) = h.new_member(0);
    h.sync(&a, 1, vec![(a.clone(), Bytes::from_static(b"A"))], 1);
    let commit = |h: &mut Harness, p: i32, o: i64, t: i64| {
        let rs =
            h.c.commit_offsets(
                "g",
                1,
                &a,
                None,
                &[CommitPartition {
                    topic: "t".into(),
                    partition: p,
                    offset: o,
                    leader_epoch: 3,
                    metadata: Some("m".into()),
                }],
                9,
                t,
            )
            .unwrap();
        let out = Output {
            records: rs.into_iter().filter_map(|(_, r)| r).collect(),
            replies: vec![],
        };
        h.absorb(out, t);
    };
    commit(&mut h, 0, 10, 2);
    commit(&mut h, 1, 20, 3);
    commit(&mut h, 0, 15, 4);
    let (b, _) = h.new_member(5);
    let ja = h.join(join_req(&a, None), 6);
    let gen = h.join_reply(ja).unwrap().generation;
    h.sync(
        &a,
        gen,
        vec![
            (a.clone(), Bytes::from_static(b"A2")),
            (b.clone(), Bytes::from_static(b"B2")),
        ],
        7,
    );
    // Another group that is created, used and deleted.
    h.simple_commit("gone", 1, 8);
    let records = h.c.delete_group("gone").unwrap();
    h.absorb(
        Output {
            records,
            replies: vec![],
        },
        9,
    );

    let mut replayed = GroupCoordinator::new(config());
    for r in &h.log {
        let (key, value) = r.to_key_value();
        let decoded = Record::from_key_value(&key, value.as_deref()).unwrap();
        assert_eq!(&decoded, r);
        replayed.apply(&decoded, 100);
    }
    assert_eq!(replayed.durable_view(), h.c.durable_view());
    assert_eq!(
        replayed
            .fetch_offsets("g", Some(&[("t".to_string(), vec![0, 1, 2])]))
            .iter()
            .map(|(_, _, v)| v.as_ref().map(|v| v.offset))
            .collect::<Vec<_>>(),
        vec![Some(15), Some(20), None]
    );
    // Loaded members are live: they must heartbeat, and do not need to rejoin.
    assert_eq!(replayed.heartbeat("g", gen, &b, None, 101), ErrorCode::None);
}

#[test]
fn offsets_of_long_empty_groups_expire() {
    let mut h = Harness::new();
    h.simple_commit("g", 1, 0);
    let retention = config().offsets_retention_ms;
    h.tick(retention - 1);
    assert_eq!(h.c.fetch_offsets("g", None).len(), 1);
    h.tick(retention + 1);
    assert!(h.c.fetch_offsets("g", None).is_empty());
    assert!(matches!(
        h.log.last(),
        Some(Record::Group { value: None, .. })
    ));
}

#[test]
fn group_partition_matches_kafka_hashing() {
    // Java: "my-group".hashCode() = -1906497762; Kafka: (h & 0x7fffffff) % 50 = 36.
    assert_eq!(partition_for("my-group", 50), 36);
    assert!((0..8).contains(&partition_for("", 8)));
}

#[test]
fn consumer_subscription_topics_are_parsed() {
    // version 0, ["orders", "payments"], userdata
    let mut meta = vec![0, 0, 0, 0, 0, 2];
    for t in ["orders", "payments"] {
        meta.extend_from_slice(&(t.len() as i16).to_be_bytes());
        meta.extend_from_slice(t.as_bytes());
    }
    meta.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(subscription_topics(&meta), vec!["orders", "payments"]);
    assert!(subscription_topics(&[1, 2]).is_empty());
}

#[test]
fn group_size_is_limited() {
    let mut h = Harness::new();
    h.c = GroupCoordinator::new(GroupConfig {
        max_size: 1,
        ..config()
    });
    let (_a, ja) = h.new_member(0);
    assert_eq!(h.join_reply(ja).unwrap().error, ErrorCode::None);
    let first = h.join(join_req("", None), 1);
    let id = h.join_reply(first).unwrap().member_id.clone();
    let second = h.join(join_req(&id, None), 1);
    assert_eq!(
        h.join_reply(second).unwrap().error,
        ErrorCode::GroupMaxSizeReached
    );
}
