//! Each simulated server's web bridge page over HTTP.
//!
//! `GET /` answers 200 with a page offering "Sign in" and "Join meeting"
//! while the web bridge runs, and 503 while it restarts. `GET /join` (or
//! `POST`) answers 503 while the web bridge is restarting or at its limit:
//! what a user trying to join would see; it only asks.
//!
//! `POST /join/session` really joins: a session on this web bridge (its
//! Stats count it and its `c:` moves) with a live CMA call leg on this
//! server's call bridge, or on the one named by `?callbridge=NAME`. It
//! answers 200 with `{"server": "cms1", "callbridge": "cms1", "leg":
//! "<GUID>"}`, 503 while restarting or full, 400 for an unknown call
//! bridge. The call lasts until the control API's `end_leg` ends it (its
//! user hangs up) or a restart drops it (the truth counts it in
//! `dropped_calls`). A load balancer in front of several pages sends each
//! join to one of them: the answer says which.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::world::{JoinRefused, World};

#[derive(Clone)]
struct Page {
    world: Arc<Mutex<World>>,
    server: usize,
}

/// The router of server `server`'s web bridge.
pub fn router(world: Arc<Mutex<World>>, server: usize) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/join", get(join).post(join))
        .route("/join/session", post(join_session))
        .with_state(Page { world, server })
}

async fn index(State(page): State<Page>) -> Response {
    let world = page.world.lock().expect("the world lock is never poisoned");
    let name = world.servers()[page.server].name.clone();
    if !world.webbridge_up(page.server) {
        return (StatusCode::SERVICE_UNAVAILABLE, "web bridge restarting\n").into_response();
    }
    Html(format!(
        "<!doctype html><html><head><title>Cisco Meeting App ({name})</title></head><body>\
         <h1>Cisco Meeting App</h1><p><a href=\"/signin\">Sign in</a></p>\
         <p><a href=\"/join\">Join meeting</a></p></body></html>\n"
    ))
    .into_response()
}

async fn join(State(page): State<Page>) -> Response {
    let world = page.world.lock().expect("the world lock is never poisoned");
    if !world.webbridge_up(page.server) {
        (StatusCode::SERVICE_UNAVAILABLE, "web bridge restarting\n").into_response()
    } else if world.webbridge_full(page.server) {
        (StatusCode::SERVICE_UNAVAILABLE, "the web bridge has reached its session limit\n").into_response()
    } else {
        (StatusCode::OK, "ready to join\n").into_response()
    }
}

async fn join_session(State(page): State<Page>, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut world = page.world.lock().expect("the world lock is never poisoned");
    let callbridge = match query.get("callbridge") {
        None => page.server,
        Some(name) => match world.server(name) {
            Some(i) => i,
            None => {
                let known: Vec<&str> = world.servers().iter().map(|s| s.name.as_str()).collect();
                let why = format!("no call bridge named {name:?} (known: {})\n", known.join(", "));
                return (StatusCode::BAD_REQUEST, why).into_response();
            }
        },
    };
    match world.join(page.server, callbridge) {
        Ok(leg) => Json(serde_json::json!({
            "server": world.servers()[page.server].name,
            "callbridge": world.servers()[callbridge].name,
            "leg": leg.to_string(),
        }))
        .into_response(),
        Err(JoinRefused::Restarting) => (StatusCode::SERVICE_UNAVAILABLE, "web bridge restarting\n").into_response(),
        Err(JoinRefused::Full) => {
            (StatusCode::SERVICE_UNAVAILABLE, "the web bridge has reached its session limit\n").into_response()
        }
    }
}
