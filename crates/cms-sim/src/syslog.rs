//! What a CMS deployment writes to syslog, byte for byte.
//!
//! Every header shape of `DOMAIN.md` is here ([`HeaderShape`]), so that a
//! generated log exercises the whole parser: on the wire with `<PRI>`, the
//! MMP's own view without it, one- and two-space day padding, with and
//! without milliseconds, ISO stamps, a container id, and a syslog relay's
//! header in front. The records that matter (`Stats`, `STATS:`, the `cli:`
//! audit) are written exactly as CMS writes them, between ordinary CMS noise.

use std::io::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rand::Rng;

use crate::session::CallBridgeReport;

/// How a line's header looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderShape {
    /// `<14>Mar  3 14:58:48.078 user.info cms1 PROGRAM: ` (remote syslog).
    Wire,
    /// `Mar  3 14:58:48 user.info cms1 PROGRAM: ` (the MMP's `syslog`).
    Mmp,
    /// `Mar 3 14:58:48.078 user.info cms1 PROGRAM:  ` (one-space day, two
    /// spaces after the tag).
    BsdMs,
    /// `2024-03-05T16:50:25.736 user.info cms1 PROGRAM: `
    Iso,
    /// `2024-03-05T16:50:25.901+00:00 10.0.0.11 Mar  5 16:50:25.736 user.info cms1 PROGRAM: `
    /// (a syslog server's own header in front).
    Relay,
    /// `Mar  3 14:58:48.078 user.info cms1 5f3c2a91 PROGRAM[812]: ` (a
    /// container id and a PID).
    Container,
}

impl HeaderShape {
    /// Every shape, in the order servers are given them in a mixed log.
    pub const ALL: [HeaderShape; 6] = [
        HeaderShape::Wire,
        HeaderShape::Mmp,
        HeaderShape::BsdMs,
        HeaderShape::Iso,
        HeaderShape::Relay,
        HeaderShape::Container,
    ];
}

impl std::str::FromStr for HeaderShape {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "wire" => HeaderShape::Wire,
            "mmp" => HeaderShape::Mmp,
            "bsd-ms" => HeaderShape::BsdMs,
            "iso" => HeaderShape::Iso,
            "relay" => HeaderShape::Relay,
            "container" => HeaderShape::Container,
            other => return Err(format!("unknown header shape '{other}' (wire, mmp, bsd-ms, iso, relay, container)")),
        })
    }
}

/// Syslog facility and severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// `user`, `local0`, ...
    pub facility: &'static str,
    /// Facility code (user = 1, local0 = 16).
    pub facility_code: u8,
    /// `info`, `err`, `warning`.
    pub severity: &'static str,
    /// Severity code (info = 6).
    pub severity_code: u8,
}

/// `user.info`: most CMS lines.
pub const USER_INFO: Priority = Priority { facility: "user", facility_code: 1, severity: "info", severity_code: 6 };
/// `user.warning`.
pub const USER_WARNING: Priority =
    Priority { facility: "user", facility_code: 1, severity: "warning", severity_code: 4 };
/// `user.err`.
pub const USER_ERR: Priority = Priority { facility: "user", facility_code: 1, severity: "err", severity_code: 3 };
/// `local0.info`: the MMP audit.
pub const LOCAL0_INFO: Priority =
    Priority { facility: "local0", facility_code: 16, severity: "info", severity_code: 6 };

impl Priority {
    /// The `<PRI>` number.
    pub fn value(self) -> u8 {
        self.facility_code * 8 + self.severity_code
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Appends a line header to `out`.
pub fn header(
    out: &mut Vec<u8>,
    shape: HeaderShape,
    time: DateTime<Utc>,
    priority: Priority,
    host: &str,
    relay_address: &str,
    program: &str,
) {
    let ms = time.timestamp_subsec_millis();
    let (month, day) = (MONTHS[time.month0() as usize], time.day());
    let (h, m, s) = (time.hour(), time.minute(), time.second());
    let prio = format_args!("{}.{}", priority.facility, priority.severity);
    // Writing to a Vec cannot fail.
    let _ = match shape {
        HeaderShape::Wire => {
            write!(out, "<{}>{month} {day:>2} {h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} {program}: ", priority.value())
        }
        HeaderShape::Mmp => write!(out, "{month} {day:>2} {h:02}:{m:02}:{s:02} {prio} {host} {program}: "),
        HeaderShape::BsdMs => write!(out, "{month} {day} {h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} {program}:  "),
        HeaderShape::Iso => write!(
            out,
            "{}-{:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} {program}: ",
            time.year(),
            time.month()
        ),
        HeaderShape::Relay => {
            let received = time + chrono::Duration::milliseconds(120);
            write!(
                out,
                "{} {relay_address} {month} {day:>2} {h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} {program}: ",
                received.format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
            )
        }
        HeaderShape::Container => {
            let (name, pid) = match program {
                "host:server" => (program, None),
                other => (other, Some(800 + other.len() as u32 * 7)),
            };
            match pid {
                Some(pid) => {
                    write!(out, "{month} {day:>2} {h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} 5f3c2a91 {name}[{pid}]: ")
                }
                None => write!(out, "{month} {day:>2} {h:02}:{m:02}:{s:02}.{ms:03} {prio} {host} 5f3c2a91 {name}: "),
            }
        }
    };
}

/// `[DEBUGGING] Stats 149, c:3477, d:3170`, the Web Bridge 2 record.
pub fn webbridge_stats(out: &mut Vec<u8>, active: u32, connections: u64, disconnections: u64) {
    let _ = write!(out, "INFO : [DEBUGGING] Stats {active}, c:{connections}, d:{disconnections}");
}

/// `STATS: {...}`, the Call Bridge record, from a report of the model.
pub fn callbridge_stats(out: &mut Vec<u8>, report: &CallBridgeReport, sip: u32, legs_per_second: u32) {
    let _ = write!(
        out,
        "INFO : STATS: {{\"callLegsPS\": {legs_per_second}, \"callLegs\": \"{}/{}\", \"CMA\": \"{}/{}\", \"sip\": {{\"std\": \"0/0\", \"peer\": \"{sip}/{sip}\"}}}}",
        report.call_legs, report.legs_peak, report.cma, report.cma_peak
    );
}

/// The MMP audit of a command.
pub fn audit(out: &mut Vec<u8>, user: &str, source: &str, command: &str, granted: bool) {
    let verdict = if granted { "granted" } else { "denied" };
    let _ = write!(out, "User {user} from {source} issued command <{command}>: permission {verdict}");
}

/// Writes a message of ordinary CMS noise into `message` (cleared first);
/// returns the priority and program tag its header needs.
pub fn noise(message: &mut Vec<u8>, rng: &mut impl Rng) -> (Priority, &'static str) {
    message.clear();
    let n: u32 = rng.gen_range(1..100_000);
    let id = rng.gen::<u32>();
    let out = message;
    // Rarely, lines that look like records to a quick search but are not:
    // the parser must find and drop them.
    if rng.gen_ratio(1, 400) {
        return if n.is_multiple_of(2) {
            let _ = write!(out, "INFO : media module Stats report: cpu {}%", n % 100);
            (USER_INFO, "host:server")
        } else {
            let _ = write!(out, "User admin logged in from 10.0.0.{}:{}", n % 250, 40000 + n % 20000);
            (LOCAL0_INFO, "cli")
        };
    }
    // Writing to a Vec cannot fail.
    match rng.gen_range(0..20u8) {
        0..=4 => {
            let (user, uri) = (n % 977, 7000 + n % 300);
            let _ = write!(out, "INFO : call {n}: incoming encrypted SIP call from \"sip:user{user}@example.com\" to local URI \"sip:{uri}@cms.example.com\"");
            (USER_INFO, "host:server")
        }
        5..=6 => {
            let _ = write!(out, "INFO : call {n}: ending; local teardown - connected for {}:{:02}", n % 90, n % 60);
            (USER_INFO, "host:server")
        }
        7 => {
            let _ = write!(out, "INFO : participant \"Guest {n}\" joined space {id:08x}-7d2c-4b0e-9f3a-5e8d1c2b{:04x} (Team Meeting {})", n % 65536, n % 40);
            (USER_INFO, "host:server")
        }
        8 => {
            let _ = write!(out, "INFO : conference {id:08x}: lock state has changed to unlocked");
            (USER_INFO, "host:server")
        }
        9 => {
            let _ = write!(out, "WARNING : call {n}: ICE failure 4 (unexpected media)");
            (USER_WARNING, "host:server")
        }
        10 => {
            let _ = write!(out, "INFO : API \"admin\" Space \"{id:08x}\" updated: name changed");
            (USER_INFO, "host:server")
        }
        11 => {
            let _ = write!(out, "INFO : media module status: cpu {}%, {} streams", n % 100, n % 400);
            (USER_INFO, "host:server")
        }
        12 => {
            let _ = write!(
                out,
                "LOG:  checkpoint complete: wrote {} buffers ({}.{}%); 0 WAL file(s) added",
                n % 500,
                n % 10,
                n % 7
            );
            (USER_INFO, "postgres[54639]")
        }
        13 => {
            let _ =
                write!(out, "INFO : guest login request {n}: credential storage scheduled (queue length: {})", n % 5);
            (USER_INFO, "webbridge")
        }
        14 => {
            let _ = write!(out, "INFO : guest login request {n}: resolution in progress");
            (USER_INFO, "webbridge")
        }
        15 => {
            let _ = write!(out, "INFO : websocket connection {id:08x} closed (1000)");
            (USER_INFO, "webbridge")
        }
        16 => {
            let _ = write!(out, "INFO : [{id:08x}] GET /api/auth/session 200 {}ms", n % 300);
            (USER_INFO, "client_backend")
        }
        17 => {
            let _ = write!(out, "INFO : uploading {} recording segment(s)", n % 9);
            (USER_INFO, "Uploader[1]")
        }
        18 => {
            let _ = write!(out, "ERROR   : call {n}: failed to resolve \"turn{}.example.com\"", n % 4);
            (USER_ERR, "host:server")
        }
        _ => {
            let _ = write!(out, "INFO : xmpp: client {id:08x} authenticated");
            (USER_INFO, "host:server")
        }
    }
}
