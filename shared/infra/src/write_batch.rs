//! Writes that arrive together go to PostgreSQL together. A row and its outbox event cost
//! PostgreSQL far more as a statement and a commit of their own than as one row among several
//! of the same statement (pgbench on the development box: 10,000 single-row commits/s against
//! 22,000 rows/s four to a commit and 35,000 sixteen to a commit). A [`WriteBatcher`] hands
//! whatever has queued while the previous batch was being written to the next one: nothing
//! waits for a batch to fill, so a lone request goes at once, and under load the batches grow
//! by themselves.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// Queues items for a writer that takes them in batches (see the module's documentation).
/// Cloning shares the queue; the writers stop when the last clone is dropped.
pub struct WriteBatcher<I, O> {
    queue: mpsc::UnboundedSender<Pending<I, O>>,
}

impl<I, O> Clone for WriteBatcher<I, O> {
    fn clone(&self) -> Self {
        WriteBatcher { queue: self.queue.clone() }
    }
}

struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<O>,
}

impl<I: Send + 'static, O: Send + 'static> WriteBatcher<I, O> {
    /// Starts `in_flight` writers (batches written at once) on the current runtime, each
    /// taking up to `max` queued items at a time. `write` answers every item of its batch, in
    /// order; `name` labels the metric `write_batch_size`.
    pub fn spawn<W, F>(name: &'static str, max: usize, in_flight: usize, write: W) -> WriteBatcher<I, O>
    where
        W: Fn(Vec<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Vec<O>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        for _ in 0..in_flight.max(1) {
            let (receiver, write) = (receiver.clone(), write.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, max.max(1)).await {
                    metrics::histogram!("write_batch_size", "batch" => name).record(batch.len() as f64);
                    let (items, replies): (Vec<I>, Vec<oneshot::Sender<O>>) =
                        batch.into_iter().map(|p| (p.item, p.reply)).unzip();
                    // An item without an answer (a writer that broke its contract) gets a
                    // dropped reply: its caller sees `None`, never another item's answer.
                    for (reply, output) in replies.into_iter().zip(write(items).await) {
                        let _ = reply.send(output);
                    }
                }
            });
        }
        WriteBatcher { queue }
    }

    /// Queues `item` and waits for its answer. `None` if no writer answered (the writers are
    /// gone, or one panicked): the caller writes the item on its own.
    pub async fn submit(&self, item: I) -> Option<O> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { item, reply }).ok()?;
        answer.await.ok()
    }
}

/// Waits for one item, then takes those queued behind it, up to `max`. `None` once every
/// [`WriteBatcher`] is dropped and the queue is empty.
async fn next_batch<I, O>(
    receiver: &Mutex<mpsc::UnboundedReceiver<Pending<I, O>>>,
    max: usize,
) -> Option<Vec<Pending<I, O>>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = Vec::with_capacity(max.min(receiver.len() + 1));
    batch.push(first);
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;

    use super::*;

    #[tokio::test]
    async fn every_item_gets_its_own_answer_and_queued_items_share_a_batch() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let batcher = WriteBatcher::spawn("test", 8, 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                // Long enough for the others to queue behind the first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect()
            }
        });
        let answers = join_all((0..20).map(|i| {
            let batcher = batcher.clone();
            async move { batcher.submit(i).await }
        }))
        .await;
        assert_eq!(answers, (0..20).map(|i| Some(i * 10)).collect::<Vec<_>>());
        let sizes = batches.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| n <= 8), "a batch over its maximum: {sizes:?}");
        assert!(sizes.len() < 20, "nothing was batched: {sizes:?}");
    }

    #[tokio::test]
    async fn an_unanswered_item_gets_none() {
        let batcher = WriteBatcher::spawn("test", 4, 2, |items: Vec<u32>| async move {
            // Answers only the first of each batch.
            items.into_iter().take(1).collect::<Vec<_>>()
        });
        let answers = join_all((0..6).map(|i| {
            let batcher = batcher.clone();
            async move { batcher.submit(i).await }
        }))
        .await;
        let answered: Vec<u32> = answers.iter().flatten().copied().collect();
        assert!(!answered.is_empty());
        for (i, answer) in answers.iter().enumerate() {
            assert!(answer.is_none() || *answer == Some(i as u32), "item {i} got {answer:?}");
        }
    }

    #[tokio::test]
    async fn writers_stop_with_the_last_batcher() {
        let held = Arc::new(());
        let in_writer = held.clone();
        let batcher = WriteBatcher::spawn("test", 4, 2, move |items: Vec<u32>| {
            let _ = &in_writer;
            async move { items }
        });
        assert_eq!(batcher.clone().submit(7).await, Some(7));
        drop(batcher);
        // The writers return and drop what they hold (here `in_writer`).
        for _ in 0..100 {
            if Arc::strong_count(&held) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the writers outlived every batcher");
    }
}
