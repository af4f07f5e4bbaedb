// Every service allocates with mimalloc: glibc's malloc took 13–22 % of the workers' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muster_hierarchy::{DEFAULTS, Settings};
use muster_infra::worker::WORKER_DEFAULTS;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = muster_infra::config::load_layers(&[DEFAULTS, WORKER_DEFAULTS])?;
    let _telemetry = muster_infra::telemetry::init("hierarchy", &settings.telemetry)?;
    let shutdown = muster_infra::shutdown::on_signals();
    if let Err(err) = muster_hierarchy::run(settings, shutdown).await {
        tracing::error!(error = format!("{err:#}"), "hierarchy stopped");
        return Err(err);
    }
    Ok(())
}
