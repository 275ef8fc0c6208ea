//! Running the system's tools: each command is echoed before it runs, and a
//! failure names the program and what it said, so that a CI log shows
//! which step broke and why.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program args...` in `dir`, its output going to ours.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    run_with(dir, &[], program, args)
}

/// Like [`run`], with `env` added to its environment (and not to ours:
/// cargo rebuilds what a build script saw change in its environment).
pub fn run_with(dir: &Path, env: &[(&str, &str)], program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .status()
        .map_err(|error| format!("{program}: cannot run it ({error}); is it installed?"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}

/// Runs `program args...` and returns its standard output.
pub fn output(program: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    output_in(Path::new("."), program, args)
}

/// Runs `program args...` in `dir` and returns its standard output.
pub fn output_in(dir: &Path, program: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{program}: cannot run it ({error}); is it installed?"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Like [`output`], as text.
pub fn text(program: &str, args: &[&str]) -> Result<String, String> {
    output(program, args).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `program` can be found on `PATH`.
pub fn exists(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A path as a `&str` argument (the workspace's paths are UTF-8).
pub fn arg(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("{}: not UTF-8, cannot pass it to a tool", path.display()))
}
