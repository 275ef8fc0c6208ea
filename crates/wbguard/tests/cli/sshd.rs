//! `wbguard restart` against a real OpenSSH sshd on loopback, whose forced
//! command plays the MMP: password and key authentication, unknown and
//! changed host keys, and a host that is down while the others succeed.
//!
//! Needs Debian's openssh-server (`.ci/run` installs it) and root, to run
//! sshd and to make the MMP user with a password.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{s, wbguard_env};

const USER: &str = "wbguard-mmp";
const PASSWORD: &str = "Tr0ub4dor&3-mmp";

/// The MMP user, with its password (made once).
fn mmp_user() {
    let exists = Command::new("id").arg(USER).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success();
    if !exists {
        let made = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", USER])
            .status()
            .expect("useradd (run the tests as root)");
        let there = made.success() || Command::new("id").arg(USER).status().unwrap().success();
        assert!(there, "useradd failed: run the tests as root");
    }
    let mut chpasswd =
        Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd (run the tests as root)");
    std::io::Write::write_all(chpasswd.stdin.as_mut().unwrap(), format!("{USER}:{PASSWORD}\n").as_bytes()).unwrap();
    assert!(chpasswd.wait().unwrap().success(), "chpasswd failed: run the tests as root");
}

/// A new ed25519 key pair without passphrase at `path` (and `path.pub`),
/// made by OpenSSH's own ssh-keygen.
fn ssh_keygen(path: &Path) {
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(made.success(), "ssh-keygen failed");
}

struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sshd {
    /// An sshd on a free loopback port with a fresh host key.
    fn start(dir: &Path, name: &str, authorized_key: &Path) -> Sshd {
        let port = super::free_port();
        Self::start_on(dir, name, authorized_key, port, true)
    }

    fn start_on(dir: &Path, name: &str, authorized_key: &Path, port: u16, new_key: bool) -> Sshd {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let host_key = dir.join("host_key");
        if new_key {
            let _ = std::fs::remove_file(&host_key);
            let _ = std::fs::remove_file(dir.join("host_key.pub"));
            ssh_keygen(&host_key);
        }
        let script = dir.join("mmp.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# Plays the MMP: one command per connection.\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  version) echo 'version : 2.9.7' ;;\n  'webbridge restart') echo \"$(date +%s) $(id -un)\" >> {}/restarts ;;\n  *) echo \"FAILURE: unknown command '$SSH_ORIGINAL_COMMAND'\"; exit 1 ;;\nesac\n",
                dir.display()
            ),
        )
        .unwrap();
        let restarts = dir.join("restarts");
        std::fs::write(&restarts, "").unwrap_or(());
        for path in [&dir, &script, &restarts] {
            let mode = if path.is_dir() || path == &script { "0755" } else { "0666" };
            Command::new("chmod").args([mode]).arg(path).status().unwrap();
        }
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin no\nAllowUsers {USER}\nForceCommand {}\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized_key.display(),
                script.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/sshd (apt-get install openssh-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { child, port, dir }
    }

    fn restarts(&self) -> usize {
        std::fs::read_to_string(self.dir.join("restarts")).unwrap_or_default().lines().count()
    }

    fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.join("host_key.pub"))
            .output()
            .expect("ssh-keygen (apt-get install openssh-client)");
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_owned()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs sshd, ssh-keygen and root: cargo xtask ci runs it"]
fn against_openssh_sshd_password_key_host_keys_and_a_host_down() {
    mmp_user();
    let dir = tempfile::tempdir().unwrap();
    // sshd must read the key files as root and run the script as the user.
    Command::new("chmod").arg("0755").arg(dir.path()).status().unwrap();
    let key = dir.path().join("id_ed25519");
    ssh_keygen(&key);
    let authorized = dir.path().join("id_ed25519.pub");
    Command::new("chmod").arg("0644").arg(&authorized).status().unwrap();
    let with_password = Sshd::start(dir.path(), "a", &authorized);
    let with_key = Sshd::start(dir.path(), "b", &authorized);
    let down = super::free_port();

    let config = dir.path().join("wbguard.toml");
    std::fs::write(
        &config,
        format!(
            "user = \"{USER}\"\nstate_dir = {:?}\nknown_hosts = {:?}\n[timeouts]\nconnect = 3\n[auth]\npassword_env = \"TEST_SSHD_PW\"\n\n\
             [[server]]\nname = \"a\"\nmmp = \"127.0.0.1:{}\"\n\n[[server]]\nname = \"b\"\nmmp = \"127.0.0.1:{}\"\n[server.auth]\nkey_file = {:?}\n\n\
             [[server]]\nname = \"down\"\nmmp = \"127.0.0.1:{down}\"\n",
            s(&dir.path().join("state")),
            s(&dir.path().join("known_hosts")),
            with_password.port,
            with_key.port,
            s(&key)
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = wbguard_env(args, None, &[("TEST_SSHD_PW", PASSWORD)]);
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };

    // Unknown host keys: refused, with the fingerprint OpenSSH shows.
    let (code, out) = run(&["restart", "--config", s(&config), "--only", "a"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains(&with_password.fingerprint()), "{out}");
    let (code, out) = run(&["trust", "--yes", "--config", s(&config), "a", "b"]);
    assert_eq!(code, 0, "{out}");

    // Password on a, key on b, the third host down: the others succeed.
    let (code, out) = run(&["restart", "--config", s(&config), "--keep-going"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!((with_password.restarts(), with_key.restarts()), (1, 1), "{out}");
    assert!(out.contains("down: FAILED"), "{out}");
    assert!(!out.contains(PASSWORD));
    let log = std::fs::read_to_string(dir.path().join("state/webbridge_restart_logs.txt")).unwrap();
    assert_eq!(log.matches("restarted successfully").count(), 2, "{log}");
    assert!(log.contains(&format!("Failed to restart webbridge on server 127.0.0.1:{down}. Error:")), "{log}");

    // A wrong password is an authentication failure, not a hang.
    let out = wbguard_env(&["restart", "--config", s(&config), "--only", "a"], None, &[("TEST_SSHD_PW", "wrong")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("authentication as wbguard-mmp failed"));

    // The server is reinstalled: same address, new host key. Refused loudly.
    let port = with_password.port;
    drop(with_password);
    let reinstalled = Sshd::start_on(dir.path(), "a", &authorized, port, true);
    let (code, out) = run(&["restart", "--config", s(&config), "--only", "a"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("HOST KEY CHANGED") && out.contains(&reinstalled.fingerprint()), "{out}");
    assert_eq!(reinstalled.restarts(), 0);
}
