//! wbguard: keeps Cisco Meeting Server web bridges open despite CSCvt73723.
//!
//! `main` only parses the command line, runs the command and turns its
//! outcome into one exit code (see [`exit`]).
//!
//! The binary is three layers; a module imports only from its own layer
//! downward (`tests/cli/layers.rs` checks it):
//!
//! - commands ([`commands`]): one module per command, each using services
//!   and leaves, never another command;
//! - services: [`mmp`] (SSH), [`store`] (SQLite), [`logs`] (files into the
//!   model), [`restarter`] (one restart, verified, audited), [`ingest`]
//!   (syslog in), [`cdr`] (CDRs in: the live call legs), [`guard`] (the
//!   running guard and its HTTP side);
//! - leaves: [`config`] (TOML in, typed values out), [`secret`] (where a
//!   secret lives; fetched at use), [`dirs`], [`files`] (bounded reads,
//!   safe writes), [`text`] (outside text made safe to show), [`cli`],
//!   [`exit`].
//!
//! On Windows the build has `analyze`, `restart`, `trust`, `config` and
//! `status`: the guard (`watch`) and `demo` rest on Unix signals, file
//! modes and inodes, and are left out (`--help` says so). What Unix means
//! by a file mode or a link is given its Windows meaning in the leaves
//! ([`dirs`], [`files`], [`secret`]).

mod cdr;
mod cli;
mod cms_api;
mod commands;
mod config;
mod dirs;
// The guard's services. On Windows nothing runs the guard, and `status`
// uses only its API types, so most of them are unused there: they are
// still compiled, as those types (and `cms_api`) need parts of them.
#[cfg_attr(windows, allow(dead_code))]
mod drain;
mod exit;
mod files;
#[cfg_attr(windows, allow(dead_code))]
mod guard;
#[cfg_attr(windows, allow(dead_code))]
mod ingest;
mod logs;
mod mmp;
mod restarter;
mod secret;
#[cfg_attr(windows, allow(dead_code))]
mod store;
mod text;

use clap::Parser;

use commands::{analyze, restart, status, trust};

/// The commands whose output is made to be piped (`| head`, `| less`):
/// a reader that goes away ends them, as it ends `cat`. Not `watch` or
/// `restart`: a guard or a restart is never cut short by a closed pipe.
fn prints_for_a_pipe(command: &cli::Command) -> bool {
    match command {
        cli::Command::Analyze(_) | cli::Command::Config(_) | cli::Command::Status(_) => true,
        cli::Command::Completions { .. } => true,
        #[cfg(all(unix, feature = "demo"))]
        cli::Command::Demo(_) => true,
        _ => false,
    }
}

/// Rust ignores SIGPIPE, so a write to a closed pipe fails and `println!`
/// panics; the default action ends the process silently instead. Sockets
/// are unaffected: they are written with MSG_NOSIGNAL.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    sigpipe::reset();
}

fn main() {
    let cli = cli::Cli::parse();
    init_logging();
    if prints_for_a_pipe(&cli.command) {
        end_quietly_on_a_closed_pipe();
    }
    let config = cli.config.as_deref();
    let result = match cli.command {
        cli::Command::Analyze(args) => analyze::run(&args),
        cli::Command::Restart(args) => restart::run(config, &args),
        cli::Command::Trust(args) => trust::run(config, &args),
        cli::Command::Config(command) => commands::config::run(config, &command),
        #[cfg(unix)]
        cli::Command::Watch(args) => commands::watch::run(config, &args),
        cli::Command::Status(args) => status::run(&args),
        #[cfg(all(unix, feature = "demo"))]
        cli::Command::Demo(args) => commands::demo::run(&args),
        cli::Command::Completions { shell } => {
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "wbguard", &mut std::io::stdout());
            Ok(exit::Outcome::Success)
        }
        cli::Command::Man { dir } => man(dir.as_deref()),
    };
    std::process::exit(exit::code(result));
}

/// Logs through tracing to standard error; `WBGUARD_LOG` filters (`info`
/// by default). Every message and field is escaped ([`text::printable`])
/// as it is written, so that a host name or request data in a line cannot
/// forge another line or drive the terminal it is read on.
fn init_logging() {
    use tracing_subscriber::field::MakeExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WBGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let value = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", text::printable(&value)),
            name => write!(writer, "{name}={}", text::printable(&value)),
        }
    })
    .delimited(" ");
    let _ = tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The manual pages, from the same definitions as `--help`: the command's
/// to standard output, or it and one per subcommand into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<exit::Outcome> {
    use anyhow::Context;
    let command = <cli::Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout().lock())?;
        return Ok(exit::Outcome::Success);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut pages = vec![("wbguard".to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        let name = format!("wbguard-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name.clone()).bin_name(name.replacen('-', " ", 1))));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text)?;
        files::replace(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::Outcome::Success)
}
