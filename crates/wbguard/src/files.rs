//! Reading the small text files an operator names (the configuration, a
//! password or webhook file, Cisco's script, known_hosts) with a bound: a
//! path that turns out to be `/dev/zero`, a huge log or a stray binary is
//! an error that names it, never a process that grows until it is killed.

use std::io::Read;
use std::path::Path;

/// The configuration, Cisco's script: far more than any real one.
pub const TEXT_FILE: u64 = 1 << 20;
/// A password, a token, a webhook URL.
pub const SECRET_FILE: u64 = 64 << 10;

/// The whole of `path` as UTF-8, if it holds at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than {} KiB, more than such a file ever holds", limit >> 10),
        ));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_an_error_not_a_hang() {
        let error = read_bounded(Path::new("/dev/zero"), TEXT_FILE).unwrap_err();
        assert!(error.to_string().contains("larger than 1024 KiB"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(10)).unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), "x".repeat(10));
        assert!(read_bounded(&path, 9).is_err());
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_bounded(&path, 10).unwrap_err().to_string().contains("UTF-8"));
    }
}
