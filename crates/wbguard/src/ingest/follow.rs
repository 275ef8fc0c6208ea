//! Following a log file that a local syslog server (rsyslog, syslog-ng)
//! writes, as `tail -F` does: read what is there, then what is appended,
//! and carry on through rotation.
//!
//! Lines are cut by the same codec as TCP's ([`super::codec`]), newline
//! framed: in a file, a line that starts with digits is just a line. Reads
//! and `stat`s run on blocking threads, never on the async workers.
//!
//! The file is polled (a quarter second): a new file at the path (another
//! inode) means it was rotated by renaming, so the old one is read to its
//! end before the new one is opened; a file shorter than what was read
//! means it was truncated (`copytruncate`), so reading starts again at its
//! start. A missing file is waited for, and so is a directory found where
//! the file was (said once, not every round). Reading starts at the
//! beginning: the model wants the past, and history stores each sample once.

use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use super::codec::{Framer, Framing};
use super::metrics::MessageResult;
use super::{Batch, Intake, Origin};
use crate::files;

/// How often the file is looked at when nothing new came.
const POLL: Duration = Duration::from_millis(250);
/// Read at most this much per round: one queue entry, so that a followed
/// file replaying a large log keeps within the queue's memory budget and
/// waits for the guard like a TCP sender.
const ROUND_BYTES: u64 = 256 * 1024;

/// An open file and how far it was read.
struct Open {
    file: std::fs::File,
    /// Which file it is (device and inode, on Unix).
    identity: files::Identity,
    read: u64,
    /// A read failed and was logged: once per file, not every round.
    failed: bool,
}

/// Opens `path`, unless it is a directory (which opens, but never reads).
fn open(path: &std::path::Path) -> std::io::Result<Open> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    Ok(Open { identity: files::Identity::of(&file, &meta)?, file, read: 0, failed: false })
}

/// The blocking side of a followed file: the open file, the codec and
/// what was said about the file, carried from round to round. Its rounds
/// run on tokio's blocking threads, since file reads and `stat` block (a
/// slow or hung file system would otherwise stall an async worker and
/// every socket it serves).
struct Reader {
    path: PathBuf,
    current: Option<Open>,
    framer: Framer,
    /// Oversized lines (`wbguard_syslog_messages_total{result="oversize"}`).
    oversize: Counter,
    /// "Cannot follow yet" was logged: once per absence.
    missing_reported: bool,
}

impl Reader {
    /// One round: opens the file if needed, reads up to [`ROUND_BYTES`]
    /// into `batch`, and when nothing new came, checks for rotation and
    /// truncation. True if it got anywhere (read, or found a new file):
    /// the next round comes at once, else after [`POLL`].
    fn round(&mut self, batch: &mut Batch) -> bool {
        let path = &self.path;
        if self.current.is_none() {
            match open(path) {
                Ok(opened) => {
                    tracing::info!("following {}", path.display());
                    self.current = Some(opened);
                    self.missing_reported = false;
                }
                Err(e) if !self.missing_reported => {
                    tracing::warn!("cannot follow {} yet: {e}; waiting for it", path.display());
                    self.missing_reported = true;
                }
                Err(_) => {}
            }
        }
        let Some(file) = self.current.as_mut() else { return false };
        let buffer = self.framer.buffer();
        let before = buffer.len();
        // Straight into the codec's buffer; an error keeps what came before it.
        if let Err(e) = (&mut file.file).take(ROUND_BYTES).read_to_end(buffer) {
            if !std::mem::replace(&mut file.failed, true) {
                tracing::warn!("reading {}: {e}", path.display());
            }
        }
        let n = (buffer.len() - before) as u64;
        if n > 0 {
            file.read += n;
            self.framer.frame(batch, &self.oversize);
            return true;
        }
        match files::stat(path) {
            // Rotated: the old file was read to its end (its last line may
            // lack its newline); the new one is read from its start.
            Ok((identity, _)) if identity != file.identity => {
                tracing::info!("{} was rotated: reading the new file", path.display());
                self.framer.finish(batch, &self.oversize);
                self.current = open(path).ok();
                true
            }
            // Truncated in place (copytruncate): from the start again.
            Ok((_, meta)) if meta.len() < file.read => {
                tracing::info!("{} was truncated: reading it from the start", path.display());
                let _ = file.file.seek(SeekFrom::Start(0));
                file.read = 0;
                self.framer.reset();
                true
            }
            // Unchanged; or removed and not yet recreated: the open file is
            // kept until a new one appears.
            _ => false,
        }
    }
}

/// Follows `path` until `shutdown` turns true, sending each complete line.
/// Reads happen on a blocking thread, one round at a time; each round's
/// batch waits for room in the guard's queue before the next read, so a
/// busy guard slows the reading and nothing is lost.
pub async fn follow(path: PathBuf, intake: Intake, mut shutdown: watch::Receiver<bool>) {
    let oversize = intake.counts.counter(MessageResult::Oversize).clone();
    let mut reader =
        Reader { path, current: None, framer: Framer::new(Framing::Lines), oversize, missing_reported: false };
    loop {
        let mut batch = batch(&intake);
        let round = tokio::task::spawn_blocking(move || {
            let progressed = reader.round(&mut batch);
            (reader, batch, progressed)
        });
        let progressed;
        (reader, batch, progressed) = match round.await {
            Ok(done) => done,
            Err(error) => {
                tracing::error!("following a file stopped: {error}");
                return;
            }
        };
        if !intake.offer_stream(batch).await {
            return;
        }
        if !progressed {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
        } else if *shutdown.borrow() {
            return;
        }
    }
}

/// A local file speaks for every configured server, like a relay.
fn batch(intake: &Intake) -> Batch {
    let origin = if intake.sources().open { Origin::Anyone } else { Origin::Relay };
    Batch::new(IpAddr::V4(Ipv4Addr::LOCALHOST), origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, RwLock};
    use tokio::sync::mpsc;

    use crate::ingest::metrics::Messages;
    use crate::ingest::Sources;

    /// The next line, from batches as they come.
    async fn next_line(
        batches: &mut mpsc::Receiver<Batch>,
        waiting: &mut std::collections::VecDeque<String>,
    ) -> String {
        while waiting.is_empty() {
            let batch = tokio::time::timeout(Duration::from_secs(5), batches.recv()).await.unwrap().unwrap();
            waiting.extend(batch.messages().map(|m| String::from_utf8(m.to_vec()).unwrap()));
        }
        waiting.pop_front().unwrap()
    }

    #[tokio::test]
    async fn lines_survive_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cms.log");
        let (queue, mut messages) = mpsc::channel(100);
        let mut waiting = std::collections::VecDeque::new();
        let intake =
            Intake { queue, sources: Arc::new(RwLock::new(Arc::new(Sources::open()))), counts: Messages::default() };
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(follow(path.clone(), intake, shutdown));
        // Not there yet: waited for.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(next_line(&mut messages, &mut waiting).await, "one");
        file.write_all(b"o\r\n").unwrap();
        assert_eq!(next_line(&mut messages, &mut waiting).await, "two");
        // Rotation by renaming: the old file's last words still count.
        file.write_all(b"three\nfour").unwrap();
        std::fs::rename(&path, dir.path().join("cms.log.1")).unwrap();
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"five\n").unwrap();
        assert_eq!(next_line(&mut messages, &mut waiting).await, "three");
        assert_eq!(next_line(&mut messages, &mut waiting).await, "four");
        assert_eq!(next_line(&mut messages, &mut waiting).await, "five");
        // copytruncate: emptied in place, then written again.
        file.set_len(0).unwrap();
        drop(file);
        tokio::time::sleep(Duration::from_millis(600)).await;
        std::fs::write(&path, b"six\n").unwrap();
        assert_eq!(next_line(&mut messages, &mut waiting).await, "six");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// A guard that does not keep up: the file waits for it (one batch in
    /// the queue, one waiting for room, the rest unread), and once the
    /// guard reads again every line arrives, in order.
    #[tokio::test]
    async fn a_full_queue_makes_the_file_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let lines = 20_000;
        let text: String = (0..lines).map(|i| format!("{i:08} {}\n", "x".repeat(90))).collect();
        std::fs::write(&path, &text).unwrap();
        let (queue, mut batches) = mpsc::channel(1);
        let counts = Messages::default();
        let intake =
            Intake { queue, sources: Arc::new(RwLock::new(Arc::new(Sources::open()))), counts: counts.clone() };
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(follow(path, intake, shutdown));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(batches.len(), 1, "the queue holds one batch");
        let mut waiting = std::collections::VecDeque::new();
        for i in 0..lines {
            let line = next_line(&mut batches, &mut waiting).await;
            assert!(line.starts_with(&format!("{i:08} ")), "line {i}: {line}");
        }
        assert_eq!(counts.get(MessageResult::Oversize), 0);
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
