//! The MMP over SSH: one russh server per simulated CMS server.
//!
//! Password and public-key authentication for the one configured user, an
//! `exec` request runs one command, an interactive shell shows the
//! `<hostname>> ` prompt and runs a command per line until `exit`. Each
//! command is audited to syslog by the [`World`]. Faults injected through
//! the control API change how a server behaves: it refuses connections,
//! accepts and never answers, hangs after authentication, answers slowly,
//! or locks the user out after wrong passwords.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::faults::{Fault, Faults};
use super::world::World;
use super::Outbox;

/// Who may log in.
#[derive(Clone)]
pub struct Credentials {
    /// The MMP user (`admin`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Public keys that may log in as the user.
    pub authorized_keys: Vec<PublicKey>,
}

/// What every connection to one simulated server shares.
pub struct MmpContext {
    /// Index of the server in the world.
    pub server: usize,
    /// Its host name (the prompt).
    pub name: String,
    /// The deployment.
    pub world: Arc<Mutex<World>>,
    /// Syslog lines out.
    pub outbox: Outbox,
    /// Who may log in.
    pub credentials: Credentials,
    /// Faults in force.
    pub faults: Arc<Faults>,
    /// The SSH server settings (host key, algorithms).
    pub config: Arc<russh::server::Config>,
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(listener: TcpListener, context: Arc<MmpContext>, mut shutdown: watch::Receiver<bool>) {
    let address = listener.local_addr().ok();
    let mut listener = Some(listener);
    loop {
        // While "refuse" is in force the port is closed, so connections are
        // refused by the kernel, as with a server that is down.
        if context.faults.get(context.server) == Fault::Refuse {
            listener = None;
        } else if listener.is_none() {
            listener = address.and_then(|a| std::net::TcpListener::bind(a).ok()).and_then(|l| {
                l.set_nonblocking(true).ok()?;
                TcpListener::from_std(l).ok()
            });
        }
        let Some(open) = listener.as_ref() else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = shutdown.changed() => return,
            }
        };
        tokio::select! {
            accepted = open.accept() => {
                if let Ok((socket, peer)) = accepted {
                    let context = context.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(connection(socket, peer, context, shutdown));
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    context: Arc<MmpContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    if context.faults.get(context.server) == Fault::Blackhole {
        // Accept, then never say a word (not even the SSH banner).
        let _ = shutdown.changed().await;
        drop(socket);
        return;
    }
    let _ = socket.set_nodelay(true);
    let handler = Connection { context: context.clone(), peer, user: None, channels: HashMap::new() };
    let session = match russh::server::run_stream(context.config.clone(), socket, handler).await {
        Ok(session) => session,
        Err(_) => return, // garbage or a dropped handshake: nothing to clean up
    };
    tokio::select! {
        _ = session => {}
        _ = shutdown.changed() => {}
    }
}

#[derive(Default)]
struct ChannelState {
    /// The client asked for a terminal: echo what it types, end lines with CR LF.
    pty: bool,
    /// An interactive shell runs on this channel.
    shell: bool,
    /// What was typed since the last end of line.
    line: Vec<u8>,
    /// The previous byte ended a line with CR (so a following LF is not
    /// another, empty, line).
    after_cr: bool,
}

/// One SSH connection.
struct Connection {
    context: Arc<MmpContext>,
    peer: SocketAddr,
    user: Option<String>,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Connection {
    fn authorized(&self, user: &str, key: &PublicKey) -> bool {
        let credentials = &self.context.credentials;
        user == credentials.user && credentials.authorized_keys.iter().any(|k| k.key_data() == key.key_data())
    }

    /// Runs a command as the logged-in user; honours the slow and hang faults.
    async fn run(&self, command: &str) -> super::world::CommandOutput {
        match self.context.faults.get(self.context.server) {
            Fault::HangAfterAuth => std::future::pending::<()>().await,
            Fault::Slow(delay) => tokio::time::sleep(delay).await,
            _ => {}
        }
        let user = self.user.clone().unwrap_or_default();
        let mut lines = Vec::new();
        let output = {
            let mut world = self.context.world.lock().expect("the world lock is never poisoned");
            world.command(self.context.server, &user, &self.peer.to_string(), command, &mut lines)
        };
        self.context.outbox.send_all(lines);
        output
    }

    fn prompt(&self) -> String {
        format!("{}> ", self.context.name)
    }
}

fn terminal(text: &str, pty: bool) -> String {
    if pty {
        text.replace('\n', "\r\n")
    } else {
        text.to_owned()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let faults = &self.context.faults;
        let server = self.context.server;
        if faults.locked_out(server, Instant::now()) {
            return Ok(Auth::reject());
        }
        let credentials = &self.context.credentials;
        if user == credentials.user && password == credentials.password {
            faults.login_succeeded(server);
            self.user = Some(user.to_owned());
            Ok(Auth::Accept)
        } else {
            faults.login_failed(server, Instant::now());
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        Ok(if self.authorized(user, offer.public_key) { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        if self.context.faults.locked_out(self.context.server, Instant::now()) || !self.authorized(user, key.public_key)
        {
            return Ok(Auth::reject());
        }
        self.user = Some(user.to_owned());
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), ChannelState::default());
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.entry(channel).or_default().pty = true;
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        if self.context.faults.get(self.context.server) == Fault::HangAfterAuth {
            std::future::pending::<()>().await;
        }
        session.channel_success(channel)?;
        let state = self.channels.entry(channel).or_default();
        state.shell = true;
        let prompt = self.prompt();
        session.data(channel, prompt.into_bytes())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let command = String::from_utf8_lossy(data).into_owned();
        let output = self.run(&command).await;
        let pty = self.channels.get(&channel).is_some_and(|c| c.pty);
        if !output.text.is_empty() {
            session.data(channel, terminal(&output.text, pty).into_bytes())?;
        }
        session.exit_status_request(channel, output.status)?;
        session.eof(channel)?;
        session.close(channel)
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get_mut(&channel) else { return Ok(()) };
        if !state.shell {
            return Ok(());
        }
        let pty = state.pty;
        let mut lines = Vec::new();
        let mut echo = Vec::new();
        for &byte in data {
            let state = self.channels.get_mut(&channel).expect("present");
            match byte {
                b'\n' if state.after_cr => state.after_cr = false,
                b'\r' | b'\n' => {
                    state.after_cr = byte == b'\r';
                    lines.push(std::mem::take(&mut state.line));
                    echo.extend_from_slice(b"\r\n");
                }
                // Backspace and delete.
                0x08 | 0x7f => {
                    state.after_cr = false;
                    if state.line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                // Ctrl-C drops the line, Ctrl-D ends the session.
                0x03 => {
                    state.line.clear();
                    echo.extend_from_slice(b"^C\r\n");
                    lines.push(Vec::new());
                }
                0x04 => lines.push(b"exit".to_vec()),
                _ => {
                    state.after_cr = false;
                    if state.line.len() < 4096 {
                        state.line.push(byte);
                        echo.push(byte);
                    }
                }
            }
        }
        if pty && !echo.is_empty() {
            session.data(channel, echo)?;
        }
        for line in lines {
            let command = String::from_utf8_lossy(&line).trim().to_owned();
            if command == "exit" || command == "quit" {
                session.exit_status_request(channel, 0)?;
                session.eof(channel)?;
                return session.close(channel);
            }
            if !command.is_empty() {
                let output = self.run(&command).await;
                session.data(channel, terminal(&output.text, pty).into_bytes())?;
            }
            session.data(channel, self.prompt().into_bytes())?;
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        // A client that closes its input ends an interactive shell.
        if self.channels.get(&channel).is_some_and(|c| c.shell) {
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }
}
