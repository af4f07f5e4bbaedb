// Every service allocates with mimalloc: glibc's malloc took 13–22 % of the workers' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muster_relay::{DEFAULTS, RELAY_DEFAULTS, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = muster_infra::config::load_layers(&[DEFAULTS, RELAY_DEFAULTS])?;
    let _telemetry = muster_infra::telemetry::init("relay", &settings.telemetry)?;
    let shutdown = muster_infra::shutdown::on_signals();
    if let Err(err) = muster_relay::run(settings, shutdown).await {
        tracing::error!(error = format!("{err:#}"), "relay stopped");
        return Err(err);
    }
    Ok(())
}
