//! Acknowledgements of one consume channel, coalesced: a delivery handled successfully is not
//! acked on its own; the ack task acks, with one `basic.ack multiple`, every handled delivery
//! below the lowest one still in hand. A batch of a company's deliveries, which all finish
//! together, costs the broker one ack instead of hundreds. A handled delivery that waits
//! behind a slow one longer than `patience` is acked on its own, so a slow message never holds
//! the prefetch window of the others.
//!
//! Deliveries that end otherwise (retried, dead-lettered, requeued) are acked or nacked by
//! their own path first and then reported settled, so that a multiple ack never covers one
//! that was not acked.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the consume loop and the delivery tasks tell the ack task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMsg {
    /// A delivery was taken in hand.
    Received(u64),
    /// Its effects are committed: ack it.
    Done(u64),
    /// It was acked or nacked by its own path (retry, dead letter, requeue).
    Settled(u64),
}

/// The pure part: which tags are in hand, which wait for their ack.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    in_hand: BTreeSet<u64>,
    waiting: BTreeMap<u64, Instant>,
}

/// The acks to send now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Ack every unacked delivery up to this tag, at once.
    pub up_to: Option<u64>,
    /// Ack these alone.
    pub single: Vec<u64>,
}

impl Ledger {
    pub(crate) fn record(&mut self, msg: AckMsg, now: Instant) {
        match msg {
            AckMsg::Received(tag) => {
                self.in_hand.insert(tag);
            }
            AckMsg::Done(tag) => {
                self.in_hand.remove(&tag);
                self.waiting.insert(tag, now);
            }
            AckMsg::Settled(tag) => {
                self.in_hand.remove(&tag);
            }
        }
    }

    /// Takes the acks due at `now`; with `flush`, every waiting one.
    pub(crate) fn due(&mut self, now: Instant, patience: Duration, flush: bool) -> Due {
        let floor = self.in_hand.first().copied().unwrap_or(u64::MAX);
        let mut due = Due::default();
        let above = self.waiting.split_off(&floor);
        due.up_to = self.waiting.last_key_value().map(|(tag, _)| *tag);
        self.waiting = above;
        if flush {
            due.single = std::mem::take(&mut self.waiting).into_keys().collect();
        } else {
            let impatient: Vec<u64> =
                self.waiting.iter().filter(|(_, at)| now.duration_since(**at) >= patience).map(|(t, _)| *t).collect();
            for tag in &impatient {
                self.waiting.remove(tag);
            }
            due.single = impatient;
        }
        due
    }

    /// When the oldest waiting ack runs out of patience.
    fn next_deadline(&self, patience: Duration) -> Option<Instant> {
        self.waiting.values().min().map(|at| *at + patience)
    }
}

/// Starts the ack task of `channel`; it ends, having sent every ack it holds, once every
/// sender is dropped.
pub(crate) fn spawn(channel: Channel, patience: Duration) -> (mpsc::UnboundedSender<AckMsg>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut ledger = Ledger::default();
        loop {
            let deadline = ledger.next_deadline(patience);
            let next = tokio::select! {
                msg = rx.recv() => Some(msg),
                _ = sleep_until(deadline), if deadline.is_some() => None,
            };
            let closed = matches!(next, Some(None));
            if let Some(Some(msg)) = next {
                ledger.record(msg, Instant::now());
                while let Ok(msg) = rx.try_recv() {
                    ledger.record(msg, Instant::now());
                }
            }
            let due = ledger.due(Instant::now(), patience, closed);
            send(&channel, due).await;
            if closed {
                return;
            }
        }
    });
    (tx, task)
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

async fn send(channel: &Channel, due: Due) {
    if let Some(tag) = due.up_to
        && let Err(err) = channel.basic_ack(tag, BasicAckOptions { multiple: true }).await
    {
        // The deliveries come again on the next connection; their versions make them no-ops.
        tracing::warn!(error = %err, up_to = tag, "ack failed; the deliveries will come again");
    }
    for tag in due.single {
        if let Err(err) = channel.basic_ack(tag, BasicAckOptions::default()).await {
            tracing::warn!(error = %err, tag, "ack failed; the delivery will come again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_millis(20);

    #[test]
    fn a_batch_finishing_together_is_acked_at_once_up_to_its_highest_tag() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        for tag in 1..=5 {
            ledger.record(AckMsg::Received(tag), now);
        }
        for tag in [3, 1, 5, 2, 4] {
            ledger.record(AckMsg::Done(tag), now);
        }
        assert_eq!(ledger.due(now, PATIENCE, false), Due { up_to: Some(5), single: vec![] });
        assert_eq!(ledger.due(now, PATIENCE, false), Due::default(), "nothing twice");
    }

    #[test]
    fn nothing_in_hand_is_covered_and_a_slow_delivery_holds_the_others_only_for_a_while() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        for tag in 1..=4 {
            ledger.record(AckMsg::Received(tag), now);
        }
        ledger.record(AckMsg::Done(1), now);
        ledger.record(AckMsg::Done(3), now);
        ledger.record(AckMsg::Done(4), now);
        // 2 is still in hand: 1 is acked, 3 and 4 wait.
        assert_eq!(ledger.due(now, PATIENCE, false), Due { up_to: Some(1), single: vec![] });
        assert_eq!(ledger.next_deadline(PATIENCE), Some(now + PATIENCE));
        // Out of patience: alone.
        assert_eq!(ledger.due(now + PATIENCE, PATIENCE, false), Due { up_to: None, single: vec![3, 4] });
        ledger.record(AckMsg::Done(2), now + PATIENCE);
        assert_eq!(ledger.due(now + PATIENCE, PATIENCE, false), Due { up_to: Some(2), single: vec![] });
    }

    #[test]
    fn a_settled_delivery_no_longer_holds_the_line_and_is_never_acked_again() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        for tag in 1..=3 {
            ledger.record(AckMsg::Received(tag), now);
        }
        ledger.record(AckMsg::Done(3), now);
        assert_eq!(ledger.due(now, PATIENCE, false), Due::default());
        // 1 was dead-lettered (acked by its own path), 2 requeued (nacked): both settled.
        ledger.record(AckMsg::Settled(1), now);
        ledger.record(AckMsg::Settled(2), now);
        assert_eq!(ledger.due(now, PATIENCE, false), Due { up_to: Some(3), single: vec![] });
    }

    #[test]
    fn closing_flushes_what_waits() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        ledger.record(AckMsg::Received(1), now);
        ledger.record(AckMsg::Received(2), now);
        ledger.record(AckMsg::Done(2), now);
        assert_eq!(ledger.due(now, PATIENCE, true), Due { up_to: None, single: vec![2] });
    }
}
