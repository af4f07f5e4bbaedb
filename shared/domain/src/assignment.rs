//! Assignments (DESIGN.md, "Assignments", "Manager settings"): which assignment governs a
//! member, what settings the member should have under its update mode, which of them a missing
//! seat keeps off, who gets a seat of limited capacity, and who may edit what.
//!
//! Pure rules; the assignments worker (issue 6) loads the state and stores the outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use uuid::Uuid;

/// How an assignment governs its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Applied when a member lands in the assignment; later edits of the assignment or of the
    /// member's groups do not overwrite the member's settings, which admins may edit.
    Manual,
    /// Entra governs: the member's settings are always the assignment's; manual edits refused.
    Automatic,
}

impl UpdateMode {
    /// The stored and shown form: `manual` or `automatic`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateMode::Manual => "manual",
            UpdateMode::Automatic => "automatic",
        }
    }

    /// The mode a stored or written form names.
    pub fn parse(s: &str) -> Option<UpdateMode> {
        match s {
            "manual" => Some(UpdateMode::Manual),
            "automatic" => Some(UpdateMode::Automatic),
            _ => None,
        }
    }
}

/// Seats, a permission profile per workspace, data capture per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub seats: BTreeSet<String>,
    /// Workspace → permission profile.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// Data-capture kind (e.g. `web_conferences`, `telephony`, `email`) → on.
    #[serde(default)]
    pub capture: BTreeMap<String, bool>,
}

impl Settings {
    /// Whether some data capture is on.
    pub fn records(&self) -> bool {
        self.capture.values().any(|on| *on)
    }
}

/// An edit of the settings a member holds: seats replaced if given; permissions set per
/// workspace (`None` removes the workspace); capture set per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsEdit {
    #[serde(default)]
    pub seats: Option<BTreeSet<String>>,
    #[serde(default)]
    pub permissions: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub capture: BTreeMap<String, bool>,
}

impl SettingsEdit {
    /// `base` with the edit applied.
    pub fn apply(&self, base: &Settings) -> Settings {
        let mut out = base.clone();
        if let Some(seats) = &self.seats {
            out.seats = seats.clone();
        }
        for (workspace, profile) in &self.permissions {
            match profile {
                Some(profile) => out.permissions.insert(workspace.clone(), profile.clone()),
                None => out.permissions.remove(workspace),
            };
        }
        out.capture.extend(self.capture.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }

    /// What the edit names, as settings (to check against the catalog).
    pub fn named(&self) -> Settings {
        Settings {
            seats: self.seats.clone().unwrap_or_default(),
            permissions: self.permissions.iter().filter_map(|(w, p)| p.clone().map(|p| (w.clone(), p))).collect(),
            capture: self.capture.clone(),
        }
    }

    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.seats.is_none() && self.permissions.is_empty() && self.capture.is_empty()
    }
}

/// An assignment as the admin configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub id: Uuid,
    pub name: String,
    /// The SCIM groups whose members it covers (none for the default assignment).
    pub groups: Vec<Uuid>,
    pub settings: Settings,
    pub mode: UpdateMode,
    /// Explicit order: the lowest position a member's groups match wins.
    pub position: i32,
    /// The default assignment covers members in no assigned group; it always exists.
    pub is_default: bool,
}

/// Which assignment governs a member, and through which of its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governing<'a> {
    pub assignment: &'a Assignment,
    /// The member's group that matched; `None` under the default assignment.
    pub via_group: Option<Uuid>,
}

/// The assignment of highest priority among those whose groups the member is in, else the
/// default one. `None` only if the company has no default assignment (a broken catalog).
pub fn governing<'a>(assignments: &'a [Assignment], member_groups: &[Uuid]) -> Option<Governing<'a>> {
    let matched = assignments
        .iter()
        .filter(|a| !a.is_default)
        .filter_map(|a| a.groups.iter().find(|g| member_groups.contains(g)).map(|g| (a, *g)))
        .min_by_key(|(a, _)| (a.position, a.id));
    match matched {
        Some((assignment, group)) => Some(Governing { assignment, via_group: Some(group) }),
        None => assignments.iter().find(|a| a.is_default).map(|assignment| Governing { assignment, via_group: None }),
    }
}

/// What a member held before this recomputation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The assignment the member was last governed by.
    pub assignment: Uuid,
    /// The member's settings (as applied or as edited by an admin).
    pub settings: Settings,
}

/// The settings a member should have: under `automatic`, the assignment's; under `manual`,
/// the assignment's when the member lands in it, else what the member already holds.
pub fn desired(governing: &Assignment, held: Option<&Held>) -> Settings {
    match (governing.mode, held) {
        (UpdateMode::Manual, Some(h)) if h.assignment == governing.id => h.settings.clone(),
        _ => governing.settings.clone(),
    }
}

/// Which seat each setting needs, from the company's catalogs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatNeeds {
    /// Data-capture kind → seat it needs.
    pub capture: BTreeMap<String, String>,
    /// (workspace, profile) → seat it needs.
    pub profiles: BTreeMap<(String, String), String>,
}

/// A setting kept off until the member has a seat.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PendingSeat {
    /// `capture:<kind>` or `permission:<workspace>`.
    pub setting: String,
    pub seat: String,
}

/// What is actually on for a member, and what waits for a seat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub settings: Settings,
    pub pending: Vec<PendingSeat>,
}

/// `desired` with every setting whose seat the member was not granted kept off (capture off,
/// workspace without its profile) and listed as pending that seat.
pub fn effective(desired: &Settings, granted: &BTreeSet<String>, needs: &SeatNeeds) -> Effective {
    let mut settings = Settings { seats: granted.clone(), permissions: BTreeMap::new(), capture: BTreeMap::new() };
    let mut pending = Vec::new();
    for (kind, on) in &desired.capture {
        match needs.capture.get(kind) {
            Some(seat) if *on && !granted.contains(seat) => {
                settings.capture.insert(kind.clone(), false);
                pending.push(PendingSeat { setting: format!("capture:{kind}"), seat: seat.clone() });
            }
            _ => {
                settings.capture.insert(kind.clone(), *on);
            }
        }
    }
    for (workspace, profile) in &desired.permissions {
        match needs.profiles.get(&(workspace.clone(), profile.clone())) {
            Some(seat) if !granted.contains(seat) => {
                pending.push(PendingSeat { setting: format!("permission:{workspace}"), seat: seat.clone() })
            }
            _ => {
                settings.permissions.insert(workspace.clone(), profile.clone());
            }
        }
    }
    pending.sort();
    Effective { settings, pending }
}

/// Who holds a seat of limited capacity: requests in order (when asked, then member id); the
/// first `capacity` are granted, the rest wait with their place in line (1 = next).
pub fn allocate(capacity: Option<u32>, requests: &[(Uuid, i64)]) -> (Vec<Uuid>, Vec<(Uuid, usize)>) {
    let mut ordered: Vec<(Uuid, i64)> = requests.to_vec();
    ordered.sort_by_key(|(member, at)| (*at, *member));
    let cap = capacity.map_or(usize::MAX, |c| c as usize);
    let granted = ordered.iter().take(cap).map(|(m, _)| *m).collect();
    let waiting = ordered.iter().skip(cap).enumerate().map(|(i, (m, _))| (*m, i + 1)).collect();
    (granted, waiting)
}

/// Why an edit of a member's assignment settings was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditRefused {
    /// The member's assignment is automatic: Entra governs.
    Automatic { assignment: String },
    /// Managers may not toggle data capture in this company.
    ManagersMayNot,
    /// Only a direct manager may toggle a report's data capture.
    NotDirectManager,
}

impl fmt::Display for EditRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditRefused::Automatic { assignment } => write!(
                f,
                "the member's settings are governed by the assignment '{assignment}' (automatic updates): change \
                 the assignment or the member's groups in Entra ID"
            ),
            EditRefused::ManagersMayNot => {
                f.write_str("the company does not let managers turn data capture on or off for their team")
            }
            EditRefused::NotDirectManager => f.write_str("only the member's direct manager may change it"),
        }
    }
}

/// Whether an admin may edit a member's settings under `governing`.
pub fn admin_may_edit(governing: &Assignment) -> Result<(), EditRefused> {
    match governing.mode {
        UpdateMode::Manual => Ok(()),
        UpdateMode::Automatic => Err(EditRefused::Automatic { assignment: governing.name.clone() }),
    }
}

/// Whether `manager` may toggle data capture for `report` (whose manager is
/// `report_manager`), under the company setting and the report's assignment.
pub fn manager_may_toggle(
    company_allows: bool,
    manager: Uuid,
    report_manager: Option<Uuid>,
    governing: &Assignment,
) -> Result<(), EditRefused> {
    if !company_allows {
        return Err(EditRefused::ManagersMayNot);
    }
    if report_manager != Some(manager) {
        return Err(EditRefused::NotDirectManager);
    }
    admin_may_edit(governing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn settings(seats: &[&str], capture: &[(&str, bool)], permissions: &[(&str, &str)]) -> Settings {
        Settings {
            seats: seats.iter().map(|s| s.to_string()).collect(),
            capture: capture.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            permissions: permissions.iter().map(|(w, p)| (w.to_string(), p.to_string())).collect(),
        }
    }

    fn assignment(n: u128, position: i32, groups: &[u128], mode: UpdateMode) -> Assignment {
        Assignment {
            id: id(n),
            name: format!("a{n}"),
            groups: groups.iter().map(|g| id(*g)).collect(),
            settings: settings(&["recorder"], &[("web_conferences", true)], &[]),
            mode,
            position,
            is_default: false,
        }
    }

    fn default_assignment() -> Assignment {
        Assignment {
            id: id(0),
            name: "Default".into(),
            groups: vec![],
            settings: Settings::default(),
            mode: UpdateMode::Automatic,
            position: i32::MAX,
            is_default: true,
        }
    }

    #[test]
    fn the_first_matching_assignment_in_order_wins_else_the_default() {
        let all = vec![
            default_assignment(),
            assignment(1, 2, &[100, 101], UpdateMode::Automatic),
            assignment(2, 1, &[101], UpdateMode::Manual),
        ];
        let g = governing(&all, &[id(100), id(101)]).unwrap();
        assert_eq!((g.assignment.id, g.via_group), (id(2), Some(id(101))));
        let g = governing(&all, &[id(100)]).unwrap();
        assert_eq!((g.assignment.id, g.via_group), (id(1), Some(id(100))));
        let g = governing(&all, &[id(999)]).unwrap();
        assert!(g.assignment.is_default && g.via_group.is_none());
        assert_eq!(g.assignment.settings, Settings::default(), "no seats, no capture, no permissions");
        assert!(governing(&all[1..], &[]).is_none());
    }

    #[test]
    fn automatic_always_follows_the_assignment_and_manual_only_on_landing() {
        let auto = assignment(1, 1, &[100], UpdateMode::Automatic);
        let manual = assignment(2, 2, &[101], UpdateMode::Manual);
        let edited = settings(&[], &[("web_conferences", false)], &[]);
        let held = |a: &Assignment| Held { assignment: a.id, settings: edited.clone() };
        assert_eq!(desired(&auto, Some(&held(&auto))), auto.settings, "Entra governs");
        assert_eq!(desired(&manual, Some(&held(&manual))), edited, "kept once landed");
        assert_eq!(desired(&manual, Some(&held(&auto))), manual.settings, "moved in: applied on landing");
        assert_eq!(desired(&manual, None), manual.settings, "new member: applied");
    }

    #[test]
    fn an_edit_replaces_seats_and_sets_permissions_and_capture_per_key() {
        let base = settings(&["recorder"], &[("web_conferences", true), ("email", true)], &[("deals", "editor")]);
        let edit = SettingsEdit {
            seats: Some(["analyst".to_string()].into()),
            permissions: [("deals".to_string(), None), ("hr".to_string(), Some("reader".to_string()))].into(),
            capture: [("email".to_string(), false)].into(),
        };
        let edited = edit.apply(&base);
        assert_eq!(edited, settings(&["analyst"], &[("web_conferences", true), ("email", false)], &[("hr", "reader")]));
        assert_eq!(SettingsEdit::default().apply(&base), base);
        assert!(SettingsEdit::default().is_empty() && !edit.is_empty());
        assert_eq!(edit.named().permissions.len(), 1, "a removal names no profile");
    }

    #[test]
    fn a_setting_whose_seat_is_missing_stays_off_and_pending() {
        let needs = SeatNeeds {
            capture: [("web_conferences".to_string(), "recorder".to_string())].into(),
            profiles: [(("deals".to_string(), "editor".to_string()), "analyst".to_string())].into(),
        };
        let want = settings(&["recorder"], &[("web_conferences", true), ("email", true)], &[("deals", "editor")]);
        let none = effective(&want, &BTreeSet::new(), &needs);
        assert_eq!(none.settings.capture.get("web_conferences"), Some(&false));
        assert_eq!(none.settings.capture.get("email"), Some(&true), "needs no seat");
        assert!(none.settings.permissions.is_empty());
        assert_eq!(
            none.pending,
            vec![
                PendingSeat { setting: "capture:web_conferences".into(), seat: "recorder".into() },
                PendingSeat { setting: "permission:deals".into(), seat: "analyst".into() },
            ]
        );
        let granted: BTreeSet<String> = ["recorder".to_string(), "analyst".to_string()].into();
        let all = effective(&want, &granted, &needs);
        assert!(all.pending.is_empty());
        assert_eq!(all.settings.capture.get("web_conferences"), Some(&true));
        assert_eq!(all.settings.permissions.get("deals").map(String::as_str), Some("editor"));
    }

    #[test]
    fn capacity_is_never_exceeded_and_the_line_is_visible() {
        let requests = [(id(3), 10), (id(1), 20), (id(2), 10), (id(4), 5)];
        let (granted, waiting) = allocate(Some(2), &requests);
        assert_eq!(granted, vec![id(4), id(2)]);
        assert_eq!(waiting, vec![(id(3), 1), (id(1), 2)]);
        let (granted, waiting) = allocate(None, &requests);
        assert_eq!((granted.len(), waiting.len()), (4, 0));
        assert_eq!(allocate(Some(0), &requests).0, Vec::<Uuid>::new());
    }

    #[test]
    fn edits_are_refused_under_automatic_and_manager_toggles_need_both_permissions() {
        let auto = assignment(1, 1, &[], UpdateMode::Automatic);
        let manual = assignment(2, 2, &[], UpdateMode::Manual);
        let refused = admin_may_edit(&auto).unwrap_err();
        assert!(refused.to_string().contains("'a1'") && refused.to_string().contains("automatic"));
        assert_eq!(admin_may_edit(&manual), Ok(()));
        let (boss, other) = (id(7), id(8));
        assert_eq!(manager_may_toggle(true, boss, Some(boss), &manual), Ok(()));
        assert_eq!(manager_may_toggle(false, boss, Some(boss), &manual), Err(EditRefused::ManagersMayNot));
        assert_eq!(manager_may_toggle(true, other, Some(boss), &manual), Err(EditRefused::NotDirectManager));
        assert!(matches!(manager_may_toggle(true, boss, Some(boss), &auto), Err(EditRefused::Automatic { .. })));
    }
}

/// The company's catalogs: seat types (with optional purchased capacity), data-capture kinds,
/// workspaces with their permission profiles, and the seat each capture kind or profile needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub seat_types: Vec<SeatType>,
    pub capture_kinds: Vec<CaptureKind>,
    pub workspaces: Vec<Workspace>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatType {
    pub key: String,
    pub name: String,
    /// Seats purchased; `None`: unlimited.
    #[serde(default)]
    pub capacity: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureKind {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub requires_seat: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub key: String,
    pub name: String,
    pub profiles: Vec<PermissionProfile>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionProfile {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub requires_seat: Option<String>,
}

fn duplicates<'a>(what: &str, keys: impl Iterator<Item = &'a str>, problems: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for key in keys {
        if key.trim().is_empty() {
            problems.push(format!("a {what} has an empty key"));
        } else if !seen.insert(key) {
            problems.push(format!("{what} '{key}' is listed twice"));
        }
    }
}

impl Catalog {
    /// Every problem with the catalog itself: empty or repeated keys, unknown seats required.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        duplicates("seat type", self.seat_types.iter().map(|s| s.key.as_str()), &mut problems);
        duplicates("capture kind", self.capture_kinds.iter().map(|c| c.key.as_str()), &mut problems);
        duplicates("workspace", self.workspaces.iter().map(|w| w.key.as_str()), &mut problems);
        let seats: BTreeSet<&str> = self.seat_types.iter().map(|s| s.key.as_str()).collect();
        let mut require = |what: String, seat: &Option<String>| {
            if let Some(seat) = seat
                && !seats.contains(seat.as_str())
            {
                problems.push(format!("{what} requires the unknown seat type '{seat}'"));
            }
        };
        for kind in &self.capture_kinds {
            require(format!("capture kind '{}'", kind.key), &kind.requires_seat);
        }
        for workspace in &self.workspaces {
            for profile in &workspace.profiles {
                require(format!("profile '{}' of workspace '{}'", profile.key, workspace.key), &profile.requires_seat);
            }
        }
        for workspace in &self.workspaces {
            duplicates(
                &format!("profile of workspace '{}'", workspace.key),
                workspace.profiles.iter().map(|p| p.key.as_str()),
                &mut problems,
            );
        }
        problems
    }

    /// Every problem with `settings` against this catalog: unknown seats, capture kinds,
    /// workspaces or profiles.
    pub fn problems_with(&self, settings: &Settings) -> Vec<String> {
        let mut problems = Vec::new();
        for seat in &settings.seats {
            if !self.seat_types.iter().any(|s| &s.key == seat) {
                problems.push(format!("unknown seat type '{seat}'"));
            }
        }
        for kind in settings.capture.keys() {
            if !self.capture_kinds.iter().any(|c| &c.key == kind) {
                problems.push(format!("unknown data-capture kind '{kind}'"));
            }
        }
        for (workspace, profile) in &settings.permissions {
            match self.workspaces.iter().find(|w| &w.key == workspace) {
                None => problems.push(format!("unknown workspace '{workspace}'")),
                Some(w) if !w.profiles.iter().any(|p| &p.key == profile) => {
                    problems.push(format!("workspace '{workspace}' has no permission profile '{profile}'"))
                }
                Some(_) => {}
            }
        }
        problems
    }

    /// Which seat each setting needs.
    pub fn seat_needs(&self) -> SeatNeeds {
        SeatNeeds {
            capture: self
                .capture_kinds
                .iter()
                .filter_map(|c| c.requires_seat.clone().map(|s| (c.key.clone(), s)))
                .collect(),
            profiles: self
                .workspaces
                .iter()
                .flat_map(|w| {
                    w.profiles
                        .iter()
                        .filter_map(|p| p.requires_seat.clone().map(|s| ((w.key.clone(), p.key.clone()), s)))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod catalog_tests {
    use super::*;

    fn catalog() -> Catalog {
        serde_json::from_value(serde_json::json!({
            "seat_types": [{"key": "recorder", "name": "Recorder", "capacity": 10}, {"key": "viewer", "name": "Viewer"}],
            "capture_kinds": [{"key": "web_conferences", "name": "Web", "requires_seat": "recorder"},
                              {"key": "email", "name": "E-mail"}],
            "workspaces": [{"key": "sales", "name": "Sales", "profiles": [
                {"key": "editor", "name": "Editor", "requires_seat": "viewer"}, {"key": "reader", "name": "Reader"}]}]
        }))
        .unwrap()
    }

    #[test]
    fn a_consistent_catalog_has_no_problems_and_gives_the_seat_needs() {
        let c = catalog();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let needs = c.seat_needs();
        assert_eq!(needs.capture.get("web_conferences").map(String::as_str), Some("recorder"));
        assert_eq!(needs.profiles.get(&("sales".into(), "editor".into())).map(String::as_str), Some("viewer"));
        assert!(!needs.capture.contains_key("email"));
    }

    #[test]
    fn repeated_keys_and_unknown_seats_are_reported() {
        let mut c = catalog();
        c.seat_types.push(SeatType { key: "viewer".into(), name: "Again".into(), capacity: None });
        c.capture_kinds[1].requires_seat = Some("ghost".into());
        let problems = c.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("'viewer' is listed twice")));
        assert!(problems.iter().any(|p| p.contains("unknown seat type 'ghost'")));
        assert!(serde_json::from_value::<Catalog>(serde_json::json!({"seat_types": []})).is_err());
    }

    #[test]
    fn settings_must_name_what_the_catalog_has() {
        let c = catalog();
        let ok = Settings {
            seats: ["recorder".to_string()].into(),
            capture: [("email".to_string(), true)].into(),
            permissions: [("sales".to_string(), "reader".to_string())].into(),
        };
        assert!(c.problems_with(&ok).is_empty());
        let bad = Settings {
            seats: ["pilot".to_string()].into(),
            capture: [("fax".to_string(), true)].into(),
            permissions: [("sales".to_string(), "owner".to_string()), ("hr".to_string(), "x".to_string())].into(),
        };
        assert_eq!(c.problems_with(&bad).len(), 4, "{:?}", c.problems_with(&bad));
    }
}
