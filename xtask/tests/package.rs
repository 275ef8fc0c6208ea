//! The Debian package and the archive in `target/dist/`, as an operator gets
//! them: `dpkg -i`, the installed guard checked, `dpkg -r` and `dpkg -P`
//! with what is left checked each time; the archive unpacked and run, and
//! `sha256sum -c SHA256SUMS`.
//!
//! Ignored by `cargo test`: they need `cargo xtask dist`'s output, and the
//! package test needs root and changes the machine (a user, /etc, /var).
//! `cargo xtask ci` builds the output first and runs them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/dist/`, where `cargo xtask dist` writes.
fn dist() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    let dist = target.join("dist");
    assert!(dist.join("SHA256SUMS").is_file(), "{}: no SHA256SUMS: run `cargo xtask dist` first", dist.display());
    dist
}

/// The one file in `target/dist/` whose name starts with `prefix` and ends
/// with `suffix`.
fn artifact(prefix: &str, suffix: &str) -> PathBuf {
    let dist = dist();
    let found: Vec<PathBuf> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(found.len(), 1, "{prefix}*{suffix} in {}: {found:?}", dist.display());
    found.into_iter().next().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|error| panic!("{program}: {error} (install it)"))
}

/// Runs it and asserts that it succeeded; returns its standard output.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mode (permission bits), owner and group names of `path`.
fn owned(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let name = |database: &str, id: u32| {
        ok("getent", &[database, &id.to_string()]).split(':').next().unwrap_or_default().to_owned()
    };
    (meta.mode() & 0o7777, name("passwd", meta.uid()), name("group", meta.gid()))
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

#[test]
#[ignore = "needs root, dpkg and cargo xtask dist's package: cargo xtask ci runs it"]
fn the_package_installs_verifies_removes_and_purges() {
    let deb = artifact("wbguard_", "_amd64.deb");
    let dbgsym = artifact("wbguard-dbgsym_", "_amd64.deb");
    let version = deb.file_name().unwrap().to_string_lossy().split('_').nth(1).unwrap().to_owned();
    assert_eq!(ok("id", &["-u"]).trim(), "0", "the package test installs a package: run it as root");
    for installed in ["/etc/wbguard", "/var/lib/wbguard", "/usr/bin/wbguard", "/usr/local/bin/wbguard"] {
        assert!(
            !exists(installed),
            "{installed} exists: this test would purge that wbguard's configuration and history"
        );
    }
    assert!(!run("dpkg", &["-s", "wbguard"]).status.success(), "the wbguard package is installed (dpkg -P it first)");
    let _purge = Purge;

    // Install, and again (dpkg's upgrade path: configure with a version).
    ok("dpkg", &["-i", deb.to_str().unwrap(), dbgsym.to_str().unwrap()]);
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(ok("wbguard", &["--version"]).trim(), format!("wbguard {version}"));
    assert_eq!(ok("sh", &["-c", "command -v wbguard"]).trim(), "/usr/bin/wbguard");
    let user = ok("getent", &["passwd", "wbguard"]);
    let fields: Vec<&str> = user.trim().split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "wbguard is a system user: {user}");
    assert_eq!((fields[5], fields[6]), ("/var/lib/wbguard", "/usr/sbin/nologin"), "{user}");
    assert_eq!(owned("/etc/wbguard"), (0o750, "root".into(), "wbguard".into()));
    assert_eq!(owned("/etc/wbguard/config.toml"), (0o640, "root".into(), "wbguard".into()));
    assert_eq!(owned("/var/lib/wbguard"), (0o750, "wbguard".into(), "wbguard".into()));
    // The example is valid, and readable by the user the service runs as.
    ok("wbguard", &["config", "check", "--config", "/etc/wbguard/config.toml"]);
    ok("runuser", &["-u", "wbguard", "--", "wbguard", "config", "check", "--config", "/etc/wbguard/config.toml"]);
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/wbguard.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/wbguard watch --config /etc/wbguard/config.toml"), "{unit}");
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    ok("systemd-analyze", &["verify", "/usr/lib/systemd/system/wbguard.service"]);
    // Installed, not started: nothing enables it before it is configured.
    assert!(!exists("/etc/systemd/system/multi-user.target.wants/wbguard.service"));
    assert!(ok("zcat", &["/usr/share/man/man1/wbguard-restart.1.gz"]).contains(".TH wbguard-restart 1"));
    for completion in [
        "/usr/share/bash-completion/completions/wbguard",
        "/usr/share/zsh/vendor-completions/_wbguard",
        "/usr/share/fish/vendor_completions.d/wbguard.fish",
    ] {
        assert!(std::fs::read_to_string(completion).unwrap().contains("restart"), "{completion}");
    }
    let files = ok("dpkg", &["-L", "wbguard"]);
    assert!(!files.contains("cms-sim"), "cms-sim is not packaged: {files}");
    // Stripped; its debug information where debuggers look it up by build ID.
    assert!(!ok("readelf", &["-S", "/usr/bin/wbguard"]).contains(".debug_info"));
    let build_id = ok("readelf", &["-n", "/usr/bin/wbguard"])
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: ").map(str::to_owned))
        .expect("a build ID");
    let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &build_id[..2], &build_id[2..]);
    assert!(ok("readelf", &["-S", &debug]).contains(".debug_info"), "{debug}");
    ok("dpkg", &["-r", "wbguard-dbgsym"]);
    assert!(!exists(&debug));

    // The operator configures it, and the guard keeps history.
    let mut config = std::fs::read_to_string("/etc/wbguard/config.toml").unwrap();
    config.push_str("\n# edited by the operator\n");
    std::fs::write("/etc/wbguard/config.toml", &config).unwrap();
    std::fs::write("/var/lib/wbguard/wbguard.sqlite", b"history").unwrap();
    std::fs::write("/etc/wbguard/env", b"WBGUARD_MMP_PASSWORD=secret\n").unwrap();

    // Remove: the program goes, the configuration and the history stay.
    ok("dpkg", &["-r", "wbguard"]);
    for gone in ["/usr/bin/wbguard", "/usr/lib/systemd/system/wbguard.service", "/usr/share/man/man1/wbguard.1.gz"] {
        assert!(!exists(gone), "{gone} is left after dpkg -r");
    }
    assert_eq!(std::fs::read_to_string("/etc/wbguard/config.toml").unwrap(), config);
    assert_eq!(std::fs::read("/var/lib/wbguard/wbguard.sqlite").unwrap(), b"history");
    assert!(ok("dpkg", &["-s", "wbguard"]).contains("Status: deinstall ok config-files"));

    // A reinstall carries on with both.
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string("/etc/wbguard/config.toml").unwrap(), config);
    assert_eq!(owned("/etc/wbguard/config.toml"), (0o640, "root".into(), "wbguard".into()));
    assert_eq!(std::fs::read("/var/lib/wbguard/wbguard.sqlite").unwrap(), b"history");

    // Purge: configuration, secrets and history go; the system user stays.
    ok("dpkg", &["-P", "wbguard"]);
    for gone in ["/usr/bin/wbguard", "/etc/wbguard", "/var/lib/wbguard", "/usr/share/doc/wbguard"] {
        assert!(!exists(gone), "{gone} is left after dpkg -P");
    }
    assert!(!run("dpkg", &["-s", "wbguard"]).status.success());
    assert!(run("getent", &["passwd", "wbguard"]).status.success(), "the system user is kept, as Debian does");

    // A configuration the operator deleted stays deleted, and does not
    // stop the package from being configured.
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    std::fs::remove_file("/etc/wbguard/config.toml").unwrap();
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(!exists("/etc/wbguard/config.toml"));
    // One the operator made a link keeps what it points to as it was.
    let elsewhere = Path::new(env!("CARGO_TARGET_TMPDIR")).join("linked-config.toml");
    std::fs::write(&elsewhere, b"# the operator's\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, "/etc/wbguard/config.toml").unwrap();
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    assert_eq!(owned(elsewhere.to_str().unwrap()), (0o644, "root".into(), "root".into()));
    std::fs::remove_file(&elsewhere).unwrap();
    ok("dpkg", &["-P", "wbguard"]);
    assert!(!exists("/etc/wbguard") && !exists("/var/lib/wbguard"));
}

/// Purges what the package test installed if it fails half way, so that
/// no test configuration is left and the next run is not refused.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = run("dpkg", &["-P", "wbguard-dbgsym", "wbguard"]);
        }
    }
}

#[test]
#[ignore = "needs cargo xtask dist's archive: cargo xtask ci runs it"]
fn the_archive_unpacks_runs_and_matches_its_sums() {
    let dist = dist();
    let checked = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&dist).output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    let listed = String::from_utf8_lossy(&checked.stdout).into_owned();
    for name in ["_amd64.deb", "-x86_64-linux.tar.gz", "-x86_64-linux-debug.tar.gz"] {
        assert!(listed.contains(name), "SHA256SUMS has no *{name}: {listed}");
    }

    let archive = artifact("wbguard-", "-x86_64-linux.tar.gz");
    let name = archive.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz").to_owned();
    let version = name.trim_start_matches("wbguard-").trim_end_matches("-x86_64-linux").to_owned();
    let unpacked = tempfile_dir();
    ok("tar", &["-xzf", archive.to_str().unwrap(), "-C", unpacked.to_str().unwrap()]);
    let top = unpacked.join(&name);
    let wbguard = top.join("wbguard");
    assert_eq!(ok(wbguard.to_str().unwrap(), &["--version"]).trim(), format!("wbguard {version}"));
    for file in [
        "README.md",
        "docs/install.md",
        "docs/configuration.md",
        "deploy/wbguard.service",
        "deploy/config.example.toml",
        "deploy/prometheus-alerts.yml",
        "man/wbguard.1",
        "man/wbguard-restart.1",
        "completions/wbguard.bash",
        "completions/_wbguard",
        "completions/wbguard.fish",
    ] {
        assert!(top.join(file).is_file(), "{name}.tar.gz has no {file}");
    }
    assert!(!top.join("cms-sim").exists() && !top.join("deploy/debian").exists());
    let example = top.join("deploy/config.example.toml");
    ok(wbguard.to_str().unwrap(), &["config", "check", "--config", example.to_str().unwrap()]);

    // The debug archive unpacks beside it, where the debug link points.
    let debug = artifact("wbguard-", "-x86_64-linux-debug.tar.gz");
    ok("tar", &["-xzf", debug.to_str().unwrap(), "-C", unpacked.to_str().unwrap()]);
    let link = ok("readelf", &["--string-dump=.gnu_debuglink", wbguard.to_str().unwrap()]);
    assert!(link.contains("wbguard.debug") && top.join("wbguard.debug").is_file(), "{link}");
    std::fs::remove_dir_all(&unpacked).unwrap();
}

/// A fresh folder under the target directory's tmp.
fn tempfile_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[ignore = "needs cargo xtask dist --windows's .exe and mingw-w64's objdump: cargo xtask ci runs it"]
fn the_windows_restart_job_needs_only_what_windows_has() {
    let exe = artifact("wbguard-", "-x86_64-windows.exe");
    let bytes = std::fs::read(&exe).unwrap();
    assert_eq!(&bytes[..2], b"MZ", "{} is not a Windows program", exe.display());
    // What --help says on Windows: the guard and the demo are left out.
    let help = b"This Windows build has analyze, restart, trust, config and status.";
    assert!(bytes.windows(help.len()).any(|window| window == help), "the Windows --help text is not in it");
    let headers = ok("x86_64-w64-mingw32-objdump", &["-p", exe.to_str().unwrap()]);
    let dlls: Vec<String> =
        headers.lines().filter_map(|line| line.trim().strip_prefix("DLL Name: ")).map(str::to_lowercase).collect();
    assert!(dlls.contains(&"kernel32.dll".to_owned()), "{dlls:?}");
    // No MinGW runtime (libgcc_s_seh-1.dll, libwinpthread-1.dll) to ship
    // beside it: only what Windows 10 and later have.
    for dll in &dlls {
        let system = ["kernel32.dll", "ntdll.dll", "msvcrt.dll", "advapi32.dll", "bcrypt.dll", "bcryptprimitives.dll"]
            .contains(&dll.as_str())
            || ["ws2_32.dll", "oleaut32.dll", "ole32.dll", "userenv.dll", "user32.dll", "secur32.dll", "crypt32.dll"]
                .contains(&dll.as_str())
            || dll.starts_with("api-ms-win-");
        assert!(system, "{} needs {dll}, which Windows does not have", exe.display());
    }
}
