//! What becomes of each syslog message, counted: the handles behind
//! `wbguard_syslog_messages_total{result}`.
//!
//! The ingest owns these counters because it is where a message's life
//! starts (rejected, oversize and dropped are decided here) and because it
//! must not reach up into the guard; the guard counts the parse outcomes
//! (parsed, noise, malformed) on the same handles and registers the family
//! in its one metrics registry. Every result is created up front, so each
//! series exists from the first scrape at 0 and `rate()` sees its first
//! increase; counting is one atomic add, no lock, no allocation.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// What became of a syslog message: the `result` label. The values are the
/// ones operators' dashboards and alert rules already use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageResult {
    /// It became a record the model used.
    Parsed,
    /// It is not a record (other programs' lines, other CMS messages).
    Noise,
    /// It looked like a record and was not.
    Malformed,
    /// From a source not on the allow list, or speaking for a server it is
    /// not.
    Rejected,
    /// Over [`super::MAX_MESSAGE`].
    Oversize,
    /// A UDP datagram that found the guard's queue full.
    Dropped,
    /// A record dated further ahead of the guard's clock than
    /// `watch.future_tolerance`: ignored.
    Future,
}

impl MessageResult {
    /// Every result, in the order the status shows them.
    pub const ALL: [MessageResult; 7] = [
        MessageResult::Parsed,
        MessageResult::Noise,
        MessageResult::Malformed,
        MessageResult::Rejected,
        MessageResult::Oversize,
        MessageResult::Dropped,
        MessageResult::Future,
    ];

    /// The label value, also the key in `/api/status`'s `syslog_messages`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageResult::Parsed => "parsed",
            MessageResult::Noise => "noise",
            MessageResult::Malformed => "malformed",
            MessageResult::Rejected => "rejected",
            MessageResult::Oversize => "oversize",
            MessageResult::Dropped => "dropped",
            MessageResult::Future => "future",
        }
    }
}

// By hand rather than derived: the derive writes the variant's name as it
// is spelled ("Parsed"), and the exported values are lower case.
impl EncodeLabelValue for MessageResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The labels of `wbguard_syslog_messages_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MessageLabels {
    /// What became of the messages.
    pub result: MessageResult,
}

/// The message counters: cheap to clone (every clone counts on the same
/// series), safe to use from any thread.
#[derive(Debug, Clone)]
pub struct Messages {
    /// The family the guard registers.
    family: Family<MessageLabels, Counter>,
    /// Its counters, in [`MessageResult::ALL`]'s order, held so that
    /// counting never looks a label set up.
    counters: [Counter; MessageResult::ALL.len()],
}

impl Default for Messages {
    fn default() -> Messages {
        let family = Family::<MessageLabels, Counter>::default();
        let counters = MessageResult::ALL.map(|result| family.get_or_create_owned(&MessageLabels { result }));
        Messages { family, counters }
    }
}

impl Messages {
    /// The counter of `result` (for code that counts on a bare counter,
    /// like the codec's oversized frames).
    pub fn counter(&self, result: MessageResult) -> &Counter {
        // ALL lists the variants in declaration order: the discriminant is the index.
        &self.counters[result as usize]
    }

    /// Counts `n` messages with `result`.
    pub fn add(&self, result: MessageResult, n: u64) {
        if n > 0 {
            self.counter(result).inc_by(n);
        }
    }

    /// Counts one message with `result`.
    pub fn count(&self, result: MessageResult) {
        self.counter(result).inc();
    }

    /// Messages counted with `result` so far.
    pub fn get(&self, result: MessageResult) -> u64 {
        self.counter(result).get()
    }

    /// The family, for the registry.
    pub fn family(&self) -> Family<MessageLabels, Counter> {
        self.family.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_count_on_the_same_series_and_every_result_exists_at_zero() {
        for (at, result) in MessageResult::ALL.into_iter().enumerate() {
            assert_eq!(result as usize, at, "ALL is in declaration order");
        }
        let messages = Messages::default();
        let other = messages.clone();
        other.add(MessageResult::Oversize, 2);
        messages.count(MessageResult::Oversize);
        messages.add(MessageResult::Parsed, 0);
        assert_eq!(messages.get(MessageResult::Oversize), 3);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("messages", "Messages", messages.family());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for result in MessageResult::ALL {
            let value = if result == MessageResult::Oversize { 3 } else { 0 };
            let line = format!("messages_total{{result=\"{}\"}} {value}\n", result.as_str());
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
