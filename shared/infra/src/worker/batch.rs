//! Coalescing concurrent deliveries that must be processed one at a time per key (e.g. per
//! tenant, under an advisory lock) into batches: one transaction, one lock acquisition and
//! one commit for many events, instead of each delivery queueing for the lock alone.
//!
//! Each delivery's handler calls [`Batcher::run`] with its key and item. The first caller for
//! an idle key becomes the *drainer*: it takes everything queued for the key (its own item
//! included, up to `max`), processes it, hands every other caller its result, and — if more
//! arrived meanwhile — passes the drainer role to the next waiting caller, so no delivery's
//! handler runs (and holds its ack back) longer than its own batch.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::ProcessError;

enum Signal {
    Done(Result<(), ProcessError>),
    Drain,
}

struct Waiting<I> {
    item: I,
    /// `None` for the drainer's own item: it takes its result directly.
    reply: Option<oneshot::Sender<Signal>>,
}

struct Queue<I> {
    waiting: Vec<Waiting<I>>,
    draining: bool,
}

/// Batches items per key; see the module documentation.
pub struct Batcher<K, I> {
    queues: Mutex<HashMap<K, Queue<I>>>,
    max: usize,
    /// What an item weighs, and how much a batch may weigh at most (see [`Batcher::weighed`]).
    weigh: fn(&I) -> usize,
    max_weight: usize,
}

impl<K: Eq + Hash + Clone, I> Batcher<K, I> {
    /// Batches of at most `max` items.
    pub fn new(max: usize) -> Self {
        Batcher { queues: Mutex::new(HashMap::new()), max: max.max(1), weigh: |_| 1, max_weight: usize::MAX }
    }

    /// Batches that also weigh at most `max_weight` by `weigh` (an item heavier than that goes
    /// alone): for items of very different sizes, such as events naming one member or
    /// hundreds, whose batch is held in memory whole.
    pub fn weighed(self, max_weight: usize, weigh: fn(&I) -> usize) -> Self {
        Batcher { weigh, max_weight, ..self }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Queue<I>>> {
        // A panic while holding this lock cannot leave the map inconsistent: recover it.
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Processes `item` in a batch of `key`'s items. `process` gets the batch (in arrival
    /// order) and returns one result per item, in the same order.
    pub async fn run<F, Fut>(&self, key: K, item: I, process: F) -> Result<(), ProcessError>
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<Result<(), ProcessError>>>,
    {
        let (tx, rx) = oneshot::channel();
        let drain_now = {
            let mut queues = self.lock();
            let queue = queues.entry(key.clone()).or_insert_with(|| Queue { waiting: Vec::new(), draining: false });
            if queue.draining {
                queue.waiting.push(Waiting { item, reply: Some(tx) });
                false
            } else {
                queue.draining = true;
                queue.waiting.insert(0, Waiting { item, reply: None });
                true
            }
        };
        if !drain_now {
            match rx.await {
                Ok(Signal::Done(result)) => return result,
                Ok(Signal::Drain) => {}
                Err(_) => return Err(ProcessError::Transient("the batch carrying this event was dropped".into())),
            }
        }
        self.drain(&key, process).await
    }

    /// Processes one batch, which holds the caller's own item first; returns its result.
    async fn drain<F, Fut>(&self, key: &K, process: F) -> Result<(), ProcessError>
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<Result<(), ProcessError>>>,
    {
        let batch: Vec<Waiting<I>> = {
            let mut queues = self.lock();
            let Some(queue) = queues.get_mut(key) else {
                return Err(ProcessError::Transient("batch queue vanished".into()));
            };
            let mut weight = 0usize;
            let take = queue
                .waiting
                .iter()
                .take(self.max)
                .take_while(|w| {
                    let first = weight == 0;
                    weight = weight.saturating_add((self.weigh)(&w.item).max(1));
                    first || weight <= self.max_weight
                })
                .count();
            queue.waiting.drain(..take).collect()
        };
        let (items, replies): (Vec<I>, Vec<Option<oneshot::Sender<Signal>>>) =
            batch.into_iter().map(|w| (w.item, w.reply)).unzip();
        let count = items.len();
        let mut results = process(items).await;
        results.resize_with(count, || Err(ProcessError::Transient("no result for this event".into())));
        let mut own = Err(ProcessError::Transient("the drainer's event was not in its batch".into()));
        for (reply, result) in replies.into_iter().zip(results) {
            match reply {
                Some(reply) => {
                    let _ = reply.send(Signal::Done(result));
                }
                None => own = result,
            }
        }
        // Hand the drainer role on, or mark the key idle.
        let mut queues = self.lock();
        if let Some(queue) = queues.get_mut(key) {
            match queue.waiting.first_mut() {
                Some(next) => {
                    if let Some(reply) = next.reply.take() {
                        let _ = reply.send(Signal::Drain);
                    }
                }
                None => {
                    queues.remove(key);
                }
            }
        }
        own
    }
}

/// Applies `items` together; if that fails, applies each alone, so that one bad item does not
/// fail the others (each then gets its own result). One result per item, in order.
pub async fn together_or_each<'a, I, F, Fut>(items: &'a [I], apply: F) -> Vec<Result<(), ProcessError>>
where
    F: Fn(&'a [I]) -> Fut,
    Fut: Future<Output = Result<(), ProcessError>>,
{
    match apply(items).await {
        Ok(()) => vec![Ok(()); items.len()],
        Err(err) if items.len() == 1 => vec![Err(err)],
        Err(err) => {
            tracing::warn!(items = items.len(), error = %err, "batch failed; retrying its items one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                results.push(apply(std::slice::from_ref(item)).await);
            }
            results
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_weighed_batch_stays_under_its_weight_and_a_heavy_item_goes_alone() {
        let batcher = Arc::new(Batcher::<u8, u32>::new(64).weighed(10, |w| *w as usize));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Weights 3, 3, 3, 3, 25, 3, …: at most three 3s together, the 25 alone.
        for n in 0..12u32 {
            let (batcher, batches) = (batcher.clone(), batches.clone());
            let weight = if n == 4 { 25 } else { 3 };
            tasks.push(tokio::spawn(async move {
                batcher
                    .run(1, weight, |items: Vec<u32>| {
                        let batches = batches.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let results = vec![Ok(()); items.len()];
                            batches.lock().unwrap().push(items);
                            results
                        }
                    })
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let batches = batches.lock().unwrap();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 12);
        for batch in batches.iter() {
            let weight: u32 = batch.iter().sum();
            assert!(weight <= 10 || batch.len() == 1, "a batch over its weight: {batch:?}");
        }
        assert!(batches.iter().any(|b| b.len() > 1), "items were still batched: {batches:?}");
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_items_of_a_key_are_batched_and_every_caller_gets_its_own_result() {
        let batcher = Arc::new(Batcher::<u8, u32>::new(64));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for n in 0..40u32 {
            let (batcher, batches, active) = (batcher.clone(), batches.clone(), active.clone());
            tasks.push(tokio::spawn(async move {
                batcher
                    .run(1, n, |items: Vec<u32>| {
                        let (batches, active) = (batches.clone(), active.clone());
                        async move {
                            assert_eq!(active.fetch_add(1, Ordering::SeqCst), 0, "one batch of a key at a time");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            active.fetch_sub(1, Ordering::SeqCst);
                            let results = items
                                .iter()
                                .map(|i| if i % 7 == 0 { Err(ProcessError::Permanent(format!("{i}"))) } else { Ok(()) })
                                .collect();
                            batches.lock().unwrap().push(items);
                            results
                        }
                    })
                    .await
                    .map_err(|e| (n, e))
            }));
        }
        for (n, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap();
            if n % 7 == 0 {
                assert_eq!(result, Err((n as u32, ProcessError::Permanent(n.to_string()))));
            } else {
                assert_eq!(result, Ok(()));
            }
        }
        let batches = batches.lock().unwrap();
        let mut seen: Vec<u32> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>(), "each item processed exactly once");
        assert!(batches.len() < 40, "items were batched: {} batches", batches.len());
        assert!(batcher.lock().is_empty(), "idle keys are forgotten");
    }

    #[tokio::test]
    async fn batches_are_capped() {
        let batcher = Arc::new(Batcher::<u8, u32>::new(3));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..10u32)
            .map(|n| {
                let (batcher, sizes) = (batcher.clone(), sizes.clone());
                tokio::spawn(async move {
                    batcher
                        .run(0, n, |items: Vec<u32>| {
                            let sizes = sizes.clone();
                            async move {
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                sizes.lock().unwrap().push(items.len());
                                vec![Ok(()); items.len()]
                            }
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        let sizes = sizes.lock().unwrap();
        assert!(sizes.iter().all(|s| *s <= 3), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 10);
    }
}
