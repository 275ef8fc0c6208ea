//! Log files into records, and records into the leak model: the service
//! behind `wbguard analyze` and `wbguard restart --stats`.
//!
//! Reading runs in parallel and merges the records by time.
//! Each input is cut into parts: a large plain file into byte ranges, a
//! gzip file, a pipe or stdin is one part read as a stream. A pool of
//! worker threads scans the ranges with the core's [`Scanner`], so two cores
//! share one big file as well as several files; each stream has a thread of
//! its own. Parts hand their records over in batches, and the calling
//! thread merges the inputs by time and passes each record on.
//!
//! Memory stays bounded whatever the size of the input: workers run at most
//! [`WINDOW`] ranges ahead of the merge in each input, a stream waits when
//! its batches are not taken, and lines longer than a read block are
//! counted as overlong and skipped without being held. A range owns the
//! lines that *start* inside it: it skips a partial first line and reads
//! past its end to finish its last one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Condvar, Mutex};

use chrono::{DateTime, Utc};
use wbguard_core::log::{LineCounts, ParseContext, Record, Scanner};
use wbguard_core::model::{Deployment, ModelConfig};

/// How log lines are read into the model: the same settings the guard
/// uses for syslog (`watch.log_timezone`, `policy.limit`).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Zone of timestamps that carry none.
    pub zone: chrono_tz::Tz,
    /// Sessions at which a web bridge refuses new ones.
    pub limit: u32,
}

/// The leak model fed from log files, for commands that need session data
/// (`restart --stats`); returns it with the files that could not be read.
pub fn model_from_files(files: &[PathBuf], reading: &Reading) -> (Deployment, Vec<String>) {
    let sources: Vec<Source> = files.iter().map(|f| Source::Path(f.clone())).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = ScanSettings { zone: reading.zone, default_host: None, threads, block: BLOCK, range: RANGE };
    let mut model = Deployment::new(ModelConfig { limit: reading.limit, ..ModelConfig::default() });
    let results = scan_merged(&sources, &settings, |record| model.observe(&record));
    (model, results.into_iter().filter_map(|r| r.error).collect())
}

/// Bytes read at a time; also the longest line that is examined at all.
pub const BLOCK: usize = 1 << 20;
/// Plain files larger than this are split into ranges of about this size.
pub const RANGE: u64 = 32 << 20;
/// How many ranges of one input may be scanned ahead of the merge.
const WINDOW: usize = 3;
/// How many batches a stream may hold before it waits for the merge.
const STREAM_BATCHES: usize = 4;
/// Records per batch handed to the merge.
const BATCH: usize = 1024;

/// One input named on the command line.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file path.
    Path(PathBuf),
    /// Standard input (`-`).
    Stdin,
    /// Bytes already in memory (the built-in example), last written at
    /// `reference`. Only the simulator makes them.
    #[cfg_attr(not(feature = "demo"), allow(dead_code))]
    Memory { name: String, bytes: std::sync::Arc<Vec<u8>>, reference: DateTime<Utc> },
}

impl Source {
    /// The name used in reports and errors.
    pub fn name(&self) -> String {
        match self {
            Source::Path(path) => path.display().to_string(),
            Source::Stdin => "-".to_owned(),
            Source::Memory { name, .. } => name.clone(),
        }
    }
}

/// What one input yielded, besides its records.
#[derive(Debug, Default)]
pub struct InputResult {
    /// The input's name.
    pub name: String,
    /// Its line counters.
    pub counts: LineCounts,
    /// Lines longer than a block, skipped unread.
    pub overlong: u64,
    /// Why it could not be read completely, if it could not.
    pub error: Option<String>,
}

/// Shared settings of the parse.
pub struct ScanSettings {
    /// Time zone for stamps without one.
    pub zone: chrono_tz::Tz,
    /// Host for lines without one.
    pub default_host: Option<String>,
    /// Worker threads.
    pub threads: usize,
    /// Read block size ([`BLOCK`]); lines this long or longer are overlong.
    pub block: usize,
    /// Range size for splitting plain files ([`RANGE`]).
    pub range: u64,
}

/// What a part sends to the merge: batches of records, then its totals.
enum Message {
    Records(Vec<Record>),
    Done { counts: LineCounts, overlong: u64, error: Option<String> },
}

/// A range of a plain file, waiting for a worker.
struct RangeJob {
    input: usize,
    /// Its position among the input's parts.
    part: usize,
    path: PathBuf,
    start: u64,
    end: u64,
    reference: DateTime<Utc>,
    to_merge: Sender<Message>,
}

/// Where the merge stands, so that workers do not run too far ahead.
struct Schedule {
    /// Parts of each input already merged.
    merged: Vec<usize>,
    /// Ranges not yet started, in the order they should be.
    waiting: VecDeque<RangeJob>,
}

/// How a part's scan reaches the merge.
struct PartOutput {
    counts: LineCounts,
    overlong: u64,
    to_merge: PartSender,
}

enum PartSender {
    /// Ranges never wait (they are bounded by their size).
    Range(Sender<Message>),
    /// Streams wait when the merge has not taken their batches.
    Stream(SyncSender<Message>),
}

impl PartOutput {
    fn new(to_merge: PartSender) -> Self {
        PartOutput { counts: LineCounts::default(), overlong: 0, to_merge }
    }

    /// Hands a batch to the merge; false when the merge has gone.
    fn send(&self, records: Vec<Record>) -> bool {
        self.send_message(Message::Records(records))
    }

    fn send_message(&self, message: Message) -> bool {
        match &self.to_merge {
            PartSender::Range(sender) => sender.send(message).is_ok(),
            PartSender::Stream(sender) => sender.send(message).is_ok(),
        }
    }

    fn finish(self, error: Option<String>) {
        let done = Message::Done { counts: self.counts.clone(), overlong: self.overlong, error };
        self.send_message(done);
    }
}

/// Reads and scans every input, calls `on_record` with every record in
/// time order (inputs merged; within one input, file order), and returns
/// each input's counters in input order.
pub fn scan_merged(sources: &[Source], settings: &ScanSettings, mut on_record: impl FnMut(Record)) -> Vec<InputResult> {
    let mut results: Vec<InputResult> =
        sources.iter().map(|s| InputResult { name: s.name(), ..InputResult::default() }).collect();
    let mut cursors: Vec<Cursor> = (0..sources.len()).map(|_| Cursor::default()).collect();
    let mut ranges: Vec<RangeJob> = Vec::new();
    let mut streams: Vec<(usize, SyncSender<Message>)> = Vec::new();
    for (input, source) in sources.iter().enumerate() {
        match plan(source, settings.range) {
            Err(error) => results[input].error = Some(error),
            Ok(Plan::Stream) => {
                let (sender, receiver) = mpsc::sync_channel(STREAM_BATCHES);
                cursors[input].parts.push_back(receiver);
                streams.push((input, sender));
            }
            Ok(Plan::Ranges { path, bounds, reference }) => {
                for (part, (start, end)) in bounds.into_iter().enumerate() {
                    let (sender, receiver) = mpsc::channel();
                    cursors[input].parts.push_back(receiver);
                    ranges.push(RangeJob { input, part, path: path.clone(), start, end, reference, to_merge: sender });
                }
            }
        }
    }
    // Start the first range of every input first, then the second, ...
    ranges.sort_by_key(|job| (job.part, job.input));
    let workers = settings.threads.clamp(1, ranges.len().max(1));
    let schedule = Mutex::new(Schedule { merged: vec![0; sources.len()], waiting: ranges.into() });
    let progress = Condvar::new();

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| range_worker(&schedule, &progress, settings));
        }
        for (input, sender) in streams {
            let source = &sources[input];
            scope.spawn(move || stream_part(source, settings, sender));
        }
        merge(&mut cursors, &mut results, &schedule, &progress, &mut on_record);
    });
    results
}

/// One input's parts, as seen by the merge.
#[derive(Default)]
struct Cursor {
    parts: VecDeque<Receiver<Message>>,
    batch: VecDeque<Record>,
}

impl Cursor {
    /// The next record's time, fetching batches as needed; `None` when the
    /// input is exhausted.
    fn head(
        &mut self,
        input: usize,
        result: &mut InputResult,
        schedule: &Mutex<Schedule>,
        progress: &Condvar,
    ) -> Option<DateTime<Utc>> {
        while self.batch.is_empty() {
            let part = self.parts.front()?;
            match part.recv() {
                Ok(Message::Records(records)) => self.batch = records.into(),
                finished => {
                    if let Ok(Message::Done { counts, overlong, error }) = finished {
                        result.counts.add(&counts);
                        result.overlong += overlong;
                        if result.error.is_none() {
                            result.error = error;
                        }
                    }
                    self.parts.pop_front();
                    schedule.lock().expect("the schedule lock is never poisoned").merged[input] += 1;
                    progress.notify_all();
                }
            }
        }
        self.batch.front().map(|record| record.time)
    }
}

/// The k-way merge: always passes on the earliest head among the inputs.
fn merge(
    cursors: &mut [Cursor],
    results: &mut [InputResult],
    schedule: &Mutex<Schedule>,
    progress: &Condvar,
    on_record: &mut impl FnMut(Record),
) {
    let mut heads: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(cursors.len());
    for (input, cursor) in cursors.iter_mut().enumerate() {
        heads.push(cursor.head(input, &mut results[input], schedule, progress));
    }
    while let Some((input, _)) =
        heads.iter().enumerate().filter_map(|(i, head)| head.map(|t| (i, t))).min_by_key(|&(i, t)| (t, i))
    {
        let record = cursors[input].batch.pop_front().expect("a head was seen");
        on_record(record);
        heads[input] = cursors[input].head(input, &mut results[input], schedule, progress);
    }
}

fn range_worker(schedule: &Mutex<Schedule>, progress: &Condvar, settings: &ScanSettings) {
    let scanner = Scanner::new();
    let mut buffer = vec![0u8; settings.block.max(2)];
    loop {
        let job = {
            let mut state = schedule.lock().expect("the schedule lock is never poisoned");
            loop {
                let merged = &state.merged;
                let allowed = state.waiting.iter().position(|job| job.part < merged[job.input] + WINDOW);
                if let Some(index) = allowed {
                    break state.waiting.remove(index).expect("position is in range");
                }
                if state.waiting.is_empty() {
                    return;
                }
                state = progress.wait(state).expect("the schedule lock is never poisoned");
            }
        };
        let ctx = context(settings, job.reference);
        let mut out = PartOutput::new(PartSender::Range(job.to_merge));
        let outcome = File::open(&job.path)
            .and_then(|file| scan_range(file, job.start, job.end, &scanner, &ctx, &mut buffer, &mut out));
        let error = outcome.err().map(|e| read_error(&job.path.display().to_string(), &out.counts, &e));
        out.finish(error);
    }
}

fn stream_part(source: &Source, settings: &ScanSettings, to_merge: SyncSender<Message>) {
    let scanner = Scanner::new();
    // Streams may be many (rotated .gz files); a smaller buffer each.
    let mut buffer = vec![0u8; settings.block.clamp(2, 256 << 10)];
    let mut out = PartOutput::new(PartSender::Stream(to_merge));
    let outcome = match source {
        Source::Path(path) => {
            let reference = std::fs::metadata(path).map(|m| modified(&m)).unwrap_or_else(|_| Utc::now());
            File::open(path)
                .and_then(|file| scan_stream(file, &scanner, &context(settings, reference), &mut buffer, &mut out))
        }
        Source::Stdin => {
            scan_stream(io::stdin().lock(), &scanner, &context(settings, Utc::now()), &mut buffer, &mut out)
        }
        Source::Memory { bytes, reference, .. } => scan_stream(
            io::Cursor::new(bytes.as_slice()),
            &scanner,
            &context(settings, *reference),
            &mut buffer,
            &mut out,
        ),
    };
    let error = outcome.err().map(|e| read_error(&source.name(), &out.counts, &e));
    out.finish(error);
}

fn context(settings: &ScanSettings, reference: DateTime<Utc>) -> ParseContext {
    ParseContext { zone: settings.zone, reference, default_host: settings.default_host.clone() }
}

fn read_error(name: &str, counts: &LineCounts, error: &io::Error) -> String {
    format!("{name}: read failed after {} lines: {}", counts.total, describe(error))
}

/// How an input is read.
enum Plan {
    /// As one stream.
    Stream,
    /// As byte ranges of a plain file, in parallel.
    Ranges { path: PathBuf, bounds: Vec<(u64, u64)>, reference: DateTime<Utc> },
}

/// Decides how to read one input, or says why it cannot be read.
fn plan(source: &Source, range_size: u64) -> Result<Plan, String> {
    let path = match source {
        Source::Path(path) => path,
        Source::Stdin | Source::Memory { .. } => return Ok(Plan::Stream),
    };
    let name = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot open {name}: {}", describe(&e)))?;
    let metadata = file.metadata().map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
    if metadata.is_dir() {
        return Err(format!("cannot read {name}: it is a directory"));
    }
    if !metadata.is_file() || is_gzip(&mut file).map_err(|e| format!("cannot read {name}: {}", describe(&e)))? {
        return Ok(Plan::Stream);
    }
    let size = metadata.len();
    let count = size.div_ceil(range_size.max(1)).max(1);
    let step = size.div_ceil(count).max(1);
    let bounds = (0..count).map(|i| (i * step, ((i + 1) * step).min(size))).collect();
    Ok(Plan::Ranges { path: path.clone(), bounds, reference: modified(&metadata) })
}

fn is_gzip(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let mut read = 0;
    while read < 2 {
        match file.read(&mut magic[read..])? {
            0 => break,
            n => read += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(read == 2 && magic == [0x1f, 0x8b])
}

fn modified(metadata: &std::fs::Metadata) -> DateTime<Utc> {
    metadata.modified().map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now())
}

/// An I/O error in words, without Rust's `(os error N)` noise.
fn describe(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::UnexpectedEof => "unexpected end of data (truncated?)".to_owned(),
        _ => {
            let text = error.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    }
}

/// A stream, gzip-compressed or not (by its first bytes).
fn scan_stream(
    reader: impl Read,
    scanner: &Scanner,
    ctx: &ParseContext,
    buffer: &mut [u8],
    out: &mut PartOutput,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let gzip = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        scan_lines(decoder, 0, None, scanner, ctx, buffer, out)
    } else {
        scan_lines(reader, 0, None, scanner, ctx, buffer, out)
    }
}

/// The lines that start within `start..end` of a plain file.
fn scan_range(
    mut file: File,
    start: u64,
    end: u64,
    scanner: &Scanner,
    ctx: &ParseContext,
    buffer: &mut [u8],
    out: &mut PartOutput,
) -> io::Result<()> {
    // Begin one byte early: if that byte is a newline, a line starts at
    // `start`; otherwise the partial line belongs to the range before.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from))?;
    scan_lines(file, from, Some((start > 0, end)), scanner, ctx, buffer, out)
}

/// Feeds whole lines to the scanner, block by block.
///
/// `range`: `Some((skip_partial_first_line, end))` for a range of a file
/// whose first byte is at offset `position`; `None` for a whole stream.
fn scan_lines(
    mut reader: impl Read,
    mut position: u64,
    range: Option<(bool, u64)>,
    scanner: &Scanner,
    ctx: &ParseContext,
    buffer: &mut [u8],
    out: &mut PartOutput,
) -> io::Result<()> {
    let (mut skipping_partial, end) = match range {
        Some((skip, end)) => (skip, Some(end)),
        None => (false, None),
    };
    let mut skipping_overlong = false;
    let mut filled = 0;
    let mut batch = Vec::new();
    let mut counts = LineCounts::default();
    let mut overlong = 0;
    let result = loop {
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
                        break Ok(());
                    }
                    continue;
                }
            }
        }
        if end.is_some_and(|end| position >= end) {
            break Ok(());
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
        if eof && !finished {
            take = filled;
            finished = true;
        }
        scanner.scan(&buffer[..take], ctx, &mut counts, &mut |record| batch.push(record));
        // Batches of some size: each hand-over wakes the merge thread.
        if batch.len() >= BATCH && !out.send(std::mem::take(&mut batch)) {
            break Ok(()); // nobody listens any more
        }
        if finished {
            break Ok(());
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
    out.counts.add(&counts);
    out.overlong += overlong;
    result
}

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use wbguard_core::log::scan::parse_line;

    /// A deterministic mix of records, noise, empty and overlong lines.
    fn lines(seed: u64, count: usize, block: usize) -> Vec<Vec<u8>> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        (0..count)
            .map(|i| match next() % 6 {
                0 => format!(
                    "Mar  4 00:{:02}:{:02} user.info cms{} webbridge: INFO : [DEBUGGING] Stats {}, c:9, d:{}",
                    i / 60 % 60,
                    i % 60,
                    next() % 3,
                    next() % 149,
                    i
                )
                .into_bytes(),
                1 => Vec::new(),
                2 => vec![b'x'; block + next() % (2 * block)],
                3 => vec![b'y'; block - 1 - next() % 3],
                4 => format!(
                    "Mar  4 00:00:{:02} user.info cms1 host:server: INFO : STATS: {{\"CMA\": \"{}/{}\"}}",
                    i % 60,
                    i % 7,
                    i % 9
                )
                .into_bytes(),
                _ => b"Mar  4 00:00:01 user.info cms1 postgres[5]: noise Stats noise".to_vec(),
            })
            .collect()
    }

    #[test]
    fn every_range_and_block_size_sees_the_same_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ParseContext {
            zone: chrono_tz::Tz::UTC,
            reference: DateTime::parse_from_rfc3339("2024-12-01T00:00:00Z").unwrap().with_timezone(&Utc),
            default_host: None,
        };
        for (seed, block) in [(1u64, 64usize), (2, 100), (3, 257), (4, 1024)] {
            let lines = lines(seed, 300, block);
            for trailing_newline in [true, false] {
                let path = dir.path().join(format!("log-{seed}-{trailing_newline}"));
                let mut file = File::create(&path).unwrap();
                for (i, line) in lines.iter().enumerate() {
                    file.write_all(line).unwrap();
                    if trailing_newline || i + 1 < lines.len() {
                        file.write_all(b"\n").unwrap();
                    }
                }
                file.set_modified(ctx.reference.into()).unwrap();
                drop(file);
                let overlong = lines.iter().filter(|l| l.len() >= block).count() as u64;
                let expected: Vec<Record> = lines
                    .iter()
                    .filter(|l| l.len() < block)
                    .filter_map(|l| parse_line(l, &ctx).ok().flatten())
                    .collect();
                for range in [7u64, 64, 150, 1000, 1 << 40] {
                    let settings = ScanSettings { zone: ctx.zone, default_host: None, threads: 2, block, range };
                    let mut records = Vec::new();
                    let results = scan_merged(&[Source::Path(path.clone())], &settings, |r| records.push(r));
                    let result = &results[0];
                    let what = format!("seed {seed} block {block} range {range} newline {trailing_newline}");
                    assert_eq!(result.error, None, "{what}");
                    // An empty last line without its newline is no line at all.
                    let vanished = !trailing_newline && lines.last().is_some_and(|l| l.is_empty());
                    assert_eq!(result.counts.total, lines.len() as u64 - u64::from(vanished), "{what}");
                    assert_eq!(result.overlong, overlong, "{what}");
                    let times: Vec<_> = records.iter().map(|r| (r.time, r.host.clone())).collect();
                    let expected_times: Vec<_> = expected.iter().map(|r| (r.time, r.host.clone())).collect();
                    assert_eq!(times, expected_times, "{what}");
                }
            }
        }
    }
}
