//! wbguard: keeps Cisco Meeting Server web bridges open despite CSCvt73723.
//!
//! `main` only parses the command line, runs the command and turns its
//! outcome into one exit code (see [`exit`]).

mod analyze;
mod cli;
mod config;
mod config_cmd;
mod demo;
mod exit;
mod mmp;
mod restart;
mod store;
mod trust;
mod watch;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Analyze(args) => analyze::run(&args),
        cli::Command::Restart(args) => restart::run(&args),
        cli::Command::Trust(args) => trust::run(&args),
        cli::Command::Config(command) => config_cmd::run(&command),
        cli::Command::Watch(args) => watch::run(&args),
        cli::Command::Status(args) => watch::status(&args),
        cli::Command::Demo(args) => demo::run(&args),
    };
    std::process::exit(exit::code(result));
}
