// Every service allocates with mimalloc: glibc's malloc took 13–22 % of the workers' CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muster_infra::worker::WORKER_DEFAULTS;
use muster_notifier::{Clock, DEFAULTS, NOTIFIER_DEFAULTS, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = muster_infra::config::load_layers(&[DEFAULTS, NOTIFIER_DEFAULTS, WORKER_DEFAULTS])?;
    let _telemetry = muster_infra::telemetry::init("notifier", &settings.service.telemetry)?;
    let shutdown = muster_infra::shutdown::on_signals();
    if let Err(err) = muster_notifier::run(settings, Clock::system(), shutdown).await {
        tracing::error!(error = format!("{err:#}"), "notifier stopped");
        return Err(err);
    }
    Ok(())
}
