//! The bench's report: a table for people, `--json` for scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::BenchArgs;
use super::driver::KindStats;
use super::system::{Depths, Usage};

pub struct Report {
    pub args: BenchArgs,
    pub users_created: usize,
    pub groups_created: usize,
    pub stats: BTreeMap<&'static str, KindStats>,
    pub phases: super::Phases,
    /// From the last SCIM write until everyone was provisioned; `None`: not within `timeout`.
    pub settle: Option<Duration>,
    pub timeout: Duration,
    pub lags: Vec<(String, f64)>,
    pub final_counts: Value,
    pub usage: Vec<(&'static str, Usage)>,
    pub depths: Depths,
    /// What the box does without Muster (`--baseline`).
    pub baselines: Option<Baseline>,
    /// With `--hold-relay`: the events waiting in the outbox when the relay was let go.
    pub held_outbox: Option<i64>,
    /// How often the relay held events back during a burst (`relay_bursts_total`).
    pub relay_bursts: Option<f64>,
    pub logs: PathBuf,
}

/// PostgreSQL's commit rate measured before the run and again once the services stopped, and
/// RabbitMQ's confirmed publish rate.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub commits_before: f64,
    /// `None` if the run ended before the second measurement.
    pub commits_after: Option<f64>,
    pub publishes: f64,
}

impl Baseline {
    /// The commit rate Muster's figures are compared with: the mean of both measurements, so
    /// that a box faster or slower at one end of the run does not make the ratio.
    pub fn commits(&self) -> f64 {
        match self.commits_after {
            Some(after) => (self.commits_before + after) / 2.0,
            None => self.commits_before,
        }
    }
}

const WRITES: [&str; 6] = [
    "POST /Users",
    "PATCH /Users manager",
    "POST /Groups",
    "PATCH /Groups members",
    "PATCH /Users attributes",
    "PATCH /Users active",
];

impl Report {
    fn errors(&self) -> BTreeMap<String, u64> {
        let mut errors = BTreeMap::new();
        for (kind, stats) in &self.stats {
            for (status, count) in &stats.statuses {
                let expected = match *kind {
                    "GET /Users?filter" => *status == 200,
                    "POST /Users" | "POST /Groups" | "POST /assignments (admin)" => *status == 201,
                    "PATCH /Groups members" => *status == 204,
                    _ => *status == 200 || *status == 204,
                };
                if !expected {
                    *errors.entry(format!("{kind}: {status}")).or_default() += count;
                }
            }
        }
        errors
    }

    /// SCIM writes per second over the write phases' wall time.
    fn write_rate(&self) -> f64 {
        let writes: usize =
            self.stats.iter().filter(|(k, _)| WRITES.contains(k)).map(|(_, s)| s.latencies_us.len()).sum();
        let wall: f64 = self.phases.iter().map(|(_, d)| d.as_secs_f64()).sum();
        if wall > 0.0 { writes as f64 / wall } else { 0.0 }
    }

    fn post_rate(&self) -> f64 {
        self.stats.get("POST /Users").map(KindStats::rate).unwrap_or(0.0)
    }

    pub fn to_json(&self) -> Value {
        let requests: Value = self
            .stats
            .iter()
            .map(|(kind, s)| {
                (
                    kind.to_string(),
                    json!({
                        "count": s.latencies_us.len(), "per_second": s.rate(),
                        "latency_ms": {"p50": s.quantile_ms(0.5), "p95": s.quantile_ms(0.95),
                                       "p99": s.quantile_ms(0.99), "max": s.quantile_ms(1.0)},
                        "statuses": s.statuses,
                    }),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
            .into();
        let baseline = self.baselines.map(|b| {
            let commits = b.commits();
            json!({"postgres_commits_per_second": commits,
                   "postgres_commits_per_second_before": b.commits_before,
                   "postgres_commits_per_second_after": b.commits_after,
                   "rabbitmq_confirmed_publishes_per_second": b.publishes,
                   "post_users_over_commits": self.post_rate() / commits,
                   "scim_writes_over_commits": self.write_rate() / commits})
        });
        json!({
            "users": self.args.users, "groups": self.args.groups, "connections": self.args.connections,
            "rate": self.args.rate, "seed": self.args.seed,
            "created": {"users": self.users_created, "groups": self.groups_created},
            "phases_seconds": self.phases.iter().map(|(p, d)| (p.to_string(), json!(d.as_secs_f64())))
                .collect::<serde_json::Map<String, Value>>(),
            "scim_writes_per_second": self.write_rate(),
            "requests": requests,
            "errors": self.errors(),
            "provisioned_seconds_after_last_write": self.settle.map(|d| d.as_secs_f64()),
            "lag_seconds": self.lags.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
            "final": self.final_counts,
            "services": self.usage.iter().map(|(name, u)| (name.to_string(),
                json!({"peak_rss_mib": u.peak_rss_mib, "cpu_seconds": u.cpu_seconds})))
                .collect::<serde_json::Map<String, Value>>(),
            "deepest_queue": {"name": self.depths.deepest_queue_name, "messages": self.depths.deepest_queue},
            "deepest_outbox": self.depths.deepest_outbox,
            "baseline": baseline,
            "relay_held": self.args.hold_relay,
            "outbox_when_relay_released": self.held_outbox,
            "relay_bursts": self.relay_bursts,
            "logs": self.logs,
        })
    }

    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
            return;
        }
        println!(
            "Muster bench: {} users, {} groups, {} connections{}, seed {}",
            self.args.users,
            self.args.groups,
            self.args.connections,
            self.args.rate.map(|r| format!(", paced at {r:.0} req/s")).unwrap_or_default(),
            self.args.seed
        );
        println!();
        println!(
            "{:<28} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "request", "count", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for (kind, s) in &self.stats {
            println!(
                "{:<28} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.1}",
                kind,
                s.latencies_us.len(),
                s.rate(),
                s.quantile_ms(0.5),
                s.quantile_ms(0.95),
                s.quantile_ms(0.99),
                s.quantile_ms(1.0)
            );
        }
        println!();
        let phases: Vec<String> = self.phases.iter().map(|(p, d)| format!("{p} {:.1} s", d.as_secs_f64())).collect();
        println!("phases: {}", phases.join(", "));
        println!("SCIM writes: {:.0}/s over the write phases", self.write_rate());
        let errors = self.errors();
        if errors.is_empty() {
            println!("errors: none");
        } else {
            println!("errors: {}", errors.iter().map(|(k, v)| format!("{k} ×{v}")).collect::<Vec<_>>().join(", "));
        }
        println!();
        if self.args.hold_relay {
            println!(
                "relay held through the write phases: {} events waited in the outbox; every worker's share came after the last write",
                self.held_outbox.map_or_else(|| "?".to_string(), |n| n.to_string())
            );
        }
        match self.relay_bursts.filter(|_| !self.args.hold_relay) {
            Some(n) if n > 0.0 => println!(
                "the relay held events back during {n:.0} burst(s) of SCIM writes (relay.burst_events_per_second)"
            ),
            Some(_) => println!("the relay published as the events came (no burst)"),
            None => {}
        }
        match self.settle {
            Some(settle) => println!("everyone provisioned {:.1} s after the last SCIM write", settle.as_secs_f64()),
            None => println!("NOT everyone provisioned {} s after the last SCIM write", self.timeout.as_secs()),
        }
        let lags: Vec<String> = self.lags.iter().map(|(k, v)| format!("{k} {v:.1} s")).collect();
        println!("lag per member (last SCIM write → last change by a worker): {}", lags.join(", "));
        println!("final: {}", self.final_counts);
        println!(
            "deepest queue: {} ({} messages); deepest outbox: {} rows",
            self.depths.deepest_queue_name, self.depths.deepest_queue, self.depths.deepest_outbox
        );
        println!();
        println!("{:<20} {:>14} {:>12}", "service", "peak RSS MiB", "CPU s");
        for (name, u) in &self.usage {
            println!("{:<20} {:>14.1} {:>12.1}", name, u.peak_rss_mib, u.cpu_seconds);
        }
        if let Some(b) = self.baselines {
            let commits = b.commits();
            let after = b.commits_after.map(|a| format!(", {a:.0} after")).unwrap_or_default();
            println!();
            println!(
                "baseline on this box: PostgreSQL {commits:.0} commits/s (resource + outbox row; {:.0} before the run{after}), RabbitMQ {:.0} confirmed publishes/s",
                b.commits_before, b.publishes
            );
            println!(
                "POST /Users {:.0}/s = {:.0} % of the commit rate; all SCIM writes {:.0}/s = {:.0} %",
                self.post_rate(),
                100.0 * self.post_rate() / commits,
                self.write_rate(),
                100.0 * self.write_rate() / commits
            );
        }
        println!("service logs: {}", self.logs.display());
    }
}

#[cfg(test)]
mod tests {
    use super::Baseline;

    #[test]
    fn the_commit_rate_compared_with_is_the_mean_of_both_ends_of_the_run() {
        let both = Baseline { commits_before: 8_000.0, commits_after: Some(9_000.0), publishes: 1.0 };
        assert_eq!(both.commits(), 8_500.0);
        let before_only = Baseline { commits_before: 8_000.0, commits_after: None, publishes: 1.0 };
        assert_eq!(before_only.commits(), 8_000.0);
    }
}
