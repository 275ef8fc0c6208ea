//! Reading log inputs in parallel: plain files, gzip files and stdin.
//!
//! Work is cut into jobs: a large plain file becomes several byte ranges,
//! each a job; a gzip file or a pipe is one job, read as a stream. Worker
//! threads take jobs in order and scan them with the core's [`Scanner`],
//! so two cores share one big file as well as several files.
//!
//! Memory stays bounded by the buffers (one block per worker) plus the
//! records found, which are compact and about one per thousand lines.
//! A range owns the lines that *start* inside it: it skips a partial first
//! line and reads past its end to finish its last one. Lines longer than a
//! block are counted as overlong and skipped without being held.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use wbguard_core::log::{LineCounts, ParseContext, Record, Scanner};

/// Bytes read at a time; also the longest line that is examined at all.
pub const BLOCK: usize = 1 << 20;
/// Plain files larger than this are split into ranges of about this size.
pub const RANGE: u64 = 32 << 20;

/// One input named on the command line.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file path.
    Path(PathBuf),
    /// Standard input (`-`).
    Stdin,
    /// Bytes already in memory (the built-in example), last written at
    /// `reference`.
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

/// What one input yielded.
#[derive(Debug, Default)]
pub struct InputResult {
    /// The input's name.
    pub name: String,
    /// Its line counters.
    pub counts: LineCounts,
    /// Lines longer than a block, skipped unread.
    pub overlong: u64,
    /// Its records, in input order.
    pub records: Vec<Record>,
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

enum Job {
    /// Bytes `start..end` of a plain file.
    Range { input: usize, path: PathBuf, start: u64, end: u64, reference: DateTime<Utc> },
    /// A whole input read as a stream (gzip, pipe, stdin, memory).
    Stream { input: usize },
}

#[derive(Default)]
struct JobResult {
    counts: LineCounts,
    overlong: u64,
    records: Vec<Record>,
    error: Option<String>,
}

/// Reads and scans every input; results come back in input order.
pub fn scan_all(sources: &[Source], settings: &ScanSettings) -> Vec<InputResult> {
    let mut results: Vec<InputResult> =
        sources.iter().map(|s| InputResult { name: s.name(), ..InputResult::default() }).collect();
    let mut jobs = Vec::new();
    for (input, source) in sources.iter().enumerate() {
        match plan(input, source, settings.range) {
            Ok(mut planned) => jobs.append(&mut planned),
            Err(error) => results[input].error = Some(error),
        }
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, JobResult)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let stdin_lock = Mutex::new(());
    let workers = settings.threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let scanner = Scanner::new();
                let mut buffer = vec![0u8; settings.block.max(2)];
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    let result = run_job(job, sources, settings, &scanner, &mut buffer, &stdin_lock);
                    done.lock().expect("no worker panics while holding the lock").push((index, result));
                }
            });
        }
    });
    let mut done = done.into_inner().expect("workers finished");
    done.sort_by_key(|(index, _)| *index);
    for (index, job_result) in done {
        let input = match &jobs[index] {
            Job::Range { input, .. } | Job::Stream { input } => *input,
        };
        let result = &mut results[input];
        result.counts.add(&job_result.counts);
        result.overlong += job_result.overlong;
        result.records.extend(job_result.records);
        if result.error.is_none() {
            result.error = job_result.error;
        }
    }
    results
}

/// Splits one input into jobs, or says why it cannot be read.
fn plan(input: usize, source: &Source, range_size: u64) -> Result<Vec<Job>, String> {
    let path = match source {
        Source::Path(path) => path,
        Source::Stdin | Source::Memory { .. } => return Ok(vec![Job::Stream { input }]),
    };
    let name = path.display();
    let mut file = File::open(path).map_err(|e| format!("cannot open {name}: {}", describe(&e)))?;
    let metadata = file.metadata().map_err(|e| format!("cannot read {name}: {}", describe(&e)))?;
    if metadata.is_dir() {
        return Err(format!("cannot read {name}: it is a directory"));
    }
    if !metadata.is_file() || is_gzip(&mut file).map_err(|e| format!("cannot read {name}: {}", describe(&e)))? {
        return Ok(vec![Job::Stream { input }]);
    }
    let reference = modified(&metadata);
    let size = metadata.len();
    let ranges = size.div_ceil(range_size.max(1)).max(1);
    let step = size.div_ceil(ranges).max(1);
    Ok((0..ranges)
        .map(|i| Job::Range { input, path: path.clone(), start: i * step, end: ((i + 1) * step).min(size), reference })
        .collect())
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

fn run_job(
    job: &Job,
    sources: &[Source],
    settings: &ScanSettings,
    scanner: &Scanner,
    buffer: &mut [u8],
    stdin_lock: &Mutex<()>,
) -> JobResult {
    let mut result = JobResult::default();
    let context =
        |reference| ParseContext { zone: settings.zone, reference, default_host: settings.default_host.clone() };
    let outcome = match job {
        Job::Range { path, start, end, reference, .. } => {
            let ctx = context(*reference);
            File::open(path).and_then(|file| scan_range(file, *start, *end, scanner, &ctx, buffer, &mut result))
        }
        Job::Stream { input } => match &sources[*input] {
            Source::Path(path) => {
                let reference = std::fs::metadata(path).map(|m| modified(&m)).unwrap_or_else(|_| Utc::now());
                File::open(path).and_then(|file| scan_stream(file, scanner, &context(reference), buffer, &mut result))
            }
            Source::Stdin => {
                let _only_one_reader = stdin_lock.lock();
                scan_stream(io::stdin().lock(), scanner, &context(Utc::now()), buffer, &mut result)
            }
            Source::Memory { bytes, reference, .. } => {
                scan_stream(io::Cursor::new(bytes.as_slice()), scanner, &context(*reference), buffer, &mut result)
            }
        },
    };
    if let Err(error) = outcome {
        let name = sources[match job {
            Job::Range { input, .. } | Job::Stream { input } => *input,
        }]
        .name();
        result.error = Some(format!("{name}: read failed after {} lines: {}", result.counts.total, describe(&error)));
    }
    result
}

/// A stream, gzip-compressed or not (by its first bytes).
fn scan_stream(
    reader: impl Read,
    scanner: &Scanner,
    ctx: &ParseContext,
    buffer: &mut [u8],
    out: &mut JobResult,
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
    out: &mut JobResult,
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
    out: &mut JobResult,
) -> io::Result<()> {
    let (mut skipping_partial, end) = match range {
        Some((skip, end)) => (skip, Some(end)),
        None => (false, None),
    };
    let mut skipping_overlong = false;
    let mut filled = 0;
    let mut sink = |record| out.records.push(record);
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
        scanner.scan(&buffer[..take], ctx, &mut counts, &mut sink);
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
                    let results = scan_all(&[Source::Path(path.clone())], &settings);
                    let result = &results[0];
                    let what = format!("seed {seed} block {block} range {range} newline {trailing_newline}");
                    assert_eq!(result.error, None, "{what}");
                    // An empty last line without its newline is no line at all.
                    let vanished = !trailing_newline && lines.last().is_some_and(|l| l.is_empty());
                    assert_eq!(result.counts.total, lines.len() as u64 - u64::from(vanished), "{what}");
                    assert_eq!(result.overlong, overlong, "{what}");
                    let times: Vec<_> = result.records.iter().map(|r| (r.time, r.host.clone())).collect();
                    let expected_times: Vec<_> = expected.iter().map(|r| (r.time, r.host.clone())).collect();
                    assert_eq!(times, expected_times, "{what}");
                }
            }
        }
    }
}
