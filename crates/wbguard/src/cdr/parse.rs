//! One POST body of a Call Bridge, read: `<records session=".."
//! callBridge="..">` holding `<record type time recordIndex correlatorIndex
//! [numPreceedingRecordsMissing]>` elements, and in the call leg records
//! their `<callLeg id>` with the fields the live count needs (`type`,
//! `subType`, `guestConnection`, `call`). Everything else in a record is
//! skipped.
//!
//! A real XML parser (quick-xml, pulled event by event), held to bounds: a
//! DTD is refused (so no entity can be declared, let alone expanded), a
//! reference other than the five predefined entities and character
//! references is refused, nesting stops at [`MAX_DEPTH`], a body at
//! [`MAX_ELEMENTS`] elements, a kept value at [`MAX_VALUE`] bytes. A body
//! that breaks any of these, or is not well-formed, is a [`ParseError`]:
//! nothing of it is applied. A single record that lacks what it needs (its
//! `recordIndex`, a call leg's `id`) is kept as a [`Malformed`] entry and
//! the rest of the body still counts: refusing the whole body would make
//! the Call Bridge send it again forever.

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Elements nested deeper than this make the body malformed (CDRs nest
/// four deep: records, record, callLeg, a field; media statistics a few
/// more).
pub const MAX_DEPTH: usize = 16;
/// Elements in one body, at most: a 4 MiB body of real records holds some
/// tens of thousands.
pub const MAX_ELEMENTS: usize = 200_000;
/// A kept value (session, leg id, type, call id), at most this many bytes:
/// they are GUIDs and short words.
pub const MAX_VALUE: usize = 256;

/// A body that cannot be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not well-formed XML (or not UTF-8).
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// A `<!DOCTYPE>`: CDRs have none, and a DTD is how entity expansion
    /// attacks begin.
    #[error("a DTD (<!DOCTYPE>) is not accepted")]
    Doctype,
    /// A reference to an entity other than the five predefined ones.
    #[error("the entity &{0}; is not accepted (only &lt; &gt; &amp; &apos; &quot; and character references)")]
    Entity(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("elements nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    /// The root is not `<records>`.
    #[error("the root element is <{0}>, not <records>")]
    NotRecords(String),
    /// `<records>` without its `session`.
    #[error("<records> has no session attribute")]
    NoSession,
    /// A kept value over [`MAX_VALUE`] bytes, or empty where one is needed.
    #[error("{0}")]
    BadValue(String),
    /// No element at all.
    #[error("no <records> element in the body")]
    Empty,
}

/// What kind of record it is, as far as live legs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `callLegStart`: a leg opened.
    LegStart,
    /// `callLegUpdate`: a leg changed (it may carry the `<call>`).
    LegUpdate,
    /// `callLegEnd`: a leg closed.
    LegEnd,
    /// Any other type (`callStart`, `callEnd`, `recordingStart`, ...):
    /// applied as a no-op.
    Other,
}

impl RecordKind {
    fn of(record_type: &str) -> RecordKind {
        match record_type {
            "callLegStart" => RecordKind::LegStart,
            "callLegUpdate" => RecordKind::LegUpdate,
            "callLegEnd" => RecordKind::LegEnd,
            _ => RecordKind::Other,
        }
    }

    /// Whether it is about one call leg.
    pub fn is_leg(self) -> bool {
        !matches!(self, RecordKind::Other)
    }
}

/// The fields of a `<callLeg>` the live count uses; each as written, when
/// present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegFields {
    /// The leg's id (a GUID).
    pub id: String,
    /// `<type>`: `acano` or `sip`.
    pub leg_type: Option<String>,
    /// `<subType>`: `distributionLink`, `lync`, `avaya`, ...
    pub sub_type: Option<String>,
    /// `<guestConnection>`: a WebRTC guest.
    pub guest: Option<bool>,
    /// `<call>`: the call it is in (its id).
    pub call: Option<String>,
}

/// One record, usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `recordIndex`: with the session, it identifies the record.
    pub index: u64,
    /// Its type.
    pub kind: RecordKind,
    /// `time` (UTC, whole seconds), when it reads as one.
    pub time: Option<DateTime<Utc>>,
    /// `numPreceedingRecordsMissing` (so spelled): records the Call Bridge
    /// threw away before this one (0 when absent).
    pub missing_before: u64,
    /// The call leg, for leg records.
    pub leg: Option<LegFields>,
}

/// A record that lacks what it needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Its `recordIndex`, if it had a valid one.
    pub index: Option<u64>,
    /// Whether it was about a call leg (its loss makes the count unknown).
    pub leg: bool,
    /// What was wrong.
    pub why: String,
}

/// A body, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// `session`: new whenever the Call Bridge restarts.
    pub session: String,
    /// `callBridge` (clusters only): the call bridge's object id.
    pub callbridge_id: Option<String>,
    /// The usable records, in body order.
    pub records: Vec<Record>,
    /// The records that were not.
    pub malformed: Vec<Malformed>,
}

/// A record being read.
struct Open {
    index: Result<u64, String>,
    kind: RecordKind,
    time: Option<DateTime<Utc>>,
    missing_before: u64,
    /// The `<callLeg>`: its id, or why it has none.
    leg: Option<Result<LegFields, String>>,
    /// Depth of the `<record>` element.
    depth: usize,
}

/// Which field of the leg the text being read belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Type,
    SubType,
    Guest,
    Call,
}

impl Field {
    fn of(name: &[u8]) -> Option<Field> {
        match name {
            b"type" => Some(Field::Type),
            b"subType" => Some(Field::SubType),
            b"guestConnection" => Some(Field::Guest),
            b"call" => Some(Field::Call),
            _ => None,
        }
    }
}

fn xml_error(error: impl std::fmt::Display) -> ParseError {
    ParseError::Xml(error.to_string())
}

/// An attribute's value, unescaped (predefined entities and character
/// references only), if present.
fn attribute(element: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, ParseError> {
    for attribute in element.attributes() {
        let attribute = attribute.map_err(xml_error)?;
        if attribute.key.local_name().as_ref() == name {
            let value = attribute.unescape_value().map_err(|e| match e {
                quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, entity)) => {
                    ParseError::Entity(entity)
                }
                other => xml_error(other),
            })?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// A kept value: not empty, at most [`MAX_VALUE`] bytes.
fn bounded(value: String, what: &str) -> Result<String, String> {
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > MAX_VALUE {
        return Err(format!("{what} is longer than {MAX_VALUE} bytes"));
    }
    Ok(value)
}

/// The five entities XML predefines.
fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

/// Reads one POST body.
pub fn parse(body: &[u8]) -> Result<Posted, ParseError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buffer = Vec::new();
    let mut depth = 0usize;
    let mut elements = 0usize;
    let mut posted: Option<Posted> = None;
    let mut record: Option<Open> = None;
    // The leg field whose text is being read, and the text so far.
    let mut field: Option<(Field, String)> = None;
    loop {
        let event = reader.read_event_into(&mut buffer).map_err(xml_error)?;
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                let empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(ParseError::TooManyElements);
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ParseError::TooDeep);
                }
                let name = element.local_name();
                let name = name.as_ref();
                match (depth, posted.as_ref()) {
                    (1, _) => {
                        if name != b"records" {
                            return Err(ParseError::NotRecords(String::from_utf8_lossy(name).into_owned()));
                        }
                        let session = attribute(element, b"session")?.ok_or(ParseError::NoSession)?;
                        let session = bounded(session, "the session").map_err(ParseError::BadValue)?;
                        let callbridge_id = attribute(element, b"callBridge")?
                            .map(|id| bounded(id, "the callBridge attribute").map_err(ParseError::BadValue))
                            .transpose()?;
                        posted = Some(Posted { session, callbridge_id, records: Vec::new(), malformed: Vec::new() });
                    }
                    (2, Some(_)) if name == b"record" => {
                        let kind = RecordKind::of(attribute(element, b"type")?.as_deref().unwrap_or(""));
                        let index = match attribute(element, b"recordIndex")? {
                            None => Err("no recordIndex".to_owned()),
                            Some(text) => text.trim().parse::<u64>().map_err(|_| {
                                format!("recordIndex {:?} is not a number", text.escape_debug().to_string())
                            }),
                        };
                        let time = attribute(element, b"time")?
                            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
                            .map(|t| t.with_timezone(&Utc));
                        let missing_before = attribute(element, b"numPreceedingRecordsMissing")?
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .unwrap_or(0);
                        record = Some(Open { index, kind, time, missing_before, leg: None, depth });
                    }
                    (3, _) if name == b"callLeg" => {
                        if let Some(open) = record.as_mut().filter(|r| r.kind.is_leg()) {
                            let id = attribute(element, b"id")?
                                .ok_or_else(|| "its callLeg has no id".to_owned())
                                .and_then(|id| bounded(id, "the callLeg id"));
                            open.leg = Some(id.map(|id| LegFields { id, ..LegFields::default() }));
                        }
                    }
                    (4, _) if !empty => {
                        let leg_open = record.as_ref().is_some_and(|r| matches!(r.leg, Some(Ok(_))));
                        field = Field::of(name).filter(|_| leg_open).map(|f| (f, String::new()));
                    }
                    _ => {}
                }
                if empty {
                    depth -= 1;
                    if record.as_ref().is_some_and(|r| r.depth > depth) {
                        finish(record.take(), posted.as_mut());
                    }
                }
            }
            Event::End(_) => {
                if let Some((which, text)) = field.take() {
                    keep(which, text, record.as_mut());
                }
                depth = depth.saturating_sub(1);
                if record.as_ref().is_some_and(|r| r.depth > depth) {
                    finish(record.take(), posted.as_mut());
                }
            }
            Event::Text(text) => {
                if let Some((_, value)) = field.as_mut() {
                    let piece = text.xml_content().map_err(xml_error)?;
                    if value.len() + piece.len() <= MAX_VALUE * 2 {
                        value.push_str(&piece);
                    }
                }
            }
            Event::CData(data) => {
                if let Some((_, value)) = field.as_mut() {
                    let piece = data.decode().map_err(xml_error)?;
                    if value.len() + piece.len() <= MAX_VALUE * 2 {
                        value.push_str(&piece);
                    }
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(xml_error)? {
                    Some(c) => c,
                    None => {
                        let name = reference.decode().map_err(xml_error)?.into_owned();
                        predefined(&name).ok_or(ParseError::Entity(name))?
                    }
                };
                if let Some((_, value)) = field.as_mut() {
                    if value.len() < MAX_VALUE * 2 {
                        value.push(resolved);
                    }
                }
            }
            Event::DocType(_) => return Err(ParseError::Doctype),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        buffer.clear();
    }
    if depth != 0 {
        return Err(ParseError::Xml("the body ends inside an element".into()));
    }
    posted.ok_or(ParseError::Empty)
}

/// A leg field's text, kept on the record being read.
fn keep(which: Field, text: String, record: Option<&mut Open>) {
    let Some(Open { leg: Some(Ok(leg)), .. }) = record else { return };
    let Ok(value) = bounded(text, "a leg field") else { return };
    match which {
        Field::Type => leg.leg_type = Some(value),
        Field::SubType => leg.sub_type = Some(value),
        Field::Guest => leg.guest = Some(value.eq_ignore_ascii_case("true")),
        Field::Call => leg.call = Some(value),
    }
}

/// A record whose element closed: usable, or malformed and why.
fn finish(record: Option<Open>, posted: Option<&mut Posted>) {
    let (Some(open), Some(posted)) = (record, posted) else { return };
    let leg_record = open.kind.is_leg();
    let index = match open.index {
        Ok(index) => index,
        Err(why) => {
            posted.malformed.push(Malformed { index: None, leg: leg_record, why });
            return;
        }
    };
    let leg = match (leg_record, open.leg) {
        (false, _) => None,
        (true, Some(Ok(leg))) => Some(leg),
        (true, Some(Err(why))) => {
            posted.malformed.push(Malformed { index: Some(index), leg: true, why });
            return;
        }
        (true, None) => {
            let why = "a call leg record without its <callLeg>".to_owned();
            posted.malformed.push(Malformed { index: Some(index), leg: true, why });
            return;
        }
    };
    posted.records.push(Record { index, kind: open.kind, time: open.time, missing_before: open.missing_before, leg });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"<?xml version="1.0"?>
<records session="a9f5c3b1-0000-4000-8000-000000000001" callBridge="cb-guid-1">
  <record type="callStart" time="2015-07-23T07:32:55Z" recordIndex="1" correlatorIndex="0">
    <call id="call-1"><name>Team &amp; friends</name><callType>coSpace</callType></call>
  </record>
  <record type="callLegStart" time="2015-07-23T07:32:56Z" recordIndex="2" correlatorIndex="1">
    <callLeg id="leg-1">
      <displayName>A &lt;guest&gt; &#65;</displayName>
      <type>acano</type>
      <guestConnection>true</guestConnection>
      <direction>incoming</direction>
    </callLeg>
  </record>
  <record type="callLegUpdate" time="2015-07-23T07:32:57Z" recordIndex="3" correlatorIndex="2">
    <callLeg id="leg-1"><state>connected</state><call>call-1</call></callLeg>
  </record>
  <record type="callLegStart" time="2015-07-23T07:33:00Z" recordIndex="4" correlatorIndex="3" numPreceedingRecordsMissing="2">
    <callLeg id="leg-2"><type>sip</type><subType>distributionLink</subType><call><![CDATA[call-1]]></call></callLeg>
  </record>
  <record type="callLegEnd" time="2015-07-23T07:40:00Z" recordIndex="5" correlatorIndex="4">
    <callLeg id="leg-1"><reason>remoteTeardown</reason><durationSeconds>424</durationSeconds></callLeg>
  </record>
  <record type="recordingStart" time="2015-07-23T07:40:01Z" recordIndex="6" correlatorIndex="5"/>
</records>"#;

    #[test]
    fn a_body_of_every_shape_is_read() {
        let posted = parse(BODY.as_bytes()).unwrap();
        assert_eq!(posted.session, "a9f5c3b1-0000-4000-8000-000000000001");
        assert_eq!(posted.callbridge_id.as_deref(), Some("cb-guid-1"));
        assert!(posted.malformed.is_empty(), "{:?}", posted.malformed);
        let kinds: Vec<(u64, RecordKind)> = posted.records.iter().map(|r| (r.index, r.kind)).collect();
        use RecordKind::*;
        assert_eq!(kinds, [(1, Other), (2, LegStart), (3, LegUpdate), (4, LegStart), (5, LegEnd), (6, Other)]);
        let start = posted.records[1].leg.clone().unwrap();
        assert_eq!(
            start,
            LegFields {
                id: "leg-1".into(),
                leg_type: Some("acano".into()),
                sub_type: None,
                guest: Some(true),
                call: None
            }
        );
        assert_eq!(posted.records[1].time, DateTime::parse_from_rfc3339("2015-07-23T07:32:56Z").ok().map(|t| t.into()));
        assert_eq!(posted.records[2].leg.as_ref().unwrap().call.as_deref(), Some("call-1"));
        let link = posted.records[3].leg.as_ref().unwrap();
        assert_eq!((link.leg_type.as_deref(), link.sub_type.as_deref()), (Some("sip"), Some("distributionLink")));
        assert_eq!(link.call.as_deref(), Some("call-1"));
        assert_eq!(posted.records[3].missing_before, 2);
        assert_eq!(posted.records[4].leg.as_ref().unwrap().id, "leg-1");
    }

    /// The "billion laughs": entities declared in a DTD and nested. The DTD
    /// is refused before anything is expanded; a reference to an entity
    /// never declared is refused too.
    #[test]
    fn entity_expansion_is_refused() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE records [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
]>
<records session="s"><record type="callLegStart" recordIndex="1"><callLeg id="&lol2;"/></record></records>"#;
        assert_eq!(parse(laughs.as_bytes()), Err(ParseError::Doctype));
        let undeclared = r#"<records session="s"><record type="callLegStart" recordIndex="1"><callLeg id="x"><type>&lol2;</type></callLeg></record></records>"#;
        assert_eq!(parse(undeclared.as_bytes()), Err(ParseError::Entity("lol2".into())));
        let in_attribute = r#"<records session="&lol;"/>"#;
        assert_eq!(parse(in_attribute.as_bytes()), Err(ParseError::Entity("lol".into())));
        let external = r#"<!DOCTYPE r SYSTEM "file:///etc/passwd"><records session="s"/>"#;
        assert_eq!(parse(external.as_bytes()), Err(ParseError::Doctype));
    }

    #[test]
    fn bounds_hold() {
        let deep = format!("<records session=\"s\">{}{}</records>", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse(deep.as_bytes()), Err(ParseError::TooDeep));
        let many = format!("<records session=\"s\">{}</records>", "<x/>".repeat(MAX_ELEMENTS + 1));
        assert_eq!(parse(many.as_bytes()), Err(ParseError::TooManyElements));
        let long = format!("<records session=\"{}\"/>", "s".repeat(MAX_VALUE + 1));
        assert!(matches!(parse(long.as_bytes()), Err(ParseError::BadValue(_))));
    }

    #[test]
    fn garbage_is_an_error_that_says_why() {
        for (body, expected) in [
            ("", "no <records>"),
            ("this is not xml", "no <records>"),
            ("<records session=\"s\"><record>", "ends inside"),
            ("<records session=\"s\"></record></records>", "well-formed"),
            ("<cdr session=\"s\"/>", "<cdr>"),
            ("<records/>", "no session"),
            ("<records session=\"s\"><a></b></records>", "well-formed"),
        ] {
            let error = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{body:?}: {error}");
        }
        assert!(parse(&[0xff, 0xfe, b'<', 0x00]).is_err());
    }

    /// A record that lacks what it needs is set aside; the rest count.
    #[test]
    fn a_bad_record_is_set_aside_and_the_rest_kept() {
        let body = r#"<records session="s">
          <record type="callLegStart" recordIndex="x1"><callLeg id="a"/></record>
          <record type="callLegStart" recordIndex="2"><callLeg><type>acano</type></callLeg></record>
          <record type="callLegEnd" recordIndex="3"/>
          <record type="callStart"/>
          <record type="callLegStart" recordIndex="5"><callLeg id="b"><type>sip</type></callLeg></record>
        </records>"#;
        let posted = parse(body.as_bytes()).unwrap();
        assert_eq!(posted.records.len(), 1);
        assert_eq!(posted.records[0].leg.as_ref().unwrap().id, "b");
        let malformed: Vec<(Option<u64>, bool)> = posted.malformed.iter().map(|m| (m.index, m.leg)).collect();
        assert_eq!(malformed, [(None, true), (Some(2), true), (Some(3), true), (None, false)]);
    }
}
