//! Each event fixture round-trips: a changed fixture is a contract change.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use muster_contracts::events::MembersChanged;
use muster_contracts::{EventEnvelope, EventKind};

fn round_trip(name: &str) -> EventEnvelope {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let envelope: EventEnvelope = serde_json::from_value(fixture.clone()).unwrap();
    assert_eq!(serde_json::to_value(&envelope).unwrap(), fixture, "{name} does not round-trip");
    assert_eq!(envelope.kind.routing_key(), name);
    envelope
}

#[test]
fn user_upserted_round_trips() {
    let e = round_trip("scim.user.upserted");
    assert_eq!(e.kind, EventKind::ScimUserUpserted);
    assert_eq!(e.version, 3);
    assert!(e.data.is_none());
}

#[test]
fn members_changed_carries_the_delta() {
    let e = round_trip("scim.group.members_changed");
    let delta: MembersChanged = serde_json::from_value(e.data.unwrap()).unwrap();
    assert_eq!(delta.added, vec!["2819c223-7f76-453a-919d-413861904646"]);
    assert_eq!(delta.removed.len(), 1);
}

#[test]
fn every_kind_serializes_as_its_routing_key() {
    for kind in EventKind::ALL {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.routing_key());
        assert_eq!(EventKind::from_routing_key(kind.routing_key()), Some(kind));
    }
}
