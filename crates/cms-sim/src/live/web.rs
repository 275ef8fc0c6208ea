//! Each simulated server's web bridge page over HTTP.
//!
//! `GET /` answers 200 with a page offering "Sign in" and "Join meeting"
//! while the web bridge runs, and 503 while it restarts. `GET /join` (or
//! `POST`) answers 503 while the web bridge is restarting or at its limit:
//! what a user trying to join would see.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::world::World;

#[derive(Clone)]
struct Page {
    world: Arc<Mutex<World>>,
    server: usize,
}

/// The router of server `server`'s web bridge.
pub fn router(world: Arc<Mutex<World>>, server: usize) -> Router {
    Router::new().route("/", get(index)).route("/join", get(join).post(join)).with_state(Page { world, server })
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
