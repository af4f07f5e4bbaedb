//! Where the relay's reads of the outbox start. Published rows are deleted, and until a vacuum
//! removes them every read from the lowest id walks past their index entries: 9.1 ms a read on
//! average through the drain of a held 100,000-user sync, 4.4 ms reading from the floor
//! (docs/performance.md, twelfth pass). The floor is the id at or below which every row is
//! published or will never exist, so reads start past it and keep outbox order.
//!
//! Ids are taken at insert but become visible at commit, so a row below the highest id read
//! can still appear: its transaction was running when that id was read. Every id at or below
//! `high` (the highest id a read has returned) was taken before that read, by a transaction
//! that had already committed or was running at the read's snapshot — outbox rows are always
//! written by a transaction that already holds an xid (`muster_infra::outbox` makes sure), and
//! the outbox's id sequence hands ids out in order (no cache). Once every transaction running
//! at that snapshot has ended (a later snapshot's `xmin` has passed the earlier one's `xmax`),
//! each of those ids is visible or gone for good, and a read from the old floor returns the
//! lowest pending ones: the floor can rise to just below them. It never rises past a row in
//! flight or waiting to be retried, nor past a read's upper bound.
//!
//! A transaction left open anywhere in the cluster keeps `xmin` back and the floor where it
//! is: reads are then as slow as without it, never wrong.

use std::collections::VecDeque;

/// Reads remembered while their snapshots' transactions may still be running; older ones are
/// merged into newer ones beyond this (their floor then rises a little later).
const REMEMBERED_READS: usize = 256;

/// What one read of the outbox saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Its snapshot: every xid below `xmin` had ended; none from `xmax` on had started.
    pub xmin: u64,
    pub xmax: u64,
    /// The lowest and highest ids it returned.
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Its upper bound on ids (while events are held back), if any.
    pub through: Option<i64>,
    /// The lowest id still pending that it could not return: in flight, or waiting for a retry.
    pub held: Option<i64>,
}

/// The floor and the reads it waits on.
#[derive(Debug, Default)]
pub struct Floor {
    at: i64,
    /// The highest id returned by a read whose snapshot's transactions have all ended: every
    /// id up to it is visible or gone.
    settled: i64,
    /// The highest id any read has returned.
    high: i64,
    /// (`xmax` of a read's snapshot, `high` after it), oldest first.
    waiting: VecDeque<(u64, i64)>,
}

impl Floor {
    /// Reads start past this id.
    pub fn at(&self) -> i64 {
        self.at
    }

    /// Takes in a read made from [`Floor::at`]; the floor may rise.
    pub fn observe(&mut self, read: Read) {
        while let Some(&(xmax, high)) = self.waiting.front() {
            if xmax > read.xmin {
                break;
            }
            self.settled = high;
            self.waiting.pop_front();
        }
        let limits = [read.first.map(|id| id - 1), read.through, read.held.map(|id| id - 1)];
        let candidate = limits.into_iter().flatten().fold(self.settled, i64::min);
        self.at = self.at.max(candidate);
        if let Some(last) = read.last
            && last > self.high
        {
            self.high = last;
            if self.waiting.len() >= REMEMBERED_READS {
                self.waiting.pop_front();
            }
            self.waiting.push_back((read.xmax, self.high));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(xmin: u64, xmax: u64, ids: &[i64]) -> Read {
        Read { xmin, xmax, first: ids.first().copied(), last: ids.last().copied(), through: None, held: None }
    }

    #[test]
    fn the_floor_rises_only_once_the_transactions_running_at_a_read_have_ended() {
        let mut floor = Floor::default();
        // Ids 1-3 read while xid 100 (which may hold a lower id) still runs.
        floor.observe(read(100, 105, &[1, 2, 3]));
        assert_eq!(floor.at(), 0);
        floor.observe(read(100, 106, &[]));
        assert_eq!(floor.at(), 0, "xid 100 still runs");
        // Everything below 105 has ended: 1-3 were the lowest, and nothing else appeared.
        floor.observe(read(105, 107, &[]));
        assert_eq!(floor.at(), 3);
    }

    #[test]
    fn a_row_that_became_visible_late_keeps_the_floor_below_it() {
        let mut floor = Floor::default();
        floor.observe(read(100, 105, &[1, 3, 4]));
        // Id 2's transaction committed after the first read: this read, from the floor,
        // returns it first.
        floor.observe(read(105, 106, &[2]));
        assert_eq!(floor.at(), 1);
        floor.observe(read(106, 107, &[]));
        assert_eq!(floor.at(), 4, "2 was read by the second read, which covered everything up to 4");
    }

    #[test]
    fn rows_in_flight_or_waiting_for_a_retry_and_a_reads_bound_hold_the_floor() {
        let mut floor = Floor::default();
        floor.observe(read(10, 11, &[1, 2, 3, 4, 5, 6]));
        floor.observe(Read { held: Some(3), ..read(11, 12, &[]) });
        assert_eq!(floor.at(), 2, "3 is in flight or waits for a retry");
        floor.observe(read(11, 12, &[7, 8, 9]));
        floor.observe(Read { through: Some(8), ..read(12, 13, &[]) });
        assert_eq!(floor.at(), 8, "nothing past the read's bound was looked at");
    }

    #[test]
    fn a_transaction_left_open_keeps_the_floor_down_and_the_reads_remembered_stay_bounded() {
        let mut floor = Floor::default();
        for id in 1..=1_000 {
            floor.observe(read(50, 100 + id as u64, &[id]));
        }
        assert_eq!(floor.at(), 0);
        assert_eq!(floor.waiting.len(), REMEMBERED_READS);
        floor.observe(read(2_000, 2_001, &[]));
        assert_eq!(floor.at(), 1_000);
        assert!(floor.waiting.is_empty());
    }
}
