//! Consumer groups of the new protocol (KIP-848): the coordinator assigns partitions
//! itself and moves each member towards its target one heartbeat at a time.
//!
//! A group has a **group epoch**, bumped whenever membership, a subscription or the
//! partitions of a subscribed topic change; each bump computes a new **target assignment**
//! with the group's server-side assignor ([`assignor`]). Every member has a **member
//! epoch** and its current assignment, reconciled towards its target by
//! [`reconcile::step`]: partitions are revoked before they are handed to someone else,
//! and a member reaches the target epoch only once it holds nothing its target does not.
//! Member epochs are what OffsetCommit, OffsetFetch and TxnOffsetCommit check, so a member
//! that was fenced (session or rebalance timeout, or replaced) cannot commit.
//!
//! Durable state goes to `__consumer_offsets` as records: one for the group (epochs,
//! subscription metadata, target assignment; under the same key as a classic group's
//! record, so a group is of one kind at a time) and one per member (subscription, epochs,
//! assignment). Replaying them rebuilds the group; members then keep heartbeating with
//! their epochs as if nothing happened.

pub mod assignor;
mod coordinator;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use exacta_types::ErrorCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use coordinator::{ConsumerGroupDescription, ConsumerMemberDescription};
use reconcile::{Current, MemberState};

/// Partitions per topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Member epoch of a ConsumerGroupHeartbeat that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member that leaves for now (keeps its partitions until its
/// session times out or it comes back).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// What the coordinator needs to know about topics.
pub trait TopicCatalog {
    /// Id and partition count of a topic.
    fn by_name(&self, name: &str) -> Option<(Uuid, i32)>;
    /// Name of a topic id.
    fn name_of(&self, id: Uuid) -> Option<String>;
    /// Every topic a regular expression may match (internal topics excluded).
    fn names(&self) -> Vec<String>;
    /// Changes whenever a topic is created or deleted (regular expressions are resolved
    /// again then).
    fn version(&self) -> u64;
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

impl ConsumerMemberValue {
    fn new(member_id: &str) -> Self {
        ConsumerMemberValue {
            member_id: member_id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            member_epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            rebalance_timeout_ms: 0,
            server_assignor: None,
            subscribed_names: Vec::new(),
            subscribed_regex: None,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }

    fn current(&self) -> Current {
        Current {
            epoch: self.member_epoch,
            state: self.state,
            assigned: self.assigned.clone(),
            pending_revocation: self.pending_revocation.clone(),
        }
    }
}

/// A group as stored (its members are stored one record each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroupValue {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    /// Topic name → (id, partitions) of every subscribed topic that exists.
    pub subscription: BTreeMap<String, (Uuid, i32)>,
    /// Member id → its target assignment.
    pub target: BTreeMap<String, Assignment>,
}

/// A group's state as ListGroups and ConsumerGroupDescribe name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) value: ConsumerMemberValue,
    /// Last heartbeat; the session expires `session_timeout_ms` after it.
    pub(crate) last_seen: i64,
    /// While revoking: the member is fenced if it still owns the partitions then.
    pub(crate) revoke_deadline: Option<i64>,
}

/// One consumer group of the new protocol.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub(crate) group_epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) members: BTreeMap<String, Member>,
    /// group.instance.id → member id.
    pub(crate) static_members: HashMap<String, String>,
    pub(crate) target: BTreeMap<String, Assignment>,
    pub(crate) subscription: BTreeMap<String, (Uuid, i32)>,
    /// Resolved regular expressions: (catalog version, matching topics).
    regexes: HashMap<String, (u64, BTreeSet<String>)>,
    /// The catalog version `subscription` was computed at (None: not since loading).
    subscription_at: Option<u64>,
}

impl ConsumerGroup {
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self.members.values().any(|m| {
            m.value.member_epoch != self.assignment_epoch || m.value.state != MemberState::Stable
        }) {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub(crate) fn value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            subscription: self.subscription.clone(),
            target: self.target.clone(),
        }
    }

    pub(crate) fn load(&mut self, value: &ConsumerGroupValue) {
        self.group_epoch = value.group_epoch;
        self.assignment_epoch = value.assignment_epoch;
        self.subscription = value.subscription.clone();
        self.target = value.target.clone();
    }

    pub(crate) fn load_member(&mut self, value: &ConsumerMemberValue, now: i64) {
        if let Some(instance) = &value.instance_id {
            self.static_members
                .insert(instance.clone(), value.member_id.clone());
        }
        self.members.insert(
            value.member_id.clone(),
            Member {
                value: value.clone(),
                // Loaded members must heartbeat within their session, and finish a
                // revocation within their rebalance timeout from now.
                last_seen: now,
                revoke_deadline: (value.state == MemberState::UnrevokedPartitions)
                    .then(|| now + i64::from(value.rebalance_timeout_ms)),
            },
        );
    }

    pub(crate) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(instance) = &m.value.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.target.remove(member_id);
        Some(m)
    }

    /// Topics the members subscribe to (names and regular-expression matches).
    fn subscribed_topics(&mut self, topics: &dyn TopicCatalog) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let regexes: BTreeSet<String> = self
            .members
            .values()
            .filter_map(|m| m.value.subscribed_regex.clone())
            .collect();
        self.regexes.retain(|r, _| regexes.contains(r));
        for regex in regexes {
            names.extend(self.resolve(&regex, topics).iter().cloned());
        }
        for m in self.members.values() {
            names.extend(m.value.subscribed_names.iter().cloned());
        }
        names
    }

    /// The topics `regex` matches (as a whole name), resolved again when topics changed.
    fn resolve(&mut self, regex: &str, topics: &dyn TopicCatalog) -> &BTreeSet<String> {
        let version = topics.version();
        let stale = self.regexes.get(regex).is_none_or(|(v, _)| *v != version);
        if stale {
            let matched = match compile(regex) {
                Ok(re) => topics
                    .names()
                    .into_iter()
                    .filter(|t| re.is_match(t))
                    .collect(),
                Err(_) => BTreeSet::new(),
            };
            self.regexes.insert(regex.to_string(), (version, matched));
        }
        &self.regexes[regex].1
    }

    /// Topic ids a member subscribes to, per the group's subscription metadata.
    fn member_topics(&self, m: &ConsumerMemberValue) -> BTreeSet<Uuid> {
        let by_regex = m
            .subscribed_regex
            .as_ref()
            .and_then(|r| self.regexes.get(r))
            .map(|(_, names)| names.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        m.subscribed_names
            .iter()
            .chain(by_regex)
            .filter_map(|n| self.subscription.get(n).map(|(id, _)| *id))
            .collect()
    }

    /// Refreshes the subscription metadata; true if it changed. Unless `force`d (a
    /// subscription or the membership changed), only when the topics changed since.
    fn refresh_subscription(&mut self, topics: &dyn TopicCatalog, force: bool) -> bool {
        let version = topics.version();
        if !force && self.subscription_at == Some(version) {
            return false;
        }
        self.subscription_at = Some(version);
        let names = self.subscribed_topics(topics);
        let metadata: BTreeMap<String, (Uuid, i32)> = names
            .into_iter()
            .filter_map(|n| topics.by_name(&n).map(|t| (n, t)))
            .collect();
        if metadata == self.subscription {
            return false;
        }
        self.subscription = metadata;
        true
    }

    /// The assignor most members ask for, or the default.
    fn assignor<'a>(&'a self, default: &'a str) -> &'a str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.value.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map(|(name, _)| name)
            .unwrap_or(default)
    }

    /// Bumps the group epoch and computes the target assignment for it.
    fn bump(&mut self, default_assignor: &str, reason: &str, group_id: &str) {
        self.group_epoch += 1;
        let topics: BTreeMap<Uuid, i32> = self.subscription.values().copied().collect();
        let members: Vec<assignor::AssignMember<'_>> = self
            .members
            .values()
            .map(|m| assignor::AssignMember {
                member_id: &m.value.member_id,
                topics: self.member_topics(&m.value),
                previous: self.target.get(&m.value.member_id),
            })
            .collect();
        let name = self.assignor(default_assignor).to_string();
        let target = assignor::assign(&name, &members, &topics);
        self.target = target;
        self.assignment_epoch = self.group_epoch;
        tracing::info!(group = group_id, epoch = self.group_epoch, assignor = %name, reason, "consumer group epoch bumped");
    }

    /// Moves a member one step towards its target; true if its assignment changed.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) -> bool {
        let Some(m) = self.members.get(member_id) else {
            return false;
        };
        if m.value.state == MemberState::Stable && m.value.member_epoch == self.assignment_epoch {
            // Reconciled: nothing to do (and no owner map to build on every heartbeat).
            return false;
        }
        let before = m.value.current();
        let empty = Assignment::new();
        let target = self.target.get(member_id).unwrap_or(&empty);
        let held: HashMap<(Uuid, i32), &str> = self
            .members
            .values()
            .filter(|o| o.value.member_id != member_id)
            .flat_map(|o| {
                o.value
                    .assigned
                    .iter()
                    .chain(o.value.pending_revocation.iter())
                    .flat_map(move |(t, ps)| {
                        ps.iter()
                            .map(move |p| ((*t, *p), o.value.member_id.as_str()))
                    })
            })
            .collect();
        let after = reconcile::step(&before, self.assignment_epoch, target, owned, |t, p| {
            held.contains_key(&(t, p))
        });
        if after == before {
            return false;
        }
        let m = self.members.get_mut(member_id).expect("checked above");
        if after.epoch != m.value.member_epoch {
            m.value.previous_epoch = m.value.member_epoch;
        }
        m.revoke_deadline = match (before.state, after.state) {
            (MemberState::UnrevokedPartitions, MemberState::UnrevokedPartitions) => {
                m.revoke_deadline
            }
            (_, MemberState::UnrevokedPartitions) => {
                Some(now + i64::from(m.value.rebalance_timeout_ms))
            }
            _ => None,
        };
        m.value.member_epoch = after.epoch;
        m.value.state = after.state;
        m.value.assigned = after.assigned;
        m.value.pending_revocation = after.pending_revocation;
        true
    }

    /// Subscribed topic names of every member (OffsetDelete refuses those).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.subscription.keys().cloned().collect()
    }
}

/// Compiles a subscription regular expression; it must match a whole topic name.
pub fn compile(regex: &str) -> Result<regex::Regex, String> {
    crate::pattern::compile_pattern(regex, "SubscribedTopicRegex").map_err(|e| e.message)
}

/// A ConsumerGroupHeartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns (None: unchanged since its last heartbeat).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Request version (v1+: the client generates its member id).
    pub version: i16,
}

/// Its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: ErrorCode,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, sent when it changed or the request was a full one.
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    pub(crate) fn error(error: ErrorCode, message: impl Into<String>) -> Self {
        HeartbeatResponse {
            error,
            message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// Checks a heartbeat's fields as Kafka does (INVALID_REQUEST, UNSUPPORTED_ASSIGNOR,
/// INVALID_REGULAR_EXPRESSION).
pub(crate) fn validate(
    req: &HeartbeatRequest,
    assignors: &[String],
) -> Result<(), HeartbeatResponse> {
    let invalid = |m: &str| Err(HeartbeatResponse::error(ErrorCode::InvalidRequest, m));
    if req.group_id.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if req.version >= 1 && req.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if req
                .owned
                .as_ref()
                .is_none_or(|o| o.values().any(|p| !p.is_empty()))
            {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none()
                && req
                    .subscribed_topic_regex
                    .as_deref()
                    .is_none_or(str::is_empty)
            {
                return invalid(
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                );
            }
        }
        e if e > 0 || e == LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        STATIC_LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
            if req.instance_id.is_none() {
                return invalid("InstanceId can't be null.");
            }
        }
        _ => return invalid("MemberEpoch is invalid."),
    }
    if req.rebalance_timeout_ms < -1 {
        return invalid("RebalanceTimeoutMs can't be negative.");
    }
    if let Some(a) = &req.server_assignor {
        if !assignors.iter().any(|n| n == a) {
            return Err(HeartbeatResponse::error(
                ErrorCode::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    assignors.join(", ")
                ),
            ));
        }
    }
    if let Some(r) = &req.subscribed_topic_regex {
        // An empty expression drops a regular-expression subscription.
        if let Err(e) = if r.is_empty() {
            Ok(())
        } else {
            compile(r).map(drop)
        } {
            return Err(HeartbeatResponse::error(
                ErrorCode::InvalidRegularExpression,
                e,
            ));
        }
    }
    Ok(())
}

/// Whether every partition in `owned` is in `assigned` (an unknown owned set is not).
pub(crate) fn is_subset(owned: Option<&Assignment>, assigned: &Assignment) -> bool {
    let Some(owned) = owned else { return false };
    owned
        .iter()
        .all(|(t, ps)| ps.is_empty() || assigned.get(t).is_some_and(|a| ps.is_subset(a)))
}
