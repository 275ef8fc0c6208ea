//! Hostile paths, end to end: the files wbguard writes are never written
//! through a planted link or into a device.

use std::io::Write;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::Path;

use super::{s, wbguard};

/// A web bridge Stats line from `host`, stamped now.
fn stats(host: &str, active: u32) -> String {
    format!(
        "<14>{} {host} webbridge: INFO : [DEBUGGING] Stats {active}, c:{}, d:5",
        chrono::Utc::now().format("%b %e %H:%M:%S"),
        active + 5
    )
}

/// A log of a few records from `hosts`.
fn log(dir: &Path, hosts: &[&str]) -> std::path::PathBuf {
    let path = dir.join("cms.log");
    let mut file = std::fs::File::create(&path).unwrap();
    for (i, host) in hosts.iter().enumerate() {
        writeln!(file, "{}", stats(host, 10 + i as u32)).unwrap();
    }
    path
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_plot_into_a_device_is_refused_and_the_device_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path(), &["cms1"]);
    let output = wbguard(&["analyze", "--format", "json", "--plot", "/dev/full", s(&path)], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("/dev/full") && stderr(&output).contains("a device"), "{}", stderr(&output));
    assert!(std::fs::symlink_metadata("/dev/full").unwrap().file_type().is_char_device());
}

#[test]
fn a_planted_link_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = log(dir.path(), &["cms1"]);
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    // The old name of the temporary file, planted beside the chart.
    let chart = dir.path().join("out.svg");
    symlink(&victim, dir.path().join("out.svg.tmp")).unwrap();
    let output = wbguard(&["analyze", "--format", "json", "--plot", s(&chart), s(&path)], None);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // The chart itself a link: refused, not written through, not replaced.
    let linked = dir.path().join("linked.svg");
    symlink(&victim, &linked).unwrap();
    let output = wbguard(&["analyze", "--format", "json", "--plot", s(&linked), s(&path)], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("linked.svg") && stderr(&output).contains("a symbolic link"));
    assert!(std::fs::symlink_metadata(&linked).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // No temporary file left behind, whatever happened.
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["cms.log", "linked.svg", "out.svg", "out.svg.tmp", "victim.txt"]);
}

#[test]
fn the_restart_log_is_not_appended_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, state.join("webbridge_restart_logs.txt")).unwrap();
    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[auth]\npassword_env = \"WBGUARD_TEST_UNSET\"\n\
             [[server]]\nname = \"cms1\"\nmmp = \"127.0.0.1:1\"\n",
            s(&state)
        ),
    )
    .unwrap();
    let output = wbguard(&["--config", s(&config), "restart", "--force"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("webbridge_restart_logs.txt") && stderr(&output).contains("a symbolic link"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}
