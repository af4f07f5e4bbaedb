//! Who a member's manager is (DESIGN.md, "Hierarchy"): by Manager ID (the manager's SCIM id),
//! else by manager e-mail against members' primary e-mails (case-insensitive), else by manager
//! full name ("firstname lastname", case- and accent-insensitive). The first reference that
//! names exactly one member wins; several members behind a reference make it ambiguous;
//! nobody yet makes it pending. A link that would close a cycle (or point to the member
//! itself) is refused with the path.

use uuid::Uuid;

use crate::text::fold;

/// How a manager was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Id,
    Email,
    Name,
    /// Set by an admin where Entra ID sent no reference.
    Manual,
}

impl Via {
    /// The stored and shown form.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Id => "id",
            Via::Email => "email",
            Via::Name => "name",
            Via::Manual => "manual",
        }
    }
}

/// A member's references to its manager, as keys to look members up by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// The manager's SCIM id (Entra's, or an admin's when `manual`).
    pub id: Option<String>,
    /// Lower-cased e-mail.
    pub email: Option<String>,
    /// Folded "firstname lastname".
    pub name: Option<String>,
    /// The id was set by an admin.
    pub manual: bool,
}

impl References {
    /// The keys of raw references (blank ones are absent).
    pub fn new(id: Option<&str>, email: Option<&str>, full_name: Option<&str>, manual: bool) -> References {
        fn present(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        References {
            id: present(id).map(str::to_string),
            email: present(email).map(email_key),
            name: present(full_name).map(fold).filter(|n| !n.is_empty()),
            manual,
        }
    }

    /// Whether any reference was given.
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.email.is_none() && self.name.is_none()
    }
}

/// A primary e-mail as the lookup key.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A member's "firstname lastname" as the lookup key; `None` without both names.
pub fn name_key(given: Option<&str>, family: Option<&str>) -> Option<String> {
    match (given, family) {
        (Some(g), Some(f)) => Some(fold(&format!("{g} {f}"))).filter(|k| !k.is_empty()),
        _ => None,
    }
}

/// The members (possible managers) each reference names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    /// The member whose SCIM id is the id reference, if there is one.
    pub by_id: Option<Uuid>,
    pub by_email: Vec<Uuid>,
    pub by_name: Vec<Uuid>,
}

/// The outcome for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Resolved {
        manager: Uuid,
        via: Via,
    },
    /// Nobody matches yet; the detail says whom the member waits for.
    Pending {
        detail: String,
    },
    /// Several members match the first reference that matched anyone.
    Ambiguous {
        via: Via,
        candidates: Vec<Uuid>,
    },
    /// The link would close a cycle: `path` runs from the member through its would-be managers
    /// back to itself.
    Cycle {
        path: Vec<Uuid>,
    },
    /// No reference at all (or the member is not placed, with why).
    None {
        detail: Option<String>,
    },
}

impl Resolution {
    /// `resolved`, `pending`, `ambiguous`, `cycle` or `none`.
    pub fn status(&self) -> &'static str {
        match self {
            Resolution::Resolved { .. } => "resolved",
            Resolution::Pending { .. } => "pending",
            Resolution::Ambiguous { .. } => "ambiguous",
            Resolution::Cycle { .. } => "cycle",
            Resolution::None { .. } => "none",
        }
    }

    /// The manager linked, if any.
    pub fn manager(&self) -> Option<Uuid> {
        match self {
            Resolution::Resolved { manager, .. } => Some(*manager),
            _ => None,
        }
    }
}

/// Chooses among the matches, in the order id → e-mail → name. Cycles other than a
/// self-reference are checked by `cycle_through` once the chain above the choice is known.
pub fn choose(member: Uuid, refs: &References, matches: &Matches) -> Resolution {
    if refs.is_empty() {
        return Resolution::None { detail: None };
    }
    let mut ambiguous = None;
    let id_via = if refs.manual { Via::Manual } else { Via::Id };
    let tiers: [(Via, Vec<Uuid>); 3] = [
        (id_via, matches.by_id.into_iter().collect()),
        (Via::Email, matches.by_email.clone()),
        (Via::Name, matches.by_name.clone()),
    ];
    for (via, mut found) in tiers {
        found.sort();
        found.dedup();
        match found.as_slice() {
            [] => {}
            [only] if *only == member => return Resolution::Cycle { path: vec![member, member] },
            [only] => return Resolution::Resolved { manager: *only, via },
            _ => {
                ambiguous.get_or_insert(Resolution::Ambiguous { via, candidates: found });
            }
        }
    }
    if let Some(a) = ambiguous {
        return a;
    }
    let mut waiting = Vec::new();
    if let Some(id) = &refs.id {
        waiting.push(format!("a member with SCIM id {id}"));
    }
    if let Some(email) = &refs.email {
        waiting.push(format!("a member with e-mail {email}"));
    }
    if let Some(name) = &refs.name {
        waiting.push(format!("a member named '{name}'"));
    }
    Resolution::Pending { detail: format!("waiting for {}", waiting.join(", or ")) }
}

/// Whether linking `member` to `manager` closes a cycle, given the managers above `manager`
/// (its manager first). The path runs member → manager → … → member.
pub fn cycle_through(member: Uuid, manager: Uuid, above_manager: &[Uuid]) -> Option<Vec<Uuid>> {
    if manager == member {
        return Some(vec![member, member]);
    }
    let at = above_manager.iter().position(|m| *m == member)?;
    let mut path = vec![member, manager];
    path.extend_from_slice(&above_manager[..=at]);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn refs(i: Option<&str>, e: Option<&str>, n: Option<&str>) -> References {
        References::new(i, e, n, false)
    }

    #[test]
    fn id_wins_over_email_and_email_over_name() {
        let r = refs(Some("m"), Some("Boss@Contoso.com"), Some("Bo Ss"));
        let all = Matches { by_id: Some(id(1)), by_email: vec![id(2)], by_name: vec![id(3)] };
        assert_eq!(choose(id(9), &r, &all), Resolution::Resolved { manager: id(1), via: Via::Id });
        let no_id = Matches { by_id: None, ..all.clone() };
        assert_eq!(choose(id(9), &r, &no_id), Resolution::Resolved { manager: id(2), via: Via::Email });
        let only_name = Matches { by_name: vec![id(3)], ..Matches::default() };
        assert_eq!(choose(id(9), &r, &only_name), Resolution::Resolved { manager: id(3), via: Via::Name });
    }

    #[test]
    fn two_members_with_the_name_are_ambiguous_with_the_candidates() {
        let r = refs(None, None, Some("John Smith"));
        let m = Matches { by_name: vec![id(5), id(4), id(5)], ..Matches::default() };
        assert_eq!(choose(id(9), &r, &m), Resolution::Ambiguous { via: Via::Name, candidates: vec![id(4), id(5)] });
        assert_eq!(choose(id(9), &r, &m).status(), "ambiguous");
        // A later reference that names exactly one member still wins.
        let r = refs(None, Some("js@contoso.com"), Some("John Smith"));
        let m = Matches { by_email: vec![id(7), id(8)], by_name: vec![id(4)], ..Matches::default() };
        assert_eq!(choose(id(9), &r, &m), Resolution::Resolved { manager: id(4), via: Via::Name });
    }

    #[test]
    fn nobody_yet_is_pending_and_no_reference_is_none() {
        let r = refs(Some("abc"), Some("x@contoso.com"), None);
        let Resolution::Pending { detail } = choose(id(9), &r, &Matches::default()) else { panic!("pending") };
        assert!(detail.contains("SCIM id abc") && detail.contains("x@contoso.com"), "{detail}");
        assert_eq!(choose(id(9), &References::default(), &Matches::default()), Resolution::None { detail: None });
        assert!(References::new(Some("  "), Some(""), None, false).is_empty());
    }

    #[test]
    fn pending_then_resolved_when_the_manager_arrives() {
        let r = refs(Some("m-1"), None, None);
        assert_eq!(choose(id(9), &r, &Matches::default()).status(), "pending");
        let arrived = Matches { by_id: Some(id(1)), ..Matches::default() };
        assert_eq!(choose(id(9), &r, &arrived).manager(), Some(id(1)));
    }

    #[test]
    fn self_references_and_cycles_are_refused_with_the_path() {
        let r = refs(Some("me"), None, None);
        let me = Matches { by_id: Some(id(9)), ..Matches::default() };
        assert_eq!(choose(id(9), &r, &me), Resolution::Cycle { path: vec![id(9), id(9)] });
        // 9 → 1 → 2 → 9 would close a loop.
        assert_eq!(cycle_through(id(9), id(1), &[id(2), id(9), id(3)]), Some(vec![id(9), id(1), id(2), id(9)]));
        assert_eq!(cycle_through(id(9), id(1), &[id(2), id(3)]), None);
        assert_eq!(cycle_through(id(9), id(9), &[]), Some(vec![id(9), id(9)]));
    }

    #[test]
    fn keys_ignore_case_accents_and_spacing() {
        assert_eq!(name_key(Some("José"), Some("Álvarez")), Some("jose alvarez".into()));
        assert_eq!(References::new(None, None, Some(" JOSE  alvarez"), false).name.as_deref(), Some("jose alvarez"));
        assert_eq!(email_key(" Ann@Contoso.COM"), "ann@contoso.com");
        assert_eq!(name_key(Some("Ann"), None), None);
        assert_eq!(
            choose(
                id(9),
                &References::new(Some("x"), None, None, true),
                &Matches { by_id: Some(id(1)), ..Matches::default() }
            ),
            Resolution::Resolved { manager: id(1), via: Via::Manual }
        );
    }
}
