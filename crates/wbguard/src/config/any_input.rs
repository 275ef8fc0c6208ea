//! Property tests: [`Config::parse`] answers any text with a configuration
//! or an error, never a panic.
//!
//! Three kinds of input: arbitrary text; documents that set every known
//! key to values of arbitrary types; and a valid document with a few keys
//! replaced by arbitrary values, so that every check after the first is
//! reached too (a document wrong everywhere stops at its first error).

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;
use toml::{Table, Value};

use super::{Config, Dirs};

/// Parses as `wbguard` would; only a panic fails.
fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/wbguard/config.toml"), &Dirs::default()).map_err(|e| format!("{e:#}"))
}

/// Strings that reach deep into the checks: plausible values, hostile
/// ones, and junk.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "",
            " ",
            "admin",
            "exec",
            "shell",
            "strict",
            "accept-new",
            "observe",
            "enforce",
            "generic",
            "webex",
            "slack",
            "decision",
            "restart",
            "failure",
            "lockout",
            "UTC",
            "Europe/Berlin",
            "Australia/Lord_Howe",
            "America/Sao_Paulo",
            "Mars/Base",
            "cms1",
            "CMS1",
            "10.0.0.1",
            "::1",
            "[::1]:22",
            "h:99999",
            "h:0",
            "[::1",
            "udp://127.0.0.1:514",
            "tcp://[::]:0",
            "tls://0.0.0.0:6514",
            "udp://localhost:514",
            "127.0.0.1:0",
            "127.0.0.1:9149",
            "http://[::1",
            "https://u:p@h:99999/",
            "https://h/x?y#z",
            "0 2 31 2 *",
            "0 2 30 2 *",
            "0 2 29 2 *",
            "0 2 29 2 +1",
            "* * * * *",
            "59 23 31 12 7",
            "1h30m",
            "9999999999999999s",
            "99999999999999h",
            "0m",
            "59s",
            "7d",
            "7d1s",
            "30d",
            "\0",
            "a=b",
            "é",
            "~/x",
            "../../etc/passwd",
        ])
        .prop_map(String::from),
        (any::<u64>(), select(vec!["s", "m", "h", "d", "", "x", "h1"])).prop_map(|(n, unit)| format!("{n}{unit}")),
        cron(),
        url(),
        "[ -~]{0,40}",
        "\\PC{0,16}",
        any::<String>(),
    ]
}

/// Five (or thereabouts) cron fields of plausible and impossible parts.
fn cron() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("*".to_owned()),
        (0u32..100).prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..70).prop_map(|n| format!("*/{n}")),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}/{b}")),
        (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a},{b}")),
        select(vec!["L", "W", "?", "5#5", "1L", "15W", "+1", "+L", "MON-FRI", "JAN", "L-3", "LW", "5#0", "7#6"])
            .prop_map(String::from),
    ];
    prop::collection::vec(field, 4..=7).prop_map(|fields| fields.join(" "))
}

/// http(s) URLs, whole and broken.
fn url() -> impl Strategy<Value = String> {
    (
        select(vec!["https://", "http://", "HTTP://", "ftp://", "", "https:/"]),
        select(vec!["", "user:s3cret@", "@", "a@b@"]),
        select(vec!["hooks.example.com", "[::1]", "[::1", "::1", "", "h h", "[zz]", "10.0.0.1"]),
        prop_oneof![Just(String::new()), any::<u32>().prop_map(|p| format!(":{p}")), Just(":".to_owned())],
        "[ -~]{0,12}",
    )
        .prop_map(|(scheme, user, host, port, rest)| format!("{scheme}{user}{host}{port}{rest}"))
}

fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        0i64..20_000,
        select(vec![
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1,
            149,
            3650,
            3651,
            10_000,
            10_001,
            65_535,
            65_536,
            i64::from(u32::MAX),
            i64::from(u32::MAX) + 1
        ]),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        select(vec![
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e308,
            -0.0,
            0.05,
            0.1,
            86_400.0,
            86_400.1,
            1e20
        ]),
    ]
}

/// Any TOML value, nested a little.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        integer().prop_map(Value::Integer),
        float().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|map| Value::Table(map.into_iter().collect())),
        ]
    })
}

/// The type a key wants.
#[derive(Clone, Copy)]
enum Kind {
    /// One of these words (or, now and then, any text).
    Word(&'static [&'static str]),
    /// A list of such words.
    Words(&'static [&'static str]),
    Text,
    Integer,
    Seconds,
    Flag,
    Texts,
}

/// A value for a key of `kind`: mostly of that type (so that the checks
/// past the type are reached), sometimes of any. A document has some forty
/// keys, and one of the wrong type ends it: so only one in thirty is.
fn typed(kind: Kind) -> BoxedStrategy<Value> {
    let word = |words: &'static [&'static str]| prop_oneof![8 => select(words).prop_map(|w| Value::String(w.to_owned())), 1 => text().prop_map(Value::String)];
    let right = match kind {
        Kind::Word(words) => word(words).boxed(),
        Kind::Words(words) => prop::collection::vec(word(words), 0..4).prop_map(Value::Array).boxed(),
        Kind::Text => text().prop_map(Value::String).boxed(),
        Kind::Integer => integer().prop_map(Value::Integer).boxed(),
        Kind::Seconds => prop_oneof![float().prop_map(Value::Float), integer().prop_map(Value::Integer)].boxed(),
        Kind::Flag => any::<bool>().prop_map(Value::Boolean).boxed(),
        Kind::Texts => prop::collection::vec(text().prop_map(Value::String), 0..3).prop_map(Value::Array).boxed(),
    };
    prop_oneof![30 => right, 1 => value()].boxed()
}

/// A table that may set each of `keys`.
fn section(keys: &[(&'static str, Kind)]) -> BoxedStrategy<Table> {
    let fields: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = keys
        .iter()
        .map(|&(key, kind)| proptest::option::weighted(0.8, typed(kind).prop_map(move |v| (key, v))).boxed())
        .collect();
    fields.prop_map(|fields| fields.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)).collect()).boxed()
}

const CHANNELS: &[&str] = &["exec", "shell"];

const AUTH: &[(&str, Kind)] = &[
    ("password_env", Kind::Text),
    ("password_file", Kind::Text),
    ("password_prompt", Kind::Flag),
    ("key_file", Kind::Text),
    ("key_passphrase_env", Kind::Text),
    ("agent", Kind::Flag),
];

const TOP: &[(&str, Kind)] = &[
    ("user", Kind::Text),
    ("mode", Kind::Word(CHANNELS)),
    ("host_key_policy", Kind::Word(&["strict", "accept-new"])),
    ("known_hosts", Kind::Text),
    ("state_dir", Kind::Text),
];

const TIMEOUTS: &[(&str, Kind)] =
    &[("connect", Kind::Seconds), ("auth", Kind::Seconds), ("command", Kind::Seconds), ("verify", Kind::Seconds)];

const SERVER: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("mmp", Kind::Text),
    ("log_host", Kind::Text),
    ("webbridge_url", Kind::Text),
    ("user", Kind::Text),
    ("mode", Kind::Word(CHANNELS)),
    ("legacy_algorithms", Kind::Flag),
    ("syslog_from", Kind::Texts),
];

const WATCH: &[(&str, Kind)] = &[
    ("listen_syslog", Kind::Texts),
    ("listen_http", Kind::Text),
    ("tls_certificate", Kind::Text),
    ("tls_key", Kind::Text),
    ("follow", Kind::Texts),
    ("relays", Kind::Texts),
    ("log_timezone", Kind::Text),
    ("retention_days", Kind::Integer),
    ("future_tolerance", Kind::Text),
    ("restart_token_env", Kind::Text),
];

const POLICY: &[(&str, Kind)] = &[
    ("mode", Kind::Word(&["observe", "enforce"])),
    ("leak_at_least", Kind::Integer),
    ("lockout_before_next_window", Kind::Flag),
    ("at_limit", Kind::Flag),
    ("max_dropped_calls", Kind::Integer),
    ("min_interval", Kind::Text),
    ("stale_after", Kind::Text),
    ("limit", Kind::Integer),
];

const WINDOW: &[(&str, Kind)] =
    &[("cron", Kind::Text), ("duration", Kind::Text), ("timezone", Kind::Text), ("max_dropped_calls", Kind::Integer)];

const WEBHOOK: &[(&str, Kind)] = &[
    ("url", Kind::Text),
    ("url_env", Kind::Text),
    ("url_file", Kind::Text),
    ("format", Kind::Word(&["generic", "webex", "slack"])),
    ("events", Kind::Words(&["decision", "restart", "failure", "lockout"])),
];

/// A document that may set every known key, each to anything.
fn document() -> impl Strategy<Value = String> {
    let server = (section(SERVER), proptest::option::of(section(AUTH))).prop_map(|(mut server, auth)| {
        if let Some(auth) = auth {
            server.insert("auth".into(), Value::Table(auth));
        }
        Value::Table(server)
    });
    let policy = (section(POLICY), prop::collection::vec(section(WINDOW).prop_map(Value::Table), 0..3)).prop_map(
        |(mut policy, windows)| {
            if !windows.is_empty() {
                policy.insert("window".into(), Value::Array(windows));
            }
            policy
        },
    );
    (
        section(TOP),
        proptest::option::of(section(AUTH)),
        proptest::option::of(section(TIMEOUTS)),
        prop::collection::vec(server, 0..4),
        proptest::option::of(section(WATCH)),
        proptest::option::of(policy),
        prop::collection::vec(section(WEBHOOK).prop_map(Value::Table), 0..3),
    )
        .prop_map(|(mut top, auth, timeouts, servers, watch, policy, webhooks)| {
            for (key, table) in [("auth", auth), ("timeouts", timeouts), ("watch", watch), ("policy", policy)] {
                if let Some(table) = table {
                    top.insert(key.into(), Value::Table(table));
                }
            }
            if !servers.is_empty() {
                top.insert("server".into(), Value::Array(servers));
            }
            if !webhooks.is_empty() {
                top.insert("webhook".into(), Value::Array(webhooks));
            }
            toml::to_string(&top).unwrap_or_default()
        })
}

/// A valid configuration that sets every key.
const VALID: &str = r#"
user = "admin"
mode = "exec"
host_key_policy = "strict"
known_hosts = "known_hosts"
state_dir = "state"
[auth]
password_env = "WBGUARD_MMP_PASSWORD"
[timeouts]
connect = 10
auth = 15.5
command = 60
verify = 120
[[server]]
name = "cms1"
mmp = "10.0.0.1:22"
log_host = "cms01"
webbridge_url = "https://join.example.com/"
user = "admin"
mode = "shell"
legacy_algorithms = false
syslog_from = ["10.0.1.1"]
[server.auth]
agent = true
key_file = "id_ed25519"
key_passphrase_env = "WBGUARD_KEY_PASSPHRASE"
password_env = "WBGUARD_CMS1_PASSWORD"
password_file = "cms1.password"
password_prompt = false
[[server]]
name = "cms2"
mmp = "[::1]:2222"
[watch]
listen_syslog = ["udp://127.0.0.1:5514", "tls://[::1]:6514"]
listen_http = "127.0.0.1:9149"
tls_certificate = "syslog.crt"
tls_key = "syslog.key"
follow = ["cms.log"]
relays = ["10.0.0.5"]
log_timezone = "Europe/Berlin"
retention_days = 90
restart_token_env = "WBGUARD_RESTART_TOKEN"
[policy]
mode = "observe"
leak_at_least = 100
lockout_before_next_window = true
at_limit = true
max_dropped_calls = 0
min_interval = "1h"
stale_after = "10m"
limit = 149
[[policy.window]]
cron = "0 2 * * 6"
duration = "2h"
timezone = "Europe/Berlin"
max_dropped_calls = 10
[[webhook]]
url = "https://hooks.example.com/services/T0/B0/x"
format = "slack"
events = ["restart", "failure"]
[[webhook]]
url_env = "WBGUARD_HOOK"
"#;

/// Where a key is in [`VALID`]: table keys and array indexes.
type KeyPath = &'static [&'static str];

/// Every key of [`VALID`] and every table that holds some, so that a whole
/// section can be replaced too.
const PATHS: &[KeyPath] = &[
    &["user"],
    &["mode"],
    &["host_key_policy"],
    &["known_hosts"],
    &["state_dir"],
    &["auth"],
    &["auth", "password_env"],
    &["timeouts"],
    &["timeouts", "connect"],
    &["timeouts", "auth"],
    &["timeouts", "command"],
    &["timeouts", "verify"],
    &["server"],
    &["server", "0"],
    &["server", "0", "name"],
    &["server", "0", "mmp"],
    &["server", "0", "log_host"],
    &["server", "0", "webbridge_url"],
    &["server", "0", "user"],
    &["server", "0", "mode"],
    &["server", "0", "legacy_algorithms"],
    &["server", "0", "syslog_from"],
    &["server", "0", "auth"],
    &["server", "0", "auth", "agent"],
    &["server", "0", "auth", "key_file"],
    &["server", "0", "auth", "key_passphrase_env"],
    &["server", "0", "auth", "password_env"],
    &["server", "0", "auth", "password_file"],
    &["server", "0", "auth", "password_prompt"],
    &["server", "1", "name"],
    &["server", "1", "mmp"],
    &["server", "1", "log_host"],
    &["watch"],
    &["watch", "listen_syslog"],
    &["watch", "listen_http"],
    &["watch", "tls_certificate"],
    &["watch", "tls_key"],
    &["watch", "follow"],
    &["watch", "relays"],
    &["watch", "log_timezone"],
    &["watch", "retention_days"],
    &["watch", "future_tolerance"],
    &["watch", "restart_token_env"],
    &["policy"],
    &["policy", "mode"],
    &["policy", "leak_at_least"],
    &["policy", "lockout_before_next_window"],
    &["policy", "at_limit"],
    &["policy", "max_dropped_calls"],
    &["policy", "min_interval"],
    &["policy", "stale_after"],
    &["policy", "limit"],
    &["policy", "window"],
    &["policy", "window", "0"],
    &["policy", "window", "0", "cron"],
    &["policy", "window", "0", "duration"],
    &["policy", "window", "0", "timezone"],
    &["policy", "window", "0", "max_dropped_calls"],
    &["webhook"],
    &["webhook", "0", "url"],
    &["webhook", "0", "format"],
    &["webhook", "0", "events"],
    &["webhook", "1", "url_env"],
    &["webhook", "1", "url_file"],
    &["unknown_key"],
    &["watch", "unknown_key"],
];

/// Sets the value at `path` under `here` (a missing last key is added; a
/// missing parent leaves it as it is).
fn set(here: &mut Value, path: &[&str], new: Value) {
    let Some((first, rest)) = path.split_first() else {
        *here = new;
        return;
    };
    let child = match here {
        Value::Table(table) if rest.is_empty() => {
            table.insert((*first).to_owned(), new);
            return;
        }
        Value::Table(table) => table.get_mut(*first),
        Value::Array(items) => first.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    };
    if let Some(child) = child {
        set(child, rest, new);
    }
}

/// [`VALID`] with a few keys (or sections) set to anything.
fn altered() -> impl Strategy<Value = String> {
    // Strings are weighted up: most keys want one, and a string gets past
    // the type to the checks.
    let anything = prop_oneof![value(), text().prop_map(Value::String)];
    prop::collection::vec((select(PATHS), anything), 1..4).prop_map(|changes| {
        let mut document = Value::Table(VALID.parse().expect("VALID parses"));
        for (path, value) in changes {
            set(&mut document, path, value);
        }
        toml::to_string(&document).unwrap_or_default()
    })
}

#[test]
fn the_valid_document_is_valid() {
    let config = parse(VALID).unwrap();
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.guard.webhooks.len(), 2);
    assert_eq!(config.guard.policy.windows.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_parsed_or_refused(text in prop_oneof![text(), "[\\[\\]a-z_=\" .0-9\n#{},:-]{0,300}", "\\PC{0,200}"]) {
        let _ = parse(&text);
    }

    #[test]
    fn any_value_of_any_key_is_parsed_or_refused(text in document()) {
        let _ = parse(&text);
    }

    #[test]
    fn a_valid_document_with_any_key_changed_is_parsed_or_refused_by_name(text in altered()) {
        if let Err(error) = parse(&text) {
            prop_assert!(!error.trim().is_empty());
        }
    }
}
