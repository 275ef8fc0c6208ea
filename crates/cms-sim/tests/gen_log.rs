//! End-to-end tests of `cms-sim gen-log`: the real binary, real files.

use std::process::Command;

fn gen_log(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cms-sim")).arg("gen-log").args(args).output().expect("cms-sim starts")
}

#[test]
fn writes_log_and_truth_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let run = |log: &str, truth: &str, seed: &str| {
        let output =
            gen_log(&["--days", "0.5", "--servers", "2", "--seed", seed, "-o", &path(log), "--truth", &path(truth)]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (std::fs::read(path(log)).unwrap(), std::fs::read_to_string(path(truth)).unwrap())
    };
    let (log_a, truth_a) = run("a.log", "a.jsonl", "5");
    let (log_b, _) = run("b.log", "b.jsonl", "5");
    let (log_c, _) = run("c.log", "c.jsonl", "6");
    assert_eq!(log_a, log_b);
    assert_ne!(log_a, log_c);

    let last: serde_json::Value = serde_json::from_str(truth_a.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["bytes"], log_a.len());
    assert_eq!(last["end"].as_str().unwrap().get(..13), Some("2024-03-04T12"));
    // The file looks written when its last line was.
    let modified: chrono::DateTime<chrono::Utc> = std::fs::metadata(path("a.log")).unwrap().modified().unwrap().into();
    assert_eq!(modified.to_rfc3339().get(..13), Some("2024-03-04T12"));
    let text = String::from_utf8(log_a).unwrap();
    assert!(text.contains("[DEBUGGING] Stats ") && text.contains("STATS: {\"callLegsPS\""));
}

#[test]
fn size_and_bad_arguments() {
    let output = gen_log(&["--size", "300K", "--servers", "1"]);
    assert!(output.status.success());
    let size = output.stdout.len();
    assert!((300 << 10..(300 << 10) + 4096).contains(&size), "{size}");

    let output = gen_log(&["--release", "4.0"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("4.0"));
    let output = gen_log(&["--restart-at", "someday"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("someday"));
}

#[test]
fn release_3_does_not_leak() {
    let output = gen_log(&["--days", "1", "--servers", "1", "--release", "3.x", "--leak-probability", "1"]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("[DEBUGGING] Stats"), "Web Bridge 3 writes no Web Bridge 2 stats");
    assert!(text.contains("STATS: "));
}
