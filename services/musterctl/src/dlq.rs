//! `musterctl dlq …`: what is dead-lettered, why, and putting it back or away.

use anyhow::{Context, bail};
use clap::Subcommand;
use muster_contracts::Names;
use muster_infra::config::AmqpSettings;
use muster_infra::worker::dlq::{self, DeadLetter, Selection};

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Every dead-letter queue with its depth and the age of its oldest message.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The messages of one DLQ (a worker name like `normalizer`, or the queue's name), left in place.
    Show {
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Republish messages into their worker's queue (with confirms), then remove them from the DLQ.
    Replay {
        queue: String,
        #[arg(long, conflicts_with = "event_id", required_unless_present = "event_id")]
        all: bool,
        #[arg(long = "event-id", num_args = 1..)]
        event_id: Vec<String>,
    },
    /// Discard messages for good (each one is logged).
    Purge {
        queue: String,
        #[arg(long, conflicts_with = "event_id", required_unless_present = "event_id")]
        all: bool,
        #[arg(long = "event-id", num_args = 1..)]
        event_id: Vec<String>,
        /// Confirms that the messages are to be discarded.
        #[arg(long)]
        yes: bool,
    },
}

fn selection(all: bool, event_ids: Vec<String>) -> Selection {
    if all { Selection::all() } else { Selection::events(event_ids) }
}

fn line(letter: &DeadLetter) -> String {
    let dash = || "-".to_string();
    format!(
        "{}  tenant={}  key={}  attempts={}  first={}  last={}\n    reason: {}",
        letter.event_id.clone().unwrap_or_else(dash),
        letter.tenant_id.clone().unwrap_or_else(dash),
        letter.routing_key.clone().unwrap_or_else(dash),
        letter.attempts.map(|a| a.to_string()).unwrap_or_else(dash),
        letter.first_failure.clone().unwrap_or_else(dash),
        letter.last_failure.clone().unwrap_or_else(dash),
        letter.reason.clone().unwrap_or_else(dash),
    )
}

pub async fn run(amqp: &AmqpSettings, cmd: DlqCommand) -> anyhow::Result<()> {
    let names = Names::new(amqp.prefix.clone());
    let connection = muster_infra::amqp::connect_named(amqp, "musterctl").await.context("connecting to RabbitMQ")?;
    let resolve = |queue: &str| {
        dlq::resolve(&names, queue).with_context(|| format!("'{queue}' is not a worker or its dead-letter queue"))
    };
    match cmd {
        DlqCommand::List { json } => {
            let summaries = dlq::summaries(&connection, &names).await?;
            if json {
                println!("{}", serde_json::to_string(&summaries)?);
            } else {
                println!("{:<40} {:>8}  OLDEST", "QUEUE", "DEPTH");
                for s in summaries {
                    let age =
                        s.oldest_age_seconds.map(|a| format!("{a}s ago ({})", s.oldest_failure.unwrap_or_default()));
                    println!("{:<40} {:>8}  {}", s.queue, s.depth, age.unwrap_or_else(|| "-".into()));
                }
            }
        }
        DlqCommand::Show { queue, limit, json } => {
            let letters = dlq::peek(&connection, &resolve(&queue)?, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&letters)?);
            } else {
                for letter in &letters {
                    println!("{}\n    payload: {}", line(letter), letter.payload);
                }
                println!("{} message(s) shown; none consumed", letters.len());
            }
        }
        DlqCommand::Replay { queue, all, event_id } => {
            let replayed = dlq::replay(&connection, &names, &resolve(&queue)?, &selection(all, event_id)).await?;
            for letter in &replayed {
                tracing::info!(event_id = ?letter.event_id, tenant_id = ?letter.tenant_id, "replayed");
            }
            println!("{}", serde_json::json!({"replayed": replayed.len()}));
        }
        DlqCommand::Purge { queue, all, event_id, yes } => {
            if !yes {
                bail!("purge discards messages for good; add --yes to confirm");
            }
            let purged = dlq::purge(&connection, &resolve(&queue)?, &selection(all, event_id)).await?;
            for letter in &purged {
                eprintln!("purged {}", line(letter));
                tracing::warn!(event_id = ?letter.event_id, tenant_id = ?letter.tenant_id, reason = ?letter.reason, "purged from the DLQ");
            }
            println!("{}", serde_json::json!({"purged": purged.len()}));
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
