//! Webhook notifications: decisions, restarts, failures and lockouts, as
//! wbguard's own JSON or in the shape Webex and Slack incoming webhooks
//! accept.
//!
//! The guard never waits for a webhook: events go through a bounded queue
//! to one delivery thread, which posts each to every webhook that wants it,
//! tries three times, and counts what was sent, failed or dropped. A URL is
//! a secret (it carries the token): messages name only its host.

use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::metrics::{WebhookResult, Webhooks};
use crate::config::guard_settings::{check_webhook_url, Event, WebhookFormat, WebhookSettings};
use crate::secret::redact_url;
use crate::text::printable;

/// A webhook, its URL fetched. The URL is a secret: never printed, and
/// messages name the webhook by [`Webhook::describe`].
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its host and where the URL came from, for messages.
    pub describe: String,
    /// The URL.
    url: String,
    /// The body's shape.
    pub format: WebhookFormat,
    /// The events it receives.
    pub events: Vec<Event>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({}, {:?})", self.describe, self.format)
    }
}

impl Webhook {
    /// Fetches the URL from where the configuration says it is.
    pub fn resolve(settings: &WebhookSettings) -> anyhow::Result<Webhook> {
        let url = settings.url.resolve()?;
        check_webhook_url(&url).map_err(|e| anyhow::anyhow!("{e} (from {})", settings.url.describe()))?;
        Ok(Webhook {
            describe: format!("{} (URL from {})", redact_url(&url), settings.url.describe()),
            url,
            format: settings.format,
            events: settings.events.clone(),
        })
    }
}

/// Events waiting for delivery; more are dropped and counted.
const QUEUE: usize = 1000;
/// Attempts per webhook and event.
const ATTEMPTS: u32 = 3;

/// One thing to tell.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// What happened.
    pub event: Event,
    /// The web bridge concerned.
    pub webbridge: String,
    /// When (the guard's clock).
    pub time: DateTime<Utc>,
    /// In words, for people.
    pub text: String,
    /// The numbers behind it.
    pub details: serde_json::Value,
}

/// The guard's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::SyncSender<Notice>,
    /// The webhooks (replaced on reload).
    pub webhooks: Arc<RwLock<Vec<Webhook>>>,
    /// Outcomes (`wbguard_webhook_notifications_total`).
    counts: Webhooks,
}

impl Notifier {
    /// Starts the delivery thread; outcomes are counted in `counts`.
    pub fn start(webhooks: Vec<Webhook>, counts: Webhooks) -> Notifier {
        let (queue, notices) = mpsc::sync_channel::<Notice>(QUEUE);
        let webhooks = Arc::new(RwLock::new(webhooks));
        let (hooks, counted) = (webhooks.clone(), counts.clone());
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || deliver(notices, hooks, counted))
            .expect("a thread starts");
        Notifier { queue, webhooks, counts }
    }

    /// Queues a notice for every webhook that wants its event.
    pub fn send(&self, notice: Notice) {
        let wanted = self.webhooks.read().expect("never poisoned").iter().any(|w| w.events.contains(&notice.event));
        if wanted && self.queue.try_send(notice).is_err() {
            self.counts.count(WebhookResult::Dropped);
        }
    }
}

fn deliver(notices: mpsc::Receiver<Notice>, webhooks: Arc<RwLock<Vec<Webhook>>>, counts: Webhooks) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    for notice in notices {
        let targets: Vec<Webhook> = webhooks
            .read()
            .expect("never poisoned")
            .iter()
            .filter(|w| w.events.contains(&notice.event))
            .cloned()
            .collect();
        for webhook in targets {
            let body = body(&notice, webhook.format);
            let mut outcome = String::new();
            let sent = (0..ATTEMPTS).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(1 << (2 * attempt)));
                }
                match agent.post(&webhook.url).send_json(&body) {
                    Ok(response) if response.status().is_success() => true,
                    Ok(response) => {
                        outcome = format!("HTTP {}", response.status());
                        false
                    }
                    // The error may quote the URL: name only the kind.
                    Err(e) => {
                        outcome = describe(&e);
                        false
                    }
                }
            });
            if sent {
                counts.count(WebhookResult::Sent);
            } else {
                counts.count(WebhookResult::Failed);
                tracing::warn!(
                    "webhook {}: {} notice not delivered after {ATTEMPTS} attempts: {outcome}",
                    webhook.describe,
                    notice.event.name()
                );
            }
        }
    }
}

fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(e) => format!("{}", e.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error".into(),
        _ => "request failed".into(),
    }
}

/// The body in `format`'s shape. Host names come from syslog lines, which
/// anyone on the syslog network may forge: in the chat formats they are
/// escaped so that a name can neither make a link nor a mention.
pub fn body(notice: &Notice, format: WebhookFormat) -> serde_json::Value {
    let line = format!("wbguard {}: {}", notice.webbridge, notice.text);
    match format {
        WebhookFormat::Generic => serde_json::to_value(notice).unwrap_or_default(),
        WebhookFormat::Webex => {
            let said = format!("{}: {}", notice.webbridge, notice.text);
            serde_json::json!({ "markdown": format!("**wbguard** {}", markdown(&said)) })
        }
        WebhookFormat::Slack => serde_json::json!({ "text": slack(&line) }),
    }
}

/// Text for Slack: control characters shown escaped, and the three
/// characters Slack reads as markup (`<@U1>`, `<https://...|here>`,
/// entities) written as the entities Slack asks for.
fn slack(text: &str) -> String {
    printable(text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text for Markdown (Webex): control characters shown escaped, and every
/// character Markdown gives a meaning (links, emphasis, code, HTML)
/// escaped with a backslash, so it reads as written.
fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        if "\\`*_[]<>()#!|~&".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes() {
        let notice = Notice {
            event: Event::Restart,
            webbridge: "cms1".into(),
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            text: "restarted, 120 leaked sessions freed".into(),
            details: serde_json::json!({"leaked_lower": 120}),
        };
        let generic = body(&notice, WebhookFormat::Generic);
        assert_eq!(generic["event"], "restart");
        assert_eq!(generic["webbridge"], "cms1");
        assert_eq!(generic["details"]["leaked_lower"], 120);
        assert_eq!(generic["time"], "2023-11-14T22:13:20Z");
        let webex = body(&notice, WebhookFormat::Webex);
        assert_eq!(webex.as_object().unwrap().keys().collect::<Vec<_>>(), ["markdown"]);
        assert_eq!(webex["markdown"], "**wbguard** cms1: restarted, 120 leaked sessions freed");
        let slack = body(&notice, WebhookFormat::Slack);
        assert_eq!(slack["text"], "wbguard cms1: restarted, 120 leaked sessions freed");
    }

    /// A forged host name makes no link, mention or markup in a chat.
    #[test]
    fn forged_names_make_no_markup() {
        let notice = Notice {
            event: Event::Clock,
            webbridge: "[here](https://evil.example)<!channel>`x\n".into(),
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            text: "ignored".into(),
            details: serde_json::Value::Null,
        };
        let slack = body(&notice, WebhookFormat::Slack)["text"].as_str().unwrap().to_owned();
        assert!(!slack.contains('<') && !slack.contains('>') && !slack.contains('\n'), "{slack}");
        assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
        let webex = body(&notice, WebhookFormat::Webex)["markdown"].as_str().unwrap().to_owned();
        assert!(webex.contains("\\[here\\]\\(https://evil.example\\)\\<\\!channel\\>\\`x"), "{webex}");
    }
}
