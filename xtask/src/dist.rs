//! `cargo xtask dist`: everything an operator downloads, built into
//! `target/dist/` from one release build:
//!
//! - `wbguard_VERSION_amd64.deb` and `wbguard-dbgsym_VERSION_amd64.deb`
//!   ([`crate::deb`]);
//! - `wbguard-VERSION-x86_64-linux.tar.gz`: the binary, man pages,
//!   completions, `deploy/` and the docs; its debug information in
//!   `wbguard-VERSION-x86_64-linux-debug.tar.gz`, which unpacks beside it;
//! - with `--windows`, `wbguard-VERSION-x86_64-windows.exe` (the restart
//!   job; the guard is Unix-only);
//! - `SHA256SUMS` over all of them (`sha256sum -c SHA256SUMS` checks them).
//!
//! The binary ships stripped, with a GNU debug link and its build ID, so a
//! debugger finds the split-off information either way. Every file's time
//! is the last commit's (`SOURCE_DATE_EPOCH`), owners are root, and the
//! archives are sorted by name: two builds of one commit give the same
//! archives when the compiler gives the same binary.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{deb, sh, Workspace};

/// The Linux archive's name without its extension, for `version`.
pub fn archive_name(version: &str) -> String {
    format!("wbguard-{version}-x86_64-linux")
}

/// The completion scripts generated from the CLI: shell and file name.
pub const COMPLETIONS: [(&str, &str); 4] =
    [("bash", "wbguard.bash"), ("zsh", "_wbguard"), ("fish", "wbguard.fish"), ("powershell", "_wbguard.ps1")];

/// What the release build gave, staged for packing.
pub struct Staged {
    /// The workspace's version, as `wbguard --version` says it.
    pub version: String,
    /// The stripped binary.
    pub binary: PathBuf,
    /// Its debug information (`objcopy --only-keep-debug`).
    pub debug: PathBuf,
    /// The binary's GNU build ID, in hex.
    pub build_id: String,
    /// The newest glibc symbol version the binary needs, such as `2.34`.
    pub glibc: String,
    /// The man pages (`wbguard.1`, `wbguard-restart.1`, ...).
    pub man: Vec<PathBuf>,
    /// The completion scripts, by [`COMPLETIONS`]'s file names.
    pub completions: PathBuf,
    /// `SOURCE_DATE_EPOCH`: every packed file's time.
    pub epoch: u64,
}

/// Builds `target/dist/` and returns its folder.
pub fn dist(ws: &Workspace, windows: bool) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    sh::run(&ws.root, &cargo, &["build", "--release", "--locked", "-p", "wbguard"])?;
    let built = ws.target.join("release/wbguard");
    let out = ws.target.join("dist");
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|error| format!("{}: cannot clear it: {error}", out.display()))?;
    }
    let stage = out.join(".stage");
    mkdir(&stage)?;
    let staged = stage_build(ws, &built, &stage)?;

    deb::packages(ws, &staged, &stage, &out)?;
    archives(ws, &staged, &stage, &out)?;
    if windows {
        windows_exe(ws, &cargo, &staged.version, &out)?;
    }
    fs::remove_dir_all(&stage).map_err(|error| format!("{}: {error}", stage.display()))?;
    sums(&out)?;

    eprintln!("\n{}: (glibc {} or newer)", out.display(), staged.glibc);
    for entry in listing(&out)? {
        let size = fs::metadata(out.join(&entry)).map(|meta| meta.len()).unwrap_or(0);
        eprintln!("  {:>12}  {entry}", size);
    }
    Ok(out)
}

/// Splits the debug information off, and generates the man pages and the
/// completions with the built binary.
fn stage_build(ws: &Workspace, built: &Path, stage: &Path) -> Result<Staged, String> {
    let version = sh::text(sh::arg(built)?, &["--version"])?
        .trim()
        .strip_prefix("wbguard ")
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: --version does not say `wbguard VERSION`", built.display()))?;
    let binary = stage.join("wbguard");
    let debug = stage.join("wbguard.debug");
    sh::run(stage, "objcopy", &["--only-keep-debug", sh::arg(built)?, "wbguard.debug"])?;
    sh::run(
        stage,
        "objcopy",
        &["--strip-debug", "--strip-unneeded", "--remove-section=.comment", sh::arg(built)?, "wbguard"],
    )?;
    // The link names the file only: a debugger looks beside the binary.
    sh::run(stage, "objcopy", &["--add-gnu-debuglink=wbguard.debug", "wbguard"])?;
    let build_id = build_id(&sh::text("readelf", &["-n", sh::arg(&binary)?])?)
        .ok_or_else(|| format!("{}: no GNU build ID (readelf -n)", binary.display()))?;
    let glibc = glibc_floor(&sh::text("objdump", &["-T", sh::arg(&binary)?])?)
        .ok_or_else(|| format!("{}: no GLIBC_ symbol versions (objdump -T)", binary.display()))?;

    let man_dir = stage.join("man");
    mkdir(&man_dir)?;
    sh::run(stage, sh::arg(&binary)?, &["man", "--dir", sh::arg(&man_dir)?])?;
    let man = listing(&man_dir)?.into_iter().map(|name| man_dir.join(name)).collect::<Vec<_>>();
    if !man.iter().any(|page| page.ends_with("wbguard.1")) {
        return Err(format!("{}: `wbguard man --dir` wrote no wbguard.1", man_dir.display()));
    }
    let completions = stage.join("completions");
    mkdir(&completions)?;
    for (shell, file) in COMPLETIONS {
        write(&completions.join(file), &sh::output(sh::arg(&binary)?, &["completions", shell])?)?;
    }
    Ok(Staged { version, binary, debug, build_id, glibc, man, completions, epoch: source_date_epoch(ws)? })
}

/// The Linux archive and its debug archive.
fn archives(ws: &Workspace, staged: &Staged, stage: &Path, out: &Path) -> Result<(), String> {
    let name = archive_name(&staged.version);
    let top = stage.join("archive").join(&name);
    mkdir(&top)?;
    copy(&staged.binary, &top.join("wbguard"), 0o755)?;
    copy(&ws.root.join("README.md"), &top.join("README.md"), 0o644)?;
    copy_dir(&ws.root.join("docs"), &top.join("docs"))?;
    // Files only: deploy/debian holds the package's scripts, not the archive's.
    copy_dir(&ws.root.join("deploy"), &top.join("deploy"))?;
    mkdir(&top.join("man"))?;
    for page in &staged.man {
        copy(page, &top.join("man").join(page.file_name().unwrap_or_default()), 0o644)?;
    }
    copy_dir(&staged.completions, &top.join("completions"))?;
    sh::run(stage, "find", &["archive", "-type", "d", "-exec", "chmod", "755", "{}", "+"])?;
    tar_gz(staged.epoch, &stage.join("archive"), &name, &out.join(format!("{name}.tar.gz")))?;

    let debug_top = stage.join("debug").join(&name);
    mkdir(&debug_top)?;
    copy(&staged.debug, &debug_top.join("wbguard.debug"), 0o644)?;
    tar_gz(staged.epoch, &stage.join("debug"), &name, &out.join(format!("{name}-debug.tar.gz")))
}

/// The restart job for Windows, cross-built with mingw-w64 and stripped.
fn windows_exe(ws: &Workspace, cargo: &str, version: &str, out: &Path) -> Result<(), String> {
    const TARGET: &str = "x86_64-pc-windows-gnu";
    sh::run(&ws.root, cargo, &["build", "--release", "--locked", "--target", TARGET, "-p", "wbguard"])?;
    let built = ws.target.join(TARGET).join("release/wbguard.exe");
    let exe = out.join(format!("wbguard-{version}-x86_64-windows.exe"));
    sh::run(out, "x86_64-w64-mingw32-strip", &["-o", sh::arg(&exe)?, sh::arg(&built)?])
}

/// `SHA256SUMS` over every file in `out`, by name.
fn sums(out: &Path) -> Result<(), String> {
    let names = listing(out)?;
    let mut args = vec!["--"];
    args.extend(names.iter().map(String::as_str));
    // Run in `out`: the sums name the files, not their paths.
    write(&out.join("SHA256SUMS"), &sh::output_in(out, "sha256sum", &args)?)
}

/// `tar` of `dir` inside `parent`, reproducible, gzip'd into `archive`.
fn tar_gz(epoch: u64, parent: &Path, dir: &str, archive: &Path) -> Result<(), String> {
    let tar = archive.with_extension("");
    let mtime = format!("--mtime=@{epoch}");
    sh::run(
        parent,
        "tar",
        &[
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            &mtime,
            "--format=gnu",
            "-cf",
            sh::arg(&tar)?,
            dir,
        ],
    )?;
    // -n: no name or time in the gzip header.
    sh::run(parent, "gzip", &["-9n", sh::arg(&tar)?])?;
    if archive.exists() {
        Ok(())
    } else {
        Err(format!("{}: gzip did not write it", archive.display()))
    }
}

/// The last commit's time, for `SOURCE_DATE_EPOCH` (honoured when set).
fn source_date_epoch(ws: &Workspace) -> Result<u64, String> {
    let text = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(set) => set,
        Err(_) => sh::text("git", &["-C", sh::arg(&ws.root)?, "log", "-1", "--format=%ct"])?,
    };
    text.trim().parse().map_err(|_| format!("SOURCE_DATE_EPOCH: {:?} is not a number of seconds", text.trim()))
}

/// The build ID in `readelf -n`'s output.
pub fn build_id(readelf: &str) -> Option<String> {
    readelf.lines().find_map(|line| line.trim().strip_prefix("Build ID: ")).map(|id| id.trim().to_owned())
}

/// The newest `GLIBC_x.y[.z]` version in `objdump -T`'s output.
pub fn glibc_floor(objdump: &str) -> Option<String> {
    objdump
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let parts: Option<Vec<u32>> = version.split('.').map(|part| part.parse().ok()).collect();
            parts.map(|parts| (parts, version))
        })
        .max()
        .map(|(_, version)| version.to_owned())
}

/// The names in `dir`, sorted, without hidden ones.
pub fn listing(dir: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))? {
        let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Creates `dir` and its parents (mode 755 less the umask: the packers
/// set every folder to 755 before packing).
pub fn mkdir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|error| format!("{}: cannot create it: {error}", dir.display()))
}

/// Writes `bytes` to `path`, mode 644.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    fs::write(path, bytes).map_err(|error| format!("{}: cannot write it: {error}", path.display()))?;
    chmod(path, 0o644)
}

/// Copies `from` to `to` with `mode`.
pub fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    fs::copy(from, to).map_err(|error| format!("{} -> {}: {error}", from.display(), to.display()))?;
    chmod(to, mode)
}

/// Copies the files of `from` (not its subfolders), mode 644 (755 where
/// the source is executable).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for name in listing(from)? {
        let source = from.join(&name);
        let meta = fs::metadata(&source).map_err(|error| format!("{}: {error}", source.display()))?;
        if meta.is_file() {
            copy(&source, &to.join(&name), if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 })?;
        }
    }
    Ok(())
}

/// Sets `path`'s mode.
pub fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|error| format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_the_floor() {
        let objdump = "0000 DF *UND* 0000 (GLIBC_2.2.5) memcpy\n0000 DF *UND* 0000 (GLIBC_2.34) __libc_start_main\n\
                       0000 DF *UND* 0000 (GLIBC_2.4) __stack_chk_fail\n0000 DF *UND* 0000 GLIBC_2.33 stat64\n";
        assert_eq!(glibc_floor(objdump).as_deref(), Some("2.34"));
        assert_eq!(glibc_floor("no versions here"), None);
    }

    /// The README's "Get it" names the files `dist` makes of this version.
    #[test]
    fn the_readme_names_what_dist_builds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let readme = fs::read_to_string(root.join("README.md")).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        for name in [
            format!("sudo dpkg -i wbguard_{version}_amd64.deb"),
            format!("tar -xzf {}.tar.gz", archive_name(version)),
            format!("wbguard-{version}-x86_64-windows.exe"),
            "cargo run --release -p wbguard -- demo --duration 2m".to_owned(),
        ] {
            assert!(readme.contains(&name), "README.md does not say `{name}`");
        }
    }

    #[test]
    fn the_build_id_is_read_from_readelf() {
        let readelf = "Displaying notes found in: .note.gnu.build-id\n  Owner Data size Description\n  \
                       GNU 0x00000014 NT_GNU_BUILD_ID (unique build ID bitstring)\n    Build ID: fa32316e053e\n";
        assert_eq!(build_id(readelf).as_deref(), Some("fa32316e053e"));
        assert_eq!(build_id("Displaying notes found in: .note.ABI-tag"), None);
    }
}
