//! When to hold events back (`relay.burst_events_per_second`, 200 by default; 0 turns it off):
//! during a burst of SCIM writes (an Entra initial sync, a large group's memberships) the relay
//! defers publishing, so that the ingress, PostgreSQL and RabbitMQ do not share the box with
//! every worker at once. On two cores the workers, their PostgreSQL sessions and the broker took
//! about twice the ingress's share of the CPU during a sync. Holding the events back answered a
//! 100,000-user sync 3.2 times as fast (73 % of the box's commit rate against 19.5 %) and had
//! everyone provisioned sooner after Entra's first request (147 s against 189 s), 90 s after its
//! last (docs/performance.md, twelfth pass); an off default cost Entra's rate on every single
//! box for the benefit of none. Below the threshold (Entra's incremental cycles, a few changes
//! a second) nothing waits. Workers only ever act on an entity's latest state, so events
//! processed later cost no correctness; a row still waits no longer than `burst_max_defer_ms`,
//! burst or not.
//!
//! The intake counted is the ingress's own events (`scim.*`): the workers' events are
//! consequences of what the relay already published, and counting them would let the pipeline's
//! own catch-up keep it deferred.

use std::time::{Duration, Instant};

/// The window over which the intake is counted.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Whether a routing key is one of the ingress's events (a SCIM write).
pub fn is_scim_write(routing_key: &str) -> bool {
    routing_key.starts_with("scim.")
}

/// What changed in the relay's stance at an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The intake reached the threshold: events are held back from now on.
    Deferring { events_per_second: u64 },
    /// The intake stayed below it for the quiet period: everything is published again.
    Released,
}

/// The SCIM intake seen by the relay, in fixed windows of [`WINDOW`].
#[derive(Debug)]
pub struct Intake {
    /// Events per second that make a burst; 0: never defer.
    threshold: u64,
    /// How long the intake must stay below the threshold before the burst is over.
    quiet: Duration,
    /// The highest outbox id counted: each row is counted once, by whichever read sees it
    /// first (the publishing read or the sample of new rows).
    seen_max_id: i64,
    window_start: Instant,
    window_count: u64,
    /// When the intake was last at or above the threshold.
    last_busy: Option<Instant>,
    /// The intake measured then, events a second.
    busy_rate: u64,
    deferring: bool,
}

impl Intake {
    /// Counting starts after `max_id`: rows already waiting are a backlog, not a burst.
    pub fn new(threshold: u64, quiet: Duration, max_id: i64, now: Instant) -> Intake {
        Intake {
            threshold,
            quiet,
            seen_max_id: max_id,
            window_start: now,
            window_count: 0,
            last_busy: None,
            busy_rate: 0,
            deferring: false,
        }
    }

    /// The highest outbox id counted so far.
    pub fn seen_max_id(&self) -> i64 {
        self.seen_max_id
    }

    /// Counts the SCIM events among rows read in id order, skipping those already counted.
    pub fn observe<'a>(&mut self, rows: impl IntoIterator<Item = (i64, &'a str)>, now: Instant) -> Option<Turn> {
        let mut new_events = 0;
        let mut max_id = self.seen_max_id;
        for (id, routing_key) in rows {
            if id > self.seen_max_id {
                max_id = max_id.max(id);
                new_events += u64::from(is_scim_write(routing_key));
            }
        }
        self.count(new_events, max_id, now)
    }

    /// Adds `new_events` SCIM events seen up to outbox id `max_id`, and says whether the
    /// relay's stance turned.
    pub fn count(&mut self, new_events: u64, max_id: i64, now: Instant) -> Option<Turn> {
        if self.threshold == 0 {
            return None;
        }
        self.seen_max_id = self.seen_max_id.max(max_id);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            // A window that ended: its rate against its real length (the relay may have been
            // busy past its end), then a new one.
            let per_second = (self.window_count as f64 / elapsed.as_secs_f64()).round() as u64;
            if per_second >= self.threshold {
                self.last_busy = Some(now);
                self.busy_rate = per_second;
            }
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += new_events;
        if self.window_count >= self.threshold {
            // Reached within the window: no need to wait for its end (and at least this
            // many a second).
            self.last_busy = Some(now);
            self.busy_rate = self.window_count;
        }
        let busy = self.last_busy.is_some_and(|at| now.saturating_duration_since(at) < self.quiet);
        match (self.deferring, busy) {
            (false, true) => {
                self.deferring = true;
                Some(Turn::Deferring { events_per_second: self.busy_rate })
            }
            (true, false) => {
                self.deferring = false;
                Some(Turn::Released)
            }
            _ => None,
        }
    }

    /// Whether events are being held back.
    pub fn deferring(&self) -> bool {
        self.deferring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(2);

    fn ms(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_steady_trickle_below_the_threshold_never_defers() {
        let start = Instant::now();
        let mut intake = Intake::new(200, QUIET, 0, start);
        for tick in 1..=100u64 {
            // 150 events/s, in tenths of a second, for ten seconds.
            assert_eq!(intake.count(15, tick as i64 * 15, ms(start, tick * 100)), None);
        }
        assert!(!intake.deferring());
    }

    #[test]
    fn reaching_the_threshold_within_a_window_defers_at_once() {
        let start = Instant::now();
        let mut intake = Intake::new(200, QUIET, 0, start);
        assert_eq!(intake.count(150, 150, ms(start, 100)), None);
        assert!(matches!(intake.count(60, 210, ms(start, 200)), Some(Turn::Deferring { .. })));
        assert!(intake.deferring());
    }

    #[test]
    fn the_burst_ends_only_after_the_quiet_period() {
        let start = Instant::now();
        let mut intake = Intake::new(200, QUIET, 0, start);
        // 500 events a second for a second and a half, observed every 250 ms, then nothing.
        let mut max_id = 0;
        let mut released_at = None;
        for tick in 1..=40u64 {
            let new_events = if tick <= 6 { 125 } else { 0 };
            max_id += new_events as i64;
            if intake.count(new_events, max_id, ms(start, tick * 250)) == Some(Turn::Released) {
                released_at = Some(tick * 250);
            }
            if tick == 2 {
                assert!(intake.deferring(), "as soon as the window holds 200");
            }
        }
        let released_at = released_at.expect("released once quiet");
        // The last events came at 1.5 s; their window ends by 2.5 s; then 2 s of quiet.
        assert!((3_500..=4_500).contains(&released_at), "released at {released_at} ms");
        assert!(!intake.deferring());
    }

    #[test]
    fn a_window_read_late_is_judged_by_its_real_length() {
        let start = Instant::now();
        let mut intake = Intake::new(200, QUIET, 0, start);
        // 190 events in the first window, seen only 3 s later: 63 a second, no burst.
        intake.count(190, 190, ms(start, 900));
        assert_eq!(intake.count(0, 190, ms(start, 3_000)), None);
        assert!(!intake.deferring());
    }

    #[test]
    fn rows_are_counted_once_and_only_the_ingress_s_events() {
        let start = Instant::now();
        let mut intake = Intake::new(3, QUIET, 10, start);
        let rows = [(9, "scim.user.upserted"), (11, "member.imported"), (12, "scim.user.upserted")];
        assert_eq!(intake.observe(rows, ms(start, 10)), None, "one new SCIM event");
        assert_eq!(intake.seen_max_id(), 12);
        assert_eq!(intake.observe(rows, ms(start, 20)), None, "the same rows again count nothing");
        let more = [(13, "scim.group.members_changed"), (14, "scim.user.deleted")];
        assert!(matches!(intake.observe(more, ms(start, 30)), Some(Turn::Deferring { .. })));
    }

    #[test]
    fn a_threshold_of_zero_never_defers() {
        let start = Instant::now();
        let mut intake = Intake::new(0, QUIET, 0, start);
        assert_eq!(intake.count(1_000_000, 1_000_000, ms(start, 10)), None);
        assert!(!intake.deferring());
    }
}
