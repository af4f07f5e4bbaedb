//! `musterctl up`: the whole system in one process, for a laptop or a demo.

use anyhow::Context;
use muster_contracts::Names;
use muster_infra::config::HttpSettings;
use muster_infra::http::Readiness;
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
    let ingress = muster_ingress::Ingress::bind(&ingress_settings, pool.clone()).await?;
    let admin = muster_admin::Admin::bind(&admin_settings, pool.clone()).await?;
    let relay = muster_relay::Relay::new(pool.clone(), settings.amqp.clone(), settings.relay.clone());
    let relay_listener = TcpListener::bind(args.relay_addr)
        .await
        .with_context(|| format!("binding the relay's health listener on {}", args.relay_addr))?;
    let relay_ops = muster_infra::http::ops_routes(Readiness { pool: pool.clone(), broker: Some(relay.health()) });
    let normalizer_settings = muster_normalizer::Settings {
        database: settings.database.clone(),
        amqp: settings.amqp.clone(),
        http: HttpSettings { addr: args.normalizer_addr },
        telemetry: settings.telemetry.clone(),
        worker: settings.worker.clone(),
    };
    let normalizer = muster_normalizer::worker(&normalizer_settings, pool.clone());
    let normalizer_listener = TcpListener::bind(args.normalizer_addr)
        .await
        .with_context(|| format!("binding the normalizer's health listener on {}", args.normalizer_addr))?;
    tracing::info!(ingress = %ingress.local_addr()?, admin = %admin.local_addr()?, relay = %args.relay_addr, normalizer = %args.normalizer_addr, "muster is up");

    // If one service fails, stop the others rather than run half a system.
    let stop_all = |result: anyhow::Result<()>, shutdown: &tokio_util::sync::CancellationToken| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let (a, b, c, d, e) = tokio::join!(
        async { stop_all(ingress.run(shutdown.clone()).await, &shutdown) },
        async { stop_all(admin.run(shutdown.clone()).await, &shutdown) },
        async { stop_all(relay.run(shutdown.clone()).await, &shutdown) },
        async { stop_all(muster_infra::http::serve(relay_listener, relay_ops, shutdown.clone()).await, &shutdown) },
        async {
            stop_all(normalizer.run_with_ops(pool.clone(), normalizer_listener, shutdown.clone()).await, &shutdown)
        },
    );
    a.and(b).and(c).and(d).and(e)
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
