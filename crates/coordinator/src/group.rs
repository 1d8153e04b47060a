//! The classic consumer-group coordinator as a state machine (Kafka's `GroupCoordinator`).
//!
//! Requests come in with the current time and an opaque [`ReplyId`]; the state machine
//! answers with an [`Output`]: records to append to `__consumer_offsets` and replies to
//! send. The runtime around it appends the records durably *before* delivering the
//! replies, and applies offset records with [`GroupCoordinator::apply`] only once they are
//! durable, so a committed offset is never visible before it is safe. JoinGroup and
//! SyncGroup may be answered later (when the rebalance completes), from another call or
//! from [`GroupCoordinator::tick`], which also expires sessions and offsets.
//!
//! Group states follow Kafka: Empty → PreparingRebalance → CompletingRebalance → Stable,
//! back to PreparingRebalance whenever membership or subscriptions change. A group record
//! is written when a generation's assignment is complete (or the group becomes empty), an
//! offset record per committed partition; replaying the records rebuilds the durable part
//! of the state ([`GroupCoordinator::apply`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use exacta_types::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::consumer::{ConsumerGroup, ConsumerGroupValue, ConsumerMemberValue};

/// Per group: its last group record (if any) and its committed offsets.
pub type DurableView = BTreeMap<String, (Option<GroupValue>, BTreeMap<(String, i32), OffsetValue>)>;

/// Identifies a request whose reply may come later.
pub type ReplyId = u64;

/// Limits and timeouts of the group coordinator.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Wait this long for more members before the first generation of an empty group.
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
    pub offset_metadata_max_bytes: usize,
    /// Offsets of an empty group are deleted this long after it became empty.
    pub offsets_retention_ms: i64,
    /// Groups this coordinator holds at most; a request that would create another is
    /// answered COORDINATOR_NOT_AVAILABLE (retriable: empty groups expire).
    pub groups_max: usize,
    /// An empty group without offsets (nothing durable to keep) is forgotten this long
    /// after it became empty.
    pub empty_group_retention_ms: i64,
    /// New-protocol (KIP-848) members are fenced this long after their last heartbeat.
    pub consumer_session_timeout_ms: i32,
    /// How often new-protocol members are told to heartbeat.
    pub consumer_heartbeat_interval_ms: i32,
    /// Server-side assignors members may ask for; the first is the default.
    pub consumer_assignors: Vec<String>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: 10_000,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            groups_max: 100_000,
            empty_group_retention_ms: 60_000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_assignors: crate::consumer::assignor::ASSIGNORS
                .iter()
                .map(|a| a.to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// Kafka's name, as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

// ---- records ------------------------------------------------------------------------------

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// A member as stored in a group record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Every protocol the member supports, in its order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// A group's durable description, written when a generation is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub protocol_type: Option<String>,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// One record of `__consumer_offsets`; a `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    /// A new-protocol group (its epochs and target assignment); same key as `Group`.
    #[serde(rename = "consumer_group")]
    ConsumerGroup {
        group: String,
        value: ConsumerGroupValue,
    },
    /// One member of a new-protocol group.
    #[serde(rename = "consumer_member")]
    ConsumerMember {
        group: String,
        member: String,
        value: Option<ConsumerMemberValue>,
    },
}

impl Record {
    pub fn group_id(&self) -> &str {
        match self {
            Record::Group { group, .. }
            | Record::Offset { group, .. }
            | Record::ConsumerGroup { group, .. }
            | Record::ConsumerMember { group, .. } => group,
        }
    }

    /// The record's key (what compaction would keep one of) and value (None: tombstone).
    pub fn to_key_value(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = match self {
            Record::Group { group, .. } | Record::ConsumerGroup { group, .. } => {
                serde_json::json!({"type": "group", "group": group})
            }
            Record::ConsumerMember { group, member, .. } => {
                serde_json::json!({"type": "member", "group": group, "member": member})
            }
            Record::Offset {
                group,
                topic,
                partition,
                ..
            } => {
                serde_json::json!({"type": "offset", "group": group, "topic": topic, "partition": partition})
            }
        };
        let value = match self {
            Record::Group { value: None, .. }
            | Record::Offset { value: None, .. }
            | Record::ConsumerMember { value: None, .. } => None,
            _ => Some(serde_json::to_vec(self).unwrap_or_default()),
        };
        (key.to_string().into_bytes(), value)
    }

    /// Parses a stored record; tombstones are rebuilt from the key.
    pub fn from_key_value(key: &[u8], value: Option<&[u8]>) -> Result<Record, String> {
        if let Some(value) = value {
            return serde_json::from_slice(value).map_err(|e| e.to_string());
        }
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Key {
            Group {
                group: String,
            },
            Offset {
                group: String,
                topic: String,
                partition: i32,
            },
            Member {
                group: String,
                member: String,
            },
        }
        Ok(
            match serde_json::from_slice::<Key>(key).map_err(|e| e.to_string())? {
                Key::Group { group } => Record::Group { group, value: None },
                Key::Offset {
                    group,
                    topic,
                    partition,
                } => Record::Offset {
                    group,
                    topic,
                    partition,
                    value: None,
                },
                Key::Member { group, member } => Record::ConsumerMember {
                    group,
                    member,
                    value: None,
                },
            },
        )
    }
}

/// The `__consumer_offsets` partition of a group: Kafka's `abs(groupId.hashCode) % n`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

// ---- requests and replies -----------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a new dynamic member first gets its id with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader rejoined a stable group statically: keep the current assignment.
    pub skip_assignment: bool,
}

impl JoinResponse {
    fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResponse {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ErrorCode) -> Self {
        SyncResponse {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
}

/// Records to append durably, then replies to deliver.
#[derive(Debug, Default)]
pub struct Output {
    pub records: Vec<Record>,
    pub replies: Vec<(ReplyId, Reply)>,
}

/// One partition's part of an offset commit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: &'static str,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

// ---- state --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Member {
    value: MemberValue,
    last_heartbeat: i64,
    join_reply: Option<ReplyId>,
    sync_reply: Option<ReplyId>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.value
            .protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| Bytes::from(m.clone()))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → member id
    static_members: HashMap<String, String>,
    /// KIP-394: member ids handed out, awaiting the member's second JoinGroup, and when
    /// they lapse.
    pending_members: HashMap<String, i64>,
    /// Members that have not sent SyncGroup for the current generation.
    awaiting_sync: BTreeSet<String>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    pub(crate) state_timestamp: i64,
    /// A group of the new protocol (KIP-848); its classic members are then empty.
    pub(crate) consumer: Option<Box<ConsumerGroup>>,
    /// Join phase ends (PreparingRebalance) or leader must sync (CompletingRebalance).
    deadline: i64,
    /// The join phase may not end before this (initial rebalance delay).
    not_before: i64,
}

impl Group {
    fn new(id: &str, now: i64) -> Self {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            awaiting_sync: BTreeSet::new(),
            offsets: BTreeMap::new(),
            state_timestamp: now,
            consumer: None,
            deadline: 0,
            not_before: 0,
        }
    }

    /// Whether members of the classic protocol are in the group.
    pub(crate) fn has_classic_members(&self) -> bool {
        !self.members.is_empty()
    }

    fn value(&self) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self.members.values().map(|m| m.value.clone()).collect(),
        }
    }

    fn record(&self) -> Record {
        Record::Group {
            group: self.id.clone(),
            value: Some(self.value()),
        }
    }

    /// Protocols every member (and `candidate`, if given) supports, in the first
    /// member's order.
    fn common_protocols(&self, candidate: Option<&[(String, Bytes)]>) -> Vec<String> {
        let mut lists: Vec<Vec<&str>> = self
            .members
            .values()
            .map(|m| m.value.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .collect();
        if let Some(c) = candidate {
            lists.push(c.iter().map(|(n, _)| n.as_str()).collect());
        }
        let Some(first) = lists.first() else {
            return Vec::new();
        };
        first
            .iter()
            .filter(|p| lists.iter().all(|l| l.contains(p)))
            .map(|p| p.to_string())
            .collect()
    }

    /// Each member votes for its most preferred common protocol; the most votes win.
    fn select_protocol(&self) -> Option<String> {
        let common = self.common_protocols(None);
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.value.protocols.iter().find(|(n, _)| common.contains(n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        common
            .iter()
            .max_by_key(|p| {
                (
                    votes.get(p.as_str()).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|c| c == *p)),
                )
            })
            .cloned()
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.value.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn join_response(&self, member_id: &str) -> JoinResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResponse {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.value.member_id.clone(),
                            m.value.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn sync_response(&self, member_id: &str) -> SyncResponse {
        SyncResponse {
            error: ErrorCode::None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| Bytes::from(m.value.assignment.clone()))
                .unwrap_or_default(),
        }
    }

    fn remove_member(&mut self, member_id: &str, out: &mut Output, reason: ErrorCode) {
        if let Some(m) = self.members.remove(member_id) {
            if let Some(instance) = &m.value.instance_id {
                if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(r) = m.join_reply {
                out.replies
                    .push((r, Reply::Join(JoinResponse::error(reason, member_id))));
            }
            if let Some(r) = m.sync_reply {
                out.replies
                    .push((r, Reply::Sync(SyncResponse::error(reason))));
            }
            self.awaiting_sync.remove(member_id);
            if self.leader.as_deref() == Some(member_id) {
                self.leader = None;
            }
        }
    }

    /// Starts (or keeps) a join phase.
    fn prepare_rebalance(
        &mut self,
        reason: &str,
        now: i64,
        config: &GroupConfig,
        out: &mut Output,
    ) {
        if self.state == GroupState::CompletingRebalance {
            // Members waiting for an assignment of the abandoned generation must rejoin.
            for m in self.members.values_mut() {
                if let Some(r) = m.sync_reply.take() {
                    out.replies.push((
                        r,
                        Reply::Sync(SyncResponse::error(ErrorCode::RebalanceInProgress)),
                    ));
                }
            }
        }
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        tracing::info!(group = %self.id, generation = self.generation, reason, "preparing rebalance");
        if self.state == GroupState::Empty {
            self.not_before = now + config.initial_rebalance_delay_ms;
            self.deadline = self.not_before.max(now + self.max_rebalance_timeout());
        } else {
            self.not_before = now;
            self.deadline = now + self.max_rebalance_timeout();
        }
        self.state = GroupState::PreparingRebalance;
        self.state_timestamp = now;
        self.awaiting_sync.clear();
    }

    /// Ends the join phase if every member has rejoined (after the initial delay) or the
    /// deadline passed: members that did not rejoin are removed, the generation advances.
    fn maybe_complete_join(&mut self, now: i64, out: &mut Output) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_reply.is_some());
        if !(now >= self.deadline || (all_joined && now >= self.not_before)) {
            return;
        }
        let stragglers: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_reply.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in stragglers {
            self.remove_member(&id, out, ErrorCode::UnknownMemberId);
        }
        self.pending_members.clear();
        self.generation += 1;
        self.state_timestamp = now;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            out.records.push(self.record());
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.deadline = now + self.max_rebalance_timeout();
        self.awaiting_sync = self.members.keys().cloned().collect();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_heartbeat = now;
                if let Some(r) = m.join_reply.take() {
                    out.replies.push((r, Reply::Join(response)));
                }
            }
        }
    }
}

/// All groups of the broker.
#[derive(Debug, Default)]
pub struct GroupCoordinator {
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) config: GroupConfig,
}

fn new_member_id(prefix: &str) -> String {
    let prefix = if prefix.is_empty() { "member" } else { prefix };
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            groups: BTreeMap::new(),
            config,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Groups held now.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Changes how many groups this coordinator may hold (a runtime that splits groups
    /// over several coordinators shares one budget among them this way).
    pub fn set_groups_max(&mut self, groups_max: usize) {
        self.config.groups_max = groups_max;
    }

    /// The group, created (empty) if new and the coordinator holds fewer than
    /// `groups_max` groups.
    pub(crate) fn group_or_create(
        &mut self,
        group_id: &str,
        now: i64,
    ) -> Result<&mut Group, ErrorCode> {
        if !self.groups.contains_key(group_id) && self.groups.len() >= self.config.groups_max {
            tracing::warn!(
                group = group_id,
                groups_max = self.config.groups_max,
                "refusing a new group: the coordinator holds groups_max groups"
            );
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        Ok(self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now)))
    }

    /// JoinGroup. The reply may come in this output or a later one.
    pub fn join(&mut self, req: JoinRequest, reply: ReplyId, now: i64) -> Output {
        let mut out = Output::default();
        let fail = |out: &mut Output, e: ErrorCode| {
            out.replies
                .push((reply, Reply::Join(JoinResponse::error(e, &req.member_id))));
        };
        if req.group_id.is_empty() {
            fail(&mut out, ErrorCode::InvalidGroupId);
            return out;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            fail(&mut out, ErrorCode::InvalidSessionTimeout);
            return out;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            fail(&mut out, ErrorCode::InconsistentGroupProtocol);
            return out;
        }
        let config = self.config.clone();
        let group = match self.group_or_create(&req.group_id, now) {
            Ok(group) => group,
            Err(e) => {
                fail(&mut out, e);
                return out;
            }
        };
        if group.consumer.as_ref().is_some_and(|c| !c.is_empty()) {
            // A classic member cannot join a group of the new protocol that has members.
            fail(&mut out, ErrorCode::InconsistentGroupProtocol);
            return out;
        }
        if group.consumer.take().is_some() {
            tracing::info!(group = %req.group_id, "empty consumer group becomes a classic group");
        }
        if !group.members.is_empty()
            && (group.protocol_type.as_deref() != Some(req.protocol_type.as_str())
                || group.common_protocols(Some(&req.protocols)).is_empty())
        {
            fail(&mut out, ErrorCode::InconsistentGroupProtocol);
            return out;
        }
        if group.members.is_empty() {
            group.protocol_type = Some(req.protocol_type.clone());
        }
        let member_value = |id: &str| MemberValue {
            member_id: id.to_string(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req
                .protocols
                .iter()
                .map(|(n, m)| (n.clone(), m.to_vec()))
                .collect(),
            assignment: Vec::new(),
        };

        if req.member_id.is_empty() {
            // A static member coming back under a new member id (KIP-345).
            if let Some(instance) = &req.instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    let Some(mut member) = group.members.remove(&old_id) else {
                        group.static_members.remove(instance);
                        return self.join(req, reply, now);
                    };
                    let new_id = new_member_id(instance);
                    // The old incarnation is fenced.
                    if let Some(r) = member.join_reply.take() {
                        out.replies.push((
                            r,
                            Reply::Join(JoinResponse::error(ErrorCode::FencedInstanceId, &old_id)),
                        ));
                    }
                    if let Some(r) = member.sync_reply.take() {
                        out.replies.push((
                            r,
                            Reply::Sync(SyncResponse::error(ErrorCode::FencedInstanceId)),
                        ));
                    }
                    let assignment = std::mem::take(&mut member.value.assignment);
                    member.value = MemberValue {
                        assignment,
                        ..member_value(&new_id)
                    };
                    member.last_heartbeat = now;
                    if group.leader.as_deref() == Some(old_id.as_str()) {
                        group.leader = Some(new_id.clone());
                    }
                    if group.awaiting_sync.remove(&old_id) {
                        group.awaiting_sync.insert(new_id.clone());
                    }
                    group
                        .static_members
                        .insert(instance.clone(), new_id.clone());
                    group.members.insert(new_id.clone(), member);
                    // As Kafka: a stable group does not rebalance unless the protocol the
                    // next generation would select changes (metadata such as owned
                    // partitions may differ after a restart).
                    if group.state == GroupState::Stable
                        && group.select_protocol() == group.protocol
                    {
                        // No rebalance: the member gets the current generation back and
                        // its old assignment on SyncGroup.
                        let mut response = group.join_response(&new_id);
                        response.skip_assignment = group.leader.as_deref() == Some(new_id.as_str());
                        out.records.push(group.record());
                        out.replies.push((reply, Reply::Join(response)));
                        return out;
                    }
                    if let Some(m) = group.members.get_mut(&new_id) {
                        m.join_reply = Some(reply);
                    }
                    group.prepare_rebalance(
                        "static member rejoined with a protocol change",
                        now,
                        &config,
                        &mut out,
                    );
                    group.maybe_complete_join(now, &mut out);
                    return out;
                }
            } else if req.require_known_member_id {
                if group.pending_members.len() >= config.max_size {
                    fail(&mut out, ErrorCode::GroupMaxSizeReached);
                    return out;
                }
                let id = new_member_id(&req.client_id);
                group
                    .pending_members
                    .insert(id.clone(), now + i64::from(req.session_timeout_ms));
                out.replies.push((
                    reply,
                    Reply::Join(JoinResponse::error(ErrorCode::MemberIdRequired, &id)),
                ));
                return out;
            }
            if group.members.len() >= config.max_size {
                fail(&mut out, ErrorCode::GroupMaxSizeReached);
                return out;
            }
            let id = new_member_id(req.instance_id.as_deref().unwrap_or(&req.client_id));
            Self::add_member(group, member_value(&id), reply, now, &config, &mut out);
            return out;
        }

        if group.pending_members.remove(&req.member_id).is_some() {
            if group.members.len() >= config.max_size {
                fail(&mut out, ErrorCode::GroupMaxSizeReached);
                return out;
            }
            Self::add_member(
                group,
                member_value(&req.member_id),
                reply,
                now,
                &config,
                &mut out,
            );
            return out;
        }
        if let Some(instance) = &req.instance_id {
            if group
                .static_members
                .get(instance)
                .is_some_and(|id| *id != req.member_id)
            {
                fail(&mut out, ErrorCode::FencedInstanceId);
                return out;
            }
        }
        let Some(member) = group.members.get_mut(&req.member_id) else {
            fail(&mut out, ErrorCode::UnknownMemberId);
            return out;
        };
        let new_value = member_value(&req.member_id);
        let changed = member.value.protocols != new_value.protocols;
        member.value = MemberValue {
            assignment: std::mem::take(&mut member.value.assignment),
            ..new_value
        };
        member.last_heartbeat = now;
        let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
        match group.state {
            GroupState::PreparingRebalance => {
                if let Some(old) = member.join_reply.replace(reply) {
                    out.replies.push((
                        old,
                        Reply::Join(JoinResponse::error(
                            ErrorCode::RebalanceInProgress,
                            &req.member_id,
                        )),
                    ));
                }
                group.maybe_complete_join(now, &mut out);
            }
            GroupState::CompletingRebalance if !changed => {
                out.replies
                    .push((reply, Reply::Join(group.join_response(&req.member_id))));
            }
            GroupState::Stable if !changed && !is_leader => {
                out.replies
                    .push((reply, Reply::Join(group.join_response(&req.member_id))));
            }
            _ => {
                member.join_reply = Some(reply);
                group.prepare_rebalance(
                    "member rejoined with new metadata or as leader",
                    now,
                    &config,
                    &mut out,
                );
                group.maybe_complete_join(now, &mut out);
            }
        }
        out
    }

    fn add_member(
        group: &mut Group,
        value: MemberValue,
        reply: ReplyId,
        now: i64,
        config: &GroupConfig,
        out: &mut Output,
    ) {
        let id = value.member_id.clone();
        if let Some(instance) = &value.instance_id {
            group.static_members.insert(instance.clone(), id.clone());
        }
        group.members.insert(
            id,
            Member {
                value,
                last_heartbeat: now,
                join_reply: Some(reply),
                sync_reply: None,
            },
        );
        group.prepare_rebalance("member joined", now, config, out);
        group.maybe_complete_join(now, out);
    }

    /// SyncGroup. Followers wait for the leader's assignment.
    pub fn sync(&mut self, req: SyncRequest, reply: ReplyId, now: i64) -> Output {
        let mut out = Output::default();
        let fail = |out: &mut Output, e: ErrorCode| {
            out.replies
                .push((reply, Reply::Sync(SyncResponse::error(e))))
        };
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            fail(&mut out, ErrorCode::UnknownMemberId);
            return out;
        };
        if let Err(e) = check_member(group, &req.member_id, req.instance_id.as_deref()) {
            fail(&mut out, e);
            return out;
        }
        if req.generation != group.generation {
            fail(&mut out, ErrorCode::IllegalGeneration);
            return out;
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != group.protocol.as_ref())
        {
            fail(&mut out, ErrorCode::InconsistentGroupProtocol);
            return out;
        }
        match group.state {
            GroupState::Empty => fail(&mut out, ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => fail(&mut out, ErrorCode::RebalanceInProgress),
            GroupState::Stable => {
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat = now;
                }
                out.replies
                    .push((reply, Reply::Sync(group.sync_response(&req.member_id))));
            }
            GroupState::CompletingRebalance => {
                group.awaiting_sync.remove(&req.member_id);
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.last_heartbeat = now;
                    if let Some(old) = m.sync_reply.replace(reply) {
                        out.replies.push((
                            old,
                            Reply::Sync(SyncResponse::error(ErrorCode::RebalanceInProgress)),
                        ));
                    }
                }
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    let assigned: HashMap<&str, &Bytes> = req
                        .assignments
                        .iter()
                        .map(|(id, a)| (id.as_str(), a))
                        .collect();
                    for (id, m) in group.members.iter_mut() {
                        m.value.assignment = assigned
                            .get(id.as_str())
                            .map(|a| a.to_vec())
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.state_timestamp = now;
                    out.records.push(group.record());
                    let ids: Vec<String> = group.members.keys().cloned().collect();
                    for id in ids {
                        let response = group.sync_response(&id);
                        if let Some(r) =
                            group.members.get_mut(&id).and_then(|m| m.sync_reply.take())
                        {
                            out.replies.push((r, Reply::Sync(response)));
                        }
                    }
                }
            }
        }
        out
    }

    /// Heartbeat: keeps the session alive; tells members to rejoin during a rebalance.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> ErrorCode {
        let Some(group) = self.groups.get_mut(group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if let Err(e) = check_member(group, member_id, instance_id) {
            return e;
        }
        if generation != group.generation {
            return ErrorCode::IllegalGeneration;
        }
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        match group.state {
            GroupState::Empty => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// LeaveGroup for each (member id, instance id); per-member errors.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: i64,
    ) -> (Vec<ErrorCode>, Output) {
        let mut out = Output::default();
        let config = self.config.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (vec![ErrorCode::UnknownMemberId; members.len()], out);
        };
        let mut errors = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let id = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(registered) if member_id.is_empty() || registered == member_id => {
                        registered.clone()
                    }
                    Some(_) => {
                        errors.push(ErrorCode::FencedInstanceId);
                        continue;
                    }
                    None => {
                        errors.push(ErrorCode::UnknownMemberId);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.pending_members.remove(&id).is_some() {
                errors.push(ErrorCode::None);
            } else if group.members.contains_key(&id) {
                group.remove_member(&id, &mut out, ErrorCode::UnknownMemberId);
                removed = true;
                errors.push(ErrorCode::None);
            } else {
                errors.push(ErrorCode::UnknownMemberId);
            }
        }
        if removed {
            group.prepare_rebalance("member left", now, &config, &mut out);
            group.maybe_complete_join(now, &mut out);
        }
        (errors, out)
    }

    /// Checks an OffsetCommit (Kafka's rules) and returns the records to write. The
    /// offsets become visible when the runtime applies the records after they are durable.
    // The arguments are the OffsetCommit request's own fields.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_offsets(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        partitions: &[CommitPartition],
        version: i16,
        now: i64,
    ) -> Result<Vec<(ErrorCode, Option<Record>)>, ErrorCode> {
        if group_id.is_empty() {
            return Err(ErrorCode::InvalidGroupId);
        }
        if self.consumer_group(group_id).is_some() {
            self.check_consumer_commit(
                group_id,
                member_id,
                instance_id,
                generation,
                false,
                version,
            )?;
            return Ok(self.offset_records(group_id, partitions, now));
        }
        let group = self.group_or_create(group_id, now)?;
        if let Some(instance) = instance_id {
            if group
                .static_members
                .get(instance)
                .is_some_and(|id| id != member_id)
            {
                return Err(ErrorCode::FencedInstanceId);
            }
        }
        let simple = generation < 0 && group.state == GroupState::Empty;
        if !simple {
            check_member(group, member_id, instance_id)?;
            if generation != group.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
            if group.state == GroupState::CompletingRebalance {
                return Err(ErrorCode::RebalanceInProgress);
            }
            if let Some(m) = group.members.get_mut(member_id) {
                m.last_heartbeat = now;
            }
        }
        Ok(self.offset_records(group_id, partitions, now))
    }

    /// Checks a TxnOffsetCommit. With member information (generation >= 0 or a member id)
    /// the same generation and member checks as OffsetCommit apply (KIP-447); without it
    /// only the metadata size is checked. Does not touch the group's state.
    pub fn validate_txn_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        partitions: &[CommitPartition],
        now: i64,
    ) -> Result<Vec<(ErrorCode, Option<Record>)>, ErrorCode> {
        if self.consumer_group(group_id).is_some() {
            self.check_consumer_commit(group_id, member_id, instance_id, generation, true, 5)?;
            return Ok(self.offset_records(group_id, partitions, now));
        }
        if generation >= 0 || !member_id.is_empty() {
            let group = self
                .groups
                .get(group_id)
                .ok_or(ErrorCode::IllegalGeneration)?;
            check_member(group, member_id, instance_id)?;
            if generation != group.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
        }
        Ok(self.offset_records(group_id, partitions, now))
    }

    /// An offset record per partition, or OFFSET_METADATA_TOO_LARGE.
    fn offset_records(
        &self,
        group_id: &str,
        partitions: &[CommitPartition],
        now: i64,
    ) -> Vec<(ErrorCode, Option<Record>)> {
        partitions
            .iter()
            .map(|p| {
                if p.metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes)
                {
                    return (ErrorCode::OffsetMetadataTooLarge, None);
                }
                (
                    ErrorCode::None,
                    Some(Record::Offset {
                        group: group_id.to_string(),
                        topic: p.topic.clone(),
                        partition: p.partition,
                        value: Some(OffsetValue {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata: p.metadata.clone(),
                            commit_timestamp: now,
                        }),
                    }),
                )
            })
            .collect()
    }

    /// The group a durable record names, created empty if it is the first.
    fn loaded_group(&mut self, group: &str, now: i64) -> &mut Group {
        self.groups
            .entry(group.to_string())
            .or_insert_with(|| Group::new(group, now))
    }

    /// Applies a durable record: during replay every record, live only offset records
    /// (group records describe state the coordinator already has).
    pub fn apply(&mut self, record: &Record, now: i64) {
        match record {
            Record::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    self.loaded_group(group, now)
                        .offsets
                        .insert((topic.clone(), *partition), v.clone());
                }
                None => {
                    if let Some(g) = self.groups.get_mut(group) {
                        g.offsets.remove(&(topic.clone(), *partition));
                    }
                }
            },
            Record::Group { group, value: None } => {
                self.groups.remove(group);
            }
            Record::Group {
                group,
                value: Some(v),
            } => {
                let g = self.loaded_group(group, now);
                g.consumer = None;
                g.generation = v.generation;
                g.protocol_type = v.protocol_type.clone();
                g.protocol = v.protocol.clone();
                g.leader = v.leader.clone();
                g.state_timestamp = v.state_timestamp;
                g.members = v
                    .members
                    .iter()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            Member {
                                value: m.clone(),
                                // Loaded members must heartbeat within their session.
                                last_heartbeat: now,
                                join_reply: None,
                                sync_reply: None,
                            },
                        )
                    })
                    .collect();
                g.static_members = v
                    .members
                    .iter()
                    .filter_map(|m| Some((m.instance_id.clone()?, m.member_id.clone())))
                    .collect();
                g.state = if g.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
            Record::ConsumerGroup { group, value } => {
                let g = self.loaded_group(group, now);
                g.members.clear();
                g.static_members.clear();
                g.state = GroupState::Empty;
                g.consumer.get_or_insert_with(Default::default).load(value);
            }
            Record::ConsumerMember {
                group,
                value: Some(v),
                ..
            } => {
                let g = self.loaded_group(group, now);
                g.consumer
                    .get_or_insert_with(Default::default)
                    .load_member(v, now);
            }
            Record::ConsumerMember {
                group,
                member,
                value: None,
            } => {
                if let Some(c) = self
                    .groups
                    .get_mut(group)
                    .and_then(|g| g.consumer.as_deref_mut())
                {
                    c.remove_member(member);
                }
            }
        }
    }

    /// Committed offsets of a group: all, or the requested (topic, partitions) with -1
    /// for partitions without a commit.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let group = self.groups.get(group_id);
        match wanted {
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            Some(topics) => topics
                .iter()
                .flat_map(|(t, ps)| {
                    ps.iter().map(move |p| {
                        (
                            t.clone(),
                            *p,
                            group.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned()),
                        )
                    })
                })
                .collect(),
        }
    }

    /// Expires sessions, ends join phases whose time is up, lapses pending member ids and
    /// deletes offsets of groups that have been empty longer than the retention.
    pub fn tick(&mut self, now: i64) -> Output {
        let mut out = Output::default();
        let config = self.config.clone();
        let mut dead = Vec::new();
        for group in self.groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join_reply.is_none()
                        && now - m.last_heartbeat > i64::from(m.value.session_timeout_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "member session expired");
                group.remove_member(id, &mut out, ErrorCode::UnknownMemberId);
            }
            if group.state == GroupState::CompletingRebalance && now >= group.deadline {
                let laggards: Vec<String> = group.awaiting_sync.iter().cloned().collect();
                for id in &laggards {
                    group.remove_member(id, &mut out, ErrorCode::RebalanceInProgress);
                }
                group.prepare_rebalance("members did not sync in time", now, &config, &mut out);
            } else if !expired.is_empty() && group.state != GroupState::Empty {
                group.prepare_rebalance("member session expired", now, &config, &mut out);
            }
            group.maybe_complete_join(now, &mut out);
            let empty_for = now.saturating_sub(group.state_timestamp);
            let idle = group.state == GroupState::Empty
                && group.consumer.as_ref().is_none_or(|c| c.is_empty());
            if idle
                && group.offsets.is_empty()
                && group.pending_members.is_empty()
                && empty_for >= config.empty_group_retention_ms
            {
                // Nothing durable to keep: a group some request created and left.
                dead.push(group.id.clone());
            } else if idle && empty_for >= config.offsets_retention_ms {
                for (topic, partition) in std::mem::take(&mut group.offsets).into_keys() {
                    out.records.push(Record::Offset {
                        group: group.id.clone(),
                        topic,
                        partition,
                        value: None,
                    });
                }
                dead.push(group.id.clone());
            }
        }
        for id in dead {
            self.groups.remove(&id);
            out.records.push(Record::Group {
                group: id,
                value: None,
            });
        }
        out
    }

    /// Per group: its id, member count and generation (each rebalance bumps it), for
    /// metrics.
    pub fn group_sizes(&self) -> Vec<(String, usize, i32)> {
        self.groups
            .values()
            .map(|g| match &g.consumer {
                Some(c) => (g.id.clone(), c.member_count(), c.group_epoch()),
                None => (g.id.clone(), g.members.len(), g.generation),
            })
            .collect()
    }

    /// Every group: id, protocol type, state name and type (`classic` or `consumer`).
    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.groups
            .values()
            .map(|g| match &g.consumer {
                Some(c) => GroupListing {
                    group_id: g.id.clone(),
                    protocol_type: "consumer".to_string(),
                    state: c.state().name(),
                    group_type: "consumer",
                },
                None => GroupListing {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state.name(),
                    group_type: "classic",
                },
            })
            .collect()
    }

    /// Whether the coordinator holds a group of either kind.
    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// Whether a group uses the new protocol.
    pub fn is_consumer_group(&self, group_id: &str) -> bool {
        self.consumer_group(group_id).is_some()
    }

    /// DescribeGroups of a classic group (None for unknown and new-protocol groups).
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let g = self.groups.get(group_id).filter(|g| g.consumer.is_none())?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.value.member_id.clone(),
                    instance_id: m.value.instance_id.clone(),
                    client_id: m.value.client_id.clone(),
                    client_host: m.value.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: Bytes::from(m.value.assignment.clone()),
                })
                .collect(),
        })
    }

    /// DeleteGroups: only empty groups; returns the tombstones to write.
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<Record>, ErrorCode> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        if group.state != GroupState::Empty
            || group.consumer.as_ref().is_some_and(|c| !c.is_empty())
        {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let group = self.groups.remove(group_id).expect("present");
        let mut records: Vec<Record> = group
            .offsets
            .into_keys()
            .map(|(topic, partition)| Record::Offset {
                group: group_id.to_string(),
                topic,
                partition,
                value: None,
            })
            .collect();
        records.push(Record::Group {
            group: group_id.to_string(),
            value: None,
        });
        Ok(records)
    }

    /// OffsetDelete: per partition, a tombstone or GROUP_SUBSCRIBED_TO_TOPIC.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<(ErrorCode, Option<Record>)>, ErrorCode> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        let subscribed: BTreeSet<String> = if let Some(c) = &group.consumer {
            c.subscribed_topic_names()
        } else if group.state == GroupState::Empty {
            BTreeSet::new()
        } else if group.protocol_type.as_deref() == Some("consumer") {
            group
                .members
                .values()
                .flat_map(|m| {
                    m.value
                        .protocols
                        .iter()
                        .flat_map(|(_, meta)| subscription_topics(meta))
                })
                .collect()
        } else {
            return Err(ErrorCode::NonEmptyGroup);
        };
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                if subscribed.contains(topic) {
                    (ErrorCode::GroupSubscribedToTopic, None)
                } else {
                    (
                        ErrorCode::None,
                        group
                            .offsets
                            .contains_key(&(topic.clone(), *partition))
                            .then(|| Record::Offset {
                                group: group_id.to_string(),
                                topic: topic.clone(),
                                partition: *partition,
                                value: None,
                            }),
                    )
                }
            })
            .collect())
    }

    /// The durable view of every group (for replay-equivalence checks and tooling).
    pub fn durable_view(&self) -> DurableView {
        self.groups
            .values()
            .map(|g| {
                let value = (g.generation > 0 || !g.members.is_empty()).then(|| g.value());
                (g.id.clone(), (value, g.offsets.clone()))
            })
            .collect()
    }
}

fn check_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ErrorCode> {
    if let Some(instance) = instance_id {
        if group
            .static_members
            .get(instance)
            .is_some_and(|id| id != member_id)
        {
            return Err(ErrorCode::FencedInstanceId);
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ErrorCode::UnknownMemberId);
    }
    Ok(())
}

/// Topics of a `ConsumerProtocolSubscription` (version, then an array of topic names).
pub fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    if metadata.len() < 6 {
        return topics;
    }
    let count = i32::from_be_bytes([metadata[2], metadata[3], metadata[4], metadata[5]]);
    let mut at = 6;
    for _ in 0..count.max(0) {
        let Some(len) = metadata.get(at..at + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len[0], len[1]]);
        at += 2;
        let Some(name) = usize::try_from(len)
            .ok()
            .and_then(|l| metadata.get(at..at + l))
        else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
        at += name.len();
    }
    topics
}
