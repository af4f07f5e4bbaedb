//! Bearer tokens already checked, so that a request does not pay a database round trip to
//! learn again who it is. Every change to tokens or company settings is announced by
//! PostgreSQL (`NOTIFY muster_auth`, from triggers: whoever writes, admin API or
//! `musterctl`, is heard) and empties the cache. While the cache is not listening (starting,
//! or its connection lost) it is bypassed; an entry lives at most `TTL` in any case.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// The channel the migrations' triggers notify.
pub const CHANNEL: &str = "muster_auth";

/// The longest an entry is trusted, should a notification ever be missed.
const TTL: Duration = Duration::from_secs(60);

/// Entries kept at most (only tokens that were valid are kept; unknown tokens are not, so a
/// client trying random ones cannot grow it).
const CAPACITY: usize = 10_000;

/// How often a listener that hears nothing checks whether its cache is still in use.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// Tokens (by their hash) and what they were found to be.
pub struct TokenCache<V> {
    entries: Mutex<HashMap<Vec<u8>, (V, Instant)>>,
    /// Bumped on every change heard: a lookup that started before it must not fill the cache.
    generation: AtomicU64,
    listening: AtomicBool,
}

impl<V: Clone + Send + 'static> TokenCache<V> {
    /// A cache listening for changes on its own connection from `pool`'s settings (when there
    /// is no runtime to listen on, a cache that is always bypassed).
    pub fn new(pool: &PgPool) -> Arc<TokenCache<V>> {
        let cache = Arc::new(TokenCache {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(listen(Arc::downgrade(&cache), pool.clone()));
        }
        cache
    }

    /// What `token` is, from the cache or from `load` (whose `None`, an unknown token, is not
    /// kept).
    pub async fn get_or_load<F, Fut, E>(&self, token: &str, load: F) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let key = crate::tenancy::hash_token(token);
        let listening = self.listening.load(Ordering::Acquire);
        let cached = if listening { self.lock().get(&key).filter(|(_, at)| at.elapsed() < TTL).cloned() } else { None };
        if let Some((value, _)) = cached {
            metrics::counter!("auth_cache_total", "outcome" => "hit").increment(1);
            return Ok(Some(value));
        }
        metrics::counter!("auth_cache_total", "outcome" => "miss").increment(1);
        let generation = self.generation.load(Ordering::Acquire);
        let found = load().await?;
        if let Some(value) = &found
            && listening
            && self.generation.load(Ordering::Acquire) == generation
        {
            let mut entries = self.lock();
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key, (value.clone(), Instant::now()));
        }
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (V, Instant)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets everything (a change was heard, or may have been missed).
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.lock().clear();
    }
}

/// Keeps `cache` listening until it is dropped; reconnects with a pause when the connection
/// is lost, bypassing the cache meanwhile.
async fn listen<V: Clone + Send + 'static>(cache: Weak<TokenCache<V>>, pool: PgPool) {
    loop {
        let subscribed = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match subscribed {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!(error = %err, "token cache cannot listen yet; bypassed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if cache.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        {
            let Some(cache) = cache.upgrade() else { return };
            // Changes made before the subscription were not heard.
            cache.invalidate();
            cache.listening.store(true, Ordering::Release);
        }
        loop {
            let heard = tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await;
            let Some(cache) = cache.upgrade() else { return };
            match heard {
                Err(_) => {}
                Ok(Ok(Some(_))) => cache.invalidate(),
                Ok(Ok(None) | Err(_)) => {
                    tracing::warn!("token cache lost its notifications; bypassed until it listens again");
                    cache.listening.store(false, Ordering::Release);
                    cache.invalidate();
                    break;
                }
            }
        }
    }
}
