//! Text from outside (host names and other words of log lines, request
//! data) made safe to show. A syslog sender writes whatever it likes where
//! a host name goes: an escape sequence that retitles or clears the
//! operator's terminal, a newline that forges a log line, a formula that a
//! spreadsheet runs when it opens the CSV. Shown, such text is escaped
//! (`\u{1b}`, `\n`); in CSV, a formula is also neutralised.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how the text around them looks without being
/// seen: control characters (C0, DEL, C1, among them ESC, which opens
/// terminal escape sequences), the line and paragraph separators, and the
/// direction marks and overrides that reorder what follows them.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each [hidden](hidden) character escaped as Rust writes it
/// (`\n`, `\t`, `\r`, `\u{1b}`); unchanged, and not copied, if there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One CSV field (RFC 4180) of outside text: [`printable`]; a field that
/// a spreadsheet would read as a formula (one opening with `=`, `+`, `-`
/// or `@`) gets a leading `'`, as OWASP recommends, so that it shows as
/// text; quoted when it holds a comma or a quote. (Tab and CR, the other
/// formula openers, are already escaped by `printable`.)
pub fn csv_field(text: &str) -> String {
    let mut field = printable(text).into_owned();
    if field.starts_with(['=', '+', '-', '@']) {
        field.insert(0, '\'');
    }
    if field.contains([',', '"']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_shown_escaped() {
        assert!(matches!(printable("cms1.example.com"), Cow::Borrowed("cms1.example.com")));
        assert_eq!(printable("\u{1b}]0;pwned\u{7}cms1"), "\\u{1b}]0;pwned\\u{7}cms1");
        assert_eq!(printable("a\nb\tc\rd\u{7f}e\u{9b}"), "a\\nb\\tc\\rd\\u{7f}e\\u{9b}");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(printable("zürich-cms"), "zürich-cms");
    }

    #[test]
    fn formulas_are_neutralised_and_fields_quoted() {
        assert_eq!(csv_field("cms1"), "cms1");
        assert_eq!(csv_field("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        for opener in ["+1", "-1", "@SUM(A1)", "=1"] {
            assert_eq!(csv_field(opener), format!("'{opener}"));
        }
        assert_eq!(csv_field("\tcmd"), "\\tcmd");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
