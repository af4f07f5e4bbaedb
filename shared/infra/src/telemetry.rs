//! Tracing and logs: an env filter, JSON (or pretty) lines, OpenTelemetry spans exported over
//! OTLP when configured, and W3C trace-context propagation so one trace follows a SCIM request
//! through the outbox, RabbitMQ and every worker.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context as OtelContext, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogFormat, TelemetrySettings};

/// Flushes buffered spans when dropped; keep it alive for the life of `main`.
#[must_use = "dropping the guard flushes and stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("flushing spans failed: {err}");
        }
    }
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Installs the global subscriber for `service`. Must run inside the Tokio runtime (the OTLP
/// exporter needs it). A second call in the same process is a no-op.
pub fn init(service: &str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    if INSTALLED.get().is_some() {
        return Ok(TelemetryGuard { provider: None });
    }
    let mut builder =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service.to_string()).build());
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .context("building the OTLP span exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    // A provider is installed even without an exporter, so spans carry real trace ids and
    // the traceparent put on messages links producer and consumer logs.
    let provider = builder.build();
    let tracer = provider.tracer(service.to_string());
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .context("telemetry.filter is not a valid filter directive")?;
    let registry = tracing_subscriber::registry().with(filter).with(tracing_opentelemetry::layer().with_tracer(tracer));
    let installed = match settings.log_format {
        LogFormat::Json => registry.with(fmt::layer().json().with_current_span(true).with_span_list(false)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
    installed.context("installing the tracing subscriber")?;
    let _ = INSTALLED.set(());
    Ok(TelemetryGuard { provider: Some(provider) })
}

/// For tests: silent unless `TEST_LOG=1`, but always with trace propagation installed.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let settings = TelemetrySettings {
                log_format: LogFormat::Pretty,
                filter: "info,muster=debug".into(),
                otlp_endpoint: None,
            };
            if let Ok(guard) = init("test", &settings) {
                std::mem::forget(guard);
            }
        } else {
            global::set_text_map_propagator(TraceContextPropagator::new());
        }
    });
}

/// The W3C `traceparent` of the current span; a fresh one when no trace is active, so every
/// message carries a trace id that its consumers' logs can be joined on.
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent").filter(|t| !t.starts_with("00-00000000000000000000000000000000")).unwrap_or_else(
        || {
            let trace: u128 = rand::random::<u128>() | 1;
            let span: u64 = rand::random::<u64>() | 1;
            format!("00-{trace:032x}-{span:016x}-01")
        },
    )
}

/// Makes `span` a child of the trace named by a `traceparent` header value.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let cx: OtelContext = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}
