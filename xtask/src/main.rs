//! wbguard's build tasks, run as `cargo xtask TASK` (the alias is in
//! `.cargo/config.toml`):
//!
//! - `dist`: the release binary, its Debian packages, the Linux archive,
//!   optionally the Windows restart job, and `SHA256SUMS`, into
//!   `target/dist/` ([`dist`]);
//! - `ci`: what CI runs on a fresh machine, from installing the tools to the
//!   last test ([`ci`]).

mod ci;
mod deb;
mod dist;
mod sh;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask TASK

tasks:
  dist [--windows]   build target/dist/: wbguard_VERSION_amd64.deb, its -dbgsym
                     package, wbguard-VERSION-x86_64-linux.tar.gz (and its debug
                     information), with --windows wbguard-VERSION-x86_64-windows.exe,
                     and SHA256SUMS
  ci                 install what the tests need (Debian packages when root, the
                     Windows target), then format, clippy, the Windows build,
                     dist and every test, ignored ones included
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["dist"] => dist::dist(&Workspace::find(), false).map(|_| ()),
        ["dist", "--windows"] => dist::dist(&Workspace::find(), true).map(|_| ()),
        ["ci"] => ci::ci(&Workspace::find()),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown task {:?}\n{USAGE}", args.join(" "))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Where the workspace and its build output are.
pub struct Workspace {
    /// The workspace's root (holds `Cargo.toml`, `deploy/`, `docs/`).
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` or `ROOT/target`.
    pub target: PathBuf,
}

impl Workspace {
    fn find() -> Workspace {
        // xtask/ sits in the workspace's root.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => root.join(dir),
            _ => root.join("target"),
        };
        Workspace { root, target }
    }
}
