//! The MMP commands the simulator understands, and what they print.
//!
//! Output imitates the MMP's style: settings as `Name : value` lines,
//! configuration results as `SUCCESS:` / `FAILURE:` lines. The output of
//! `webbridge restart` is undocumented for real CMS; the simulator prints
//! nothing on success, as a tool must not rely on any text there.

use std::fmt::Write as _;

use super::world::{CommandOutput, World};
use crate::scenario::Release;

const HELP: &str = "\
Commands:
  help                    this list
  version                 software version
  callbridge              Call Bridge settings
  webbridge               Web Bridge 2 settings and status (releases up to 2.9)
  webbridge restart       restart Web Bridge 2
  webbridge3              Web Bridge 3 settings (2.9 and later)
  webbridge3 restart      restart Web Bridge 3
  syslog                  recent local log lines
  exit                    end the session
";

/// Runs `words` on server `i`.
pub(super) fn run(world: &mut World, i: usize, words: &[&str], user: &str, source: &str) -> CommandOutput {
    let release = world.servers()[i].release;
    let ok = |text: String| CommandOutput { text, status: 0 };
    let failure = |text: &str| CommandOutput { text: format!("FAILURE: {text}\n"), status: 1 };
    match words {
        [] => ok(String::new()),
        ["help"] => ok(HELP.to_owned()),
        ["version"] => ok(format!("version : {}\n", release.version())),
        ["callbridge"] => ok("Listening interfaces        : a\nPreferred interface for SIP traffic : none\n\
                             Key file                    : callbridge.key\nCertificate file            : callbridge.crt\n"
            .to_owned()),
        ["webbridge"] if release.has_webbridge2() => {
            let status = if world.webbridge_up(i) { "running" } else { "restarting" };
            let mut text = String::new();
            let _ = write!(
                text,
                "Enabled                  : true\nInterface whitelist      : a:443\nKey file                 : webbridge.key\n\
                 Certificate file         : webbridge.crt\nCA Bundle file           : root.crt\nTrust bundle             : none\n\
                 HTTP redirect            : Enabled\nClickonce URL            : none\nStatus                   : {status}\n"
            );
            ok(text)
        }
        ["webbridge", "restart"] if release.has_webbridge2() => {
            world.restart_webbridge(i, user, source);
            ok(String::new())
        }
        ["webbridge", ..] => failure("Web Bridge 2 is not available in this release; use webbridge3"),
        ["webbridge3"] if release != Release::V2_8 => {
            ok("Enabled                  : true\nHTTPS listening ports and interfaces : a:443\nStatus                   : running\n"
                .to_owned())
        }
        ["webbridge3", "restart"] if release != Release::V2_8 => ok(String::new()),
        ["syslog"] => {
            let mut text = String::new();
            for line in world.recent(i) {
                text.push_str(line);
                text.push('\n');
            }
            ok(text)
        }
        _ => failure(&format!("unknown command '{}' (type help for a list)", words.join(" "))),
    }
}
