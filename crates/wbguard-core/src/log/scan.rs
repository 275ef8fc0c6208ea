//! Finding and parsing the lines that matter in blocks of log text.
//!
//! About one line in a thousand is a record; everything else must be skipped
//! at memory speed. The scanner therefore never walks lines one by one: it
//! counts newlines with a vectorised search and finds candidate lines with
//! one multi-pattern search over the whole block (`Stats `, `STATS:`,
//! `cli:`, `cli[`), and only those lines are split and parsed.
//!
//! The scanner is pure: the caller reads the bytes, and hands in the time
//! zone and the reference time used to infer the year of BSD stamps.

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, Input, MatchKind, Span};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::header;
use super::message;
use super::record::Record;
use super::timestamp;

/// Candidate lines longer than this are counted as [`Malformed::TooLong`]
/// without being parsed: no real record comes close.
pub const MAX_RECORD_LINE: usize = 64 * 1024;

/// Why a line that looked like a record was not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// No `PROGRAM:` word where one was expected.
    #[error("a record without a recognisable header")]
    Header,
    /// No timestamp that parses, or one that cannot be placed in time.
    #[error("a record without a timestamp that parses")]
    Timestamp,
    /// No host in the line and no fallback host given.
    #[error("a record without a host name (give one with --host)")]
    Host,
    /// A web bridge `Stats` line with missing or unexpected fields.
    #[error("a web bridge Stats line with missing or unexpected fields")]
    StatsFields,
    /// A web bridge `Stats` number that is not a number or overflows.
    #[error("a web bridge Stats number that is not a number or too large")]
    StatsNumber,
    /// A call bridge `STATS:` payload that is not a JSON object.
    #[error("a call bridge STATS payload that is not a JSON object")]
    StatsJson,
    /// A call bridge `STATS:` value that must be `"X/Y"` and is not.
    #[error("a call bridge STATS value that should be \"X/Y\" and is not")]
    StatsPair,
    /// A `cli:` audit line that names a command but does not parse.
    #[error("an MMP audit line that does not parse")]
    Audit,
    /// A candidate line longer than [`MAX_RECORD_LINE`].
    #[error("a record line longer than 64 KiB")]
    TooLong,
}

impl Malformed {
    /// Every reason, in report order.
    pub const ALL: [Malformed; 9] = [
        Malformed::Header,
        Malformed::Timestamp,
        Malformed::Host,
        Malformed::StatsFields,
        Malformed::StatsNumber,
        Malformed::StatsJson,
        Malformed::StatsPair,
        Malformed::Audit,
        Malformed::TooLong,
    ];

    /// The reason's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Header => "header",
            Malformed::Timestamp => "timestamp",
            Malformed::Host => "host",
            Malformed::StatsFields => "stats_fields",
            Malformed::StatsNumber => "stats_number",
            Malformed::StatsJson => "stats_json",
            Malformed::StatsPair => "stats_pair",
            Malformed::Audit => "audit",
            Malformed::TooLong => "too_long",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Line counters of one input, or of several added up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCounts {
    /// Every line seen, noise included.
    pub total: u64,
    /// Lines that became a record.
    pub records: u64,
    /// Malformed lines, indexed like [`Malformed::ALL`].
    pub malformed: [u64; Malformed::ALL.len()],
}

impl LineCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &LineCounts) {
        self.total += other.total;
        self.records += other.records;
        for (mine, theirs) in self.malformed.iter_mut().zip(other.malformed) {
            *mine += theirs;
        }
    }

    /// Counts one malformed line.
    pub fn count_malformed(&mut self, reason: Malformed) {
        self.malformed[reason.index()] += 1;
    }

    /// All malformed lines, whatever the reason.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    /// `(reason, count)` for each reason that occurred.
    pub fn malformed_by_reason(&self) -> impl Iterator<Item = (Malformed, u64)> + '_ {
        Malformed::ALL.iter().map(|&r| (r, self.malformed[r.index()])).filter(|&(_, n)| n > 0)
    }
}

/// What the parser needs to know that the lines do not say.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// Zone of timestamps without one (CMS writes local time). Default UTC.
    pub zone: Tz,
    /// When the input was last written: BSD stamps are placed in the latest
    /// year that does not put them after this (plus a day of slack).
    pub reference: DateTime<Utc>,
    /// Host for lines that carry none (`--host`).
    pub default_host: Option<String>,
}

/// Parses one line: `Ok(Some)` for a record, `Ok(None)` for noise.
pub fn parse_line(line: &[u8], ctx: &ParseContext) -> Result<Option<Record>, Malformed> {
    if line.len() > MAX_RECORD_LINE {
        return Err(Malformed::TooLong);
    }
    let Some(envelope) = header::split(line) else {
        // No header: noise, unless the line plainly carries a record.
        let looks_like_record = memchr::memmem::find(line, b"[DEBUGGING] Stats").is_some()
            || memchr::memmem::find(line, b"STATS: {").is_some();
        return if looks_like_record { Err(Malformed::Header) } else { Ok(None) };
    };
    let Some(body) = message::parse(envelope.program, envelope.message)? else {
        return Ok(None);
    };
    let time = envelope
        .stamp
        .and_then(|stamp| timestamp::resolve(stamp, ctx.zone, ctx.reference))
        .ok_or(Malformed::Timestamp)?;
    let mut host = match envelope.host {
        Some(host) => String::from_utf8_lossy(host).into_owned(),
        None => ctx.default_host.clone().ok_or(Malformed::Host)?,
    };
    // Host names know no case (DNS); folded here, where every record is
    // made, `CMS1` and `cms1` are one server in the model, the history,
    // the decisions and the restarts.
    host.make_ascii_lowercase();
    Ok(Some(Record { time, host, body }))
}

/// Literals that every record line holds: the two statistics, and the
/// audit of a command (`cli: User admin from ... issued command <...>`),
/// found by its words so that RFC 5424 lines (`cli` without a colon) are
/// found too.
const CANDIDATES: [&str; 3] = ["Stats ", "STATS:", "issued command"];

/// Finds candidate lines in blocks of log text and parses them.
#[derive(Debug, Clone)]
pub struct Scanner {
    candidates: Candidates,
}

/// The candidate search. Teddy (a SIMD multi-literal search) is many times
/// faster here than a general automaton, whose prefilter would stop at
/// every `c` and `S` in the text; the automaton is the fallback for CPUs
/// without the SIMD Teddy needs.
#[derive(Debug, Clone)]
enum Candidates {
    Teddy(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Candidates {
    fn find(&self, block: &[u8], from: usize) -> Option<(usize, usize)> {
        match self {
            Candidates::Teddy(searcher) => {
                searcher.find_in(block, Span::from(from..block.len())).map(|m| (m.start(), m.end()))
            }
            Candidates::Automaton(automaton) => {
                automaton.find(Input::new(block).range(from..)).map(|m| (m.start(), m.end()))
            }
        }
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// Builds the candidate search.
    pub fn new() -> Self {
        let teddy =
            packed::Config::new().match_kind(packed::MatchKind::LeftmostFirst).builder().extend(CANDIDATES).build();
        let candidates = match teddy {
            Some(searcher) => Candidates::Teddy(searcher),
            None => Candidates::Automaton(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(CANDIDATES)
                    .expect("three literal patterns always build"),
            ),
        };
        Scanner { candidates }
    }

    /// Scans `block`, which must hold whole lines (the last one may lack its
    /// newline only at the end of the input). Counts every line into
    /// `counts` and hands each record to `sink`, in input order.
    pub fn scan(&self, block: &[u8], ctx: &ParseContext, counts: &mut LineCounts, sink: &mut impl FnMut(Record)) {
        counts.total += memchr::memchr_iter(b'\n', block).count() as u64;
        if block.last().is_some_and(|&b| b != b'\n') {
            counts.total += 1;
        }
        let mut at = 0;
        while let Some((found_start, found_end)) = self.candidates.find(block, at) {
            let start = memchr::memrchr(b'\n', &block[..found_start]).map_or(0, |nl| nl + 1);
            let end = memchr::memchr(b'\n', &block[found_end..]).map_or(block.len(), |nl| found_end + nl);
            match parse_line(&block[start..end], ctx) {
                Ok(Some(record)) => {
                    counts.records += 1;
                    sink(record);
                }
                Ok(None) => {}
                Err(reason) => counts.count_malformed(reason),
            }
            at = end + 1;
            if at >= block.len() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::RecordBody;

    fn ctx() -> ParseContext {
        ParseContext {
            zone: Tz::UTC,
            reference: DateTime::parse_from_rfc3339("2024-12-01T00:00:00Z").unwrap().with_timezone(&Utc),
            default_host: None,
        }
    }

    fn scan(text: &[u8]) -> (LineCounts, Vec<Record>) {
        let mut counts = LineCounts::default();
        let mut records = Vec::new();
        Scanner::new().scan(text, &ctx(), &mut counts, &mut |r| records.push(r));
        (counts, records)
    }

    #[test]
    fn counts_lines_records_and_malformed() {
        let text = b"Mar 18 14:58:48.078 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6\n\
            Mar 18 14:58:49.000 user.info cms01 postgres[54639]: LOG: checkpoint starting: time\n\
            Mar 18 14:58:50.000 user.info cms01 webbridge: INFO : [DEBUGGING] Stats x, c:9, d:6\n\
            Mar 18 14:58:51.000 user.info cms01 host:server: INFO : STATS: {\"CMA\": \"1/2\"}\n\
            Mar 18 14:58:52 local0.info cms01 cli: User admin from 10.0.0.1:5 issued command <webbridge restart>: permission granted";
        let (counts, records) = scan(text);
        assert_eq!(counts.total, 5);
        assert_eq!(counts.records, 3);
        assert_eq!(counts.malformed_by_reason().collect::<Vec<_>>(), vec![(Malformed::StatsNumber, 1)]);
        assert!(matches!(records[0].body, RecordBody::WebBridgeStats(_)));
        assert!(matches!(records[1].body, RecordBody::CallBridgeStats(_)));
        assert!(matches!(records[2].body, RecordBody::Audit(_)));
        assert!(records.iter().all(|r| r.host == "cms01"));
    }

    #[test]
    fn rfc5424_lines_are_found() {
        // The audit tag is `cli:` in CMS's own header; in RFC 5424 it has no
        // colon: the audit is found by its words.
        let text = b"<14>1 2024-03-18T14:58:49Z cms01 webbridge - - - INFO : [DEBUGGING] Stats 3, c:9, d:6\n\
            <14>1 2024-03-18T14:58:50Z cms01 host:server - - - INFO : STATS: {\"CMA\": \"1/2\"}\n\
            <134>1 2024-03-18T14:58:51Z cms01 cli - - - User admin from 10.0.0.1:5 issued command <webbridge restart>: permission granted\n";
        let (counts, records) = scan(text);
        assert_eq!((counts.records, records.len()), (3, 3));
        assert!(matches!(records[2].body, RecordBody::Audit(_)));
        assert!(records.iter().all(|r| r.host == "cms01"));
    }

    #[test]
    fn two_candidates_on_one_line_are_one_record() {
        let text = b"Mar 18 14:58:48 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6 cli: Stats \n";
        let (counts, _) = scan(text);
        assert_eq!((counts.total, counts.records, counts.malformed_total()), (1, 0, 1));
    }

    #[test]
    fn missing_host_and_timestamp_are_malformed() {
        let (counts, _) = scan(b"Mar 18 14:58:48 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6\n");
        assert_eq!(counts.malformed_by_reason().collect::<Vec<_>>(), vec![(Malformed::Host, 1)]);
        let (counts, _) = scan(b"user.info cms01 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6\n");
        assert_eq!(counts.malformed_by_reason().collect::<Vec<_>>(), vec![(Malformed::Timestamp, 1)]);
        let (counts, _) = scan(b"garbage [DEBUGGING] Stats 3, c:9, d:6\n");
        assert_eq!(counts.malformed_by_reason().collect::<Vec<_>>(), vec![(Malformed::Header, 1)]);
        let mut with_default = ctx();
        with_default.default_host = Some("fallback".into());
        let record = parse_line(b"Mar 18 14:58:48 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6", &with_default);
        assert_eq!(record.unwrap().unwrap().host, "fallback");
    }

    #[test]
    fn overlong_candidate_is_counted_not_parsed() {
        let mut line = b"Mar 18 14:58:48 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 3, c:9, d:6".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_RECORD_LINE));
        line.push(b'\n');
        let (counts, _) = scan(&line);
        assert_eq!(counts.malformed_by_reason().collect::<Vec<_>>(), vec![(Malformed::TooLong, 1)]);
    }

    #[test]
    fn binary_garbage_is_noise() {
        let garbage: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let (counts, records) = scan(&garbage);
        assert!(records.is_empty());
        assert!(counts.total >= 1);
    }

    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        const VALID: [&str; 4] = [
            "<14>Mar 18 14:58:48.078 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 149, c:3477, d:3170",
            "2024-03-05T16:50:25.736 user.info Core1 host:server: INFO : STATS: {\"callLegsPS\": 1, \"CMA\": \"14/17\", \"sip\": {\"std\": \"0/1\"}}",
            "Jan 16 04:25:44 local0.info cms01 cli: User admin from 10.140.249.233:63290 issued command < callbridge av1 enable>: permission granted",
            "2024-03-18T14:58:49+00:00 10.1.2.3 Jul  3 15:01:22.811 user.info cms01 5f3c webbridge[812]:  INFO    : [DEBUGGING] Stats 1, c:2, d:3",
        ];

        proptest! {
            /// Arbitrary bytes: noise or a counted reason, never a panic.
            #[test]
            fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = parse_line(&bytes, &ctx());
                let (counts, _) = scan(&bytes);
                let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                let unterminated = u64::from(bytes.last().is_some_and(|&b| b != b'\n'));
                prop_assert_eq!(counts.total, newlines + unterminated);
            }

            /// Valid lines with bytes changed, inserted or cut off.
            #[test]
            fn on_damaged_records(which in 0..VALID.len(), at in any::<prop::sample::Index>(),
                                  byte in any::<u8>(), cut in any::<bool>(), insert in any::<bool>()) {
                let mut line = VALID[which].as_bytes().to_vec();
                let i = at.index(line.len());
                if cut {
                    line.truncate(i);
                } else if insert {
                    line.insert(i, byte);
                } else {
                    line[i] = byte;
                }
                let (counts, records) = scan(&line);
                prop_assert_eq!(counts.records as usize, records.len());
                prop_assert!(counts.records + counts.malformed_total() <= 1);
            }
        }
    }
}
