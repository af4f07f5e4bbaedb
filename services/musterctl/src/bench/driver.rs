//! The SCIM and admin clients of the bench, with per-kind latency and status accounting, in a
//! closed loop (at most C requests in flight) or paced to R request starts per second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

/// Latencies (µs) and statuses of one kind of request.
#[derive(Debug, Default, Clone)]
pub struct KindStats {
    pub latencies_us: Vec<u32>,
    pub statuses: BTreeMap<u16, u64>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

impl KindStats {
    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
    }

    /// Requests per second between the first start and the last end.
    pub fn rate(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => self.latencies_us.len() as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Shared accounting of every request the bench made.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<BTreeMap<&'static str, KindStats>>>);

impl Stats {
    fn record(&self, kind: &'static str, started: Instant, status: u16) {
        let ended = Instant::now();
        let micros = u32::try_from(ended.duration_since(started).as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut all) = self.0.lock() {
            let entry = all.entry(kind).or_default();
            entry.latencies_us.push(micros);
            *entry.statuses.entry(status).or_default() += 1;
            entry.first = Some(entry.first.map_or(started, |f| f.min(started)));
            entry.last = Some(entry.last.map_or(ended, |l| l.max(ended)));
        }
    }

    /// A copy of the figures so far.
    pub fn snapshot(&self) -> BTreeMap<&'static str, KindStats> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Paces request starts to a rate, shared by all tasks.
#[derive(Clone)]
pub struct Pace {
    interval: Option<Duration>,
    next: Arc<Mutex<Instant>>,
}

impl Pace {
    /// `rate` request starts per second; `None`: as fast as the concurrency allows.
    pub fn new(rate: Option<f64>) -> Pace {
        Pace {
            interval: rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Arc::new(Mutex::new(Instant::now())),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else { return };
        let slot = {
            let Ok(mut next) = self.next.lock() else { return };
            let now = Instant::now();
            if *next < now {
                *next = now;
            }
            let slot = *next;
            *next += interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// An HTTP client for one API (SCIM or admin) with its token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    content_type: &'static str,
    stats: Stats,
    pace: Pace,
}

/// A response: status and body. The body is parsed only by the callers that read it: the
/// generator shares the cores with the system it measures, so it does no work it need not.
pub struct Answer {
    pub status: u16,
    body: bytes::Bytes,
}

impl Answer {
    /// The `id` of the resource in the body, if any.
    pub fn id(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body).ok()?.get("id")?.as_str().map(str::to_string)
    }

    /// The body as it came, for an error message (a problem document or whatever else).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

impl Client {
    pub fn new(base: String, token: String, scim: bool, stats: Stats, pace: Pace) -> Client {
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap_or_default();
        let content_type = if scim { "application/scim+json" } else { "application/json" };
        Client { http, base, token, content_type, stats, pace }
    }

    /// Sends one request, recorded under `kind`; a transport error counts as status 0.
    pub async fn send(&self, kind: &'static str, method: Method, path: &str, body: Option<&Value>) -> Answer {
        self.pace.wait().await;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Content-Type", self.content_type);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let started = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                Answer { status, body: response.bytes().await.unwrap_or_default() }
            }
            Err(_) => Answer { status: 0, body: bytes::Bytes::new() },
        };
        self.stats.record(kind, started, answer.status);
        answer
    }
}
