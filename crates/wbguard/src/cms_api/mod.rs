//! The Call Bridge REST API, asked seconds before a restart: how many live
//! CMA calls does the cluster carry right now?
//!
//! Its place in the flow: a service between `decide` and `act`. `wbguard
//! restart` and the enforcing guard call [`check_cluster`] before each
//! `webbridge restart`; leaked web bridge sessions have no call leg, so the
//! cluster's live `acano` legs that are not distribution links bound, in
//! real time, the calls any restart can drop.
//!
//! For each server with `api`, in parallel: `GET /api/v1/system/status`;
//! `callLegsActive == 0` ends there (one request). Otherwise every page of
//! `GET /api/v1/callLegs` ([`PAGE`] a page), then `GET /api/v1/callLegs/<id>`
//! for each leg's type, [`LEG_REQUESTS`] at once; a leg gone meanwhile (404)
//! is not counted.
//!
//! Invariants and bounds: every server asked is answered for, or the check
//! is an error that names it (never a partial count); at most [`MAX_LEGS`]
//! legs per call bridge; each request within [`REQUEST_TIMEOUT`] (or the
//! deadline, if shorter), each body at most [`http::MAX_BODY`]; the whole
//! check within the caller's deadline. The password is fetched when the
//! check starts, sent only over a connection whose certificate passed
//! [`trust`], and never shown.

pub mod http;
pub mod trust;
pub mod xml;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::api::ApiSettings;
use crate::config::Server;
use http::{Connection, Connector, Failure, Response};
pub use trust::ApiTrust;

/// One request (connect, handshake, answer) gets this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole check, by default: the guard and `wbguard restart` pass it.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(20);
/// The most legs one call bridge may report; more is an error (a call
/// bridge carries a few hundred at most).
pub const MAX_LEGS: u64 = 10_000;
/// Legs asked for per page.
pub const PAGE: usize = 20;
/// Leg requests in flight at once, per call bridge (one connection each).
pub const LEG_REQUESTS: usize = 8;

/// A live call leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenLeg {
    /// Its id (a GUID).
    pub id: String,
    /// `acano` or `sip` (as the API writes it).
    pub kind: String,
    /// `distributionLink`, `lync`, ... if any.
    pub sub_type: Option<String>,
}

impl OpenLeg {
    /// Whether it counts as a CMA client (WebRTC, desktop, iOS): not a
    /// SIP leg, not a link between clustered call bridges.
    pub fn is_cma(&self) -> bool {
        // One rule for both sources: a type that is neither acano nor sip
        // counts too, since an upper bound must not undercount.
        crate::cdr::legs::LegKind::of(Some(&self.kind), self.sub_type.as_deref()).is_cma()
    }
}

/// What one call bridge said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBridgeLegs {
    /// The configured server's name.
    pub server: String,
    /// Live CMA legs on it.
    pub cma_live: u32,
    /// Its live legs, every type (empty when it reported none).
    pub legs: Vec<OpenLeg>,
    /// `callLegsActive` as its status said (every type, distribution
    /// links included).
    pub all_legs: u32,
    /// Its release, if told.
    pub software_version: Option<String>,
}

/// What the cluster said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiCheck {
    /// Each server with `api`, in configuration order.
    pub per_callbridge: Vec<CallBridgeLegs>,
    /// Live CMA legs in the cluster: the most calls a restart can drop.
    pub cma_live: u32,
    /// Certificates recorded on first sight (`accept-new`), as
    /// `(server, fingerprint)`, so the caller can say so.
    pub recorded: Vec<(String, String)>,
}

impl ApiCheck {
    /// Why a restart must wait, in words: `API: 2 CMA calls live on cms2`,
    /// or `None` when no CMA call is live.
    pub fn live_calls(&self) -> Option<String> {
        if self.cma_live == 0 {
            return None;
        }
        let busy: Vec<&CallBridgeLegs> = self.per_callbridge.iter().filter(|c| c.cma_live > 0).collect();
        let on = match busy.as_slice() {
            [one] => one.server.clone(),
            _ => busy.iter().map(|c| format!("{} ({})", c.server, c.cma_live)).collect::<Vec<_>>().join(", "),
        };
        let calls = if self.cma_live == 1 { "call" } else { "calls" };
        Some(format!("API: {} CMA {calls} live on {on}", self.cma_live))
    }
}

/// Why a check has no answer. Each names the server at fault; none shows
/// the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// It could not be reached, or did not answer in time.
    #[error("{server}: the Call Bridge API does not answer: {why}")]
    Unreachable {
        /// Server name.
        server: String,
        /// What happened.
        why: String,
    },
    /// The whole check ran past its deadline.
    #[error("the Call Bridge API of {} did not answer within {:.0} s", servers.join(", "), after.as_secs_f64())]
    Deadline {
        /// The servers still not answered.
        servers: Vec<String>,
        /// The deadline.
        after: Duration,
    },
    /// Its certificate is not pinned yet.
    #[error("{server}: unknown API certificate at {address} ({fingerprint}); if that is its certificate, trust it with: wbguard trust {server}")]
    UnknownCertificate {
        /// Server name.
        server: String,
        /// `HOST:PORT`.
        address: String,
        /// The certificate shown.
        fingerprint: String,
        /// The trust file.
        file: PathBuf,
    },
    /// Its certificate is not the one pinned.
    #[error("{server}: API CERTIFICATE CHANGED at {address}: it showed {fingerprint}, {} records {recorded}; someone may be intercepting the connection. Refusing. If the certificate was renewed, remove the old line from that file and run wbguard trust {server}", file.display())]
    ChangedCertificate {
        /// Server name.
        server: String,
        /// `HOST:PORT`.
        address: String,
        /// The certificate shown.
        fingerprint: String,
        /// The fingerprints recorded.
        recorded: String,
        /// The trust file.
        file: PathBuf,
    },
    /// Its certificate failed verification against the CA file.
    #[error("{server}: the API certificate ({fingerprint}) does not verify against its ca_file: {why}")]
    CertificateRejected {
        /// Server name.
        server: String,
        /// The certificate shown.
        fingerprint: String,
        /// rustls's reason.
        why: String,
    },
    /// 401: the user and password were refused.
    #[error(
        "{server}: the Call Bridge API refused the configured API user and password (401); check [api] / api_auth"
    )]
    Unauthorized {
        /// Server name.
        server: String,
    },
    /// The password could not be fetched, or the trust file or CA file read.
    #[error("{server}: {why}")]
    Setup {
        /// Server name.
        server: String,
        /// What is missing.
        why: String,
    },
    /// An answer that is not what the API answers (status, XML, bounds).
    #[error("{server}: the Call Bridge API answered {what}: {why}")]
    Answer {
        /// Server name.
        server: String,
        /// Which request.
        what: String,
        /// What is wrong with it.
        why: String,
    },
}

impl ApiError {
    /// Whether the API simply did not answer (down, unreachable, timed
    /// out, 5xx): what `policy.api_unreachable` is about. A refused
    /// certificate or password, or a bad answer, is not: it will not mend
    /// by itself, and holds whatever the policy.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Unreachable { .. } | ApiError::Deadline { .. })
    }
}

/// The servers of `servers` that have `api`: the cluster the check asks.
pub fn cluster(servers: &[Server]) -> Vec<&Server> {
    servers.iter().filter(|s| s.api.is_some()).collect()
}

/// Asks every server of `servers` that has `api` for its live legs, all at
/// once, within `deadline` ([`CHECK_DEADLINE`] is a good one); errors name
/// the server. With no such server, an empty check.
pub async fn check_cluster(servers: &[Server], trust: &ApiTrust, deadline: Duration) -> Result<ApiCheck, ApiError> {
    let asked: Vec<(String, ApiSettings)> =
        servers.iter().filter_map(|s| s.api.clone().map(|api| (s.name.clone(), api))).collect();
    let timeout = REQUEST_TIMEOUT.min(deadline);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (name, api)) in asked.iter().cloned().enumerate() {
        let trust = trust.clone();
        tasks.spawn(async move { (index, check_server(&name, &api, &trust, timeout).await) });
    }
    let mut answers: Vec<Option<(CallBridgeLegs, Option<String>)>> = vec![None; asked.len()];
    let gathered = tokio::time::timeout(deadline, async {
        while let Some(done) = tasks.join_next().await {
            let (index, result) =
                done.map_err(|e| ApiError::Setup { server: "?".into(), why: format!("a check task failed: {e}") })?;
            answers[index] = Some(result?);
        }
        Ok::<(), ApiError>(())
    })
    .await;
    match gathered {
        Ok(result) => result?,
        Err(_) => {
            let servers = asked
                .iter()
                .zip(&answers)
                .filter(|(_, answer)| answer.is_none())
                .map(|((name, _), _)| name.clone())
                .collect();
            return Err(ApiError::Deadline { servers, after: deadline });
        }
    }
    let mut check = ApiCheck::default();
    for (legs, recorded) in answers.into_iter().flatten() {
        check.cma_live = check.cma_live.saturating_add(legs.cma_live);
        if let Some(print) = recorded {
            check.recorded.push((legs.server.clone(), print));
        }
        check.per_callbridge.push(legs);
    }
    Ok(check)
}

/// One server's live legs, and the fingerprint recorded on first sight
/// (accept-new), if one was.
pub async fn check_server(
    name: &str,
    api: &ApiSettings,
    trust: &ApiTrust,
    timeout: Duration,
) -> Result<(CallBridgeLegs, Option<String>), ApiError> {
    let setup = |why: String| ApiError::Setup { server: name.to_owned(), why };
    let password = api.password.resolve().map_err(|e| setup(format!("the API password: {e:#}")))?;
    let verifier = match api.endpoint.tls {
        true => {
            Some(trust::Verifier::for_server(&api.endpoint.address(), api.ca_file.as_deref(), trust).map_err(setup)?)
        }
        false => None,
    };
    let connector =
        Connector::new(&api.endpoint, verifier.as_ref().map(|v| v.client_config()), &api.user, &password, timeout)
            .map_err(setup)?;
    let connector = Arc::new(connector);
    let asker = Asker { name: name.to_owned(), verifier: verifier.clone() };
    let mut first = Connection::new(connector.clone());

    let status = asker.get(&mut first, "/api/v1/system/status", "system/status").await?;
    let recorded = match &verifier {
        Some(verifier) => verifier
            .confirm()
            .map_err(|e| setup(format!("cannot record the API certificate in {}: {e}", trust.file.display())))?,
        None => None,
    };
    let status = xml::status(&status.body).map_err(|why| asker.answer("system/status", why))?;
    let all_legs = u32::try_from(status.call_legs_active).unwrap_or(u32::MAX);
    let mut legs = CallBridgeLegs {
        server: name.to_owned(),
        cma_live: 0,
        legs: Vec::new(),
        all_legs,
        software_version: status.software_version,
    };
    if status.call_legs_active == 0 {
        return Ok((legs, recorded));
    }

    let ids = asker.list(&mut first).await?;
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..LEG_REQUESTS.min(ids.len()) {
        let (ids, next, asker) = (ids.clone(), next.clone(), asker.clone());
        let mut connection = Connection::new(connector.clone());
        workers.spawn(async move {
            let mut found = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(index) else { return Ok(found) };
                if let Some(leg) = asker.leg(&mut connection, id).await? {
                    found.push(leg);
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        let found = done.map_err(|e| setup(format!("a leg request task failed: {e}")))??;
        legs.legs.extend(found);
    }
    // In the order the list gave, whatever order the answers came in.
    let order: std::collections::HashMap<&str, usize> =
        ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    legs.legs.sort_by_key(|leg| order.get(leg.id.as_str()).copied().unwrap_or(usize::MAX));
    legs.cma_live = u32::try_from(legs.legs.iter().filter(|leg| leg.is_cma()).count()).unwrap_or(u32::MAX);
    Ok((legs, recorded))
}

/// A server's API certificate as `wbguard trust` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// `sha256:HEX` of the leaf certificate.
    pub fingerprint: String,
    /// Its subject's common name and validity, when readable.
    pub description: Option<String>,
}

/// Looks at the certificate `name`'s API shows, trusting nothing and
/// sending nothing (no request, no password): for `wbguard trust`.
pub async fn fetch_certificate(name: &str, api: &ApiSettings, timeout: Duration) -> Result<Certificate, ApiError> {
    let verifier = trust::Verifier::new(trust::Judge::LookOnly);
    handshake(name, api, &verifier, timeout).await?;
    let der = verifier.seen().ok_or_else(|| ApiError::Unreachable {
        server: name.to_owned(),
        why: "the TLS handshake showed no certificate".into(),
    })?;
    Ok(Certificate { fingerprint: trust::fingerprint(der.as_ref()), description: trust::describe(der.as_ref()) })
}

/// Whether `name`'s API certificate passes as a check would judge it (its
/// `ca_file`, else its pin), without sending anything.
pub async fn verify_certificate(
    name: &str,
    api: &ApiSettings,
    trust: &ApiTrust,
    timeout: Duration,
) -> Result<(), ApiError> {
    let verifier = trust::Verifier::for_server(&api.endpoint.address(), api.ca_file.as_deref(), trust)
        .map_err(|why| ApiError::Setup { server: name.to_owned(), why })?;
    handshake(name, api, &verifier, timeout).await
}

async fn handshake(
    name: &str,
    api: &ApiSettings,
    verifier: &Arc<trust::Verifier>,
    timeout: Duration,
) -> Result<(), ApiError> {
    if !api.endpoint.tls {
        return Err(ApiError::Setup {
            server: name.to_owned(),
            why: "the API is plain http://: it has no certificate".into(),
        });
    }
    // No password: nothing is sent over this connection.
    let connector = Connector::new(&api.endpoint, Some(verifier.client_config()), &api.user, "", timeout)
        .map_err(|why| ApiError::Setup { server: name.to_owned(), why })?;
    connector.handshake().await.map_err(|failure| match failure {
        Failure::Certificate(why) => verifier.refusal(name, &why),
        Failure::Unreachable(why) | Failure::Answer(why) => ApiError::Unreachable { server: name.to_owned(), why },
    })
}

/// Asks one server and turns failures into errors that name it.
#[derive(Clone)]
struct Asker {
    name: String,
    verifier: Option<Arc<trust::Verifier>>,
}

impl Asker {
    fn answer(&self, what: &str, why: String) -> ApiError {
        ApiError::Answer { server: self.name.clone(), what: format!("GET {what}"), why }
    }

    /// `GET path`: a 200 or 404 response, else an error naming the server.
    async fn get(&self, connection: &mut Connection, path: &str, what: &str) -> Result<Response, ApiError> {
        let response = connection.get(path).await.map_err(|failure| match failure {
            Failure::Unreachable(why) => ApiError::Unreachable { server: self.name.clone(), why },
            Failure::Certificate(why) => match &self.verifier {
                Some(verifier) => verifier.refusal(&self.name, &why),
                None => ApiError::Unreachable { server: self.name.clone(), why },
            },
            Failure::Answer(why) => self.answer(what, why),
        })?;
        match response.status {
            200 | 404 => Ok(response),
            401 => Err(ApiError::Unauthorized { server: self.name.clone() }),
            403 => Err(self.answer(what, "403 Forbidden: the API user may not read this".into())),
            status @ 500..=599 => {
                Err(ApiError::Unreachable { server: self.name.clone(), why: format!("GET {what} answered {status}") })
            }
            status => Err(self.answer(what, format!("HTTP status {status}"))),
        }
    }

    /// Every leg id, page by page, each once.
    async fn list(&self, connection: &mut Connection) -> Result<Vec<String>, ApiError> {
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0u64;
        loop {
            let path = format!("/api/v1/callLegs?offset={offset}&limit={PAGE}");
            let response = self.get(connection, &path, "callLegs").await?;
            if response.status != 200 {
                return Err(self.answer("callLegs", format!("HTTP status {}", response.status)));
            }
            let page = xml::leg_page(&response.body).map_err(|why| self.answer("callLegs", why))?;
            if page.total > MAX_LEGS {
                return Err(
                    self.answer("callLegs", format!("{} legs, more than the {MAX_LEGS} wbguard reads", page.total))
                );
            }
            if page.ids.len() > PAGE.max(1) * 50 {
                return Err(self.answer("callLegs", format!("{} legs on one page", page.ids.len())));
            }
            let returned = page.ids.len() as u64;
            for id in page.ids {
                if !valid_id(&id) {
                    return Err(
                        self.answer("callLegs", format!("a leg id that is not a GUID: '{}'", id.escape_debug()))
                    );
                }
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
            if ids.len() as u64 > MAX_LEGS {
                return Err(self.answer("callLegs", format!("more than {MAX_LEGS} legs")));
            }
            offset += returned;
            if returned == 0 || offset >= page.total {
                return Ok(ids);
            }
        }
    }

    /// One leg; `None` when it ended since the list (404).
    async fn leg(&self, connection: &mut Connection, id: &str) -> Result<Option<OpenLeg>, ApiError> {
        let response = self.get(connection, &format!("/api/v1/callLegs/{id}"), "callLegs/<id>").await?;
        if response.status == 404 {
            return Ok(None);
        }
        let leg = xml::leg(&response.body).map_err(|why| self.answer(&format!("callLegs/{id}"), why))?;
        Ok(Some(OpenLeg { id: id.to_owned(), kind: leg.kind, sub_type: leg.sub_type }))
    }
}

/// A leg id goes into a path: letters, digits, `-`, `_`, `.`, at most 128.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && id != "."
        && id != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_counts_as_a_cma_call() {
        let leg = |kind: &str, sub: Option<&str>| OpenLeg {
            id: "x".into(),
            kind: kind.into(),
            sub_type: sub.map(Into::into),
        };
        assert!(leg("acano", None).is_cma());
        assert!(leg("acano", Some("lync")).is_cma());
        assert!(!leg("acano", Some("distributionLink")).is_cma());
        assert!(!leg("sip", None).is_cma());
    }

    #[test]
    fn the_reason_names_the_servers() {
        let bridge = |server: &str, cma_live| CallBridgeLegs {
            server: server.into(),
            cma_live,
            legs: vec![],
            all_legs: cma_live,
            software_version: None,
        };
        let one =
            ApiCheck { per_callbridge: vec![bridge("cms1", 0), bridge("cms2", 2)], cma_live: 2, recorded: vec![] };
        assert_eq!(one.live_calls().unwrap(), "API: 2 CMA calls live on cms2");
        let two =
            ApiCheck { per_callbridge: vec![bridge("cms1", 1), bridge("cms2", 2)], cma_live: 3, recorded: vec![] };
        assert_eq!(two.live_calls().unwrap(), "API: 3 CMA calls live on cms1 (1), cms2 (2)");
        let single = ApiCheck { per_callbridge: vec![bridge("cms1", 1)], cma_live: 1, recorded: vec![] };
        assert_eq!(single.live_calls().unwrap(), "API: 1 CMA call live on cms1");
        assert_eq!(ApiCheck::default().live_calls(), None);
    }

    #[test]
    fn leg_ids_that_could_change_the_path_are_refused() {
        assert!(valid_id("970d1e9c-8d5f-4b5b-9a1c-3f1d00000001"));
        for bad in ["", "..", "a/b", "a?b", "a b", "%2e", &"a".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_server_and_the_cure() {
        let unknown = ApiError::UnknownCertificate {
            server: "cms2".into(),
            address: "10.0.0.2:445".into(),
            fingerprint: "sha256:ab".into(),
            file: "/var/lib/wbguard/api_certificates".into(),
        };
        let text = unknown.to_string();
        assert!(text.contains("cms2") && text.contains("sha256:ab") && text.contains("wbguard trust cms2"), "{text}");
        assert!(!unknown.is_unreachable());
        let deadline =
            ApiError::Deadline { servers: vec!["cms1".into(), "cms3".into()], after: Duration::from_secs(20) };
        assert!(deadline.is_unreachable() && deadline.to_string().contains("cms1, cms3"), "{deadline}");
        assert!(ApiError::Unauthorized { server: "cms1".into() }.to_string().contains("401"));
    }
}
