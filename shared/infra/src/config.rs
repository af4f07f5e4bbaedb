//! Layered configuration: defaults embedded in the binary → optional file → environment.
//!
//! The file is `$MUSTER_CONFIG` when set. Environment variables use the `APP_` prefix and `__`
//! between levels (`APP_DATABASE__MAX_CONNECTIONS=20`); `DATABASE_URL` and `AMQP_URL` are
//! honoured as the conventional names for the two connection strings.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Defaults every service shares; a service appends its own sections.
pub const BASE_DEFAULTS: &str = r#"
[database]
url = "postgres://postgres@127.0.0.1:5432/muster"
max_connections = 10
acquire_timeout_ms = 5000

[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = ""

[telemetry]
log_format = "json"
filter = "info"
"#;

/// Loads `T` from `defaults` (TOML), the optional file and the environment. Fails fast with
/// the offending key named.
pub fn load<T: DeserializeOwned>(defaults: &str) -> anyhow::Result<T> {
    load_layers(&[defaults])
}

/// Like [`load`], with several default sections (e.g. `musterctl up`, which runs every
/// service, takes each service's defaults).
pub fn load_layers<T: DeserializeOwned>(defaults: &[&str]) -> anyhow::Result<T> {
    let mut builder = Config::builder().add_source(File::from_str(BASE_DEFAULTS, FileFormat::Toml));
    for layer in defaults {
        builder = builder.add_source(File::from_str(layer, FileFormat::Toml));
    }
    if let Ok(path) = std::env::var("MUSTER_CONFIG") {
        builder = builder.add_source(File::with_name(&path).required(true));
    }
    builder =
        builder.add_source(Environment::with_prefix("APP").prefix_separator("_").separator("__").try_parsing(true));
    builder = builder
        .set_override_option("database.url", std::env::var("DATABASE_URL").ok())
        .context("DATABASE_URL")?
        .set_override_option("amqp.url", std::env::var("AMQP_URL").ok())
        .context("AMQP_URL")?;
    builder.build().context("reading configuration")?.try_deserialize().context("invalid configuration")
}

/// One section of embedded TOML defaults alone (no file, no environment): what a caller
/// that builds its settings in code, such as a test, starts from.
pub fn embedded_section<T: DeserializeOwned>(defaults: &str, section: &str) -> anyhow::Result<T> {
    Config::builder()
        .add_source(File::from_str(defaults, FileFormat::Toml))
        .build()
        .context("reading embedded defaults")?
        .get(section)
        .with_context(|| format!("embedded defaults of [{section}]"))
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user[:password]@host:port/database`.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    /// How long a request may wait for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

/// RabbitMQ connection settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: SecretString,
    /// Put before every exchange and queue name, so deployments and tests sharing a broker
    /// stay apart.
    pub prefix: String,
}

/// An HTTP listener.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub addr: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for production log pipelines.
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// Logging and tracing settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info,muster_ingress=debug`; `RUST_LOG` wins when set.
    pub filter: String,
    /// OTLP/gRPC collector endpoint (e.g. `http://127.0.0.1:4317`); no export when absent.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Demo {
        database: DatabaseSettings,
        amqp: AmqpSettings,
        http: HttpSettings,
    }

    #[test]
    fn defaults_load_and_name_the_bad_key() {
        let ok: Demo = load("[http]\naddr = \"127.0.0.1:8080\"").unwrap();
        assert_eq!(ok.database.max_connections, 10);
        assert_eq!(ok.amqp.prefix, "");
        assert_eq!(ok.http.addr.port(), 8080);
        let err = load::<Demo>("[http]\naddr = \"not an address\"").unwrap_err();
        assert!(format!("{err:#}").contains("addr"), "{err:#}");
    }
}
