//! One CDR `<record>` as a Call Bridge writes it, from a session model
//! event ([`CdrEvent`]): pure formatting, no I/O.
//!
//! A record is kept in two parts: the part every receiver shares (type,
//! time, correlatorIndex, the inner XML) and the recordIndex each receiver
//! numbers on its own, joined when a batch is written ([`Record::write`]).
//! Display names and other free text are XML-escaped.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::session::{CdrEvent, CdrEventKind};

/// The part of a record that every receiver of a call bridge shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `callStart`, `callLegStart`, `callLegUpdate`, `callLegEnd`, `callEnd`.
    pub kind: &'static str,
    /// `YYYY-MM-DDTHH:MM:SSZ`, virtual time.
    pub time: String,
    /// Counts from 0 per call bridge session, across receivers.
    pub correlator_index: u64,
    /// The XML inside `<record>`.
    pub inner: Arc<str>,
}

impl Record {
    /// The record of `event`, numbered `correlator_index`.
    pub fn from_event(event: &CdrEvent, correlator_index: u64) -> Record {
        let mut inner = String::with_capacity(256);
        let kind = match &event.kind {
            CdrEventKind::CallStart { call, name } => {
                let _ = write!(
                    inner,
                    "<call id=\"{call}\"><name>{}</name><callType>coSpace</callType></call>",
                    escape(name)
                );
                "callStart"
            }
            CdrEventKind::CallEnd { call, legs_completed, legs_max_active, duration_seconds } => {
                let _ = write!(
                    inner,
                    "<call id=\"{call}\"><callLegsCompleted>{legs_completed}</callLegsCompleted>\
                     <callLegsMaxActive>{legs_max_active}</callLegsMaxActive>\
                     <durationSeconds>{duration_seconds}</durationSeconds></call>"
                );
                "callEnd"
            }
            CdrEventKind::LegStart(leg) => {
                let _ = write!(
                    inner,
                    "<callLeg id=\"{}\"><displayName>{}</displayName><remoteParty>{}</remoteParty>\
                     <direction>incoming</direction><type>{}</type>",
                    leg.id,
                    escape(&leg.display_name),
                    escape(&leg.remote_party),
                    leg.leg_type.as_str()
                );
                if leg.distribution_link {
                    inner.push_str("<subType>distributionLink</subType>");
                }
                if leg.guest {
                    inner.push_str("<guestConnection>true</guestConnection>");
                }
                let _ = write!(inner, "<call>{}</call></callLeg>", leg.call);
                "callLegStart"
            }
            CdrEventKind::LegConnected { leg, call } => {
                let _ = write!(inner, "<callLeg id=\"{leg}\"><state>connected</state><call>{call}</call></callLeg>");
                "callLegUpdate"
            }
            CdrEventKind::LegEnd { leg, reason, duration_seconds } => {
                let _ = write!(
                    inner,
                    "<callLeg id=\"{leg}\"><reason>{reason}</reason><durationSeconds>{duration_seconds}</durationSeconds></callLeg>"
                );
                "callLegEnd"
            }
        };
        Record { kind, time: cdr_time(event.time), correlator_index, inner: inner.into() }
    }

    /// Appends `<record ...>...</record>` with this receiver's
    /// `record_index`, and `numPreceedingRecordsMissing` (spelled as CMS
    /// spells it) when records were thrown away before it.
    pub fn write(&self, out: &mut String, record_index: u64, missing_before: u64) {
        let _ = write!(
            out,
            "<record type=\"{}\" time=\"{}\" recordIndex=\"{record_index}\" correlatorIndex=\"{}\"",
            self.kind, self.time, self.correlator_index
        );
        if missing_before > 0 {
            let _ = write!(out, " numPreceedingRecordsMissing=\"{missing_before}\"");
        }
        out.push('>');
        out.push_str(&self.inner);
        out.push_str("</record>");
    }
}

/// The opening of a POST body: `session`, and `callBridge` in clusters.
pub fn records_open(out: &mut String, session: &str, callbridge: Option<&str>) {
    out.push_str("<?xml version=\"1.0\"?>\n");
    let _ = write!(out, "<records session=\"{session}\"");
    if let Some(id) = callbridge {
        let _ = write!(out, " callBridge=\"{id}\"");
    }
    out.push('>');
}

/// The end of a POST body.
pub fn records_close(out: &mut String) {
    out.push_str("</records>\n");
}

/// UTC, whole seconds: `2015-07-23T07:32:55Z`.
pub fn cdr_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `text` safe inside an XML element or attribute.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Guid, Leg, LegType};
    use chrono::TimeZone;

    #[test]
    fn a_leg_start_as_cms_writes_it() {
        let time = Utc.with_ymd_and_hms(2015, 7, 23, 7, 32, 55).unwrap();
        let leg = Leg {
            id: Guid(1),
            callbridge: 0,
            leg_type: LegType::Acano,
            distribution_link: false,
            guest: true,
            webrtc: true,
            call: Guid(2),
            since: time,
            display_name: "R&D <lab>".into(),
            remote_party: "guest@example.com".into(),
            by_hand: false,
        };
        let record = Record::from_event(&CdrEvent { time, callbridge: 0, kind: CdrEventKind::LegStart(leg) }, 4);
        let mut out = String::new();
        record.write(&mut out, 7, 3);
        assert_eq!(
            out,
            "<record type=\"callLegStart\" time=\"2015-07-23T07:32:55Z\" recordIndex=\"7\" correlatorIndex=\"4\" \
             numPreceedingRecordsMissing=\"3\"><callLeg id=\"00000000-0000-0000-0000-000000000001\">\
             <displayName>R&amp;D &lt;lab&gt;</displayName><remoteParty>guest@example.com</remoteParty>\
             <direction>incoming</direction><type>acano</type><guestConnection>true</guestConnection>\
             <call>00000000-0000-0000-0000-000000000002</call></callLeg></record>"
        );
    }
}
