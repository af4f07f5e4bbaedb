//! `musterctl up`: the whole system in one process, for a laptop or a demo.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use muster_contracts::Names;
use muster_infra::config::HttpSettings;
use muster_infra::http::Readiness;
use muster_infra::worker::WorkerServiceSettings;
use tokio::net::TcpListener;

use crate::{CtlSettings, UpArgs};

pub async fn up(settings: CtlSettings, args: UpArgs) -> anyhow::Result<()> {
    let _telemetry = muster_infra::telemetry::init("muster", &settings.telemetry)?;
    let shutdown = muster_infra::shutdown::on_signals();
    muster_infra::db::ensure_database(&settings.database).await?;
    let pool = muster_infra::db::pool(&settings.database)?;
    muster_infra::db::migrate(&pool).await?;
    declare_topology(&settings).await;

    let ingress_settings = muster_ingress::Settings {
        database: settings.database.clone(),
        http: HttpSettings { addr: args.ingress_addr },
        telemetry: settings.telemetry.clone(),
        scim: settings.scim.clone(),
    };
    let admin_settings = muster_admin::Settings {
        database: settings.database.clone(),
        amqp: settings.amqp.clone(),
        http: HttpSettings { addr: args.admin_addr },
        telemetry: settings.telemetry.clone(),
    };
    // The ingress's statements keep generic plans: a pool of its own.
    let ingress_pool = muster_ingress::pool(&settings.database)?;
    let ingress = muster_ingress::Ingress::bind(&ingress_settings, ingress_pool).await?;
    let admin = muster_admin::Admin::bind(&admin_settings, pool.clone()).await?;
    let relay = muster_relay::Relay::new(pool.clone(), settings.amqp.clone(), settings.relay.clone());
    let relay_listener = bind_ops("relay", args.relay_addr).await?;
    let relay_ops = muster_infra::http::ops_routes(Readiness { pool: pool.clone(), broker: Some(relay.health()) });
    let normalizer_settings = worker_settings(&settings, args.normalizer_addr);
    let normalizer = muster_normalizer::worker(&normalizer_settings, pool.clone());
    let normalizer_listener = bind_ops("normalizer", args.normalizer_addr).await?;
    let hierarchy_settings = worker_settings(&settings, args.hierarchy_addr);
    let hierarchy = muster_hierarchy::worker(&hierarchy_settings, pool.clone());
    let hierarchy_listener = bind_ops("hierarchy", args.hierarchy_addr).await?;
    let assignments_settings = worker_settings(&settings, args.assignments_addr);
    let assignments = muster_assignments::worker(&assignments_settings, pool.clone());
    let assignments_listener = bind_ops("assignments", args.assignments_addr).await?;
    let notifier_settings = muster_notifier::Settings {
        service: worker_settings(&settings, args.notifier_addr),
        smtp: settings.smtp.clone(),
        notifier: settings.notifier.clone(),
    };
    let clock = muster_notifier::Clock::system();
    let notifier = muster_notifier::worker(&notifier_settings, pool.clone(), clock.clone());
    let dispatcher = muster_notifier::dispatcher(&notifier_settings, pool.clone(), clock)?;
    let notifier_listener = bind_ops("notifier", args.notifier_addr).await?;
    tracing::info!(ingress = %ingress.local_addr()?, admin = %admin.local_addr()?, relay = %args.relay_addr,
        normalizer = %args.normalizer_addr, hierarchy = %args.hierarchy_addr,
        assignments = %args.assignments_addr, notifier = %args.notifier_addr,
        smtp = %format!("{}:{}", settings.smtp.host, settings.smtp.port), "muster is up");

    let services: Vec<Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>> = vec![
        Box::pin(ingress.run(shutdown.clone())),
        Box::pin(admin.run(shutdown.clone())),
        Box::pin(relay.run(shutdown.clone())),
        Box::pin(muster_infra::http::serve(relay_listener, relay_ops, shutdown.clone())),
        Box::pin(normalizer.run_with_ops(pool.clone(), normalizer_listener, shutdown.clone())),
        Box::pin(hierarchy.run_with_ops(pool.clone(), hierarchy_listener, shutdown.clone())),
        Box::pin(assignments.run_with_ops(pool.clone(), assignments_listener, shutdown.clone())),
        Box::pin(notifier.run_with_ops(pool.clone(), notifier_listener, shutdown.clone())),
        Box::pin(dispatcher.run(shutdown.clone())),
    ];
    // If one service fails, stop the others rather than run half a system.
    let results = futures_util::future::join_all(services.into_iter().map(|service| {
        let shutdown = shutdown.clone();
        async move {
            let result = service.await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    }))
    .await;
    results.into_iter().collect()
}

fn worker_settings(settings: &CtlSettings, addr: SocketAddr) -> WorkerServiceSettings {
    WorkerServiceSettings {
        database: settings.database.clone(),
        amqp: settings.amqp.clone(),
        http: HttpSettings { addr },
        telemetry: settings.telemetry.clone(),
        worker: settings.worker.clone(),
    }
}

async fn bind_ops(service: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {service}'s health listener on {addr}"))
}

/// Declares the exchanges and queues now if the broker answers; if not, the relay declares
/// them once it connects, and SCIM writes are accepted meanwhile.
async fn declare_topology(settings: &CtlSettings) {
    let names = Names::new(settings.amqp.prefix.clone());
    let result = async {
        let connection = muster_infra::amqp::connect(&settings.amqp).await?;
        let channel = connection.create_channel().await?;
        muster_infra::amqp::declare_topology(&channel, &names).await?;
        connection.close(200, "topology declared".into()).await
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "broker not reachable; the relay will declare the topology when it is");
    }
}
