//! The envelope of a CMS log line: time, host, program and message.
//!
//! The general shape (see `DOMAIN.md`) is
//!
//! ```text
//! [<PRI>]TIMESTAMP FACILITY.SEVERITY HOST [CONTAINER-ID] PROGRAM[PID]: MESSAGE
//! ```
//!
//! but syslog servers that write CMS messages to files may put their own
//! timestamp and host in front, so the parser anchors on the
//! `facility.severity` word: the host is the word after it, the timestamp
//! the one right before it (falling back to any earlier one). Lines without
//! that word are read as plain BSD syslog (`TIMESTAMP HOST PROGRAM: MESSAGE`).
//! The envelope borrows from the line; nothing is allocated.

use super::timestamp::{parse_bsd, parse_iso, Stamp};

/// The parts of one log line, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The timestamp nearest before the host, if any parsed.
    pub stamp: Option<Stamp>,
    /// The host name, if the line carries one.
    pub host: Option<&'a [u8]>,
    /// The program tag without `[PID]`, quotes or the colon (`host:server`,
    /// `webbridge`, `cli`).
    pub program: &'a [u8],
    /// Everything after `PROGRAM:` and the spaces that follow it.
    pub message: &'a [u8],
}

/// How many header words are examined before a line is taken for noise.
const MAX_HEADER_WORDS: usize = 14;

const FACILITIES: [&[u8]; 22] = [
    b"kern",
    b"user",
    b"mail",
    b"daemon",
    b"auth",
    b"syslog",
    b"lpr",
    b"news",
    b"uucp",
    b"cron",
    b"authpriv",
    b"ftp",
    b"security",
    b"local0",
    b"local1",
    b"local2",
    b"local3",
    b"local4",
    b"local5",
    b"local6",
    b"local7",
    b"mark",
];
const SEVERITIES: [&[u8]; 12] = [
    b"emerg", b"panic", b"alert", b"crit", b"err", b"error", b"warning", b"warn", b"notice", b"info", b"debug", b"none",
];

/// Splits `line` into its envelope, or `None` when no `PROGRAM:` word is
/// found among the first header words.
pub fn split(line: &[u8]) -> Option<Envelope<'_>> {
    let line = strip_priority(line);
    if let Some(rfc5424) = line.strip_prefix(b"1 ") {
        return split_rfc5424(rfc5424);
    }
    let mut words = [(0usize, 0usize); MAX_HEADER_WORDS];
    let mut count = 0;
    let mut facility_at = None;
    let mut program_at = None;
    for (start, end) in Words::new(line) {
        if count == MAX_HEADER_WORDS {
            break;
        }
        words[count] = (start, end);
        let word = &line[start..end];
        // The last facility word wins: a relay's own header may carry one too.
        if is_facility_severity(word) {
            facility_at = Some(count);
        } else if word.ends_with(b":") && word.len() > 1 && plausible_program_position(count, facility_at) {
            program_at = Some(count);
            count += 1;
            break;
        }
        count += 1;
    }
    let program_at = program_at?;
    let words = &words[..count];
    let word = |i: usize| &line[words[i].0..words[i].1];

    let (stamp, host) = match facility_at {
        Some(facility) => {
            let stamp = stamp_ending_at(line, &words[..facility]);
            // HOST is right after the facility word, unless the program is.
            let host = (facility + 1 < program_at).then(|| word(facility + 1));
            (stamp, host)
        }
        None => {
            let stamp = stamp_at_start(line, words);
            let host = stamp.and_then(|(_, used)| (used < program_at).then(|| word(used)));
            (stamp, host)
        }
    };
    let message_start = words[program_at].1;
    let message = trim_start(&line[message_start..]);
    let message = message.strip_suffix(b"\r").unwrap_or(message);
    Some(Envelope { stamp: stamp.map(|(stamp, _)| stamp), host, program: program_name(word(program_at)), message })
}

/// RFC 5424, after `<PRI>1 `: `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
/// STRUCTURED-DATA [MSG]`, as `logger --rfc5424` and modern relays send it.
fn split_rfc5424(line: &[u8]) -> Option<Envelope<'_>> {
    let mut words = Words::new(line);
    let mut field = || words.next().map(|(start, end)| &line[start..end]);
    let (timestamp, host, app) = (field()?, field()?, field()?);
    let (_procid, _msgid) = (field()?, field()?);
    let after_msgid = words.at;
    let rest = trim_start(&line[after_msgid..]);
    let message = skip_structured_data(rest)?;
    let message = trim_start(message);
    let message = message.strip_prefix("\u{feff}".as_bytes()).unwrap_or(message);
    let message = message.strip_suffix(b"\r").unwrap_or(message);
    Some(Envelope {
        stamp: if timestamp == b"-" { None } else { parse_iso(timestamp) },
        host: (host != b"-").then_some(host),
        program: if app == b"-" { b"" } else { app },
        message,
    })
}

/// Skips `-` or one or more `[id key="value" ...]` elements (with `\"`,
/// `\]` and `\\` escapes inside values); `None` when unterminated.
fn skip_structured_data(text: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = text.strip_prefix(b"-") {
        return Some(rest);
    }
    let mut at = 0;
    while text.get(at) == Some(&b'[') {
        let mut quoted = false;
        at += 1;
        loop {
            match *text.get(at)? {
                b'\\' if quoted => at += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            at += 1;
        }
        at += 1;
    }
    Some(&text[at..])
}

/// Whether a word ending with `:` at `index` can be the program tag: after
/// the facility word it must come within host + container id; without one,
/// anywhere in the header.
fn plausible_program_position(index: usize, facility_at: Option<usize>) -> bool {
    match facility_at {
        Some(facility) => index > facility && index <= facility + 3,
        None => index >= 1,
    }
}

fn strip_priority(line: &[u8]) -> &[u8] {
    if let [b'<', rest @ ..] = line {
        if let Some(close) = rest.iter().take(4).position(|&b| b == b'>') {
            if close > 0 && rest[..close].iter().all(u8::is_ascii_digit) {
                return &rest[close + 1..];
            }
        }
    }
    line
}

fn is_facility_severity(word: &[u8]) -> bool {
    let Some(dot) = word.iter().position(|&b| b == b'.') else {
        return false;
    };
    FACILITIES.contains(&&word[..dot]) && SEVERITIES.contains(&&word[dot + 1..])
}

/// The stamp whose last word is the last of `words` (the CMS stamp right
/// before the facility word); failing that, the last stamp anywhere before.
/// Returns the stamp and the index of the word after it.
fn stamp_ending_at(line: &[u8], words: &[(usize, usize)]) -> Option<(Stamp, usize)> {
    (1..=words.len()).rev().find_map(|end| {
        let word = |i: usize| &line[words[i].0..words[i].1];
        if let Some(stamp) = parse_iso(word(end - 1)) {
            return Some((stamp, end));
        }
        (end >= 3).then(|| parse_bsd(word(end - 3), word(end - 2), word(end - 1))).flatten().map(|s| (s, end))
    })
}

/// A stamp at the very start of the line (plain BSD syslog).
fn stamp_at_start(line: &[u8], words: &[(usize, usize)]) -> Option<(Stamp, usize)> {
    let word = |i: usize| &line[words[i].0..words[i].1];
    if let Some(stamp) = words.first().and_then(|_| parse_iso(word(0))) {
        return Some((stamp, 1));
    }
    (words.len() >= 3).then(|| parse_bsd(word(0), word(1), word(2))).flatten().map(|s| (s, 3))
}

/// `host:server:` -> `host:server`, `postgres[54639]:` -> `postgres`,
/// `"webbridge":` -> `webbridge`.
fn program_name(word: &[u8]) -> &[u8] {
    let word = &word[..word.len() - 1];
    let word = match word.iter().position(|&b| b == b'[') {
        Some(bracket) if word.ends_with(b"]") => &word[..bracket],
        _ => word,
    };
    let word = word.strip_prefix(b"\"").unwrap_or(word);
    word.strip_suffix(b"\"").unwrap_or(word)
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &bytes[skip..]
}

/// Whitespace-separated words as `(start, end)` byte offsets.
struct Words<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Words<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Words { bytes, at: 0 }
    }
}

impl Iterator for Words<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let bytes = self.bytes;
        while self.at < bytes.len() && bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
        if self.at == bytes.len() {
            return None;
        }
        let start = self.at;
        while self.at < bytes.len() && !bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
        Some((start, self.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(line: &str) -> Option<String> {
        split(line.as_bytes()).and_then(|e| e.host.map(|h| String::from_utf8_lossy(h).into_owned()))
    }

    fn program_and_message(line: &str) -> (String, String) {
        let e = split(line.as_bytes()).expect("envelope");
        (String::from_utf8_lossy(e.program).into_owned(), String::from_utf8_lossy(e.message).into_owned())
    }

    #[test]
    fn every_header_shape() {
        let cases = [
            // On the wire: <PRI>, milliseconds.
            "<14>Mar 18 14:58:48.078 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            // In the MMP's syslog output: no <PRI>, no milliseconds.
            "Jan 16 04:25:44 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            // Two-space and one-space day padding.
            "Jul  3 15:01:22.811 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            "Jul 3 15:01:22.811 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            // ISO without a zone.
            "2024-03-05T16:50:25.736 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            // A container id, a PID, two spaces after the tag, a padded level.
            "Mar 18 14:58:48.078 local0.info cms01 3f2a9c1b webbridge[812]:  INFO    : [DEBUGGING] Stats 1, c:2, d:3",
            // A syslog server's own header in front.
            "2024-03-18T14:58:49+00:00 10.1.2.3 Mar 18 14:58:48.078 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            "Mar 18 14:58:49 user.info Mar 18 14:58:48.078 user.info cms01 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3",
            // Cisco's document quotes the tag.
            "Mar 18 14:58:48.078 user.info cms01 \"webbridge\": INFO : [DEBUGGING] Stats 1, c:2, d:3",
        ];
        for line in cases {
            assert_eq!(host(line).as_deref(), Some("cms01"), "{line}");
            let (program, message) = program_and_message(line);
            assert_eq!(program, "webbridge", "{line}");
            assert_eq!(message.trim_start(), message, "{line}");
            assert!(message.ends_with("Stats 1, c:2, d:3"), "{line}");
            assert!(split(line.as_bytes()).unwrap().stamp.is_some(), "{line}");
        }
    }

    #[test]
    fn call_bridge_program_contains_a_colon() {
        let line = "Mar 18 14:58:48.078 user.info Core1 host:server: INFO : STATS: {\"CMA\": \"14/17\"}";
        let (program, message) = program_and_message(line);
        assert_eq!(program, "host:server");
        assert_eq!(message, "INFO : STATS: {\"CMA\": \"14/17\"}");
        assert_eq!(host(line).as_deref(), Some("Core1"));
    }

    #[test]
    fn plain_bsd_without_facility_word() {
        let line = "Mar 18 14:58:48 cms02 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3";
        assert_eq!(host(line).as_deref(), Some("cms02"));
        let line = "Mar 18 14:58:48 webbridge: INFO : [DEBUGGING] Stats 1, c:2, d:3";
        assert_eq!(host(line), None);
        assert!(split(line.as_bytes()).unwrap().stamp.is_some());
    }

    #[test]
    fn rfc5424_as_logger_sends_it() {
        let line = "<13>1 2024-03-18T14:58:48.078123+01:00 cms01 webbridge 812 - [timeQuality tzKnown=\"1\" isSynced=\"0\"] INFO : [DEBUGGING] Stats 1, c:2, d:3";
        let envelope = split(line.as_bytes()).unwrap();
        assert_eq!(envelope.host, Some(&b"cms01"[..]));
        assert_eq!(envelope.program, b"webbridge");
        assert_eq!(envelope.message, b"INFO : [DEBUGGING] Stats 1, c:2, d:3");
        assert!(matches!(envelope.stamp, Some(Stamp::Absolute(_))));
        let line =
            "<14>1 - - cli - - - User admin from 1.2.3.4:5 issued command <webbridge restart>: permission granted";
        let envelope = split(line.as_bytes()).unwrap();
        assert_eq!((envelope.host, envelope.program, envelope.stamp), (None, &b"cli"[..], None));
        let escaped = "<14>1 2024-03-18T14:58:48Z h app - - [a b=\"x\\\"] y\"][c] msg";
        assert_eq!(split(escaped.as_bytes()).unwrap().message, b"msg");
        assert!(split(b"<14>1 2024-03-18T14:58:48Z h app - - [unterminated").is_none());
    }

    #[test]
    fn noise_and_garbage_do_not_panic() {
        for line in ["", " ", "<", "<999999>", ":", "a:", "\u{0}\u{1}:", "Mar 18", "user.info", "user.info a b: c"] {
            let _ = split(line.as_bytes());
        }
        assert!(split(b"no program tag here at all").is_none());
    }
}
