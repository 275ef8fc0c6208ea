//! The Debian packages, made with `dpkg-deb` from a staged tree:
//!
//! - `wbguard`: `/usr/bin/wbguard` (stripped), man pages, bash/zsh/fish
//!   completions, the systemd unit from `deploy/` (pointed at
//!   `/usr/bin/wbguard`), `/etc/wbguard/config.toml` from
//!   `deploy/config.example.toml` (a conffile, mode 640; postinst gives it
//!   to group `wbguard`), the docs, and the Prometheus rules and Grafana
//!   dashboard in `/usr/share/wbguard/`. The maintainer scripts are
//!   `deploy/debian/` (a system user, `/var/lib/wbguard`; the guard is
//!   never started by them; history goes only on purge).
//! - `wbguard-dbgsym`: the debug information at
//!   `/usr/lib/debug/.build-id/XX/YYYY.debug`, where debuggers look.
//!
//! `cms-sim` is not packaged: it is a development tool (`wbguard demo`
//! holds the simulator it needs).

use std::fs;
use std::path::Path;

use crate::dist::{chmod, copy, listing, mkdir, write, Staged};
use crate::{sh, Workspace};

/// The unit's `ExecStart` path in `deploy/`, for an install by hand.
const HAND_INSTALLED: &str = "/usr/local/bin/wbguard";
/// Where the package puts the binary.
const PACKAGED: &str = "/usr/bin/wbguard";
/// The one conffile: the configuration, kept when the package is removed.
const CONFFILE: &str = "etc/wbguard/config.toml";

/// Builds both packages into `out`.
pub fn packages(ws: &Workspace, staged: &Staged, stage: &Path, out: &Path) -> Result<(), String> {
    let tree = stage.join("deb");
    main_tree(ws, staged, &tree)?;
    dirs_755(&tree)?;
    chmod(&tree.join("etc/wbguard"), 0o750)?;
    let size = installed_size(&tree)?;
    let control = control(ws, staged, size)?;
    let debian = tree.join("DEBIAN");
    write(&debian.join("control"), control.as_bytes())?;
    write(&debian.join("conffiles"), format!("/{CONFFILE}\n").as_bytes())?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(&ws.root.join("deploy/debian").join(script), &debian.join(script), 0o755)?;
    }
    md5sums(&tree)?;
    build(staged, &tree, &out.join(format!("wbguard_{}_amd64.deb", staged.version)))?;

    let tree = stage.join("dbgsym");
    let (prefix, rest) = staged.build_id.split_at(2.min(staged.build_id.len()));
    copy(&staged.debug, &tree.join(format!("usr/lib/debug/.build-id/{prefix}/{rest}.debug")), 0o644)?;
    dirs_755(&tree)?;
    let size = installed_size(&tree)?;
    write(&tree.join("DEBIAN/control"), dbgsym_control(staged, size).as_bytes())?;
    md5sums(&tree)?;
    build(staged, &tree, &out.join(format!("wbguard-dbgsym_{}_amd64.deb", staged.version)))
}

/// The files of the `wbguard` package, with their modes.
fn main_tree(ws: &Workspace, staged: &Staged, tree: &Path) -> Result<(), String> {
    copy(&staged.binary, &tree.join("usr/bin/wbguard"), 0o755)?;
    let man1 = tree.join("usr/share/man/man1");
    mkdir(&man1)?;
    for page in &staged.man {
        let name = page.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        // -n: no name or time in the header, so the package is reproducible.
        write(&man1.join(format!("{name}.gz")), &sh::output("gzip", &["-9nc", sh::arg(page)?])?)?;
    }
    let completions = &staged.completions;
    copy(&completions.join("wbguard.bash"), &tree.join("usr/share/bash-completion/completions/wbguard"), 0o644)?;
    copy(&completions.join("_wbguard"), &tree.join("usr/share/zsh/vendor-completions/_wbguard"), 0o644)?;
    copy(&completions.join("wbguard.fish"), &tree.join("usr/share/fish/vendor_completions.d/wbguard.fish"), 0o644)?;

    let unit = read(&ws.root.join("deploy/wbguard.service"))?;
    if !unit.contains(&format!("ExecStart={HAND_INSTALLED} ")) {
        return Err(format!("deploy/wbguard.service: no `ExecStart={HAND_INSTALLED} ...` to point at {PACKAGED}"));
    }
    // /usr/lib, not /lib: the same place on a merged /usr (Debian 12,
    // Ubuntu 22.04) and where Debian 13 wants it.
    write(&tree.join("usr/lib/systemd/system/wbguard.service"), unit.replace(HAND_INSTALLED, PACKAGED).as_bytes())?;
    copy(&ws.root.join("deploy/config.example.toml"), &tree.join(CONFFILE), 0o640)?;

    let doc = tree.join("usr/share/doc/wbguard");
    copy(&ws.root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for name in listing(&ws.root.join("docs"))? {
        copy(&ws.root.join("docs").join(&name), &doc.join("docs").join(&name), 0o644)?;
    }
    write(&doc.join("copyright"), copyright(ws)?.as_bytes())?;
    let changelog_path = doc.join("changelog");
    write(&changelog_path, changelog(staged)?.as_bytes())?;
    write(&doc.join("changelog.gz"), &sh::output("gzip", &["-9nc", sh::arg(&changelog_path)?])?)?;
    fs::remove_file(&changelog_path).map_err(|error| format!("{}: {error}", changelog_path.display()))?;
    let share = tree.join("usr/share/wbguard");
    for name in ["grafana-dashboard.json", "prometheus-alerts.yml", "config.example.toml"] {
        copy(&ws.root.join("deploy").join(name), &share.join(name), 0o644)?;
    }
    Ok(())
}

/// The `control` file of `wbguard`.
fn control(ws: &Workspace, staged: &Staged, installed_kib: u64) -> Result<String, String> {
    let homepage = workspace_key(ws, "repository")?;
    Ok(format!(
        "Package: wbguard\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: wbguard developers <wbguard@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6 (>= {glibc}), libgcc-s1, passwd\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: {homepage}\n\
         Description: keeps Cisco Meeting Server web bridges open (CSCvt73723)\n \
         Web Bridge 2 in Cisco Meeting Server up to 2.9 leaks sessions until it\n \
         reaches its limit and nobody can join a meeting through it; only a\n \
         restart of the web bridge cures it, and it drops the calls on it.\n \
         .\n \
         wbguard reads the servers' syslog and call records, tracks each web\n \
         bridge's leak, and restarts one over SSH only when it is needed and\n \
         drops no call (or in a maintenance window). It also restarts on a\n \
         schedule done right (strict host keys, no password in files), and\n \
         analyzes logs. The guard is installed but not started: configure\n \
         /etc/wbguard/config.toml, then systemctl enable --now wbguard.\n",
        version = staged.version,
        glibc = staged.glibc,
    ))
}

/// The `control` file of `wbguard-dbgsym`.
fn dbgsym_control(staged: &Staged, installed_kib: u64) -> String {
    format!(
        "Package: wbguard-dbgsym\n\
         Source: wbguard\n\
         Version: {version}\n\
         Auto-Built-Package: debug-symbols\n\
         Architecture: amd64\n\
         Maintainer: wbguard developers <wbguard@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: wbguard (= {version})\n\
         Section: debug\n\
         Priority: optional\n\
         Description: debug symbols for wbguard\n\
         Build-Ids: {build_id}\n",
        version = staged.version,
        build_id = staged.build_id,
    )
}

/// The Debian changelog of this version, as policy asks of a native package.
fn changelog(staged: &Staged) -> Result<String, String> {
    let date = sh::text("date", &["-R", "-u", "-d", &format!("@{}", staged.epoch)])?;
    Ok(format!(
        "wbguard ({version}) stable; urgency=medium\n\n  * wbguard {version}: see /usr/share/doc/wbguard/README.md.\n\n \
         -- wbguard developers <wbguard@example.invalid>  {date}\n",
        version = staged.version,
        date = date.trim(),
    ))
}

/// Debian's machine-readable copyright file.
fn copyright(ws: &Workspace) -> Result<String, String> {
    let license = workspace_key(ws, "license")?;
    let source = workspace_key(ws, "repository")?;
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: wbguard\n\
         Source: {source}\n\
         \n\
         Files: *\n\
         Copyright: the wbguard developers\n\
         License: {license}\n \
         On Debian systems, the full text of the Apache License, Version 2.0, is in\n \
         /usr/share/common-licenses/Apache-2.0.\n \
         .\n \
         The binary is linked with Rust crates under their own licences (MIT,\n \
         Apache-2.0, ISC, BSD, Unicode) and with SQLite (public domain); the\n \
         list is in the source's Cargo.lock.\n"
    ))
}

/// A string value under `[workspace.package]` in the root `Cargo.toml`.
fn workspace_key(ws: &Workspace, key: &str) -> Result<String, String> {
    let manifest = read(&ws.root.join("Cargo.toml"))?;
    manifest
        .split("[workspace.package]")
        .nth(1)
        .and_then(|section| section.split("\n[").next())
        .and_then(|section| {
            section.lines().find_map(|line| {
                let (name, value) = line.split_once('=')?;
                (name.trim() == key).then(|| value.trim().trim_matches('"').to_owned())
            })
        })
        .ok_or_else(|| format!("Cargo.toml: no `{key}` under [workspace.package]"))
}

/// `DEBIAN/md5sums`, as `dh_md5sums` writes it (for `debsums`): not the
/// conffile, which dpkg keeps its own sum of and the operator edits.
fn md5sums(tree: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_files(tree, tree, &mut files)?;
    files.retain(|file| !file.starts_with("DEBIAN/") && file != CONFFILE);
    files.sort();
    let mut args = vec!["--"];
    args.extend(files.iter().map(String::as_str));
    write(&tree.join("DEBIAN/md5sums"), &sh::output_in(tree, "md5sum", &args)?)
}

/// Installed-Size: the files' sizes in KiB, each rounded up (dpkg-gencontrol
/// also counts 1 KiB per folder; an estimate either way).
fn installed_size(tree: &Path) -> Result<u64, String> {
    let mut files = Vec::new();
    collect_files(tree, tree, &mut files)?;
    let mut kib = 0;
    for file in files.iter().filter(|file| !file.starts_with("DEBIAN/")) {
        let len = fs::symlink_metadata(tree.join(file)).map_err(|error| format!("{file}: {error}"))?.len();
        kib += len.div_ceil(1024);
    }
    Ok(kib)
}

/// Every folder under `tree` mode 755, whatever the umask made them.
fn dirs_755(tree: &Path) -> Result<(), String> {
    sh::run(tree, "find", &[".", "-type", "d", "-exec", "chmod", "755", "{}", "+"])
}

/// The files under `dir`, as paths relative to `tree`.
fn collect_files(tree: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), String> {
    for name in listing(dir)? {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(|error| format!("{}: {error}", path.display()))?;
        if meta.is_dir() {
            collect_files(tree, &path, files)?;
        } else {
            let relative = path.strip_prefix(tree).map_err(|error| error.to_string())?;
            files.push(sh::arg(relative)?.to_owned());
        }
    }
    Ok(())
}

/// `dpkg-deb --build`, owners root, every time the commit's.
fn build(staged: &Staged, tree: &Path, deb: &Path) -> Result<(), String> {
    let epoch = format!("@{}", staged.epoch);
    sh::run(tree, "find", &[".", "-exec", "touch", "--no-dereference", "--date", &epoch, "{}", "+"])?;
    let epoch = staged.epoch.to_string();
    sh::run_with(
        tree,
        &[("SOURCE_DATE_EPOCH", &epoch)],
        "dpkg-deb",
        &["--root-owner-group", "-Zxz", "--build", ".", sh::arg(deb)?],
    )
}

/// A text file of the workspace.
fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}
