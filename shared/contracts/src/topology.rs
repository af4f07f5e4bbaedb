//! Exchange and queue names, each carrying the configured prefix so that tests (and several
//! deployments on one broker) stay apart.

/// A worker's queue: its base name and the routing-key patterns it binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerQueue {
    /// Name without prefix, e.g. `normalizer`.
    pub name: &'static str,
    /// Topic patterns bound to the events exchange.
    pub bindings: &'static [&'static str],
}

/// The normalizer: SCIM users become team members.
pub const NORMALIZER: WorkerQueue =
    WorkerQueue { name: "normalizer", bindings: &["scim.user.*", "tenant.settings_changed"] };
/// The hierarchy worker: member changes become manager links.
pub const HIERARCHY: WorkerQueue = WorkerQueue {
    name: "hierarchy",
    bindings: &["member.imported", "member.updated", "member.deactivated", "member.reactivated", "member.skipped"],
};
/// The assignments worker: groups and members become seats, workspaces, data capture.
pub const ASSIGNMENTS: WorkerQueue = WorkerQueue {
    name: "assignments",
    bindings: &[
        "scim.group.*",
        "member.imported",
        "member.deactivated",
        "member.reactivated",
        "member.skipped",
        "tenant.assignments_changed",
    ],
};
/// The notifier: new members placed under a manager become e-mails to that manager (whether
/// the team is recorded is read when the e-mail is due, so it needs no assignment event).
pub const NOTIFIER: WorkerQueue = WorkerQueue { name: "notifier", bindings: &["member.placed"] };

/// Every worker queue of the system, declared by `musterctl up` and by the relay so that no
/// event published before a worker first starts is unroutable.
pub const WORKER_QUEUES: [WorkerQueue; 4] = [NORMALIZER, HIERARCHY, ASSIGNMENTS, NOTIFIER];

/// Whether a worker of Muster consumes events published with `routing_key`. The relay
/// publishes those as `mandatory`, so that one no queue takes (a queue deleted by hand, a
/// worker's binding lost) comes back and is retried rather than lost. The others
/// (`member.assignment_applied`) are for integrations: published to the exchange for whoever
/// binds them, and dropped by the broker when nobody does — no queue of Muster's holds them.
pub fn consumed_inside(routing_key: &str) -> bool {
    WORKER_QUEUES.iter().any(|q| q.bindings.iter().any(|b| topic_matches(b, routing_key)))
}

/// AMQP topic matching: `*` is one word, `#` zero or more. Walks the words in place (the relay
/// asks this for every message it publishes).
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(mut p: std::str::Split<'_, char>, mut k: std::str::Split<'_, char>) -> bool {
        loop {
            match p.next() {
                None => return k.next().is_none(),
                // The rest of the pattern against every remainder of the key, the empty one too.
                Some("#") => loop {
                    if go(p.clone(), k.clone()) {
                        return true;
                    }
                    if k.next().is_none() {
                        return false;
                    }
                },
                Some("*") => {
                    if k.next().is_none() {
                        return false;
                    }
                }
                Some(word) => {
                    if k.next() != Some(word) {
                        return false;
                    }
                }
            }
        }
    }
    go(pattern.split('.'), key.split('.'))
}

/// Names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (may be empty; a non-empty prefix should end with a separator,
    /// e.g. `test-1234.`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Names { prefix: prefix.into() }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic exchange every event is published to.
    pub fn events_exchange(&self) -> String {
        format!("{}muster.events", self.prefix)
    }

    /// The exchange dead-lettered messages go through.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}muster.dlx", self.prefix)
    }

    /// A worker's queue.
    pub fn queue(&self, worker: &WorkerQueue) -> String {
        format!("{}muster.{}", self.prefix, worker.name)
    }

    /// A worker queue's dead-letter queue.
    pub fn dead_letter_queue(&self, worker: &WorkerQueue) -> String {
        format!("{}.dlq", self.queue(worker))
    }

    /// A worker queue's delay queue for retries after `delay_ms`: messages wait there for
    /// their TTL, then dead-letter back into the worker's queue. Named by the delay, so a
    /// changed retry schedule declares new queues instead of clashing with old arguments.
    pub fn retry_queue(&self, worker: &WorkerQueue, delay_ms: u64) -> String {
        format!("{}.retry.{delay_ms}ms", self.queue(worker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_but_the_integration_one_reaches_a_worker_queue() {
        for kind in crate::EventKind::ALL {
            let key = kind.routing_key();
            let outward = kind == crate::EventKind::MemberAssignmentApplied;
            assert_eq!(consumed_inside(key), !outward, "{key}");
        }
        assert!(
            topic_matches("scim.user.*", "scim.user.upserted") && !topic_matches("scim.user.*", "scim.group.upserted")
        );
        assert!(topic_matches("member.#", "member.placed") && topic_matches("#", "a.b"));
        assert!(!topic_matches("scim.*", "scim.user.upserted") && topic_matches("scim.#", "scim"));
        assert!(topic_matches("a.#.z", "a.z") && topic_matches("a.#.z", "a.b.c.z") && !topic_matches("a.#.z", "a.b"));
        assert!(
            !topic_matches("member.placed", "member.placed.x") && !topic_matches("member.placed.x", "member.placed")
        );
    }

    #[test]
    fn names_carry_the_prefix() {
        let names = Names::new("t1.");
        assert_eq!(names.events_exchange(), "t1.muster.events");
        assert_eq!(names.queue(&NORMALIZER), "t1.muster.normalizer");
        assert_eq!(names.dead_letter_queue(&NORMALIZER), "t1.muster.normalizer.dlq");
        assert_eq!(names.retry_queue(&NORMALIZER, 5000), "t1.muster.normalizer.retry.5000ms");
    }
}
