//! wbguard: keeps Cisco Meeting Server web bridges open despite CSCvt73723.
//!
//! `main` only parses the command line, runs the command and turns its
//! outcome into one exit code (see [`exit`]).

mod analyze;
mod cli;
mod exit;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Analyze(args) => analyze::run(&args),
    };
    std::process::exit(exit::code(result));
}
