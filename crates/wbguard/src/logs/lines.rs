//! Bytes into whole lines, and lines into records: one part of one input
//! (a byte range of a plain file, or a whole stream), read block by block.
//!
//! A range owns the lines that *start* inside it: it skips a partial first
//! line and reads past its end to finish its last one. Lines longer than a
//! read block are counted as overlong and skipped without being held. A
//! range may stop early, at a line start, when the merge asks it to wait
//! ([`Ended::Paused`]); it then resumes from there as a new job.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

use wbguard_core::log::{LineCounts, ParseContext, Record, Scanner};

/// Records per batch handed to the merge.
pub const BATCH: usize = 1024;

/// How the reading of a part ended (I/O errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every line of the part was read.
    Done,
    /// A range met the end of its file before its own end: the file shrank.
    Early,
    /// A range stopped to let the merge catch up; the next line starts at
    /// this offset.
    Paused(u64),
}

/// Where a part's batches and counters go.
pub trait Sink {
    /// Hands a batch to the merge; false when the merge has gone.
    fn send(&mut self, records: Vec<Record>) -> bool;
    /// Adds the part's counters.
    fn count(&mut self, counts: &LineCounts, overlong: u64);
}

/// What a part is read with.
pub struct Tools<'a> {
    pub scanner: &'a Scanner,
    pub ctx: &'a ParseContext,
    pub buffer: &'a mut [u8],
}

/// A stream, gzip-compressed or not (by its first bytes).
pub fn scan_stream(reader: impl Read, tools: Tools<'_>, out: &mut impl Sink) -> io::Result<Ended> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        scan_lines(decoder, 0, None, tools, out, &|| false)
    } else {
        scan_lines(reader, 0, None, tools, out, &|| false)
    }
}

/// The lines that start within `start..end` of a plain file; when
/// `mid_line`, `start` may fall inside a line, which belongs to the range
/// before. `pause` is asked after each batch whether to stop and wait.
pub fn scan_range(
    file: &File,
    (start, end, mid_line): (u64, u64, bool),
    tools: Tools<'_>,
    out: &mut impl Sink,
    pause: &dyn Fn() -> bool,
) -> io::Result<Ended> {
    // Begin one byte early: if that byte is a newline, a line starts at
    // `start`; otherwise the partial line belongs to the range before.
    let skip = mid_line && start > 0;
    let from = if skip { start - 1 } else { start };
    let reader = ReadAt { file, offset: from };
    scan_lines(reader, from, Some((skip, end)), tools, out, pause)
}

/// Reads a shared file at an offset of its own: every range of a file reads
/// the one file opened, even if its name is given to another meanwhile.
struct ReadAt<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = crate::files::read_at(self.file, buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// Feeds whole lines to the scanner, block by block.
///
/// `range`: `Some((skip_partial_first_line, end))` for a range of a file
/// whose first byte is at offset `position`; `None` for a whole stream.
fn scan_lines(
    mut reader: impl Read,
    mut position: u64,
    range: Option<(bool, u64)>,
    tools: Tools<'_>,
    out: &mut impl Sink,
    pause: &dyn Fn() -> bool,
) -> io::Result<Ended> {
    let Tools { scanner, ctx, buffer } = tools;
    let (mut skipping_partial, end) = match range {
        Some((skip, end)) => (skip, Some(end)),
        None => (false, None),
    };
    // The end of the data before the range's end is a file that shrank.
    let early = |at: u64| if end.is_some_and(|end| at < end) { Ended::Early } else { Ended::Done };
    let mut skipping_overlong = false;
    let mut filled = 0;
    let mut batch = Vec::new();
    let mut counts = LineCounts::default();
    let mut overlong = 0;
    let mut sent = false;
    let result = loop {
        // Here `buffer[0]` is at `position`; outside a skip, a line starts there.
        if sent && !skipping_partial && !skipping_overlong && pause() {
            break Ok(Ended::Paused(position));
        }
        sent = false;
        let read = match reader.read(&mut buffer[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        let eof = read == 0;
        filled += read;

        // Drop the head of the buffer up to the first newline: the tail of
        // the previous range's last line, or of an overlong line.
        if skipping_partial || skipping_overlong {
            match memchr::memchr(b'\n', &buffer[..filled]) {
                Some(newline) => {
                    if skipping_overlong {
                        counts.total += 1;
                        overlong += 1;
                    }
                    skipping_partial = false;
                    skipping_overlong = false;
                    buffer.copy_within(newline + 1..filled, 0);
                    filled -= newline + 1;
                    position += newline as u64 + 1;
                }
                None => {
                    if eof && skipping_overlong {
                        counts.total += 1;
                        overlong += 1;
                    }
                    position += filled as u64;
                    filled = 0;
                    if eof {
                        break Ok(early(position));
                    }
                    continue;
                }
            }
        }
        if end.is_some_and(|end| position >= end) {
            break Ok(Ended::Done);
        }

        // Whole lines in the buffer, stopping after the line that crosses
        // the range's end.
        let mut finished = false;
        let mut take = memchr::memrchr(b'\n', &buffer[..filled]).map_or(0, |nl| nl + 1);
        if let Some(end) = end {
            let limit = (end - position) as usize; // position < end here
            if limit <= filled {
                if let Some(newline) = memchr::memchr(b'\n', &buffer[limit - 1..filled]) {
                    take = limit + newline;
                    finished = true;
                }
            }
        }
        let mut ended = Ended::Done;
        if eof && !finished {
            ended = early(position + filled as u64);
            take = filled;
            finished = true;
        }
        scanner.scan(&buffer[..take], ctx, &mut counts, &mut |record| batch.push(record));
        // Batches of some size: each hand-over wakes the merge thread.
        if batch.len() >= BATCH {
            if !out.send(std::mem::take(&mut batch)) {
                break Ok(Ended::Done); // nobody listens any more
            }
            sent = true;
        }
        if finished {
            break Ok(ended);
        }
        buffer.copy_within(take..filled, 0);
        filled -= take;
        position += take as u64;
        if filled == buffer.len() {
            // One line fills the whole buffer: skip it to its end.
            position += filled as u64;
            filled = 0;
            skipping_overlong = true;
        }
    };
    if !batch.is_empty() {
        out.send(batch);
    }
    out.count(&counts, overlong);
    result
}
