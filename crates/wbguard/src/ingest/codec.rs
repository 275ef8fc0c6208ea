//! Framing: a byte stream cut into syslog messages, one codec for every
//! transport that is a stream (TCP, TLS, followed files). The transports
//! only read bytes into [`Framer::buffer`]; what a message is, is decided
//! here, so a framing fix reaches all of them at once.
//!
//! Two framings ([`Framing`]): files are newline framed; a TCP or TLS
//! sender may use either framing of RFC 6587, told apart frame by frame as
//! the RFC describes: octet counting (`MSG-LEN SP SYSLOG-MSG`) only where a
//! frame opens with a count, one space and a message's `<` (its PRI);
//! anything else, however many digits it starts with
//! (`2026-03-05T10:00:00Z cms1 ...` from a relay, an ISO-stamped CMS line),
//! is a line ending at its newline. Every byte sequence frames, so a stream
//! is never dropped over its framing.
//!
//! Bounded: a message over [`MAX_MESSAGE`] is skipped and counted, whatever
//! its framing, and nothing beyond one message (plus the read in progress)
//! is ever buffered.

use prometheus_client::metrics::counter::Counter;

use super::{Batch, MAX_MESSAGE};

/// How a stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Newline framing only: a log file written by a local syslog server,
    /// where a line starting with digits is just a line.
    Lines,
    /// RFC 6587, per frame: octet counting when it opens with
    /// `MSG-LEN SP <`, newline framing otherwise. TCP and TLS.
    Syslog,
}

/// The longest count read as one: 10 digits (9,999,999,999 bytes) is far
/// beyond any message, so longer runs of digits open a line instead.
const MAX_COUNT_DIGITS: usize = 10;

/// Cuts a byte stream into messages. Feed it through [`Framer::buffer`],
/// take the messages with [`Framer::frame`], and at the stream's end (or a
/// file's rotation) the last line with [`Framer::finish`].
#[derive(Debug)]
pub struct Framer {
    /// Newline or RFC 6587.
    framing: Framing,
    /// Bytes read and not yet framed: at most one incomplete message (and
    /// what the last read added).
    pending: Vec<u8>,
    /// Bytes still to skip of an oversized counted frame.
    skip: u64,
    /// Inside an oversized line: skip to its newline.
    skip_line: bool,
}

/// How the frame at the start of some bytes opens, as far as they tell.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// Octet counting: the message starts after `header` bytes and is
    /// `length` long.
    Counted { header: usize, length: u64 },
    /// A line, up to its newline.
    Line,
    /// Digits (and maybe their space) so far: the next bytes decide.
    Undecided,
}

/// RFC 6587's octet counting: `NONZERO-DIGIT *DIGIT SP`, then the syslog
/// message, whose first byte is its PRI's `<`.
fn opening(bytes: &[u8]) -> Opening {
    if !matches!(bytes.first(), Some(b'1'..=b'9')) {
        return Opening::Line;
    }
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > MAX_COUNT_DIGITS {
        return Opening::Line;
    }
    match (bytes.get(digits), bytes.get(digits + 1)) {
        (None, _) | (Some(b' '), None) => Opening::Undecided,
        (Some(b' '), Some(b'<')) => {
            let length = bytes[..digits].iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            Opening::Counted { header: digits + 1, length }
        }
        _ => Opening::Line,
    }
}

impl Framer {
    /// A framer for a new stream.
    pub fn new(framing: Framing) -> Framer {
        Framer { framing, pending: Vec::new(), skip: 0, skip_line: false }
    }

    /// Where the transport appends what it reads, before calling
    /// [`Framer::frame`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    fn opening(&self, bytes: &[u8]) -> Opening {
        match self.framing {
            Framing::Lines => Opening::Line,
            Framing::Syslog => opening(bytes),
        }
    }

    /// Moves every complete message of the buffer into `batch`; counts the
    /// oversized ones skipped in `oversize`. What is incomplete stays for
    /// the next read.
    pub fn frame(&mut self, batch: &mut Batch, oversize: &Counter) {
        let buffer = &self.pending;
        let mut at = 0;
        while at < buffer.len() {
            let rest = &buffer[at..];
            if self.skip > 0 {
                let n = self.skip.min(rest.len() as u64);
                self.skip -= n;
                at += n as usize;
                continue;
            }
            if self.skip_line {
                match memchr::memchr(b'\n', rest) {
                    Some(end) => {
                        self.skip_line = false;
                        at += end + 1;
                    }
                    None => at = buffer.len(),
                }
                continue;
            }
            match self.opening(rest) {
                Opening::Undecided => break,
                Opening::Counted { header, length } if length > MAX_MESSAGE as u64 => {
                    oversize.inc();
                    self.skip = length;
                    at += header;
                }
                Opening::Counted { header, length } => {
                    let end = header + length as usize;
                    if rest.len() < end {
                        break;
                    }
                    batch.push(&rest[header..end]);
                    at += end;
                }
                Opening::Line => match memchr::memchr(b'\n', rest) {
                    Some(end) => {
                        push_line(batch, &rest[..end], oversize);
                        at += end + 1;
                    }
                    None if rest.len() > MAX_MESSAGE => {
                        oversize.inc();
                        self.skip_line = true;
                        at = buffer.len();
                    }
                    None => break,
                },
            }
        }
        self.pending.drain(..at);
    }

    /// At the end of a stream (or of a rotated file): a last line without
    /// its newline still counts; a counted frame cut short is lost. The
    /// framer is then ready for a new stream.
    pub fn finish(&mut self, batch: &mut Batch, oversize: &Counter) {
        let cut_short = matches!(self.opening(&self.pending), Opening::Counted { .. });
        if !self.pending.is_empty() && !self.skip_line && self.skip == 0 && !cut_short {
            push_line(batch, &self.pending, oversize);
        }
        self.reset();
    }

    /// Whether a message is begun and not yet whole (or an oversized one
    /// not yet skipped).
    pub fn partial(&self) -> bool {
        !self.pending.is_empty() || self.skip > 0 || self.skip_line
    }

    /// Forgets what was read (a file truncated in place).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.skip = 0;
        self.skip_line = false;
    }
}

/// A line without its line ending; empty lines are no messages.
fn push_line(batch: &mut Batch, line: &[u8], oversize: &Counter) {
    let mut line = line;
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    if line.len() > MAX_MESSAGE {
        oversize.inc();
    } else if !line.is_empty() {
        batch.push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Origin;

    /// The messages of a stream fed in `chunks`, and the oversized count.
    fn framed(framing: Framing, chunks: &[&[u8]]) -> (Vec<String>, u64) {
        let mut framer = Framer::new(framing);
        let mut batch = Batch::new("127.0.0.1".parse().unwrap(), Origin::Anyone);
        let oversize = Counter::default();
        for chunk in chunks {
            framer.buffer().extend_from_slice(chunk);
            framer.frame(&mut batch, &oversize);
        }
        framer.finish(&mut batch, &oversize);
        let messages = batch.messages().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        (messages, oversize.get())
    }

    /// The same messages whole, split in two at every byte, and one byte at a time.
    fn assert_frames_anywhere(framing: Framing, stream: &[u8], want: &[&str]) {
        assert_eq!(framed(framing, &[stream]).0, want, "whole");
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(framed(framing, &[a, b]).0, want, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(framed(framing, &bytes).0, want, "byte by byte");
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let stream = b"<14>one\r\n9 <14>two\nx\n<14>three\n7 <14>fo5<14>5\nlast";
        assert_frames_anywhere(
            Framing::Syslog,
            stream,
            &["<14>one", "<14>two\nx", "<14>three", "<14>fo5", "<14>5", "last"],
        );
    }

    /// A relay's or an ISO-stamped line starts with digits: it is a line,
    /// never a count, and the stream goes on after it.
    #[test]
    fn lines_that_start_with_digits_are_lines() {
        let iso = "2026-03-05T10:00:00.736 user.info cms1 webbridge: INFO : [DEBUGGING] Stats 7, c:9, d:2";
        let relay = "2026-03-05T10:00:00.901+00:00 10.0.0.11 Mar  5 10:00:00.736 user.info cms1 webbridge: Stats 8";
        let counted = "<14>counted, and a line right after";
        let stream = format!(
            "{iso}\n{relay}\r\n12 words, no PRI\n0 <14>zero is no count\n12345678901 <14>eleven digits\n\
             {} {counted}{iso}\n",
            counted.len()
        );
        let want =
            [iso, relay, "12 words, no PRI", "0 <14>zero is no count", "12345678901 <14>eleven digits", counted, iso];
        assert_frames_anywhere(Framing::Syslog, stream.as_bytes(), &want);
        // Nothing ever closes a stream: digits that lead nowhere are a line too.
        assert_eq!(framed(Framing::Syslog, &[b"12345678901234567890 x"]).0, ["12345678901234567890 x"]);
        assert_eq!(framed(Framing::Syslog, &[b"2026"]).0, ["2026"]);
    }

    #[test]
    fn files_are_newline_framed() {
        let stream = b"9 <14>two\nx\n<14>three\r\nlast";
        assert_frames_anywhere(Framing::Lines, stream, &["9 <14>two", "x", "<14>three", "last"]);
    }

    #[test]
    fn a_counted_frame_cut_short_is_lost_and_the_rest_is_not() {
        assert_eq!(framed(Framing::Syslog, &[b"<14>one\n30 <14>short"]).0, ["<14>one"]);
    }

    #[test]
    fn oversized_frames_are_skipped_and_counted() {
        let long = vec![b'a'; MAX_MESSAGE + 10];
        let counted_long = [b"<14>".as_slice(), &long].concat();
        let counted = format!("{} ", counted_long.len());
        for framing in [Framing::Syslog, Framing::Lines] {
            let (messages, oversize) = framed(framing, &[b"<14>before\n", &long, b"\n<14>after\n"]);
            assert_eq!((messages, oversize), (vec!["<14>before".to_owned(), "<14>after".to_owned()], 1));
            // A line that never ends is skipped as soon as it is too long.
            let (messages, oversize) = framed(framing, &[&long, &long, b"\n<14>after\n"]);
            assert_eq!((messages, oversize), (vec!["<14>after".to_owned()], 1));
        }
        let (messages, oversize) =
            framed(Framing::Syslog, &[b"<14>before\n", counted.as_bytes(), &counted_long, b"<14>after\n"]);
        assert_eq!((messages, oversize), (vec!["<14>before".to_owned(), "<14>after".to_owned()], 1));
    }

    #[test]
    fn reset_forgets_a_partial_line() {
        let mut framer = Framer::new(Framing::Lines);
        let mut batch = Batch::new("127.0.0.1".parse().unwrap(), Origin::Anyone);
        let oversize = Counter::default();
        framer.buffer().extend_from_slice(b"half a li");
        framer.frame(&mut batch, &oversize);
        framer.reset();
        framer.buffer().extend_from_slice(b"whole\n");
        framer.frame(&mut batch, &oversize);
        assert_eq!(batch.messages().collect::<Vec<_>>(), [b"whole".as_slice()]);
    }
}
