//! The group coordinator's side of the new protocol: ConsumerGroupHeartbeat (join,
//! heartbeat, leave), session and rebalance timeouts, ConsumerGroupDescribe, and the
//! member-epoch checks of OffsetCommit, OffsetFetch and TxnOffsetCommit.
//!
//! Classic and consumer groups share one namespace. A heartbeat turns an empty classic
//! group into a consumer group, a JoinGroup turns an empty consumer group back; a member
//! of the other protocol cannot join a group that has members (Kafka with
//! `group.consumer.migration.policy=disabled`): GROUP_ID_NOT_FOUND for the heartbeat,
//! INCONSISTENT_GROUP_PROTOCOL for the JoinGroup.

use exacta_types::ErrorCode;
use uuid::Uuid;

use super::reconcile::MemberState;
use super::{
    is_subset, validate, Assignment, ConsumerGroup, ConsumerGroupState, ConsumerMemberValue,
    HeartbeatRequest, HeartbeatResponse, Member, TopicCatalog, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
use crate::group::{GroupCoordinator, Record};

/// A member as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone)]
pub struct ConsumerMemberDescription {
    pub value: ConsumerMemberValue,
    pub target: Assignment,
}

/// A consumer group as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<ConsumerMemberDescription>,
}

fn fenced(received: i32, known: i32) -> HeartbeatResponse {
    let relation = if received > known {
        "greater"
    } else {
        "smaller"
    };
    HeartbeatResponse::error(
        ErrorCode::FencedMemberEpoch,
        format!(
            "The consumer group member has a {relation} member epoch ({received}) than the one known by the group coordinator ({known}). The member must abandon all its partitions and rejoin."
        ),
    )
}

/// Kafka's epoch check: the current epoch, or the previous one when the member owns no
/// more than its assignment (the answer that bumped it was lost).
fn check_epoch(
    m: &ConsumerMemberValue,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), HeartbeatResponse> {
    if received > m.member_epoch
        || (received < m.member_epoch
            && (received != m.previous_epoch || !is_subset(owned, &m.assigned)))
    {
        return Err(fenced(received, m.member_epoch));
    }
    Ok(())
}

fn member_record(group: &str, m: &ConsumerMemberValue) -> Record {
    Record::ConsumerMember {
        group: group.to_string(),
        member: m.member_id.clone(),
        value: Some(m.clone()),
    }
}

fn group_record(group: &str, cg: &ConsumerGroup) -> Record {
    Record::ConsumerGroup {
        group: group.to_string(),
        value: cg.value(),
    }
}

/// Removes a member for good: its partitions are free, the group epoch moves on.
fn fence(
    cg: &mut ConsumerGroup,
    group: &str,
    member_id: &str,
    reason: &str,
    topics: &dyn TopicCatalog,
    default_assignor: &str,
    records: &mut Vec<Record>,
) {
    if cg.remove_member(member_id).is_none() {
        return;
    }
    tracing::info!(
        group,
        member = member_id,
        reason,
        "consumer group member removed"
    );
    records.push(Record::ConsumerMember {
        group: group.to_string(),
        member: member_id.to_string(),
        value: None,
    });
    cg.refresh_subscription(topics, true);
    cg.bump(default_assignor, reason, group);
    records.push(group_record(group, cg));
}

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat: joins, heartbeats and leaves. Returns the answer and the
    /// records to make durable before sending it.
    pub fn consumer_heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        topics: &dyn TopicCatalog,
        now: i64,
    ) -> (HeartbeatResponse, Vec<Record>) {
        match self.heartbeat_inner(req, topics, now) {
            Ok(done) => done,
            Err(e) => (e, Vec::new()),
        }
    }

    fn heartbeat_inner(
        &mut self,
        req: &HeartbeatRequest,
        topics: &dyn TopicCatalog,
        now: i64,
    ) -> Result<(HeartbeatResponse, Vec<Record>), HeartbeatResponse> {
        validate(req, &self.config.consumer_assignors)?;
        let default_assignor = self.config.consumer_assignors[0].clone();
        let interval = self.config.consumer_heartbeat_interval_ms;
        let max_size = self.config.max_size;
        let gid = req.group_id.as_str();
        let not_consumer = || {
            HeartbeatResponse::error(
                ErrorCode::GroupIdNotFound,
                format!("Group {gid} is not a consumer group."),
            )
        };
        match self.groups.get(gid) {
            Some(g) if g.consumer.is_none() && g.has_classic_members() => {
                return Err(not_consumer())
            }
            Some(g) if g.consumer.is_some() => {}
            _ if req.member_epoch != 0 => {
                if req.member_epoch < 0 {
                    return Err(HeartbeatResponse::error(
                        ErrorCode::GroupIdNotFound,
                        format!("Consumer group {gid} not found."),
                    ));
                }
                return Err(HeartbeatResponse::error(
                    ErrorCode::UnknownMemberId,
                    format!("Member {} is not a member of group {gid}.", req.member_id),
                ));
            }
            _ => {}
        }
        if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            return self.consumer_leave(req, topics, &default_assignor, now);
        }
        let group = self
            .group_or_create(gid, now)
            .map_err(|e| HeartbeatResponse::error(e, "The coordinator holds too many groups."))?;
        let mut records = Vec::new();
        let mut group_changed = false;
        if group.consumer.is_none() {
            tracing::info!(group = gid, "group uses the consumer protocol");
            group_changed = true;
        }
        group.state_timestamp = now;
        let cg = group.consumer.get_or_insert_with(Default::default);

        let member_id = if req.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if cg.members.len() >= max_size && !cg.members.contains_key(&member_id) {
            return Err(HeartbeatResponse::error(
                ErrorCode::GroupMaxSizeReached,
                format!(
                    "The consumer group has reached its maximum capacity of {max_size} members."
                ),
            ));
        }
        let owned = req.owned.as_ref();
        let mut fresh: Option<ConsumerMemberValue> = None;
        match &req.instance_id {
            Some(instance) => {
                let existing = cg.static_members.get(instance).cloned();
                match existing {
                    Some(old) if old != member_id && req.member_epoch == 0 => {
                        let old_epoch = cg.members[&old].value.member_epoch;
                        if old_epoch != STATIC_LEAVE_EPOCH {
                            return Err(HeartbeatResponse::error(
                                ErrorCode::UnreleasedInstanceId,
                                format!("Static member {old} with instance id {instance} is not released yet; it must leave the group (or its session time out) before member {member_id} takes its place."),
                            ));
                        }
                        // The instance comes back under a new member id: it takes over the
                        // old member's assignment without a rebalance.
                        let target = cg.target.get(&old).cloned().unwrap_or_default();
                        let mut m = cg.remove_member(&old).expect("static member exists");
                        m.value.member_id = member_id.clone();
                        m.value.member_epoch = 0;
                        m.value.previous_epoch = 0;
                        m.value.state = MemberState::Stable;
                        m.value.pending_revocation.clear();
                        cg.target.insert(member_id.clone(), target);
                        cg.static_members
                            .insert(instance.clone(), member_id.clone());
                        records.push(Record::ConsumerMember {
                            group: gid.to_string(),
                            member: old.clone(),
                            value: None,
                        });
                        tracing::info!(group = gid, instance = %instance, old = %old, new = %member_id, "static member rejoined");
                        cg.members.insert(member_id.clone(), m);
                        group_changed = true;
                    }
                    Some(old) if old != member_id => {
                        return Err(HeartbeatResponse::error(
                            ErrorCode::FencedInstanceId,
                            format!("Static member {member_id} with instance id {instance} was fenced by member {old}."),
                        ));
                    }
                    Some(_) => {
                        let m = &mut cg
                            .members
                            .get_mut(&member_id)
                            .expect("static member exists")
                            .value;
                        if req.member_epoch == 0 && m.member_epoch == STATIC_LEAVE_EPOCH {
                            // Back under the same id after a temporary leave.
                            m.member_epoch = 0;
                            m.previous_epoch = 0;
                        } else {
                            check_epoch(m, req.member_epoch, owned)?;
                        }
                    }
                    None if req.member_epoch == 0 => {
                        if let Some(other) = cg.members.get(&member_id) {
                            check_epoch(&other.value, 0, owned)?;
                        } else {
                            fresh = Some(ConsumerMemberValue::new(&member_id));
                        }
                        cg.static_members
                            .insert(instance.clone(), member_id.clone());
                    }
                    None => {
                        return Err(HeartbeatResponse::error(
                            ErrorCode::UnknownMemberId,
                            format!("Instance id {instance} is unknown."),
                        ));
                    }
                }
            }
            None => match cg.members.get(&member_id) {
                Some(m) => {
                    if let Err(e) = check_epoch(&m.value, req.member_epoch, owned) {
                        if req.member_epoch != 0 {
                            return Err(e);
                        }
                        // A member that lost track (it joins again with nothing owned,
                        // under the id it generated): it starts over.
                        tracing::info!(group = gid, member = %member_id, "member rejoined from epoch 0");
                        let mut again = ConsumerMemberValue::new(&member_id);
                        again.instance_id = m.value.instance_id.clone();
                        fresh = Some(again);
                    }
                }
                None if req.member_epoch == 0 => fresh = Some(ConsumerMemberValue::new(&member_id)),
                None => {
                    return Err(HeartbeatResponse::error(
                        ErrorCode::UnknownMemberId,
                        format!("Member {member_id} is not a member of group {gid}."),
                    ));
                }
            },
        }
        let joined = fresh.is_some();
        if let Some(value) = fresh {
            tracing::info!(group = gid, member = %member_id, "member joins the consumer group");
            cg.members.insert(
                member_id.clone(),
                Member {
                    value,
                    last_seen: now,
                    revoke_deadline: None,
                },
            );
        }
        let m = cg.members.get_mut(&member_id).expect("inserted above");
        let before = m.value.clone();
        let v = &mut m.value;
        if req.instance_id.is_some() {
            v.instance_id = req.instance_id.clone();
        }
        if req.rack_id.is_some() {
            v.rack_id = req.rack_id.clone();
        }
        if req.rebalance_timeout_ms >= 0 {
            v.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if req.server_assignor.is_some() {
            v.server_assignor = req.server_assignor.clone();
        }
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            v.subscribed_names = names;
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            v.subscribed_regex = (!regex.is_empty()).then(|| regex.clone());
        }
        v.client_id = req.client_id.clone();
        v.client_host = req.client_host.clone();
        m.last_seen = now;
        let subscription_changed = joined
            || before.subscribed_names != v.subscribed_names
            || before.subscribed_regex != v.subscribed_regex
            || before.server_assignor != v.server_assignor;
        let metadata_changed = cg.refresh_subscription(topics, subscription_changed);
        if subscription_changed || metadata_changed {
            let reason = if joined {
                "a member joined"
            } else if subscription_changed {
                "a subscription changed"
            } else {
                "subscribed topics changed"
            };
            cg.bump(&default_assignor, reason, gid);
            group_changed = true;
        }
        cg.reconcile(&member_id, owned, now);
        let after = cg.members[&member_id].value.clone();
        if group_changed {
            records.push(group_record(gid, cg));
        }
        if after != before || joined {
            records.push(member_record(gid, &after));
        }
        let full = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && req.owned.is_some());
        let response = HeartbeatResponse {
            error: ErrorCode::None,
            message: None,
            member_id: Some(member_id),
            member_epoch: after.member_epoch,
            heartbeat_interval_ms: interval,
            assignment: (full || after.assigned != before.assigned || joined)
                .then(|| after.assigned.clone()),
        };
        Ok((response, records))
    }

    fn consumer_leave(
        &mut self,
        req: &HeartbeatRequest,
        topics: &dyn TopicCatalog,
        default_assignor: &str,
        now: i64,
    ) -> Result<(HeartbeatResponse, Vec<Record>), HeartbeatResponse> {
        let gid = req.group_id.as_str();
        let cg = self
            .groups
            .get_mut(gid)
            .and_then(|g| g.consumer.as_deref_mut())
            .ok_or_else(|| {
                HeartbeatResponse::error(
                    ErrorCode::GroupIdNotFound,
                    format!("Consumer group {gid} not found."),
                )
            })?;
        let member_id = match &req.instance_id {
            Some(instance) => {
                let Some(id) = cg.static_members.get(instance).cloned() else {
                    return Err(HeartbeatResponse::error(
                        ErrorCode::UnknownMemberId,
                        format!("Instance id {instance} is unknown."),
                    ));
                };
                if id != req.member_id {
                    return Err(HeartbeatResponse::error(
                        ErrorCode::FencedInstanceId,
                        format!("Static member {} with instance id {instance} was fenced by member {id}.", req.member_id),
                    ));
                }
                id
            }
            None if cg.members.contains_key(&req.member_id) => req.member_id.clone(),
            None => {
                return Err(HeartbeatResponse::error(
                    ErrorCode::UnknownMemberId,
                    format!("Member {} is not a member of group {gid}.", req.member_id),
                ))
            }
        };
        let mut records = Vec::new();
        if req.member_epoch == STATIC_LEAVE_EPOCH {
            // Gone for now: the partitions wait for the instance (or its session timeout).
            let m = cg.members.get_mut(&member_id).expect("checked above");
            m.value.member_epoch = STATIC_LEAVE_EPOCH;
            m.value.pending_revocation.clear();
            m.revoke_deadline = None;
            tracing::info!(group = gid, member = %member_id, "static member left temporarily");
            records.push(member_record(gid, &m.value));
        } else {
            fence(
                cg,
                gid,
                &member_id,
                "a member left",
                topics,
                default_assignor,
                &mut records,
            );
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.state_timestamp = now;
        }
        Ok((
            HeartbeatResponse {
                error: ErrorCode::None,
                message: None,
                member_id: Some(member_id),
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            },
            records,
        ))
    }

    /// Fences members whose session expired or who did not revoke within their
    /// rebalance timeout; gives waiting members nothing (they learn on their heartbeat).
    pub fn consumer_tick(&mut self, topics: &dyn TopicCatalog, now: i64) -> Vec<Record> {
        let session = i64::from(self.config.consumer_session_timeout_ms);
        let default_assignor = self.config.consumer_assignors[0].clone();
        let mut records = Vec::new();
        for (gid, group) in self.groups.iter_mut() {
            let Some(cg) = group.consumer.as_deref_mut() else {
                continue;
            };
            let expired: Vec<(String, &'static str)> = cg
                .members
                .values()
                .filter_map(|m| {
                    if now - m.last_seen > session {
                        Some((m.value.member_id.clone(), "the member session expired"))
                    } else if m.value.state == MemberState::UnrevokedPartitions
                        && m.revoke_deadline.is_some_and(|d| now > d)
                    {
                        Some((
                            m.value.member_id.clone(),
                            "the member did not revoke its partitions within the rebalance timeout",
                        ))
                    } else {
                        None
                    }
                })
                .collect();
            for (id, reason) in &expired {
                fence(cg, gid, id, reason, topics, &default_assignor, &mut records);
            }
            if !expired.is_empty() {
                group.state_timestamp = now;
            }
        }
        records
    }

    /// ConsumerGroupDescribe of one group; None if it is not a consumer group.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<ConsumerGroupDescription> {
        let cg = self.groups.get(group_id)?.consumer.as_deref()?;
        Some(ConsumerGroupDescription {
            group_id: group_id.to_string(),
            state: cg.state(),
            group_epoch: cg.group_epoch,
            assignment_epoch: cg.assignment_epoch,
            assignor: cg.assignor(&self.config.consumer_assignors[0]).to_string(),
            members: cg
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    value: m.value.clone(),
                    target: cg
                        .target
                        .get(&m.value.member_id)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect(),
        })
    }

    /// The consumer-protocol state of a group, if it is a consumer group.
    pub fn consumer_group(&self, group_id: &str) -> Option<&ConsumerGroup> {
        self.groups.get(group_id)?.consumer.as_deref()
    }

    /// The member-epoch check of OffsetCommit (v9+ for members of the new protocol) and
    /// TxnOffsetCommit on a consumer group. `Ok(())` for classic groups (their checks are
    /// the generation's).
    pub(crate) fn check_consumer_commit(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        epoch: i32,
        transactional: bool,
        version: i16,
    ) -> Result<(), ErrorCode> {
        let Some(cg) = self.consumer_group(group_id) else {
            return Ok(());
        };
        if epoch < 0 && cg.members.is_empty() {
            return Ok(());
        }
        if transactional && epoch < 0 && member_id.is_empty() && instance_id.is_none() {
            return Ok(());
        }
        let Some(m) = cg.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if !transactional && version < 9 {
            return Err(ErrorCode::UnsupportedVersion);
        }
        if epoch != m.value.member_epoch {
            // TxnOffsetCommit answers ILLEGAL_GENERATION, which every transactional
            // client knows.
            return Err(if transactional {
                ErrorCode::IllegalGeneration
            } else {
                ErrorCode::StaleMemberEpoch
            });
        }
        Ok(())
    }

    /// OffsetFetch v9+ with a member: it must be the current incarnation.
    pub fn check_consumer_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        epoch: i32,
    ) -> Result<(), ErrorCode> {
        let Some(cg) = self.consumer_group(group_id) else {
            return Ok(());
        };
        let Some(member_id) = member_id else {
            return Ok(());
        };
        if epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let Some(m) = cg.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if m.value.member_epoch != epoch {
            return Err(ErrorCode::StaleMemberEpoch);
        }
        Ok(())
    }
}
