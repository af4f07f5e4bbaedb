//! The e-mail: composed (text and HTML, naming each new member with a link) and sent through
//! the configured SMTP relay with lettre.

use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP (a local relay such as Mailpit).
    None,
    /// STARTTLS required (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// The SMTP relay.
#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    /// The sender, e.g. `Muster <no-reply@example.com>`.
    pub from: String,
    pub timeout_ms: u64,
}

/// A new member as the e-mail names them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NewMember {
    pub member_id: Uuid,
    pub name: Option<String>,
    pub title: Option<String>,
    pub email: Option<String>,
}

/// One digest, ready to send.
#[derive(Debug, Clone)]
pub struct Digest {
    pub id: Uuid,
    pub recipient_name: Option<String>,
    pub recipient_email: String,
    pub members: Vec<NewMember>,
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    pub reason: String,
    pub permanent: bool,
}

/// Sends digests through the relay.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    base_url: String,
}

impl Mailer {
    /// A mailer for `smtp`, linking members under `base_url`.
    pub fn new(smtp: &SmtpSettings, base_url: &str) -> anyhow::Result<Mailer> {
        let from: Mailbox = smtp.from.parse().with_context(|| format!("smtp.from '{}' is not a mailbox", smtp.from))?;
        let tls = |host: &str| TlsParameters::new(host.to_string()).context("smtp TLS parameters");
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
            .port(smtp.port)
            .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
        builder = match smtp.tls {
            TlsMode::None => builder.tls(Tls::None),
            TlsMode::Starttls => builder.tls(Tls::Required(tls(&smtp.host)?)),
            TlsMode::Tls => builder.tls(Tls::Wrapper(tls(&smtp.host)?)),
        };
        if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_string()));
        }
        Ok(Mailer { transport: builder.build(), from, base_url: base_url.trim_end_matches('/').to_string() })
    }

    /// The message for `digest`. Its Message-ID is the digest's, so that a copy sent again by
    /// an operator's retry is recognisably the same message.
    pub fn compose(&self, digest: &Digest) -> Result<Message, SendError> {
        let permanent = |reason: String| SendError { reason, permanent: true };
        let to: Mailbox = match &digest.recipient_name {
            Some(name) => format!("{} <{}>", name.replace(['<', '>', '"'], ""), digest.recipient_email),
            None => digest.recipient_email.clone(),
        }
        .parse()
        .map_err(|e| permanent(format!("recipient address '{}' refused: {e}", digest.recipient_email)))?;
        let (text, html) = bodies(digest, &self.base_url);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject(digest))
            .message_id(Some(format!("<{}@muster>", digest.id)))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| permanent(format!("the message could not be built: {e}")))
    }

    /// Sends `digest`.
    pub async fn send(&self, digest: &Digest) -> Result<(), SendError> {
        let message = self.compose(digest)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError { permanent: e.is_permanent(), reason: format!("SMTP: {e}") })
    }
}

fn display(member: &NewMember) -> String {
    member.name.clone().or_else(|| member.email.clone()).unwrap_or_else(|| member.member_id.to_string())
}

/// "Ann Lee joined your team" or "3 new members joined your team".
pub fn subject(digest: &Digest) -> String {
    match digest.members.as_slice() {
        [one] => format!("{} joined your team", display(one)),
        many => format!("{} new members joined your team", many.len()),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The text and HTML bodies: each new member with their title, e-mail and link.
pub fn bodies(digest: &Digest, base_url: &str) -> (String, String) {
    let greeting = digest.recipient_name.as_deref().map(|n| format!("Hello {n},")).unwrap_or_else(|| "Hello,".into());
    let mut text = format!("{greeting}\n\nNew on your team:\n\n");
    let mut html = format!("<p>{}</p>\n<p>New on your team:</p>\n<ul>\n", escape(&greeting));
    for member in &digest.members {
        let link = format!("{base_url}/{}", member.member_id);
        let details: Vec<&str> = [member.title.as_deref(), member.email.as_deref()].into_iter().flatten().collect();
        text.push_str(&format!("- {}{}\n  {link}\n", display(member), suffix(&details, ", ")));
        html.push_str(&format!(
            "<li><a href=\"{}\">{}</a>{}</li>\n",
            escape(&link),
            escape(&display(member)),
            escape(&suffix(&details, ", "))
        ));
    }
    text.push_str("\nYour team is recorded in Muster; you get this because your company asked for it.\n");
    html.push_str("</ul>\n<p>Your team is recorded in Muster; you get this because your company asked for it.</p>\n");
    (text, html)
}

fn suffix(parts: &[&str], separator: &str) -> String {
    if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(separator)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, title: Option<&str>) -> NewMember {
        NewMember {
            member_id: Uuid::from_u128(7),
            name: Some(name.into()),
            title: title.map(Into::into),
            email: Some(format!("{}@contoso.com", name.to_lowercase().replace(' ', "."))),
        }
    }

    #[test]
    fn one_member_is_named_in_the_subject_and_many_are_counted() {
        let mut digest = Digest {
            id: Uuid::nil(),
            recipient_name: Some("Bea Boss".into()),
            recipient_email: "bea@contoso.com".into(),
            members: vec![member("Ann Lee", Some("Engineer"))],
        };
        assert_eq!(subject(&digest), "Ann Lee joined your team");
        digest.members.push(member("Cy <script>", None));
        assert_eq!(subject(&digest), "2 new members joined your team");
        let (text, html) = bodies(&digest, "https://muster.example/members");
        assert!(text.contains("Hello Bea Boss,"));
        assert!(text.contains("- Ann Lee (Engineer, ann.lee@contoso.com)"), "{text}");
        assert!(text.contains("https://muster.example/members/00000000-0000-0000-0000-000000000007"));
        assert!(html.contains("Cy &lt;script&gt;") && !html.contains("<script>"), "{html}");
    }
}
