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
        cli::Command::Completions { shell } => {
            let mut command = <cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "wbguard", &mut std::io::stdout());
            Ok(exit::Outcome::Success)
        }
        cli::Command::Man { dir } => man(dir.as_deref()),
    };
    std::process::exit(exit::code(result));
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
        let mut file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        clap_mangen::Man::new(page).render(&mut file)?;
    }
    Ok(exit::Outcome::Success)
}
