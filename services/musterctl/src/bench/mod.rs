//! `musterctl bench`: an Entra-scale initial sync and an incremental cycle, driven through the
//! SCIM API the way Entra's provisioning service drives it, against every service running as
//! its own process on a fresh database and AMQP prefix; then how long after Entra's last
//! request everyone is provisioned, and what each service used. See the README ("Benchmark").

mod baseline;
mod data;
mod driver;
mod report;
mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use muster_infra::config::{AmqpSettings, DatabaseSettings};
use muster_infra::tenancy::{self, TokenKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use data::{Company, ENTERPRISE, ManagerRef};
use driver::{Client, Pace, Stats};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Users in the company.
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    /// Groups (skewed sizes; the largest holds half the company, at most 50,000).
    #[arg(long, default_value_t = 1_000)]
    pub groups: usize,
    /// Requests in flight at most (closed loop).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Pace request starts to this many per second (open loop, still at most `connections`
    /// in flight); default: as fast as the closed loop goes.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seed of the generated company.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Members per membership PATCH.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// First measure PostgreSQL's commit rate and RabbitMQ's confirmed publish rate on this box,
    /// and report Muster's figures as ratios of them.
    #[arg(long)]
    pub baseline: bool,
    /// Seconds each baseline measurement runs.
    #[arg(long, default_value_t = 10)]
    pub baseline_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the service binaries are (default: beside musterctl).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the bench's database and queues afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Once everyone is provisioned, this many more `GET /Users?filter=userName eq` of stored
    /// users (random): the lookup latency of a company at rest (0: none).
    #[arg(long, default_value_t = 10_000)]
    pub lookups: usize,
    /// Lookups in flight at most (closed loop) once everyone is provisioned.
    #[arg(long, default_value_t = 4)]
    pub lookup_connections: usize,
    /// Hold the relay (SIGSTOP) through the write phases and let it go after the last write:
    /// the ingress measured alone, its events waiting in the outbox; the workers' whole share
    /// then comes after the last write, in the completion time.
    #[arg(long)]
    pub hold_relay: bool,
    /// Give up waiting for everyone to be provisioned after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let scheme_end = url.find("://").context("DATABASE_URL has no scheme")? + 3;
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let path_start = base[scheme_end..].find('/').map(|p| scheme_end + p).unwrap_or(base.len());
    Ok(format!("{}/{name}{query}", &base[..path_start]))
}

/// The ids the SCIM API gave.
struct Ids {
    users: Vec<Option<String>>,
    groups: Vec<String>,
}

pub async fn run(database: &DatabaseSettings, amqp: &AmqpSettings, args: BenchArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.groups == 0 || args.connections == 0 {
        bail!("--users, --groups and --connections must be at least 1");
    }
    let binaries = system::binaries(args.bin_dir.as_deref())?;
    let suffix = Uuid::new_v4().simple().to_string()[..8].to_string();
    let database_url = with_database(database.url.expose_secret(), &format!("muster_bench_{suffix}"))?;
    let mut bench_db = database.clone();
    bench_db.url = SecretString::from(database_url.clone());
    bench_db.max_connections = 20;
    let bench_amqp = AmqpSettings { url: amqp.url.clone(), prefix: format!("bench-{suffix}.") };
    muster_infra::db::ensure_database(&bench_db).await?;
    let pool = muster_infra::db::pool(&bench_db)?;
    muster_infra::db::migrate(&pool).await?;
    let progress = |what: &str| {
        if !args.json {
            eprintln!("bench: {what}");
        }
    };
    progress(&format!("database muster_bench_{suffix}, AMQP prefix bench-{suffix}."));

    let mut baselines = None;
    if args.baseline {
        progress("baseline: PostgreSQL commits (resource row + outbox row)…");
        let commits = baseline::postgres(&pool, args.connections, args.baseline_seconds).await?;
        progress("baseline: RabbitMQ confirmed publishes…");
        let publishes = baseline::rabbitmq(&bench_amqp, args.baseline_seconds).await?;
        baselines = Some(report::Baseline { commits_before: commits, commits_after: None, publishes });
    }

    let company = Company::generate(args.users, args.groups, args.seed);
    let mut conn = pool.acquire().await?;
    let tenant = tenancy::create_tenant(&mut conn, "Contoso (bench)", &company.domain).await?;
    let (_, scim_token) = tenancy::issue_token(&mut conn, tenant.id, TokenKind::Scim, "bench").await?;
    let (_, admin_token) = tenancy::issue_token(&mut conn, tenant.id, TokenKind::Admin, "bench").await?;
    drop(conn);

    let logs = std::env::temp_dir().join(format!("muster-bench-{suffix}"));
    progress(&format!("starting the services from {} (logs in {})", binaries.display(), logs.display()));
    let services = system::start(&binaries, &database_url, amqp.url.expose_secret(), &bench_amqp.prefix, &logs).await?;
    let port_of = |name: &str| services.iter().find(|s| s.name == name).map(|s| s.port).unwrap_or_default();
    let stats = Stats::default();
    let pace = Pace::new(args.rate);
    let scim = Client::new(
        format!("http://127.0.0.1:{}/scim/v2", port_of("muster-ingress")),
        scim_token,
        true,
        stats.clone(),
        pace.clone(),
    );
    let admin = Client::new(
        format!("http://127.0.0.1:{}/api/v1", port_of("muster-admin")),
        admin_token,
        false,
        stats.clone(),
        Pace::new(None),
    );
    let stop_sampling = CancellationToken::new();
    let depths = system::sample_depths(pool.clone(), bench_amqp.clone(), stop_sampling.clone());

    let relay = services.iter().find(|s| s.name == "muster-relay");
    if args.hold_relay {
        progress("holding the relay through the write phases");
        if let Some(relay) = relay {
            relay.hold(true).await?;
        }
    }
    let outcome = drive(&company, &scim, &admin, &args, &progress).await;
    let mut held_outbox = None;
    if let (true, Some(relay)) = (args.hold_relay, relay) {
        held_outbox = sqlx::query_scalar::<_, i64>("select count(*) from scim.outbox").fetch_one(&pool).await.ok();
        relay.hold(false).await?;
    }
    let (ids, phases, last_write) = match outcome {
        Ok(done) => done,
        Err(err) => {
            stop_sampling.cancel();
            for service in services {
                service.stop().await;
            }
            return Err(err);
        }
    };
    progress("waiting until every member is in its final state…");
    let settled = completion(&pool, tenant.id, &depths, Duration::from_secs(args.timeout_secs)).await;
    let lags = lag_distribution(&pool, tenant.id).await.unwrap_or_default();
    if matches!(settled, Ok(Some(_))) && args.lookups > 0 {
        // At rest: nothing left in the queues or the outbox (events that change no member,
        // such as the notifier's share, may still flow after everyone is final), and no
        // vacuum or analyze still working through what the sync left behind.
        let resting_since = Instant::now();
        let quiet_by = resting_since + Duration::from_secs(120);
        while Instant::now() < quiet_by && depths.lock().map(|d| d.waiting_now != Some(0)).unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        while Instant::now() < quiet_by && maintenance_running(&pool).await {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The sampler's `count(*)` of the outbox reads the whole table — every row the sync
        // left dead, without autovacuum — with parallel workers, four times a second once the
        // outbox is small: at rest it was most of what else the box did during the lookups
        // (`pg_stat_activity`). Everything is at rest now; nothing is left to sample.
        stop_sampling.cancel();
        progress(&format!(
            "{} lookups of stored users, {} connections (at rest after {:.0} s)",
            args.lookups,
            args.lookup_connections,
            resting_since.elapsed().as_secs_f64()
        ));
        lookups(&company, &scim, args.lookups, args.lookup_connections, args.seed).await;
    }
    let final_counts = final_counts(&pool, tenant.id).await.unwrap_or(Value::Null);
    let relay_bursts = match relay {
        Some(relay) => relay.metric("relay_bursts_total").await,
        None => None,
    };
    stop_sampling.cancel();
    let usage: Vec<(&'static str, system::Usage)> = services.iter().map(|s| (s.name, s.usage())).collect();
    let exited: Vec<&str> = services.iter().filter(|s| s.has_exited()).map(|s| s.name).collect();
    for service in services {
        service.stop().await;
    }
    let depths = depths.lock().map(|d| d.clone()).unwrap_or_default();
    if let Some(baseline) = baselines.as_mut() {
        // Again with the services stopped: the box's speed drifts over a run (7,717–9,780
        // commits/s between runs on the development box), and the ratio should not rest on
        // one end of it.
        progress("baseline again: PostgreSQL commits…");
        baseline.commits_after = baseline::postgres(&pool, args.connections, args.baseline_seconds).await.ok();
    }
    pool.close().await;
    if !args.keep {
        drop_database(database, &format!("muster_bench_{suffix}")).await;
        if let Ok(connection) = muster_infra::amqp::connect(&bench_amqp).await {
            if let Ok(channel) = connection.create_channel().await {
                let names = muster_contracts::Names::new(bench_amqp.prefix.clone());
                let delays = muster_infra::worker::WorkerSettings::default().retry_delays_ms;
                muster_infra::amqp::delete_topology(&channel, &names, &delays).await;
            }
            let _ = connection.close(200, "bench done".into()).await;
        }
    }
    let settled = settled?;
    let report = report::Report {
        args: args.clone(),
        users_created: ids.users.iter().filter(|u| u.is_some()).count(),
        groups_created: ids.groups.len(),
        stats: stats.snapshot(),
        phases,
        settle: settled.map(|at| at.duration_since(last_write)),
        timeout: Duration::from_secs(args.timeout_secs),
        lags,
        final_counts,
        usage,
        depths,
        baselines,
        held_outbox,
        relay_bursts,
        logs,
    };
    report.print(args.json);
    if !exited.is_empty() {
        bail!(
            "{} exited during the run (logs in {}): these are not the system's figures",
            exited.join(", "),
            report.logs.display()
        );
    }
    if args.hold_relay && held_outbox.unwrap_or(0) < i64::try_from(report.users_created).unwrap_or(i64::MAX) {
        // Every created user left an event behind a held relay: fewer means it was not held.
        bail!("the relay published while it was held ({held_outbox:?} events waiting at the last write)");
    }
    if report.settle.is_none() {
        bail!("not every member was provisioned {} s after the last SCIM write", args.timeout_secs);
    }
    Ok(())
}

async fn drop_database(database: &DatabaseSettings, name: &str) {
    let Ok(admin_url) = with_database(database.url.expose_secret(), "postgres") else { return };
    let mut admin_db = database.clone();
    admin_db.url = SecretString::from(admin_url);
    if let Ok(pool) = muster_infra::db::pool(&admin_db) {
        let _ = sqlx::query(&format!("drop database if exists \"{name}\" with (force)")).execute(&pool).await;
        pool.close().await;
    }
}

/// `/Users?filter=userName eq "…"`, encoded.
fn by_user_name(user_name: &str) -> String {
    let filter = format!("userName eq \"{user_name}\"");
    let encoded: String = form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("/Users?filter={encoded}")
}

/// `count` lookups of random stored users, `connections` at a time.
async fn lookups(company: &Company, scim: &Client, count: usize, connections: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let picks: Vec<usize> = (0..count).map(|_| rng.random_range(0..company.users.len())).collect();
    futures_util::stream::iter(picks)
        .for_each_concurrent(connections.max(1), |i| async move {
            let path = by_user_name(&company.users[i].user_name);
            scim.send(LOOKUP_AT_REST, Method::GET, &path, None).await;
        })
        .await;
}

/// The request kind of the lookups once everyone is provisioned.
pub const LOOKUP_AT_REST: &str = "GET /Users?filter at rest";

/// The phases with their wall time.
pub type Phases = Vec<(&'static str, Duration)>;

/// Entra's cycle: users (look up, then create), managers by id, groups, assignments,
/// memberships in batches, then an incremental cycle. Returns the ids, the phases, and the
/// instant of the last SCIM write.
async fn drive(
    company: &Company,
    scim: &Client,
    admin: &Client,
    args: &BenchArgs,
    progress: &dyn Fn(&str),
) -> anyhow::Result<(Ids, Phases, Instant)> {
    let c = args.connections;
    let mut phases = Vec::new();
    let answer = admin.send("PUT /catalog (admin)", Method::PUT, "/catalog", Some(&Company::catalog())).await;
    if answer.status != 200 {
        bail!("the admin API refused the catalog: {} {}", answer.status, answer.text());
    }

    progress(&format!("{} users: GET ?filter=userName eq … then POST, {c} connections", company.users.len()));
    let started = Instant::now();
    let created: Vec<(usize, Option<String>)> = futures_util::stream::iter(company.send_order.iter().copied())
        .map(|i| async move {
            let user = &company.users[i];
            scim.send("GET /Users?filter", Method::GET, &by_user_name(&user.user_name), None).await;
            let answer = scim.send("POST /Users", Method::POST, "/Users", Some(&user.body)).await;
            (i, answer.id())
        })
        .buffer_unordered(c)
        .collect()
        .await;
    phases.push(("users", started.elapsed()));
    let mut users = vec![None; company.users.len()];
    for (i, id) in created {
        users[i] = id;
    }
    let users = Arc::new(users);

    progress("managers by id, in later PATCHes");
    let started = Instant::now();
    let links: Vec<(String, String)> = company
        .users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u.manager {
            ManagerRef::Id(m) => Some((users[i].clone()?, users[m].clone()?)),
            _ => None,
        })
        .collect();
    futures_util::stream::iter(links)
        .for_each_concurrent(c, |(user, manager)| async move {
            let body = patch(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": manager}]));
            scim.send("PATCH /Users manager", Method::PATCH, &format!("/Users/{user}"), Some(&body)).await;
        })
        .await;
    phases.push(("managers", started.elapsed()));

    progress(&format!("{} groups, created empty", company.groups.len()));
    let started = Instant::now();
    let groups: Vec<Option<String>> = futures_util::stream::iter(company.groups.iter())
        .map(|(name, _)| async move {
            let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name,
                              "externalId": format!("grp-{name}")});
            scim.send("POST /Groups", Method::POST, "/Groups", Some(&body)).await.id()
        })
        .buffered(c)
        .collect()
        .await;
    let groups: Vec<String> = groups.into_iter().flatten().collect();
    for assignment in Company::assignments(&groups) {
        let answer = admin.send("POST /assignments (admin)", Method::POST, "/assignments", Some(&assignment)).await;
        if answer.status != 201 {
            bail!("the admin API refused an assignment: {} {}", answer.status, answer.text());
        }
    }
    phases.push(("groups", started.elapsed()));

    progress(&format!("memberships in PATCHes of {}", args.batch));
    let started = Instant::now();
    let mut batches = Vec::new();
    for ((_, members), group) in company.groups.iter().zip(&groups) {
        let ids: Vec<&String> = members.iter().filter_map(|m| users[*m].as_ref()).collect();
        for chunk in ids.chunks(args.batch.max(1)) {
            let value: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
            batches.push((group.clone(), patch(json!([{"op": "Add", "path": "members", "value": value}]))));
        }
    }
    futures_util::stream::iter(batches)
        .for_each_concurrent(c, |(group, body)| async move {
            scim.send("PATCH /Groups members", Method::PATCH, &format!("/Groups/{group}"), Some(&body)).await;
        })
        .await;
    phases.push(("memberships", started.elapsed()));

    progress("incremental cycle: attribute updates, deactivations, reactivations, membership moves");
    let started = Instant::now();
    let n = company.users.len();
    let every = |k: usize| (0..n).step_by(k.max(1)).filter_map(|i| users[i].clone()).collect::<Vec<_>>();
    let updates = every(100);
    futures_util::stream::iter(updates)
        .for_each_concurrent(c, |id| async move {
            let body = patch(json!([{"op": "Replace", "path": "title", "value": "Senior Engineer"},
                                    {"op": "Replace", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 212 555 0199"}]));
            scim.send("PATCH /Users attributes", Method::PATCH, &format!("/Users/{id}"), Some(&body)).await;
        })
        .await;
    let deactivated: Vec<String> = (0..n).skip(3).step_by(200).filter_map(|i| users[i].clone()).collect();
    let active = |on: bool| patch(json!([{"op": "Replace", "path": "active", "value": on}]));
    futures_util::stream::iter(deactivated.clone())
        .for_each_concurrent(c, |id| {
            let body = active(false);
            async move {
                scim.send("PATCH /Users active", Method::PATCH, &format!("/Users/{id}"), Some(&body)).await;
            }
        })
        .await;
    futures_util::stream::iter(deactivated.into_iter().step_by(2))
        .for_each_concurrent(c, |id| {
            let body = active(true);
            async move {
                scim.send("PATCH /Users active", Method::PATCH, &format!("/Users/{id}"), Some(&body)).await;
            }
        })
        .await;
    // Moves between groups: out of one group, into the next.
    let mut moves = Vec::new();
    if groups.len() > 2 {
        for (g, (_, members)) in company.groups.iter().enumerate().skip(1) {
            for m in members.iter().step_by(200) {
                if let Some(id) = &users[*m] {
                    moves.push((groups[g].clone(), groups[1 + g % (groups.len() - 1)].clone(), id.clone()));
                }
            }
        }
    }
    futures_util::stream::iter(moves)
        .for_each_concurrent(c, |(from, to, id)| async move {
            let out = patch(json!([{"op": "Remove", "path": format!("members[value eq \"{id}\"]")}]));
            scim.send("PATCH /Groups members", Method::PATCH, &format!("/Groups/{from}"), Some(&out)).await;
            let into = patch(json!([{"op": "Add", "path": "members", "value": [{"value": id}]}]));
            scim.send("PATCH /Groups members", Method::PATCH, &format!("/Groups/{to}"), Some(&into)).await;
        })
        .await;
    phases.push(("incremental", started.elapsed()));
    let last_write = Instant::now();
    let users = Arc::try_unwrap(users).unwrap_or_else(|shared| (*shared).clone());
    Ok((Ids { users, groups }, phases, last_write))
}

fn patch(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}

/// Whether a vacuum or analyze (autovacuum's, usually, after a sync) is working on the bench's
/// database.
async fn maintenance_running(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar(
        "select exists(select 1 from pg_stat_progress_vacuum where datname = current_database())
             or exists(select 1 from pg_stat_progress_analyze where datname = current_database())",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(false)
}

/// Waits until every member is in its final state; returns when it was: every SCIM user's
/// newest version normalized, every member's newest version placed (or pending with a reason),
/// every active member under the assignment its groups give and every inactive one holding
/// nothing, and nothing left in the outbox.
///
/// While the sampler sees events waiting for those workers, the whole check runs only every
/// [`CHECK_WHILE_WAITING`]: with the outbox empty it compares every user and member with the
/// versions processed (110 ms a check at 100,000 users, 24 s of PostgreSQL in a run checked
/// every 360 ms). Members can be final before the last (stale) events are consumed, so this
/// may report completion up to that long late, never early.
async fn completion(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    depths: &std::sync::Mutex<system::Depths>,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    let started = Instant::now();
    let mut analyzed: Option<Instant> = None;
    let mut checked: Option<Instant> = None;
    loop {
        let waiting = depths.lock().map(|d| d.members_waiting_now.is_some_and(|n| n > 0)).unwrap_or(false);
        if waiting && checked.is_some_and(|at| at.elapsed() < CHECK_WHILE_WAITING) {
            if started.elapsed() > timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        checked = Some(Instant::now());
        // The tables grow from nothing during the run: fresh statistics keep the checks' plans
        // on the indexes. Taken by the clock, not by rounds: statistics taken just after the
        // last write (with the relay held, before any member was processed) planned the check
        // as a nested loop over an "empty" table that ran for 20 s at 20,000 members.
        if analyzed.is_none_or(|at| at.elapsed() >= ANALYZE_EVERY) {
            analyze_grown(pool).await?;
            analyzed = Some(Instant::now());
        }
        let checking = Instant::now();
        if settled(pool, tenant).await? {
            return Ok(Some(Instant::now()));
        }
        if started.elapsed() > timeout {
            return Ok(None);
        }
        // The check never takes more than half of one core from the system it measures.
        tokio::time::sleep(checking.elapsed().max(Duration::from_millis(250))).await;
    }
}

/// How often [`completion`] checks while events wait for the workers.
const CHECK_WHILE_WAITING: Duration = Duration::from_secs(5);

/// How often [`completion`] looks for tables whose statistics are out of date.
const ANALYZE_EVERY: Duration = Duration::from_secs(5);

/// The tables [`settled`] reads.
const CHECKED_TABLES: [&str; 6] = [
    "scim.users",
    "scim.group_members",
    "members.members",
    "worker.processed_versions",
    "hierarchy.nodes",
    "assignments.member_state",
];

/// Analyzes those of [`CHECKED_TABLES`] that changed by more rows than they held at their last
/// analyze (and 50): the checks' plans need each table's order of magnitude, which autovacuum
/// keeps up to date in production and is off on some boxes. Analyzing all six every 5 s took
/// 2.8 s of PostgreSQL's CPU each time (`pg_stat_statements`, 30,000 users; 1.2 s for
/// `scim.users` alone, unchanged once Entra's writes were over): a quarter of the box the
/// workers were being timed on. At autovacuum's own 10 % the tables the workers fill were still
/// analyzed 8–14 times in a 100,000-user drain, 45 s of PostgreSQL (2.5 s for each analyze of
/// `assignments.member_state`, with its JSON columns).
async fn analyze_grown(pool: &sqlx::PgPool) -> sqlx::Result<()> {
    let grown: Vec<String> = sqlx::query_scalar(
        "select format('%I.%I', s.schemaname, s.relname)
         from pg_stat_user_tables s join pg_class c on c.oid = s.relid
         where format('%s.%s', s.schemaname, s.relname) = any($1)
           and (s.last_analyze is null and s.last_autoanalyze is null
                or s.n_mod_since_analyze > 50 + greatest(c.reltuples, 0))",
    )
    .bind(&CHECKED_TABLES[..])
    .fetch_all(pool)
    .await?;
    for table in grown {
        sqlx::raw_sql(&format!("analyze {table}")).execute(pool).await?;
    }
    Ok(())
}

async fn settled(pool: &sqlx::PgPool, tenant: Uuid) -> sqlx::Result<bool> {
    let cheap: bool = sqlx::query_scalar(
        "select not exists(select 1 from scim.outbox)
            and not exists(select 1 from scim.users u
                           where u.tenant_id = $1
                             and not exists(select 1 from worker.processed_versions p
                                            where p.worker = 'normalizer' and p.tenant_id = $1
                                              and p.entity_id = u.id::text and p.version >= u.version))
            and not exists(select 1 from members.members m
                           where m.tenant_id = $1
                             and not exists(select 1 from worker.processed_versions p
                                            where p.worker = 'hierarchy' and p.tenant_id = $1
                                              and p.entity_id = m.scim_user_id::text and p.version >= m.version))",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    if !cheap {
        return Ok(false);
    }
    // The assignment each member's groups give, against what the worker applied.
    let wrong: i64 = sqlx::query_scalar(
        "with expected as (
             select m.scim_user_id, m.status,
                    coalesce((select a.id from assignments.assignments a
                              where a.tenant_id = $1 and not a.is_default
                                and a.groups && array(select gm.group_id from scim.group_members gm
                                                      where gm.tenant_id = $1 and gm.member_id = m.scim_user_id)
                              order by a.position, a.id limit 1),
                             (select id from assignments.assignments where tenant_id = $1 and is_default)) as assignment
             from members.members m where m.tenant_id = $1 and m.status <> 'skipped')
         select count(*) from expected e
         left join assignments.member_state s on s.tenant_id = $1 and s.scim_user_id = e.scim_user_id
         where (e.status = 'active' and (s.scim_user_id is null or not s.active or s.assignment_id <> e.assignment))
            or (e.status <> 'active' and s.active)",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await?;
    Ok(wrong == 0)
}

/// Per member: from the user's last SCIM write to the last change the workers made to it.
async fn lag_distribution(pool: &sqlx::PgPool, tenant: Uuid) -> sqlx::Result<Vec<(String, f64)>> {
    let row: [Option<f64>; 5] = sqlx::query_as::<_, (Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<f64>)>(
        "with lag as (
             select greatest(0, extract(epoch from greatest(m.updated_at, n.updated_at, l.updated_at, s.updated_at) - u.updated_at))::float8
                        as seconds
             from scim.users u
             join members.members m on m.tenant_id = u.tenant_id and m.scim_user_id = u.id
             left join hierarchy.nodes n on n.tenant_id = m.tenant_id and n.scim_user_id = m.scim_user_id
             left join hierarchy.links l on l.tenant_id = m.tenant_id and l.scim_user_id = m.scim_user_id
             left join assignments.member_state s on s.tenant_id = m.tenant_id and s.scim_user_id = m.scim_user_id
             where u.tenant_id = $1)
         select percentile_cont(0.5) within group (order by seconds), percentile_cont(0.95) within group (order by seconds),
                percentile_cont(0.99) within group (order by seconds), max(seconds), avg(seconds) from lag",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .map(|r| [r.0, r.1, r.2, r.3, r.4])?;
    Ok(["p50", "p95", "p99", "max", "mean"].iter().zip(row).map(|(k, v)| (k.to_string(), v.unwrap_or(0.0))).collect())
}

/// What the company came to: members by status, links by resolution, members by assignment.
async fn final_counts(pool: &sqlx::PgPool, tenant: Uuid) -> sqlx::Result<Value> {
    let by = |sql: &'static str| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql).bind(tenant).fetch_all(pool).await?;
        Ok::<Value, sqlx::Error>(Value::Object(rows.into_iter().map(|(k, v)| (k, json!(v))).collect()))
    };
    Ok(json!({
        "members": by("select status, count(*) from members.members where tenant_id = $1 group by 1 order by 1").await?,
        "manager_links": by("select coalesce(l.resolution, 'none'), count(*) from hierarchy.nodes n
                                left join hierarchy.links l on l.tenant_id = n.tenant_id and l.scim_user_id = n.scim_user_id
                                where n.tenant_id = $1 group by 1 order by 1").await?,
        "assignments": by("select assignment_name || case when active then '' else ' (inactive)' end, count(*)
                           from assignments.member_state where tenant_id = $1 group by 1 order by 1").await?,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use muster_testkit::db::TestDb;

    use super::analyze_grown;

    async fn last_analyzed(db: &TestDb) -> Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> {
        sqlx::query_as(
            "select format('%s.%s', schemaname, relname), last_analyze from pg_stat_user_tables
             where format('%s.%s', schemaname, relname) = any($1) order by 1",
        )
        .bind(&super::CHECKED_TABLES[..])
        .fetch_all(&db.pool)
        .await
        .unwrap()
    }

    /// Rows written on a connection of their own, whose statistics reach the server as it closes.
    async fn write_versions(db: &TestDb, rows: i32) {
        let mut conn = db.pool.acquire().await.unwrap().detach();
        sqlx::query(
            "insert into worker.processed_versions (worker, tenant_id, entity_id, version)
             select 'bench-test', gen_random_uuid(), n::text, 1 from generate_series(1, $1) n",
        )
        .bind(rows)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }

    /// After the writing session's statistics reached the server (as it exits, a moment after
    /// closing), the tables that [`analyze_grown`] analyzes.
    async fn analyzed_again(
        db: &TestDb,
        before: &[(String, Option<chrono::DateTime<chrono::Utc>>)],
        modified: i64,
    ) -> Vec<String> {
        for _ in 0..50 {
            let seen: i64 = sqlx::query_scalar(
                "select n_mod_since_analyze from pg_stat_user_tables
                 where schemaname = 'worker' and relname = 'processed_versions'",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if seen >= modified {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        analyze_grown(&db.pool).await.unwrap();
        let after = last_analyzed(db).await;
        after.iter().zip(before).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0.clone()).collect()
    }

    #[tokio::test]
    async fn only_tables_that_doubled_since_their_last_analyze_are_analyzed_again() {
        let db = TestDb::create().await;
        analyze_grown(&db.pool).await.unwrap();
        let first = last_analyzed(&db).await;
        assert_eq!(first.len(), 6);
        assert!(first.iter().all(|(_, at)| at.is_some()), "never analyzed, so all analyzed: {first:?}");

        write_versions(&db, 10).await;
        assert_eq!(analyzed_again(&db, &first, 10).await, Vec::<String>::new(), "10 rows are under the threshold");

        let second = last_analyzed(&db).await;
        write_versions(&db, 60).await;
        assert_eq!(analyzed_again(&db, &second, 70).await, vec!["worker.processed_versions".to_string()]);

        // 70 rows at that analyze: 100 more are not twice as many yet, 130 are.
        let third = last_analyzed(&db).await;
        write_versions(&db, 100).await;
        assert_eq!(analyzed_again(&db, &third, 100).await, Vec::<String>::new(), "grown by 10 % or more is not enough");
        write_versions(&db, 30).await;
        assert_eq!(analyzed_again(&db, &third, 130).await, vec!["worker.processed_versions".to_string()]);
    }
}
