//! The three messages wbguard reads: Web Bridge 2 `Stats`, Call Bridge
//! `STATS:` and the MMP `cli:` audit.
//!
//! A message is first stripped of its padded level word (`INFO : `,
//! `WARNING : `). A message that is plainly meant to be one of the three but
//! does not parse is [`Malformed`]; anything else is noise (`Ok(None)`).

use super::record::{AuditCommand, CallBridgeStats, Pair, RecordBody, WebBridgeStats};
use super::scan::Malformed;

/// Parses a message (what follows `PROGRAM:`) from `program`.
pub fn parse(program: &[u8], message: &[u8]) -> Result<Option<RecordBody>, Malformed> {
    let message = strip_level(message);
    if let Some(rest) = message.strip_prefix(b"[DEBUGGING]") {
        return match trim(rest).strip_prefix(b"Stats") {
            Some(stats) => parse_webbridge_stats(stats).map(Some),
            None => Ok(None),
        };
    }
    if let Some(stats) = message.strip_prefix(b"Stats ") {
        // Without the [DEBUGGING] tag, only trust the web bridge's own tag.
        if memchr::memmem::find(program, b"webbridge").is_some() {
            return parse_webbridge_stats(stats).map(Some);
        }
        return Ok(None);
    }
    if let Some(json) = message.strip_prefix(b"STATS:") {
        return parse_callbridge_stats(json).map(Some);
    }
    if program == b"cli" {
        if let Some(audit) = message.strip_prefix(b"User ") {
            return parse_audit(audit);
        }
    }
    Ok(None)
}

/// Level words CMS pads in front of messages.
const LEVELS: [&[u8]; 12] = [
    b"INFO",
    b"WARNING",
    b"WARN",
    b"ERROR",
    b"DEBUG",
    b"NOTICE",
    b"CRITICAL",
    b"CRIT",
    b"ALERT",
    b"EMERG",
    b"FATAL",
    b"TRACE",
];

/// `INFO : `, `INFO    : `, `INFO: `, `ERROR   : ` -> what follows.
fn strip_level(message: &[u8]) -> &[u8] {
    let letters = message.iter().take(9).take_while(|b| b.is_ascii_uppercase()).count();
    if !LEVELS.contains(&&message[..letters]) {
        return message;
    }
    let rest = &message[letters..];
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    match rest[spaces..].strip_prefix(b":") {
        Some(after) => trim(after),
        None => message,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let bytes = &bytes[start..];
    let end = bytes.len() - bytes.iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[..end]
}

/// ` 149, c:3477, d:3170`; trailing `, key:value` fields a later release may
/// add are tolerated.
fn parse_webbridge_stats(text: &[u8]) -> Result<RecordBody, Malformed> {
    let mut fields = trim(text).split(|&b| b == b',').map(trim);
    let active = number(fields.next().ok_or(Malformed::StatsFields)?)?;
    let connections = labelled(fields.next(), b"c:")?;
    let disconnections = labelled(fields.next(), b"d:")?;
    let active = u32::try_from(active).map_err(|_| Malformed::StatsNumber)?;
    Ok(RecordBody::WebBridgeStats(WebBridgeStats { active, connections, disconnections }))
}

fn labelled(field: Option<&[u8]>, label: &[u8]) -> Result<u64, Malformed> {
    let field = field.ok_or(Malformed::StatsFields)?;
    let value = field.strip_prefix(label).ok_or(Malformed::StatsFields)?;
    number(trim(value))
}

fn number(digits: &[u8]) -> Result<u64, Malformed> {
    if digits.is_empty() || digits.len() > 19 {
        return Err(if digits.is_empty() { Malformed::StatsFields } else { Malformed::StatsNumber });
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u64::from(b - b'0'))
        } else {
            Err(Malformed::StatsNumber)
        }
    })
}

/// ` {"callLegsPS": 1, "callLegs": "20/24", "CMA": "14/17", "sip": {...}}`
fn parse_callbridge_stats(json: &[u8]) -> Result<RecordBody, Malformed> {
    let value: serde_json::Value = serde_json::from_slice(trim(json)).map_err(|_| Malformed::StatsJson)?;
    let serde_json::Value::Object(map) = value else {
        return Err(Malformed::StatsJson);
    };
    let mut stats = CallBridgeStats::default();
    collect_pairs(&map, "", &mut stats)?;
    Ok(RecordBody::CallBridgeStats(stats))
}

/// Keys whose values wbguard relies on: a value there that is not a pair is
/// a malformed record; elsewhere it is tolerated and skipped.
const REQUIRED_PAIRS: [&str; 2] = ["CMA", "callLegs"];

fn collect_pairs(
    map: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    stats: &mut CallBridgeStats,
) -> Result<(), Malformed> {
    for (key, value) in map {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            serde_json::Value::String(text) => match parse_pair(text) {
                Some(pair) => stats.pairs.push((path, pair)),
                None if REQUIRED_PAIRS.contains(&path.as_str()) => return Err(Malformed::StatsPair),
                None => {}
            },
            serde_json::Value::Number(n) if path == "callLegsPS" => {
                stats.call_legs_per_second =
                    Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or(Malformed::StatsPair)?);
            }
            serde_json::Value::Object(inner) => collect_pairs(inner, &path, stats)?,
            _ if REQUIRED_PAIRS.contains(&path.as_str()) => return Err(Malformed::StatsPair),
            _ => {}
        }
    }
    Ok(())
}

/// `"14/17"` -> current 14, peak 17; a lone `"14"` is both.
fn parse_pair(text: &str) -> Option<Pair> {
    let (current, peak) = text.split_once('/').unwrap_or((text, text));
    let parse = |s: &str| {
        (!s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    Some(Pair { current: parse(current.trim())?, peak: parse(peak.trim())? })
}

/// `admin from 10.140.249.233:63290 issued command < callbridge av1 enable>: permission granted`
fn parse_audit(text: &[u8]) -> Result<Option<RecordBody>, Malformed> {
    const ISSUED: &[u8] = b" issued command <";
    let Some(issued) = memchr::memmem::find(text, ISSUED) else {
        // Other cli messages (logins, logouts) are not commands.
        return Ok(None);
    };
    let who = &text[..issued];
    let rest = &text[issued + ISSUED.len()..];
    let close = memchr::memmem::rfind(rest, b">:").ok_or(Malformed::Audit)?;
    let verdict = trim(&rest[close + 2..]);
    let (user, source) = match memchr::memmem::find(who, b" from ") {
        Some(from) => (&who[..from], Some(trim(&who[from + 6..]))),
        None => (who, None),
    };
    let user = trim(user);
    if user.is_empty() || user.contains(&b' ') {
        return Err(Malformed::Audit);
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok(Some(RecordBody::Audit(AuditCommand {
        user: text(user),
        source: source.filter(|s| !s.is_empty()).map(text),
        command: text(trim(&rest[..close])),
        granted: verdict == b"permission granted",
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(program: &str, message: &str) -> Option<RecordBody> {
        parse(program.as_bytes(), message.as_bytes()).unwrap()
    }

    fn err(program: &str, message: &str) -> Malformed {
        parse(program.as_bytes(), message.as_bytes()).unwrap_err()
    }

    #[test]
    fn webbridge_stats() {
        let expected =
            RecordBody::WebBridgeStats(WebBridgeStats { active: 149, connections: 3477, disconnections: 3170 });
        assert_eq!(ok("webbridge", "INFO : [DEBUGGING] Stats 149, c:3477, d:3170"), Some(expected.clone()));
        assert_eq!(ok("wb", "INFO    : [DEBUGGING] Stats 149, c:3477, d:3170"), Some(expected.clone()));
        assert_eq!(ok("webbridge", "Stats 149, c:3477, d:3170"), Some(expected.clone()));
        assert_eq!(ok("webbridge", "INFO: [DEBUGGING] Stats 149, c:3477, d:3170"), Some(expected.clone()));
        assert_eq!(ok("webbridge", "[DEBUGGING] Stats 149,c:3477,d:3170 "), Some(expected.clone()));
        assert_eq!(ok("webbridge", "[DEBUGGING] Stats 149, c:3477, d:3170, x:5"), Some(expected));
        // "Stats " from anything but the web bridge, without the tag, is noise.
        assert_eq!(ok("host:server", "INFO : Stats collection enabled"), None);
    }

    #[test]
    fn malformed_webbridge_stats_by_reason() {
        assert_eq!(err("webbridge", "INFO : [DEBUGGING] Stats 149, c:3477"), Malformed::StatsFields);
        assert_eq!(err("webbridge", "INFO : [DEBUGGING] Stats"), Malformed::StatsFields);
        assert_eq!(err("webbridge", "INFO : [DEBUGGING] Stats 1x9, c:3477, d:3170"), Malformed::StatsNumber);
        assert_eq!(err("webbridge", "INFO : [DEBUGGING] Stats 99999999999, c:1, d:1"), Malformed::StatsNumber);
        assert_eq!(
            err("webbridge", "INFO : [DEBUGGING] Stats 9, c:99999999999999999999999, d:1"),
            Malformed::StatsNumber
        );
        assert_eq!(err("webbridge", "INFO : [DEBUGGING] Stats 9, x:1, d:1"), Malformed::StatsFields);
    }

    #[test]
    fn callbridge_stats() {
        let body = ok(
            "host:server",
            r#"INFO : STATS: {"callLegsPS": 1, "callLegs": "20/24", "CMA": "14/17", "sip": {"std": "0/1", "peer": "6/6"}, "new": "x", "n": 3}"#,
        )
        .unwrap();
        let RecordBody::CallBridgeStats(stats) = body else { panic!("{body:?}") };
        assert_eq!(stats.call_legs_per_second, Some(1));
        assert_eq!(stats.cma(), Some(Pair { current: 14, peak: 17 }));
        assert_eq!(stats.call_legs(), Some(Pair { current: 20, peak: 24 }));
        assert_eq!(stats.pair("sip.std"), Some(Pair { current: 0, peak: 1 }));
        assert_eq!(stats.pair("sip.peer"), Some(Pair { current: 6, peak: 6 }));
        // Missing keys are fine.
        let RecordBody::CallBridgeStats(empty) = ok("host:server", "STATS: {}").unwrap() else { panic!() };
        assert_eq!(empty.cma(), None);
    }

    #[test]
    fn malformed_callbridge_stats_by_reason() {
        assert_eq!(err("host:server", r#"INFO : STATS: {"CMA": "14/17""#), Malformed::StatsJson);
        assert_eq!(err("host:server", "INFO : STATS: [1, 2]"), Malformed::StatsJson);
        assert_eq!(err("host:server", r#"INFO : STATS: {"CMA": "many"}"#), Malformed::StatsPair);
        assert_eq!(err("host:server", r#"INFO : STATS: {"CMA": 14}"#), Malformed::StatsPair);
        assert_eq!(err("host:server", r#"INFO : STATS: {"callLegsPS": -1}"#), Malformed::StatsPair);
    }

    #[test]
    fn audit_lines() {
        let body = ok(
            "cli",
            "User admin from 10.140.249.233:63290 issued command < callbridge av1 enable>: permission granted",
        );
        assert_eq!(
            body,
            Some(RecordBody::Audit(AuditCommand {
                user: "admin".into(),
                source: Some("10.140.249.233:63290".into()),
                command: "callbridge av1 enable".into(),
                granted: true,
            }))
        );
        let Some(RecordBody::Audit(restart)) =
            ok("cli", "User ops issued command <webbridge restart>: permission granted")
        else {
            panic!()
        };
        assert!(restart.is_webbridge_restart());
        assert_eq!(restart.source, None);
        let Some(RecordBody::Audit(denied)) =
            ok("cli", "User x from 1.2.3.4:5 issued command <webbridge  restart>: permission denied")
        else {
            panic!()
        };
        assert!(!denied.granted);
        assert!(!denied.is_webbridge_restart());
        let Some(RecordBody::Audit(wb3)) =
            ok("cli", "User x from 1.2.3.4:5 issued command <webbridge3 restart>: permission granted")
        else {
            panic!()
        };
        assert!(!wb3.is_webbridge_restart());
        assert_eq!(ok("cli", "User admin logged in from 10.0.0.1"), None);
        assert_eq!(err("cli", "User admin from 1.2.3.4:5 issued command <webbridge restart"), Malformed::Audit);
        assert_eq!(ok("postgres", "User admin from 1.2.3.4:5 issued command <x>: permission granted"), None);
    }
}
