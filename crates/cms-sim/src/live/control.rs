//! The truth API and the controls, on one port.
//!
//! - `GET /truth`: what the simulator knows (real and leaked sessions,
//!   refused joins, restarts and the calls they dropped, CMA by client type,
//!   every live call leg in `legs`, per call bridge `cma_live`, its `id`
//!   and `cdr_session`, and the CDR counters per receiver in `cdr`).
//! - `POST /control` with a JSON object of any of these keys, applied in
//!   this order (a bad value answers 400 naming it, before anything is
//!   changed, except that `fault` applies on its own as before):
//!   - `{"load_factor": 2.0}`, `{"leak_probability": 0.1}`;
//!   - `{"paused": true}`: virtual time stands still until `false`;
//!   - `{"fault": {"server": "cms1", "fault": "slow", "seconds": 3}}`: an
//!     MMP fault (see [`FaultRequest`]);
//!   - `{"api_fault": {"server": "cms2", "kind": "down"}}`: the Call Bridge
//!     API of `cms2` is `down` (port closed, connections cut), `slow`
//!     (answers after 30 s), `error` (500), or back to `none`;
//!   - `{"leg": {"server": "cms2", "type": "acano"}}`: starts a leg by hand
//!     on `cms2`'s call bridge (`acano`: a desktop-client-like CMA leg, in
//!     the CMA figure of STATS, the API and `/truth`, never in web bridge
//!     Stats; `sip`: a room system). No log line shows it until the next
//!     STATS line; its `callLegStart` CDR is queued at once. It lasts until
//!     `end_leg` or a call bridge restart. The answer is
//!     `{"leg": "<GUID>"}`;
//!   - `{"end_leg": "<GUID>"}`: ends a live leg (a `callLegEnd` CDR
//!     follows); 404 when no such leg is live;
//!   - `{"callbridge_restart": "cms2"}`: `cms2`'s call bridge restarts as a
//!     crash would: its legs vanish without `callLegEnd` records and its
//!     CDRs go on in a new `session`;
//!   - `{"cdr_duplicate": true}`: every CDR sender posts its last
//!     delivered batch once more (a duplicate, as after a lost answer).
//!
//!   Without `leg` the answer is `ok`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::api::{ApiFault, ApiFaults};
use super::faults::{FaultRequest, Faults};
use super::syslog_out::Outbox;
use super::world::World;
use crate::session::{Guid, LegType};

#[derive(Clone)]
struct Control {
    world: Arc<Mutex<World>>,
    faults: Arc<Faults>,
    api_faults: Arc<ApiFaults>,
    outbox: Outbox,
}

/// A change asked for by a test or a demo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlRequest {
    load_factor: Option<f64>,
    leak_probability: Option<f64>,
    paused: Option<bool>,
    fault: Option<FaultRequest>,
    api_fault: Option<ApiFaultRequest>,
    leg: Option<LegRequest>,
    end_leg: Option<String>,
    callbridge_restart: Option<String>,
    cdr_duplicate: Option<bool>,
}

/// `{"server": "cms2", "kind": "down"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFaultRequest {
    server: String,
    kind: String,
}

/// `{"server": "cms2", "type": "acano"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegRequest {
    server: String,
    #[serde(rename = "type", default = "acano")]
    leg_type: String,
}

fn acano() -> String {
    "acano".into()
}

/// The control router.
pub fn router(world: Arc<Mutex<World>>, faults: Arc<Faults>, api_faults: Arc<ApiFaults>, outbox: Outbox) -> Router {
    Router::new().route("/truth", get(truth)).route("/control", post(control)).with_state(Control {
        world,
        faults,
        api_faults,
        outbox,
    })
}

async fn truth(State(control): State<Control>) -> Json<serde_json::Value> {
    let mut truth = control.world.lock().expect("the world lock is never poisoned").truth();
    truth["syslog_dropped"] = control.outbox.dropped().into();
    Json(truth)
}

fn bad(why: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{why}\n"))
}

async fn control(State(control): State<Control>, Json(request): Json<ControlRequest>) -> (StatusCode, String) {
    let mut world = control.world.lock().expect("the world lock is never poisoned");
    let server = |name: &str, world: &World| world.server(name).ok_or_else(|| format!("no server named '{name}'"));
    // Check the new keys first, so that a bad one changes nothing.
    let api_fault = match &request.api_fault {
        Some(f) => match (server(&f.server, &world), f.kind.parse::<ApiFault>()) {
            (Ok(i), Ok(kind)) => Some((i, kind)),
            (Err(why), _) | (_, Err(why)) => return bad(format!("api_fault: {why}")),
        },
        None => None,
    };
    let leg = match &request.leg {
        Some(l) => match (server(&l.server, &world), l.leg_type.parse::<LegType>()) {
            (Ok(i), Ok(kind)) => Some((i, kind)),
            (Err(why), _) | (_, Err(why)) => return bad(format!("leg: {why}")),
        },
        None => None,
    };
    let end_leg = match &request.end_leg {
        Some(id) => match id.parse::<Guid>() {
            Ok(id) => Some(id),
            Err(why) => return bad(format!("end_leg: {why}")),
        },
        None => None,
    };
    let restart = match &request.callbridge_restart {
        Some(name) => match server(name, &world) {
            Ok(i) => Some(i),
            Err(why) => return bad(format!("callbridge_restart: {why}")),
        },
        None => None,
    };
    if let Some(fault) = &request.fault {
        let Some(server) = world.server(&fault.server) else {
            return (StatusCode::BAD_REQUEST, format!("no server named '{}'\n", fault.server));
        };
        match fault.fault() {
            Ok(Some(kind)) => control.faults.set(server, kind),
            Ok(None) => {}
            Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")),
        }
        if let Some(attempts) = fault.lockout_after {
            control.faults.set_lockout(server, attempts, Duration::from_secs(fault.lockout_seconds.unwrap_or(300)));
        }
    }
    if let Some(factor) = request.load_factor {
        if !(0.0..=100.0).contains(&factor) {
            return (StatusCode::BAD_REQUEST, "load_factor must be between 0 and 100\n".into());
        }
        world.set_load_factor(factor);
    }
    if let Some(probability) = request.leak_probability {
        if !(0.0..=1.0).contains(&probability) {
            return (StatusCode::BAD_REQUEST, "leak_probability must be between 0 and 1\n".into());
        }
        world.set_leak_probability(probability);
    }
    if let Some(paused) = request.paused {
        world.set_paused(paused);
    }
    if let Some((i, kind)) = api_fault {
        control.api_faults.set(i, kind);
    }
    if let Some(i) = restart {
        world.restart_callbridge(i);
    }
    if let Some(id) = end_leg {
        if let Err(why) = world.end_leg(id) {
            return (StatusCode::NOT_FOUND, format!("end_leg: {why}\n"));
        }
    }
    if request.cdr_duplicate == Some(true) {
        world.duplicate_cdr();
    }
    if let Some((i, kind)) = leg {
        let id = world.start_leg(i, kind);
        return (StatusCode::OK, format!("{}\n", serde_json::json!({ "leg": id.to_string() })));
    }
    (StatusCode::OK, "ok\n".into())
}
