//! Following a log file that a local syslog server (rsyslog, syslog-ng)
//! writes, as `tail -F` does: read what is there, then what is appended,
//! and carry on through rotation.
//!
//! The file is polled (a quarter second): a new file at the path (another
//! inode) means it was rotated by renaming, so the old one is read to its
//! end before the new one is opened; a file shorter than what was read
//! means it was truncated (`copytruncate`), so reading starts again at its
//! start. A missing file is waited for. Reading starts at the beginning:
//! the model wants the past, and history stores each sample once.

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::MessageResult;
use super::{Batch, Intake, Origin, MAX_MESSAGE};

/// How often the file is looked at when nothing new came.
const POLL: Duration = Duration::from_millis(250);

/// An open file and how far it was read.
struct Open {
    file: std::fs::File,
    inode: u64,
    read: u64,
}

fn open(path: &std::path::Path) -> std::io::Result<Open> {
    let file = std::fs::File::open(path)?;
    let inode = file.metadata()?.ino();
    Ok(Open { file, inode, read: 0 })
}

/// Follows `path` until `shutdown` turns true, sending each complete line.
pub async fn follow(path: PathBuf, intake: Intake, mut shutdown: watch::Receiver<bool>) {
    let mut current: Option<Open> = None;
    let mut partial: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut missing_reported = false;
    loop {
        if current.is_none() {
            match open(&path) {
                Ok(opened) => {
                    tracing::info!("following {}", path.display());
                    current = Some(opened);
                    missing_reported = false;
                }
                Err(e) if !missing_reported => {
                    tracing::warn!("cannot follow {} yet: {e}; waiting for it", path.display());
                    missing_reported = true;
                }
                Err(_) => {}
            }
        }
        let mut progressed = false;
        if let Some(file) = current.as_mut() {
            // Read what is there (bounded per round, to stay responsive).
            for _ in 0..64 {
                let n = match file.file.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("reading {}: {e}", path.display());
                        0
                    }
                };
                if n == 0 {
                    break;
                }
                file.read += n as u64;
                progressed = true;
                if !send_lines(&mut partial, &chunk[..n], &intake).await {
                    return;
                }
            }
            if !progressed {
                match std::fs::metadata(&path) {
                    // Rotated: the old file was read to its end; the new one from its start.
                    Ok(meta) if meta.ino() != file.inode => {
                        tracing::info!("{} was rotated: reading the new file", path.display());
                        current = open(&path).ok();
                        flush_partial(&mut partial, &intake).await;
                        continue;
                    }
                    // Truncated in place.
                    Ok(meta) if meta.len() < file.read => {
                        tracing::info!("{} was truncated: reading it from the start", path.display());
                        let _ = file.file.seek(SeekFrom::Start(0));
                        file.read = 0;
                        partial.clear();
                        continue;
                    }
                    Ok(_) => {}
                    // Removed and not yet recreated: keep the open file until a new one appears.
                    Err(_) => {}
                }
            }
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

/// Sends the complete lines of `partial` + `bytes`, keeping the rest.
/// False when the guard is gone.
async fn send_lines(partial: &mut Vec<u8>, bytes: &[u8], intake: &Intake) -> bool {
    partial.extend_from_slice(bytes);
    let mut batch = batch(intake);
    let mut start = 0;
    while let Some(end) = memchr::memchr(b'\n', &partial[start..]) {
        let line = &partial[start..start + end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start += end + 1;
        if line.len() > MAX_MESSAGE {
            intake.counts.count(MessageResult::Oversize);
        } else if !line.is_empty() {
            batch.push(line);
        }
    }
    partial.drain(..start);
    if partial.len() > MAX_MESSAGE {
        // A line without end: count it and skip it.
        intake.counts.count(MessageResult::Oversize);
        partial.clear();
    }
    intake.offer_stream(batch).await
}

/// The last line of a rotated file may lack its newline.
async fn flush_partial(partial: &mut Vec<u8>, intake: &Intake) {
    if !partial.is_empty() && partial.len() <= MAX_MESSAGE {
        let mut batch = batch(intake);
        batch.push(partial);
        intake.offer_stream(batch).await;
    }
    partial.clear();
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
}
