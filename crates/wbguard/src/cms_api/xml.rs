//! The API's XML answers, read with a real parser (quick-xml) into a small
//! tree, then into the three shapes wbguard asks for: `<status>`,
//! `<callLegs total="N">` and one `<callLeg>`.
//!
//! Bounded: the body is at most [`super::http::MAX_BODY`] bytes before it
//! gets here, the tree at most [`MAX_DEPTH`] deep and [`MAX_ELEMENTS`]
//! elements large. No DTD is read and no entity but XML's five and
//! character references is expanded, so an answer cannot grow inside the
//! parser. Unknown elements are ignored (later releases add fields); a
//! missing one that matters is an error that names it.

use quick_xml::events::Event;
use quick_xml::Reader;

/// The deepest nesting read; the API's answers are three or four deep.
pub const MAX_DEPTH: usize = 32;
/// The most elements one answer may hold (a page of legs has about ten
/// per leg).
pub const MAX_ELEMENTS: usize = 100_000;

/// One element: its name (without namespace prefix), attributes, text and
/// children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Attributes, unescaped, in order.
    pub attributes: Vec<(String, String)>,
    /// The text directly inside it, unescaped and trimmed.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a whole document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the answer is not UTF-8".to_owned())?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let bad = |e: &dyn std::fmt::Display, at: u64| format!("not well-formed XML at byte {at}: {e}");
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| bad(&e, at))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => return Err("more than one root element".into()),
            Event::Start(ref start) | Event::Empty(ref start) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(format!("more than {MAX_ELEMENTS} elements"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH}"));
                }
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut attributes = Vec::new();
                for attribute in start.attributes() {
                    let attribute = attribute.map_err(|e| bad(&e, at))?;
                    let key = String::from_utf8_lossy(attribute.key.local_name().as_ref()).into_owned();
                    let value = attribute.unescape_value().map_err(|e| bad(&e, at))?.into_owned();
                    attributes.push((key, value));
                }
                let element = Element { name, attributes, ..Element::default() };
                if matches!(event, Event::Empty(_)) {
                    close(element, &mut stack, &mut root);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // quick-xml checks that the end tag matches its start.
                let mut element = stack.pop().ok_or_else(|| "an end tag without its start".to_owned())?;
                element.text = element.text.trim().to_owned();
                close(element, &mut stack, &mut root);
            }
            Event::Text(text) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&text.xml_content().map_err(|e| bad(&e, at))?);
                } else if !text.xml_content().map_err(|e| bad(&e, at))?.trim().is_empty() {
                    return Err("text outside the root element".into());
                }
            }
            Event::CData(data) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&data.xml_content().map_err(|e| bad(&e, at))?);
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref().map_err(|e| bad(&e, at))? {
                    Some(c) => c,
                    None => match reference.decode().map_err(|e| bad(&e, at))?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown entity &{}; at byte {at}", other.escape_debug())),
                    },
                };
                if let Some(open) = stack.last_mut() {
                    open.text.push(resolved);
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("the answer ends inside an element".into());
    }
    root.ok_or_else(|| "no XML element in the answer".into())
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

/// The root, if it is named `name`.
fn expect(root: Element, name: &str) -> Result<Element, String> {
    if root.name == name {
        Ok(root)
    } else {
        Err(format!("expected <{name}>, got <{}>", root.name))
    }
}

/// A whole number in an element or attribute called `what`.
fn number(text: Option<&str>, what: &str) -> Result<u64, String> {
    let text = text.ok_or_else(|| format!("no {what}"))?;
    text.trim().parse().map_err(|_| format!("{what} is not a whole number: '{}'", text.escape_debug()))
}

/// `GET /api/v1/system/status`, the parts wbguard uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Call legs active on this call bridge, of every type.
    pub call_legs_active: u64,
    /// Seconds since the call bridge started (if told).
    pub uptime_seconds: Option<u64>,
    /// Its release (if told).
    pub software_version: Option<String>,
}

/// Reads a `<status>` answer.
pub fn status(bytes: &[u8]) -> Result<Status, String> {
    let root = expect(parse(bytes)?, "status")?;
    Ok(Status {
        call_legs_active: number(root.child_text("callLegsActive"), "callLegsActive")?,
        uptime_seconds: root.child_text("uptimeSeconds").and_then(|t| t.trim().parse().ok()),
        software_version: root.child_text("softwareVersion").map(str::to_owned),
    })
}

/// One page of `GET /api/v1/callLegs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegPage {
    /// All legs on the call bridge, this page or not.
    pub total: u64,
    /// The ids on this page, in order.
    pub ids: Vec<String>,
}

/// Reads a `<callLegs total="N">` page.
pub fn leg_page(bytes: &[u8]) -> Result<LegPage, String> {
    let root = expect(parse(bytes)?, "callLegs")?;
    let total = number(root.attribute("total"), "the total attribute of <callLegs>")?;
    let ids = root
        .children
        .iter()
        .filter(|c| c.name == "callLeg")
        .map(|c| c.attribute("id").map(str::to_owned).ok_or_else(|| "a <callLeg> without an id".to_owned()))
        .collect::<Result<_, _>>()?;
    Ok(LegPage { total, ids })
}

/// One leg, `GET /api/v1/callLegs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// `acano` (any CMA client) or `sip`; others are kept as written.
    pub kind: String,
    /// `distributionLink` (between clustered call bridges), `lync`, ... if any.
    pub sub_type: Option<String>,
    /// `<status><state>`, if told.
    pub state: Option<String>,
}

/// Reads a `<callLeg>` answer.
pub fn leg(bytes: &[u8]) -> Result<Leg, String> {
    let root = expect(parse(bytes)?, "callLeg")?;
    let kind = root.child_text("type").filter(|t| !t.is_empty()).ok_or("a <callLeg> without <type>")?;
    Ok(Leg {
        kind: kind.to_owned(),
        sub_type: root.child_text("subType").filter(|t| !t.is_empty()).map(str::to_owned),
        state: root.child("status").and_then(|s| s.child_text("state")).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status() {
        let body = br#"<?xml version="1.0"?>
            <status><softwareVersion>2.9.4</softwareVersion><uptimeSeconds>8520</uptimeSeconds>
            <cdrTime>2024-03-05T16:50:25Z</cdrTime><activated>true</activated><clusterEnabled>true</clusterEnabled>
            <callLegsActive>3</callLegsActive><callLegsMaxActive>40</callLegsMaxActive></status>"#;
        let status = status(body).unwrap();
        assert_eq!(status.call_legs_active, 3);
        assert_eq!((status.uptime_seconds, status.software_version.as_deref()), (Some(8520), Some("2.9.4")));
        assert!(super::status(b"<status><uptimeSeconds>1</uptimeSeconds></status>")
            .unwrap_err()
            .contains("callLegsActive"));
        assert!(super::status(b"<status><callLegsActive>-1</callLegsActive></status>").is_err());
        assert!(super::status(b"<callLegs total=\"0\"/>").unwrap_err().contains("<status>"));
    }

    #[test]
    fn a_page_of_legs() {
        let body = br#"<?xml version="1.0"?><callLegs total="3">
            <callLeg id="970d1e9c-8d5f-4b5b-9a1c-3f1d00000001"><name>Ann &amp; Bob</name><remoteParty>a@x</remoteParty>
              <call>c1</call></callLeg>
            <callLeg id="970d1e9c-8d5f-4b5b-9a1c-3f1d00000002"/>
            </callLegs>"#;
        let page = leg_page(body).unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(page.ids, ["970d1e9c-8d5f-4b5b-9a1c-3f1d00000001", "970d1e9c-8d5f-4b5b-9a1c-3f1d00000002"]);
        assert_eq!(leg_page(b"<callLegs total=\"0\"></callLegs>").unwrap(), LegPage { total: 0, ids: vec![] });
        assert!(leg_page(b"<callLegs><callLeg id=\"a\"/></callLegs>").unwrap_err().contains("total"));
        assert!(leg_page(b"<callLegs total=\"1\"><callLeg/></callLegs>").unwrap_err().contains("id"));
    }

    #[test]
    fn one_leg() {
        let body = br#"<callLeg id="x"><name></name><remoteParty>ann</remoteParty><type>acano</type>
            <subType>distributionLink</subType><direction>outgoing</direction>
            <configuration/><status><state>connected</state><durationSeconds>61</durationSeconds></status></callLeg>"#;
        let leg = leg(body).unwrap();
        assert_eq!(leg.kind, "acano");
        assert_eq!((leg.sub_type.as_deref(), leg.state.as_deref()), (Some("distributionLink"), Some("connected")));
        let sip = super::leg(b"<callLeg id=\"y\"><type>sip</type><subType></subType></callLeg>").unwrap();
        assert_eq!((sip.kind.as_str(), sip.sub_type, sip.state), ("sip", None, None));
        assert!(super::leg(b"<callLeg id=\"z\"/>").unwrap_err().contains("<type>"));
    }

    #[test]
    fn text_entities_and_namespaces() {
        let root = parse(br#"<a:r xmlns:a="u" k="1 &lt; 2"><b>x &amp; y &#x41;<![CDATA[<c>]]></b></a:r>"#).unwrap();
        assert_eq!(root.name, "r");
        assert_eq!(root.attribute("k"), Some("1 < 2"));
        assert_eq!(root.child_text("b"), Some("x & y A<c>"));
    }

    #[test]
    fn hostile_and_broken_answers_are_errors_not_panics() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert!(parse(wide.as_bytes()).unwrap_err().contains("elements"));
        let entity = br#"<!DOCTYPE a [<!ENTITY x "lol">]><a>&x;</a>"#;
        assert!(parse(entity).unwrap_err().contains("&x;"));
        for broken in
            [&b""[..], b"<a>", b"<a></b>", b"</a>", b"<a/><b/>", b"text", b"<a x=1/>", b"\xff\xfe<a/>", b"<a>&#0;</a>"]
        {
            assert!(parse(broken).is_err(), "{}", String::from_utf8_lossy(broken));
        }
    }
}
