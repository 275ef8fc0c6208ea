//! `wbguard demo` on its own: it ends by itself, prints the comparison and
//! writes it as the JSON that `--summary-json` promises; its guard hears
//! the simulated call bridges' CDRs.

use super::{s, wbguard};

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "slow unoptimized (its month comparison takes over 10 minutes): cargo xtask ci runs it in release"
)]
fn the_demo_ends_by_itself_and_writes_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out =
        wbguard(&["demo", "--duration", "5s", "--listen-http", "127.0.0.1:0", "--summary-json", s(&summary)], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Status page: http://127.0.0.1:") && stdout.contains("REFUSED JOINS"), "{stdout}");
    // The call bridges post their CDRs to the guard, which counts live calls
    // from them once their API has vouched for the calls before the first
    // post (seconds in, or at the first quiet night at the demo's speed).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CDRs on http://127.0.0.1:") && stderr.contains("CDR from cms1"), "{stderr}");
    assert!(stdout.contains("| CMA calls"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let strategies = json["strategies"].as_array().unwrap();
    let names: Vec<&str> = strategies.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let expected = [
        "no workaround",
        "Cisco's script, Saturdays 02:00",
        "Cisco's script, daily 03:00",
        "wbguard",
        "wbguard with CDRs",
        "wbguard with drain",
    ];
    assert_eq!(names, expected);
    let all_day = json["strategies_24h"].as_array().unwrap();
    assert_eq!(all_day.iter().map(|s| s["name"].as_str().unwrap()).collect::<Vec<_>>(), expected);
    for strategy in strategies.iter().chain(all_day) {
        for field in ["refused_joins", "dropped_calls", "restarts", "drains"] {
            assert!(strategy[field].is_u64(), "{strategy}");
        }
    }
    assert!(stdout.contains("Around the clock") && stdout.contains("wbguard with drain"), "{stdout}");
    let (none, cisco) = (&strategies[0], &strategies[1]);
    for guard in &strategies[3..] {
        // Far fewer refusals than Cisco's weekly script.
        assert!(guard["refused_joins"].as_u64().unwrap() * 100 < cisco["refused_joins"].as_u64().unwrap(), "{json}");
    }
    assert!(
        cisco["refused_joins"].as_u64() > Some(0) && none["refused_joins"].as_u64() > cisco["refused_joins"].as_u64()
    );
    // A page address that is taken is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = wbguard(&["demo", "--duration", "1s", "--listen-http", &address], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&address), "{}", String::from_utf8_lossy(&out.stderr));
}
