//! The Call Bridge API's part of the configuration: a server's `api` URL,
//! the `[api]` credentials and a server's `api_auth` override.
//!
//! ```toml
//! [api]
//! user = "wbguard"                       # an API user (least rights: see docs/callbridge-api.md)
//! password_env = "WBGUARD_API_PASSWORD"  # the default; or password_file (mode 600)
//! ca_file = "/etc/wbguard/cms-ca.pem"    # verify against this CA instead of pinning
//!
//! [[server]]
//! name = "cms1"
//! mmp = "10.0.0.11"
//! api = "https://10.0.0.11:445"          # the web admin port; http:// only in a lab
//! [server.api_auth]                      # this server only: any of the [api] keys
//! user = "wbguard-cms1"
//! ```
//!
//! Pure data, as the rest of the configuration: the password's place is
//! kept ([`Location`]), never the password; a URL with a user or password
//! in it is refused without repeating it, as it would put a secret where
//! logs and process lists show it.

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::address::HttpUrl;
use super::Dirs;
use crate::secret::Location;

/// The variable the API password is read from when `[api]` names none.
pub const DEFAULT_PASSWORD_ENV: &str = "WBGUARD_API_PASSWORD";

/// `[api]` or a server's `api_auth`, as written: where the API user's
/// credentials are, and how its certificate is verified.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// The API user (basic auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Environment variable holding its password (default
    /// `WBGUARD_API_PASSWORD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding its password (mode 600 or stricter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA (or the certificate itself) to verify the API's
    /// certificate against, host name included, instead of pinning it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where a server's API is: scheme, host and port (the path is always the
/// API's own, `/api/v1/...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiEndpoint {
    /// `https`: over TLS (the only choice outside a lab).
    pub tls: bool,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port: as written, else 443 (https) or 80 (http).
    pub port: u16,
}

impl ApiEndpoint {
    /// `host:port`, an IPv6 address in brackets: the trust file's key.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        HttpUrl { tls: self.tls, host: self.host.clone(), port: self.port, path: "/".into() }.authority()
    }
}

impl std::fmt::Display for ApiEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", if self.tls { "https" } else { "http" }, self.address())
    }
}

/// A server's API, resolved: where it is, who logs in, where the password
/// is, how the certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Where it is.
    pub endpoint: ApiEndpoint,
    /// The API user.
    pub user: String,
    /// Where its password is (fetched when the API is asked).
    pub password: Location,
    /// Verify the certificate against this PEM file instead of the pinned
    /// fingerprint (none: pinned, see `wbguard trust`).
    pub ca_file: Option<PathBuf>,
}

impl ApiSettings {
    /// In words, for `config check` and the restart plan (no secret).
    pub fn describe(&self) -> String {
        let verified = match (&self.endpoint.tls, &self.ca_file) {
            (false, _) => "PLAIN HTTP, no certificate".to_owned(),
            (true, Some(ca)) => format!("certificate verified against {}", ca.display()),
            (true, None) => "certificate pinned (wbguard trust)".to_owned(),
        };
        format!("{} as {}, password from {}, {verified}", self.endpoint, self.user, self.password.describe())
    }
}

/// Reads a server's `api` URL: `https://HOST[:PORT]` (or `http://` for a
/// lab), no user or password, no path but `/`. Errors never repeat the URL.
pub fn endpoint(text: &str, key: &str) -> anyhow::Result<ApiEndpoint> {
    let authority = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        bail!(
            "{key}: the URL holds a user or password, and a password in a URL is a secret anyone reading the \
             configuration or a log would see; write https://HOST:PORT and give the user in [api] user, the \
             password by [api] password_env or password_file"
        );
    }
    let url = HttpUrl::parse(text).map_err(|why| anyhow::anyhow!("{key}: {why}"))?;
    if url.path != "/" || text.contains(['?', '#']) {
        bail!("{key}: the API URL is https://HOST:PORT, with no path (wbguard adds /api/v1/...)");
    }
    Ok(ApiEndpoint { tls: url.tls, host: url.host, port: url.port })
}

/// An API user: not empty, no `:` (basic auth ends the user there), no
/// space or control character.
fn check_user(user: &str, key: &str) -> anyhow::Result<()> {
    if user.is_empty() || user.contains(':') || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "{key}: '{}' is not an API user name (not empty, no ':', spaces or control characters)",
            user.escape_debug()
        );
    }
    Ok(())
}

/// The settings of one server with `api = url`: its `api_auth` keys over
/// `[api]`'s, key by key (the password's two keys as one: a server that
/// names either takes neither from `[api]`). `key` is the server's place
/// in the file (`server[1]`).
pub fn settings(
    url: &str,
    own: Option<&RawApi>,
    shared: Option<&RawApi>,
    key: &str,
    base: &Path,
    dirs: &Dirs,
) -> anyhow::Result<ApiSettings> {
    let endpoint = endpoint(url, &format!("{key}.api"))?;
    let empty = RawApi::default();
    let (own, shared) = (own.unwrap_or(&empty), shared.unwrap_or(&empty));
    let own_key = |name: &str| format!("{key}.api_auth.{name}");
    let user = match (&own.user, &shared.user) {
        (Some(user), _) => {
            check_user(user, &own_key("user"))?;
            user.clone()
        }
        (None, Some(user)) => {
            check_user(user, "api.user")?;
            user.clone()
        }
        (None, None) => bail!("{key}.api: no API user: set [api] user (or user in this server's [server.api_auth])"),
    };
    let (password_from, prefix) = if own.password_env.is_some() || own.password_file.is_some() {
        (own, format!("{key}.api_auth"))
    } else {
        (shared, "api".to_owned())
    };
    let password = match (&password_from.password_env, &password_from.password_file) {
        (Some(_), Some(_)) => bail!("{prefix}: give password_env or password_file, not both"),
        (Some(variable), None) => {
            super::check_variable(variable, &format!("{prefix}.password_env"))?;
            Location::Env(variable.clone())
        }
        (None, Some(path)) => Location::File(dirs.resolve(path, base)),
        (None, None) => Location::Env(DEFAULT_PASSWORD_ENV.into()),
    };
    if own.ca_file.is_some() && !endpoint.tls {
        bail!("{key}.api_auth.ca_file: a CA file is for https://; this API is plain http://");
    }
    // `[api]`'s CA file serves the https servers; a lab's http one has no
    // certificate to verify.
    let ca_file = match endpoint.tls {
        true => own.ca_file.as_ref().or(shared.ca_file.as_ref()).map(|path| dirs.resolve(path, base)),
        false => None,
    };
    Ok(ApiSettings { endpoint, user, password, ca_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = endpoint("https://cms1.example.com:445", "k").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "cms1.example.com", 445));
        assert_eq!(
            (e.address(), e.to_string()),
            ("cms1.example.com:445".into(), "https://cms1.example.com:445".into())
        );
        let e = endpoint("https://[::1]/", "k").unwrap();
        assert_eq!((e.address(), e.authority()), ("[::1]:443".into(), "[::1]".into()));
        assert!(!endpoint("http://10.0.0.1:8080", "k").unwrap().tls);
        for bad in ["ftp://h", "h:443", "https://h/api/v1", "https://h/?x", "https://h:99999", "https://"] {
            let error = format!("{:#}", endpoint(bad, "server[0].api").unwrap_err());
            assert!(error.contains("server[0].api"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_not_repeated() {
        for url in ["https://admin:s3cret@cms1:445", "https://admin:s3cret@cms1:445/", "https://s3cret@cms1"] {
            let error = format!("{:#}", endpoint(url, "server[0].api").unwrap_err());
            assert!(error.contains("server[0].api") && error.contains("password"), "{error}");
            assert!(!error.contains("s3cret") && !error.contains("admin:"), "{error}");
        }
    }

    #[test]
    fn a_server_override_wins_key_by_key() {
        let shared = RawApi {
            user: Some("wbguard".into()),
            password_file: Some("api-pw".into()),
            ca_file: Some("ca.pem".into()),
            ..RawApi::default()
        };
        let dirs = Dirs::default();
        let base = Path::new("/etc/wbguard");
        let s = settings("https://h:445", None, Some(&shared), "server[0]", base, &dirs).unwrap();
        assert_eq!(s.user, "wbguard");
        assert_eq!(s.password, Location::File("/etc/wbguard/api-pw".into()));
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/wbguard/ca.pem")));
        let own = RawApi { password_env: Some("CMS2_PW".into()), ..RawApi::default() };
        let s = settings("https://h", Some(&own), Some(&shared), "server[1]", base, &dirs).unwrap();
        assert_eq!((s.user.as_str(), &s.password), ("wbguard", &Location::Env("CMS2_PW".into())));
        // Nothing said: the default variable; no user: an error naming the key.
        let only_user = RawApi { user: Some("u".into()), ..RawApi::default() };
        let s = settings("https://h", None, Some(&only_user), "server[0]", base, &dirs).unwrap();
        assert_eq!(s.password, Location::Env(DEFAULT_PASSWORD_ENV.into()));
        assert!(s.describe().contains("$WBGUARD_API_PASSWORD"), "{}", s.describe());
        let error = format!("{:#}", settings("https://h", None, None, "server[0]", base, &dirs).unwrap_err());
        assert!(error.contains("server[0].api") && error.contains("user"), "{error}");
        let both = RawApi { password_env: Some("A".into()), ..shared.clone() };
        assert!(format!("{:#}", settings("https://h", None, Some(&both), "s", base, &dirs).unwrap_err())
            .contains("api: give"));
        let colon = RawApi { user: Some("a:b".into()), ..RawApi::default() };
        let error = format!("{:#}", settings("https://h", Some(&colon), None, "server[2]", base, &dirs).unwrap_err());
        assert!(error.contains("server[2].api_auth.user"), "{error}");
        assert_eq!(settings("http://h", None, Some(&shared), "s", base, &dirs).unwrap().ca_file, None);
        let own_ca = RawApi { ca_file: Some("ca.pem".into()), ..RawApi::default() };
        let error = settings("http://h", Some(&own_ca), Some(&shared), "server[3]", base, &dirs).unwrap_err();
        assert!(format!("{error:#}").contains("server[3].api_auth.ca_file"), "{error:#}");
    }
}
