//! Events: "entity X of tenant T changed at version v" (DESIGN.md, "Events and queues").
//! An event is a notification, not the truth: consumers load the entity's current state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// AMQP header carrying the W3C trace context of the request that caused the event.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Every kind of event; the serialized form is the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "scim.user.upserted")]
    ScimUserUpserted,
    #[serde(rename = "scim.user.deleted")]
    ScimUserDeleted,
    #[serde(rename = "scim.group.upserted")]
    ScimGroupUpserted,
    #[serde(rename = "scim.group.members_changed")]
    ScimGroupMembersChanged,
    #[serde(rename = "scim.group.deleted")]
    ScimGroupDeleted,
    #[serde(rename = "member.imported")]
    MemberImported,
    #[serde(rename = "member.updated")]
    MemberUpdated,
    #[serde(rename = "member.deactivated")]
    MemberDeactivated,
    #[serde(rename = "member.reactivated")]
    MemberReactivated,
    #[serde(rename = "member.skipped")]
    MemberSkipped,
    #[serde(rename = "member.placed")]
    MemberPlaced,
    #[serde(rename = "member.assignment_applied")]
    MemberAssignmentApplied,
    /// The company's settings (domains, default time zone…) changed; `entity_id` is the tenant.
    #[serde(rename = "tenant.settings_changed")]
    TenantSettingsChanged,
    /// The company's assignments or catalog changed; `entity_id` is the tenant, `data` an
    /// [`AssignmentsChanged`] naming whom the change can affect.
    #[serde(rename = "tenant.assignments_changed")]
    TenantAssignmentsChanged,
}

impl EventKind {
    /// Every kind, for tables and exhaustive tests.
    pub const ALL: [EventKind; 14] = [
        EventKind::ScimUserUpserted,
        EventKind::ScimUserDeleted,
        EventKind::ScimGroupUpserted,
        EventKind::ScimGroupMembersChanged,
        EventKind::ScimGroupDeleted,
        EventKind::MemberImported,
        EventKind::MemberUpdated,
        EventKind::MemberDeactivated,
        EventKind::MemberReactivated,
        EventKind::MemberSkipped,
        EventKind::MemberPlaced,
        EventKind::MemberAssignmentApplied,
        EventKind::TenantSettingsChanged,
        EventKind::TenantAssignmentsChanged,
    ];

    /// The routing key the event is published with.
    pub fn routing_key(self) -> &'static str {
        match self {
            EventKind::ScimUserUpserted => "scim.user.upserted",
            EventKind::ScimUserDeleted => "scim.user.deleted",
            EventKind::ScimGroupUpserted => "scim.group.upserted",
            EventKind::ScimGroupMembersChanged => "scim.group.members_changed",
            EventKind::ScimGroupDeleted => "scim.group.deleted",
            EventKind::MemberImported => "member.imported",
            EventKind::MemberUpdated => "member.updated",
            EventKind::MemberDeactivated => "member.deactivated",
            EventKind::MemberReactivated => "member.reactivated",
            EventKind::MemberSkipped => "member.skipped",
            EventKind::MemberPlaced => "member.placed",
            EventKind::MemberAssignmentApplied => "member.assignment_applied",
            EventKind::TenantSettingsChanged => "tenant.settings_changed",
            EventKind::TenantAssignmentsChanged => "tenant.assignments_changed",
        }
    }

    /// The kind a routing key names.
    pub fn from_routing_key(key: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.routing_key() == key)
    }
}

/// The JSON body of every message on the events exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique per event; consumers may use it to deduplicate.
    pub event_id: Uuid,
    /// The company (tenant) the entity belongs to.
    pub tenant_id: Uuid,
    /// What happened; equals the routing key.
    pub kind: EventKind,
    /// The entity's id (the SCIM id for SCIM resources and team members).
    pub entity_id: String,
    /// The entity's version after the change; versions only grow.
    pub version: i64,
    /// When the change was committed.
    pub occurred_at: DateTime<Utc>,
    /// Kind-specific detail, e.g. the member ids added and removed for
    /// `scim.group.members_changed`. Absent for most kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl EventEnvelope {
    /// A new event with a fresh time-ordered id.
    pub fn new(
        tenant_id: Uuid,
        kind: EventKind,
        entity_id: impl Into<String>,
        version: i64,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            tenant_id,
            kind,
            entity_id: entity_id.into(),
            version,
            occurred_at,
            data: None,
        }
    }

    /// The same event with kind-specific data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// `data` of `scim.group.members_changed`: the delta, so consumers need not diff a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MembersChanged {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// `data` of `tenant.assignments_changed`: the members the change can affect are those
/// governed by one of `assignments` and those in one of `groups`; or everyone if `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AssignmentsChanged {
    #[serde(default)]
    pub assignments: Vec<Uuid>,
    #[serde(default)]
    pub groups: Vec<Uuid>,
    #[serde(default)]
    pub all: bool,
    /// What the admin did, for the members' history (e.g. "assignment 'Sales' edited").
    pub cause: String,
}
