// glibc's malloc took a fifth of the ingress's CPU under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use muster_ingress::{DEFAULTS, SCIM_DEFAULTS, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = muster_infra::config::load_layers(&[DEFAULTS, SCIM_DEFAULTS])?;
    let _telemetry = muster_infra::telemetry::init("ingress", &settings.telemetry)?;
    let shutdown = muster_infra::shutdown::on_signals();
    if let Err(err) = muster_ingress::run(settings, shutdown).await {
        tracing::error!(error = format!("{err:#}"), "ingress stopped");
        return Err(err);
    }
    Ok(())
}
