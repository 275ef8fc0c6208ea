//! Log files into records, and records into the leak model: the service
//! behind `wbguard analyze` and `wbguard restart --stats`.
//!
//! Reading runs in parallel and merges the records by time.
//! Each input is opened once and cut into parts: a large plain file into
//! byte ranges, a gzip file, a pipe, a FIFO, a device or stdin is one part
//! read as a stream. A pool of worker threads scans the ranges
//! ([`lines`]), so two cores share one big file as well as several files;
//! each stream has a thread of its own. Parts hand their records over in
//! batches, and the calling thread merges the inputs by time, drops the
//! records read twice ([`dedup`]) and passes each record on.
//!
//! Memory stays bounded whatever the size of the input: workers run at most
//! [`WINDOW`] ranges ahead of the merge in each input, and once
//! [`IN_FLIGHT`] records wait for the merge, every range but the one the
//! merge waits for pauses (and is resumed later from where it stopped); a
//! stream waits when its batches are not taken.
//!
//! A plain file that shrinks or is replaced (rotated) while it is read is
//! reported with a warning naming it: the report then covers only what was
//! read, and says so.

mod dedup;
mod lines;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use wbguard_core::log::{LineCounts, ParseContext, Record, Scanner};
use wbguard_core::model::{Deployment, ModelConfig};

use crate::files;
use dedup::Dedup;
use lines::{Ended, Sink, Tools, BATCH};

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
/// Records from ranges that may wait for the merge (some 5 MB) before the
/// ranges the merge does not wait for pause.
pub const IN_FLIGHT: usize = 32 * BATCH;
/// How many batches a stream may hold before it waits for the merge.
const STREAM_BATCHES: usize = 4;

/// One input named on the command line.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file path.
    Path(PathBuf),
    /// Standard input (`-`).
    Stdin,
    /// Bytes already in memory (the built-in example), last written at
    /// `reference`. Only the simulator makes them.
    #[cfg_attr(not(all(unix, feature = "demo")), allow(dead_code))]
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
    /// Records skipped because the same record had just been read (from
    /// this input or another).
    pub duplicates: u64,
    /// Why it could not be read completely, if it could not.
    pub error: Option<String>,
    /// How it changed while it was read (shrank, replaced), if it did: what
    /// was read is in the report, but it is not the whole file.
    pub warning: Option<String>,
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
    Done { counts: LineCounts, overlong: u64, problem: Option<Problem> },
}

/// What went wrong with one part.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    /// Reading failed, for this reason.
    Read(String),
    /// The file ended before the part did.
    Shrank,
}

/// A range of a plain file, waiting for a worker (again, if it paused).
struct RangeJob {
    input: usize,
    /// Its position among the input's parts.
    part: usize,
    file: Arc<File>,
    start: u64,
    end: u64,
    /// Whether `start` may fall inside a line (false on resuming).
    mid_line: bool,
    reference: DateTime<Utc>,
    out: PartOutput,
}

/// Where the merge stands, so that workers neither run too far ahead nor
/// hold too many records.
struct Schedule {
    /// Parts of each input already merged.
    merged: Vec<usize>,
    /// Ranges not yet started or paused, by `(part, input)`.
    waiting: VecDeque<RangeJob>,
    /// The part `(input, part)` the merge is blocked on, if it is.
    awaited: Option<(usize, usize)>,
}

/// The schedule and the flow of records from ranges to the merge.
struct Shared {
    schedule: Mutex<Schedule>,
    progress: Condvar,
    /// Records sent by ranges and not yet taken by the merge.
    in_flight: Arc<AtomicUsize>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().expect("the schedule lock is never poisoned")
    }

    fn over_budget(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > IN_FLIGHT
    }

    /// The next range a worker may scan; `None` when none is left.
    fn next_job(&self) -> Option<RangeJob> {
        let mut state = self.lock();
        loop {
            let over = self.over_budget();
            let Schedule { merged, waiting, awaited } = &*state;
            let allowed = waiting.iter().position(|job| {
                job.part < merged[job.input] + WINDOW && (!over || *awaited == Some((job.input, job.part)))
            });
            if let Some(index) = allowed {
                return state.waiting.remove(index);
            }
            if state.waiting.is_empty() {
                return None;
            }
            state = self.progress.wait(state).expect("the schedule lock is never poisoned");
        }
    }

    /// Whether a range should stop: too many records wait for the merge,
    /// and the merge is not waiting for this range.
    fn should_pause(&self, input: usize, part: usize) -> bool {
        self.over_budget() && self.lock().awaited != Some((input, part))
    }

    /// Puts a paused range back, in its place.
    fn requeue(&self, job: RangeJob) {
        let mut state = self.lock();
        let key = (job.part, job.input);
        let at = state.waiting.iter().position(|j| (j.part, j.input) > key).unwrap_or(state.waiting.len());
        state.waiting.insert(at, job);
        self.progress.notify_all();
    }

    /// The merge is about to block on `(input, part)`, or (`None`) no more.
    fn awaiting(&self, awaited: Option<(usize, usize)>) {
        self.lock().awaited = awaited;
        self.progress.notify_all();
    }

    /// The merge took `count` records from a range.
    fn taken(&self, count: usize) {
        let before = self.in_flight.fetch_sub(count, Ordering::SeqCst);
        if before > IN_FLIGHT && before - count <= IN_FLIGHT {
            let _state = self.lock();
            self.progress.notify_all();
        }
    }

    /// The merge finished a part of `input`.
    fn part_merged(&self, input: usize) {
        self.lock().merged[input] += 1;
        self.progress.notify_all();
    }
}

/// How a part's scan reaches the merge.
struct PartOutput {
    counts: LineCounts,
    overlong: u64,
    to_merge: PartSender,
}

enum PartSender {
    /// Ranges never block; they pause instead (see [`Shared::should_pause`]).
    Range(Sender<Message>, Arc<AtomicUsize>),
    /// Streams wait when the merge has not taken their batches.
    Stream(SyncSender<Message>),
}

impl PartOutput {
    fn new(to_merge: PartSender) -> Self {
        PartOutput { counts: LineCounts::default(), overlong: 0, to_merge }
    }

    fn send_message(&self, message: Message) -> bool {
        match &self.to_merge {
            PartSender::Range(sender, in_flight) => {
                if let Message::Records(records) = &message {
                    in_flight.fetch_add(records.len(), Ordering::SeqCst);
                }
                sender.send(message).is_ok()
            }
            PartSender::Stream(sender) => sender.send(message).is_ok(),
        }
    }

    fn finish(self, problem: Option<Problem>) {
        let done = Message::Done { counts: self.counts.clone(), overlong: self.overlong, problem };
        self.send_message(done);
    }
}

impl Sink for PartOutput {
    fn send(&mut self, records: Vec<Record>) -> bool {
        self.send_message(Message::Records(records))
    }

    fn count(&mut self, counts: &LineCounts, overlong: u64) {
        self.counts.add(counts);
        self.overlong += overlong;
    }
}

/// Reads and scans every input, calls `on_record` with every record in
/// time order (inputs merged; within one input, file order; duplicates
/// dropped), and returns each input's counters in input order.
pub fn scan_merged(sources: &[Source], settings: &ScanSettings, mut on_record: impl FnMut(Record)) -> Vec<InputResult> {
    let mut results: Vec<InputResult> =
        sources.iter().map(|s| InputResult { name: s.name(), ..InputResult::default() }).collect();
    let mut cursors: Vec<Cursor> = (0..sources.len()).map(|_| Cursor::default()).collect();
    let mut watched: Vec<Option<Opened>> = (0..sources.len()).map(|_| None).collect();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut ranges: Vec<RangeJob> = Vec::new();
    let mut streams: Vec<(Stream, SyncSender<Message>)> = Vec::new();
    for (input, source) in sources.iter().enumerate() {
        match plan(source, settings.range) {
            Err(error) => results[input].error = Some(error),
            Ok(Plan::Stream(stream, opened)) => {
                let (sender, receiver) = mpsc::sync_channel(STREAM_BATCHES);
                cursors[input].parts.push_back(receiver);
                streams.push((stream, sender));
                watched[input] = opened;
            }
            Ok(Plan::Ranges { opened, bounds, reference }) => {
                cursors[input].ranges = true;
                for (part, (start, end)) in bounds.into_iter().enumerate() {
                    let (sender, receiver) = mpsc::channel();
                    cursors[input].parts.push_back(receiver);
                    let out = PartOutput::new(PartSender::Range(sender, in_flight.clone()));
                    let file = opened.file.clone();
                    ranges.push(RangeJob { input, part, file, start, end, mid_line: true, reference, out });
                }
                watched[input] = Some(opened);
            }
        }
    }
    // Start the first range of every input first, then the second, ...
    ranges.sort_by_key(|job| (job.part, job.input));
    let workers = settings.threads.clamp(1, ranges.len().max(1));
    let schedule = Schedule { merged: vec![0; sources.len()], waiting: ranges.into(), awaited: None };
    let shared = Shared { schedule: Mutex::new(schedule), progress: Condvar::new(), in_flight };

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| range_worker(&shared, settings));
        }
        for (stream, sender) in streams {
            scope.spawn(move || stream_part(stream, settings, sender));
        }
        merge(&mut cursors, &mut results, &shared, &mut on_record);
    });
    for ((result, cursor), opened) in results.iter_mut().zip(&cursors).zip(&watched) {
        let lines = result.counts.total;
        match &cursor.problem {
            Some(Problem::Read(why)) => {
                result.error = Some(format!("{}: read failed after {lines} lines: {why}", result.name));
            }
            Some(Problem::Shrank) | None => {}
        }
        if let Some(opened) = opened {
            result.warning = opened.changed(cursor.problem == Some(Problem::Shrank)).map(|change| {
                format!("{}: {change} while it was read; the report covers the {lines} lines read", result.name)
            });
        }
    }
    results
}

/// One input's parts, as seen by the merge.
#[derive(Default)]
struct Cursor {
    parts: VecDeque<Receiver<Message>>,
    /// Whether its parts are ranges (their records count as in flight).
    ranges: bool,
    /// Parts already merged.
    merged: usize,
    batch: VecDeque<Record>,
    /// The first problem of any of its parts.
    problem: Option<Problem>,
}

impl Cursor {
    /// The next record's time, fetching batches as needed; `None` when the
    /// input is exhausted.
    fn head(&mut self, input: usize, result: &mut InputResult, shared: &Shared) -> Option<DateTime<Utc>> {
        while self.batch.is_empty() {
            let part = self.parts.front()?;
            let message = match part.try_recv() {
                Ok(message) => Some(message),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => {
                    shared.awaiting(Some((input, self.merged)));
                    let message = part.recv().ok();
                    shared.awaiting(None);
                    message
                }
            };
            match message {
                Some(Message::Records(records)) => {
                    if self.ranges {
                        shared.taken(records.len());
                    }
                    self.batch = records.into();
                }
                finished => {
                    if let Some(Message::Done { counts, overlong, problem }) = finished {
                        result.counts.add(&counts);
                        result.overlong += overlong;
                        if self.problem.is_none() {
                            self.problem = problem;
                        }
                    }
                    self.parts.pop_front();
                    self.merged += 1;
                    shared.part_merged(input);
                }
            }
        }
        self.batch.front().map(|record| record.time)
    }
}

/// The k-way merge: always passes on the earliest head among the inputs.
fn merge(cursors: &mut [Cursor], results: &mut [InputResult], shared: &Shared, on_record: &mut impl FnMut(Record)) {
    let mut heads: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(cursors.len());
    for (input, cursor) in cursors.iter_mut().enumerate() {
        heads.push(cursor.head(input, &mut results[input], shared));
    }
    let mut dedup = Dedup::default();
    while let Some((input, _)) =
        heads.iter().enumerate().filter_map(|(i, head)| head.map(|t| (i, t))).min_by_key(|&(i, t)| (t, i))
    {
        let record = cursors[input].batch.pop_front().expect("a head was seen");
        if dedup.is_duplicate(&record) {
            results[input].duplicates += 1;
        } else {
            on_record(record);
        }
        heads[input] = cursors[input].head(input, &mut results[input], shared);
    }
}

fn range_worker(shared: &Shared, settings: &ScanSettings) {
    let scanner = Scanner::new();
    let mut buffer = vec![0u8; settings.block.max(2)];
    while let Some(mut job) = shared.next_job() {
        let ctx = context(settings, job.reference);
        let tools = Tools { scanner: &scanner, ctx: &ctx, buffer: &mut buffer };
        let (input, part) = (job.input, job.part);
        let bounds = (job.start, job.end, job.mid_line);
        let pause = || shared.should_pause(input, part);
        match lines::scan_range(&job.file, bounds, tools, &mut job.out, &pause) {
            Ok(Ended::Paused(at)) => {
                job.start = at;
                job.mid_line = false;
                shared.requeue(job);
            }
            Ok(Ended::Done) => job.out.finish(None),
            Ok(Ended::Early) => job.out.finish(Some(Problem::Shrank)),
            Err(error) => job.out.finish(Some(Problem::Read(describe(&error)))),
        }
    }
}

/// An input read as one stream.
enum Stream {
    /// A file opened by [`plan`] (gzip, FIFO, device): never opened twice.
    File(File, DateTime<Utc>),
    Stdin,
    Memory(Arc<Vec<u8>>, DateTime<Utc>),
}

fn stream_part(stream: Stream, settings: &ScanSettings, to_merge: SyncSender<Message>) {
    let scanner = Scanner::new();
    // Streams may be many (rotated .gz files); a smaller buffer each.
    let mut buffer = vec![0u8; settings.block.clamp(2, 256 << 10)];
    let mut out = PartOutput::new(PartSender::Stream(to_merge));
    let reference = match &stream {
        Stream::File(_, reference) | Stream::Memory(_, reference) => *reference,
        Stream::Stdin => Utc::now(),
    };
    let ctx = context(settings, reference);
    let tools = Tools { scanner: &scanner, ctx: &ctx, buffer: &mut buffer };
    let outcome = match stream {
        Stream::File(file, _) => lines::scan_stream(file, tools, &mut out),
        Stream::Stdin => lines::scan_stream(io::stdin().lock(), tools, &mut out),
        Stream::Memory(bytes, _) => lines::scan_stream(io::Cursor::new(bytes.as_slice()), tools, &mut out),
    };
    out.finish(outcome.err().map(|e| Problem::Read(describe(&e))));
}

fn context(settings: &ScanSettings, reference: DateTime<Utc>) -> ParseContext {
    ParseContext { zone: settings.zone, reference, default_host: settings.default_host.clone() }
}

/// A plain file as it was opened, to tell at the end whether it changed.
struct Opened {
    path: PathBuf,
    file: Arc<File>,
    /// Who the name pointed to (device and inode, on Unix).
    identity: files::Identity,
    size: u64,
}

impl Opened {
    fn new(path: &Path, file: Arc<File>, metadata: &std::fs::Metadata) -> io::Result<Self> {
        let identity = files::Identity::of(&file, metadata)?;
        Ok(Opened { path: path.to_owned(), file, identity, size: metadata.len() })
    }

    /// How the file changed while it was read, in words, if it did.
    fn changed(&self, ended_early: bool) -> Option<String> {
        let now = self.file.metadata().map_or(0, |m| m.len());
        if ended_early || now < self.size {
            return Some(format!("shrank from {} to {now} bytes", self.size));
        }
        match files::stat(&self.path) {
            Ok((identity, _)) if identity == self.identity => None,
            Ok(_) => Some("was replaced (rotated?)".to_owned()),
            Err(_) => Some("was removed".to_owned()),
        }
    }
}

/// How an input is read.
enum Plan {
    /// As one stream; `Some` for a plain (gzip) file, to check at the end.
    Stream(Stream, Option<Opened>),
    /// As byte ranges of a plain file, in parallel.
    Ranges { opened: Opened, bounds: Vec<(u64, u64)>, reference: DateTime<Utc> },
}

/// Opens one input, once, and decides how to read it, or says why it
/// cannot be read.
fn plan(source: &Source, range_size: u64) -> Result<Plan, String> {
    let path = match source {
        Source::Path(path) => path,
        Source::Stdin => return Ok(Plan::Stream(Stream::Stdin, None)),
        Source::Memory { bytes, reference, .. } => {
            return Ok(Plan::Stream(Stream::Memory(bytes.clone(), *reference), None))
        }
    };
    let name = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot open {name}: {}", describe(&e)))?;
    let metadata = file.metadata().map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
    if metadata.is_dir() {
        return Err(format!("cannot read {name}: it is a directory"));
    }
    let reference = modified(&metadata);
    if !metadata.is_file() {
        // A FIFO, a device, /dev/stdin: read as it comes, from this opening.
        return Ok(Plan::Stream(Stream::File(file, reference), None));
    }
    if is_gzip(&mut file).map_err(|e| format!("cannot read {name}: {}", describe(&e)))? {
        let watch = file.try_clone().map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
        let opened = Opened::new(path, Arc::new(watch), &metadata)
            .map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
        return Ok(Plan::Stream(Stream::File(file, reference), Some(opened)));
    }
    let size = metadata.len();
    let count = size.div_ceil(range_size.max(1)).max(1);
    let step = size.div_ceil(count).max(1);
    let bounds = (0..count).map(|i| (i * step, ((i + 1) * step).min(size))).collect();
    let opened =
        Opened::new(path, Arc::new(file), &metadata).map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
    Ok(Plan::Ranges { opened, bounds, reference })
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
