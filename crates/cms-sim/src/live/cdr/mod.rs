//! Call Detail Records out: each simulated Call Bridge posts its records
//! to every configured receiver, as a real one does.
//!
//! Flow: the session model's events ([`crate::session::CdrEvent`]) become
//! [`record::Record`]s in the world (one `correlatorIndex` per call bridge
//! session); [`CdrOut::push`] puts each into one queue per (call bridge,
//! receiver), where it gets that receiver's `recordIndex` (from 1 per
//! session). One task per queue posts batches of up to [`BATCH`] records
//! of one session ([`post`]); a batch counts as delivered only on `200 OK`.
//! Anything else (refused, 4xx, 5xx, no answer within [`POST_TIMEOUT`])
//! leaves it queued and tries again after a backoff from 0.5 s doubling to
//! 8 s, so a receiver that applied a batch whose answer was lost sees it
//! again: duplicates by design, never loss while the queue has room.
//!
//! Bounds: each queue holds at most [`QUEUE_LIMIT`] records; past that the
//! oldest is dropped and the next record sent carries
//! `numPreceedingRecordsMissing="K"` (K dropped since the last delivery).
//! A response head is read up to 16 KiB. One connection per post.

pub mod post;
pub mod record;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use tokio::sync::{watch, Notify};

pub use post::Receiver;
use record::Record;

/// Records per POST at most.
pub const BATCH: usize = 100;
/// Records a queue (one call bridge, one receiver) holds before dropping
/// the oldest.
pub const QUEUE_LIMIT: usize = 100_000;
/// How long a post may take before it counts as failed.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Receivers per call bridge, as on CMS.
pub const MAX_RECEIVERS: usize = 4;

/// How HTTPS receivers are verified.
#[derive(Debug, Clone, Default)]
pub enum CdrTls {
    /// Against the webpki roots.
    #[default]
    WebPki,
    /// Against the CA certificates (PEM) in this file.
    CaFile(std::path::PathBuf),
    /// Any certificate (a lab receiver's self-signed one): `--cdr-insecure`.
    Insecure,
}

/// The rustls client configuration for `tls`.
pub fn client_config(tls: &CdrTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match tls {
        CdrTls::WebPki => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        CdrTls::CaFile(path) => builder.with_root_certificates(read_roots(path)?).with_no_client_auth(),
        CdrTls::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(path).with_context(|| format!("--cdr-ca {}: cannot read it", path.display()))?;
    for certificate in certificates {
        let certificate =
            certificate.with_context(|| format!("--cdr-ca {}: not a PEM certificate file", path.display()))?;
        roots.add(certificate).with_context(|| format!("--cdr-ca {}: a certificate rustls refuses", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "--cdr-ca {}: no certificate in it", path.display());
    Ok(roots)
}

/// Accepts any server certificate (signatures are still checked): only
/// with `--cdr-insecure`, for a lab receiver with a self-signed one.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A record waiting in one receiver's queue.
#[derive(Debug)]
struct Queued {
    /// Position in this queue since the start (never reused).
    seq: u64,
    /// The call bridge session it was made in.
    session: Arc<str>,
    record_index: u64,
    record: Arc<Record>,
}

/// One (call bridge, receiver) queue's state.
#[derive(Debug, Default)]
struct QueueState {
    records: VecDeque<Queued>,
    next_seq: u64,
    /// The session whose recordIndex `next_index` continues.
    session: Option<Arc<str>>,
    next_index: u64,
    /// Records dropped (queue full) and not yet reported.
    missing: u64,
    /// The last delivered POST body, for `cdr_duplicate`.
    last_delivered: Option<String>,
}

/// Counters of one queue, for `/truth`.
#[derive(Debug, Default)]
struct Counters {
    posts: AtomicU64,
    posts_ok: AtomicU64,
    posts_failed: AtomicU64,
    records_posted: AtomicU64,
    records_delivered: AtomicU64,
    records_dropped: AtomicU64,
    duplicates_sent: AtomicU64,
}

/// One call bridge's queue towards one receiver, shared by the world (which
/// pushes) and its sender task (which posts).
#[derive(Debug)]
pub struct Queue {
    receiver: Receiver,
    /// The call bridge's id, in clusters (`callBridge` attribute).
    callbridge: Option<String>,
    state: Mutex<QueueState>,
    wake: Notify,
    resend_last: AtomicBool,
    counters: Counters,
}

impl Queue {
    fn push(&self, session: &Arc<str>, record: &Arc<Record>) {
        let mut state = self.state.lock().expect("the CDR queue lock is never poisoned");
        if state.session.as_ref() != Some(session) {
            state.session = Some(session.clone());
            state.next_index = 1;
        }
        if state.records.len() >= QUEUE_LIMIT {
            state.records.pop_front();
            state.missing += 1;
            self.counters.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let (seq, record_index) = (state.next_seq, state.next_index);
        state.next_seq += 1;
        state.next_index += 1;
        state.records.push_back(Queued { seq, session: session.clone(), record_index, record: record.clone() });
        drop(state);
        self.wake.notify_one();
    }

    /// The next batch: records of the front's session, the last seq in it,
    /// and the missing count it reports.
    fn batch(&self) -> Option<(String, u64, usize, u64)> {
        let state = self.state.lock().expect("the CDR queue lock is never poisoned");
        let first = state.records.front()?;
        let mut body = String::with_capacity(400 * BATCH.min(state.records.len()) + 200);
        record::records_open(&mut body, &first.session, self.callbridge.as_deref());
        let (mut last, mut count) = (first.seq, 0);
        for (n, queued) in state.records.iter().take(BATCH).enumerate() {
            if queued.session != first.session {
                break;
            }
            let missing = if n == 0 { state.missing } else { 0 };
            queued.record.write(&mut body, queued.record_index, missing);
            last = queued.seq;
            count += 1;
        }
        record::records_close(&mut body);
        Some((body, last, count, state.missing))
    }

    fn delivered(&self, body: String, last: u64, reported_missing: u64) {
        let mut state = self.state.lock().expect("the CDR queue lock is never poisoned");
        let mut delivered = 0;
        while state.records.front().is_some_and(|q| q.seq <= last) {
            state.records.pop_front();
            delivered += 1;
        }
        state.missing -= reported_missing.min(state.missing);
        state.last_delivered = Some(body);
        self.counters.records_delivered.fetch_add(delivered, Ordering::Relaxed);
    }
}

/// Every queue, by call bridge; what the world pushes records into.
#[derive(Debug, Clone, Default)]
pub struct CdrOut {
    /// `queues[call bridge][receiver]`.
    queues: Vec<Vec<Arc<Queue>>>,
    receivers: Vec<Receiver>,
}

impl CdrOut {
    /// Queues for `callbridges` (their ids, used as the `callBridge`
    /// attribute when there is more than one) towards `receivers`.
    pub fn new(callbridges: &[(String, String)], receivers: &[Receiver]) -> CdrOut {
        let cluster = callbridges.len() > 1;
        let queues = callbridges
            .iter()
            .map(|(name, id)| {
                receivers
                    .iter()
                    .map(|receiver| {
                        // `{server}` in a receiver's path is the posting
                        // server's name: on CMS each call bridge has its own
                        // receiver URI, which may say who it is.
                        let path = receiver.path.replace("{server}", name);
                        Arc::new(Queue {
                            receiver: Receiver { path, ..receiver.clone() },
                            callbridge: cluster.then(|| id.clone()),
                            state: Mutex::new(QueueState::default()),
                            wake: Notify::new(),
                            resend_last: AtomicBool::new(false),
                            counters: Counters::default(),
                        })
                    })
                    .collect()
            })
            .collect();
        CdrOut { queues, receivers: receivers.to_vec() }
    }

    /// Whether any receiver is configured (else records need not be made).
    pub fn active(&self) -> bool {
        !self.receivers.is_empty()
    }

    /// Queues `record` of call bridge `callbridge`'s `session` for each of
    /// its receivers.
    pub fn push(&self, callbridge: usize, session: &Arc<str>, record: Record) {
        let record = Arc::new(record);
        for queue in &self.queues[callbridge] {
            queue.push(session, &record);
        }
    }

    /// Makes every sender post its last delivered batch once more.
    pub fn duplicate_last(&self) {
        for queue in self.queues.iter().flatten() {
            queue.resend_last.store(true, Ordering::Relaxed);
            queue.wake.notify_one();
        }
    }

    /// Counters per receiver (summed over call bridges), for `/truth`.
    pub fn stats(&self) -> Vec<ReceiverStats> {
        self.receivers
            .iter()
            .enumerate()
            .map(|(r, receiver)| {
                let mut stats = ReceiverStats { url: receiver.to_string(), ..ReceiverStats::default() };
                for queue in self.queues.iter().map(|q| &q[r]) {
                    let c = &queue.counters;
                    stats.posts += c.posts.load(Ordering::Relaxed);
                    stats.posts_ok += c.posts_ok.load(Ordering::Relaxed);
                    stats.posts_failed += c.posts_failed.load(Ordering::Relaxed);
                    stats.records_posted += c.records_posted.load(Ordering::Relaxed);
                    stats.records_delivered += c.records_delivered.load(Ordering::Relaxed);
                    stats.records_dropped += c.records_dropped.load(Ordering::Relaxed);
                    stats.duplicates_sent += c.duplicates_sent.load(Ordering::Relaxed);
                    stats.queued +=
                        queue.state.lock().expect("the CDR queue lock is never poisoned").records.len() as u64;
                }
                stats
            })
            .collect()
    }

    /// Starts one sender task per queue.
    pub fn start(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        shutdown: &watch::Receiver<bool>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        for queue in self.queues.iter().flatten() {
            tasks.spawn(send(queue.clone(), tls.clone(), shutdown.clone()));
        }
    }
}

/// What `/truth` says of one receiver (all call bridges together).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiverStats {
    /// The receiver.
    pub url: String,
    /// POSTs made, re-sends and forced duplicates included.
    pub posts: u64,
    /// POSTs answered `200 OK`.
    pub posts_ok: u64,
    /// POSTs that failed (refused, timed out, not 200).
    pub posts_failed: u64,
    /// Records in POSTs, counted each time they were posted.
    pub records_posted: u64,
    /// Records delivered (in a POST answered 200), each once.
    pub records_delivered: u64,
    /// Records thrown away because the queue was full.
    pub records_dropped: u64,
    /// Delivered batches posted again on request (`cdr_duplicate`).
    pub duplicates_sent: u64,
    /// Records waiting now.
    pub queued: u64,
}

/// One queue's sender: posts batches until shutdown.
async fn send(queue: Arc<Queue>, tls: Option<Arc<rustls::ClientConfig>>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::ZERO;
    loop {
        let wait = if backoff.is_zero() { Duration::from_millis(250) } else { backoff };
        tokio::select! {
            _ = queue.wake.notified(), if backoff.is_zero() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let counters = &queue.counters;
        if queue.resend_last.swap(false, Ordering::Relaxed) {
            let last = queue.state.lock().expect("the CDR queue lock is never poisoned").last_delivered.clone();
            if let Some(body) = last {
                counters.duplicates_sent.fetch_add(1, Ordering::Relaxed);
                counters.posts.fetch_add(1, Ordering::Relaxed);
                let ok = post::post(&queue.receiver, &body, tls.as_ref(), POST_TIMEOUT).await == Ok(200);
                let counter = if ok { &counters.posts_ok } else { &counters.posts_failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some((body, last, count, missing)) = queue.batch() else { continue };
        counters.posts.fetch_add(1, Ordering::Relaxed);
        counters.records_posted.fetch_add(count as u64, Ordering::Relaxed);
        // Shutdown does not wait for a slow receiver; the batch stays queued.
        let answer = tokio::select! {
            answer = post::post(&queue.receiver, &body, tls.as_ref(), POST_TIMEOUT) => answer,
            _ = shutdown.changed() => return,
        };
        match answer {
            Ok(200) => {
                counters.posts_ok.fetch_add(1, Ordering::Relaxed);
                queue.delivered(body, last, missing);
                backoff = Duration::ZERO;
                // More may be waiting: go on at once.
                queue.wake.notify_one();
            }
            _ => {
                counters.posts_failed.fetch_add(1, Ordering::Relaxed);
                backoff = (backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{CdrEvent, CdrEventKind, Guid};
    use chrono::Utc;

    fn record(n: u64) -> Record {
        let event = CdrEvent {
            time: Utc::now(),
            callbridge: 0,
            kind: CdrEventKind::LegConnected { leg: Guid(u128::from(n)), call: Guid(0) },
        };
        Record::from_event(&event, n)
    }

    #[test]
    fn record_indexes_batches_and_a_full_queue() {
        let out = CdrOut::new(
            &[("cms1".into(), "a".into()), ("cms2".into(), "b".into())],
            &["http://127.0.0.1:1/".parse().unwrap()],
        );
        let session: Arc<str> = "s1".into();
        for n in 0..(QUEUE_LIMIT as u64 + 5) {
            out.push(0, &session, record(n));
        }
        let queue = &out.queues[0][0];
        let (body, last, count, missing) = queue.batch().unwrap();
        assert_eq!((count, missing), (BATCH, 5));
        assert!(body.starts_with("<?xml version=\"1.0\"?>\n<records session=\"s1\" callBridge=\"a\">"), "{body}");
        assert!(body.contains("recordIndex=\"6\" correlatorIndex=\"5\" numPreceedingRecordsMissing=\"5\""), "{body}");
        queue.delivered(body, last, missing);
        let (body, ..) = queue.batch().unwrap();
        assert!(!body.contains("numPreceeding"));
        assert!(body.contains("recordIndex=\"106\""));
        // A new session starts the record indexes again, in its own batch.
        let (_, last, ..) = queue.batch().unwrap();
        let remaining = queue.state.lock().unwrap().records.len();
        out.push(0, &"s2".into(), record(0));
        let _ = last;
        let mut seen_new = false;
        for _ in 0..=remaining / BATCH + 1 {
            let (body, last, _, missing) = queue.batch().unwrap();
            if body.contains("session=\"s2\"") {
                assert!(body.contains("recordIndex=\"1\"") && !body.contains("session=\"s1\""));
                seen_new = true;
                break;
            }
            queue.delivered(body, last, missing);
        }
        assert!(seen_new);
    }
}
