//! The truth API and the controls, on one port.
//!
//! - `GET /truth`: what the simulator knows (real and leaked sessions,
//!   refused joins, restarts and the calls they dropped, CMA by client type).
//! - `POST /control` with JSON `{"load_factor": 2.0}`,
//!   `{"leak_probability": 0.1}`, `{"paused": true}` (virtual time stands
//!   still until `false`), and/or `{"fault": {"server": "cms1",
//!   "fault": "slow", "seconds": 3}}` (see [`FaultRequest`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::faults::{FaultRequest, Faults};
use super::syslog_out::Outbox;
use super::world::World;

#[derive(Clone)]
struct Control {
    world: Arc<Mutex<World>>,
    faults: Arc<Faults>,
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
}

/// The control router.
pub fn router(world: Arc<Mutex<World>>, faults: Arc<Faults>, outbox: Outbox) -> Router {
    Router::new().route("/truth", get(truth)).route("/control", post(control)).with_state(Control {
        world,
        faults,
        outbox,
    })
}

async fn truth(State(control): State<Control>) -> Json<serde_json::Value> {
    let mut truth = control.world.lock().expect("the world lock is never poisoned").truth();
    truth["syslog_dropped"] = control.outbox.dropped().into();
    Json(truth)
}

async fn control(State(control): State<Control>, Json(request): Json<ControlRequest>) -> (StatusCode, String) {
    let mut world = control.world.lock().expect("the world lock is never poisoned");
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
    (StatusCode::OK, "ok\n".into())
}
