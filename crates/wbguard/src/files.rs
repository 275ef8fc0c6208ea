//! The files wbguard reads and writes, handled so that a hostile or
//! unlucky path cannot turn a write into damage or a read into a hang.
//!
//! Reading: the small text files an operator names (the configuration, a
//! password or webhook file, Cisco's script, known_hosts) are read with a
//! bound: a path that turns out to be `/dev/zero`, a huge log or a stray
//! binary is an error that names it, never a process that grows until it
//! is killed.
//!
//! Writing: a file wbguard replaces (the chart, the demo's summary, the
//! manual pages) is written whole to a temporary file created exclusively
//! beside it (`O_EXCL`, a random name: never an existing file, never a
//! planted link) and renamed over it, so nothing is written through a link
//! and a reader never sees half a file. A file wbguard appends to (the
//! restart log and audit, known_hosts, the restart lock) is opened without
//! following a link in its last component (`O_NOFOLLOW`). Both refuse a
//! target that is not a regular file, naming what it is: a device
//! (`/dev/full`), a FIFO, a directory, or a symbolic link. A link is
//! refused rather than replaced or written through: it was put there on
//! purpose, by the operator or by someone else, and either way the
//! operator should name the real file.
//!
//! On Windows (the [`os`] module is the one place that differs): the
//! temporary file is created exclusively too (`CREATE_NEW`), and renamed
//! over the target (`MoveFileEx`, replacing it). A file appended to is
//! opened with `FILE_FLAG_OPEN_REPARSE_POINT`, Windows' `O_NOFOLLOW`: a
//! symbolic link or junction is opened as itself, never followed, and then
//! refused like any file that is not a regular one (a directory, a device,
//! a pipe). There are no modes: a new file, or a replaced one, takes the
//! permissions its folder passes on (under `%LOCALAPPDATA%` and
//! `%APPDATA%`: its user, SYSTEM and Administrators only), so the `mode`
//! a caller asks for means nothing there.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::path::Path;

pub use os::{read_at, stat, Identity};

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

/// Replaces (or creates) `path` with `bytes`: written and synced to a new
/// temporary file in the same directory, then renamed over `path`.
/// Refuses a `path` that exists and is not a regular file.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let existing = match std::fs::symlink_metadata(path) {
        Ok(meta) => Some(regular(meta)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "it does not name a file"));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    // tempfile opens with O_CREAT | O_EXCL under a fresh random name, so
    // an existing file or link at that name is never opened.
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp").rand_bytes(12);
    os::keep_permissions(&mut builder, existing.as_ref());
    let mut temporary = builder.tempfile_in(dir)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    // On failure the temporary file is removed as it is dropped.
    temporary.persist(path).map_err(|e| e.error)?;
    // The rename itself, durable; a file system that cannot sync a
    // directory still has the file.
    let _ = File::open(dir).and_then(|dir| dir.sync_all());
    Ok(())
}

/// Opens `path` for appending, creating it with `mode` (less the umask;
/// on Windows, the folder's permissions instead). Refuses a link in its
/// last component and anything but a regular file; never blocks on a FIFO.
pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
    let file = os::open_append(path, mode)?;
    regular(file.metadata()?)?;
    Ok(file)
}

/// `meta` if it is a regular file's, else an error saying what it is.
fn regular(meta: Metadata) -> std::io::Result<Metadata> {
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(meta);
    }
    let what = if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else {
        os::special(&kind)
    };
    Err(not_regular(what))
}

fn not_regular(what: &str) -> std::io::Error {
    let hint = if what == "a symbolic link" { ", never through a link: name the file it points to" } else { "" };
    std::io::Error::other(format!("it is {what}; wbguard writes only regular files{hint}"))
}

/// Unix: modes, `O_NOFOLLOW`, device and inode.
#[cfg(unix)]
mod os {
    use std::fs::{File, FileType, Metadata, OpenOptions};
    use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    /// Mode of a file [`super::replace`] creates (less the umask); a
    /// replaced file keeps its own.
    const NEW_FILE_MODE: u32 = 0o644;

    /// The temporary file gets the mode of the file it replaces.
    pub fn keep_permissions(builder: &mut tempfile::Builder<'_, '_>, existing: Option<&Metadata>) {
        let mode = existing.map_or(NEW_FILE_MODE, |meta| meta.permissions().mode() & 0o777);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }

    /// Opens for appending without following a link in the last component.
    pub fn open_append(path: &Path, mode: u32) -> std::io::Result<File> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // O_NOFOLLOW's answer when the last component is a link.
                Some(libc::ELOOP) => super::not_regular("a symbolic link"),
                // O_NONBLOCK's answer for a FIFO nobody reads.
                Some(libc::ENXIO) => super::not_regular("a FIFO"),
                _ => e,
            })
    }

    /// What a file that is neither regular, a link nor a directory is.
    pub fn special(kind: &FileType) -> &'static str {
        if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        }
    }

    /// Which file an open file or a name is, whatever it is called now:
    /// its device and inode.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Identity {
        device: u64,
        inode: u64,
    }

    impl Identity {
        /// The identity of an open `file` whose metadata is `meta`.
        pub fn of(_file: &File, meta: &Metadata) -> std::io::Result<Identity> {
            Ok(Identity { device: meta.dev(), inode: meta.ino() })
        }
    }

    /// The file a name points to now: its identity and metadata.
    pub fn stat(path: &Path) -> std::io::Result<(Identity, Metadata)> {
        let meta = std::fs::metadata(path)?;
        Ok((Identity { device: meta.dev(), inode: meta.ino() }, meta))
    }

    /// Reads at `offset`, leaving the file's position alone (`pread`), so
    /// that several threads read one open file at once.
    pub fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        file.read_at(buffer, offset)
    }
}

/// Windows: no modes (ACLs, inherited from the folder), reparse points
/// opened as themselves, identity by volume and file index.
#[cfg(windows)]
mod os {
    use std::fs::{File, FileType, Metadata, OpenOptions};
    use std::os::windows::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;

    /// `FILE_FLAG_OPEN_REPARSE_POINT` (winbase.h): open a symbolic link or
    /// junction itself instead of what it points to.
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

    /// Nothing to keep: a Windows file's permissions are its ACL, which a
    /// new file inherits from its folder (tempfile cannot set one).
    pub fn keep_permissions(_builder: &mut tempfile::Builder<'_, '_>, _existing: Option<&Metadata>) {}

    /// Opens for appending; a link or junction is opened as itself, so
    /// the caller's check refuses it (it is not a regular file) and nothing
    /// is written through it. Read access too: locking the file (the
    /// restart lock) needs read or write data access, which append alone
    /// does not grant on Windows. `mode` has no meaning here.
    pub fn open_append(path: &Path, _mode: u32) -> std::io::Result<File> {
        OpenOptions::new().read(true).append(true).create(true).custom_flags(FILE_FLAG_OPEN_REPARSE_POINT).open(path)
    }

    /// What a file that is neither regular, a link nor a directory is.
    pub fn special(_kind: &FileType) -> &'static str {
        "not a regular file (a device or a pipe?)"
    }

    /// Which file an open file or a name is, whatever it is called now:
    /// its volume serial number and file index (what std keeps unstable
    /// on Windows, read by same-file).
    #[derive(Debug, PartialEq, Eq)]
    pub struct Identity(same_file::Handle);

    impl Identity {
        /// The identity of an open `file`.
        pub fn of(file: &File, _meta: &Metadata) -> std::io::Result<Identity> {
            Ok(Identity(same_file::Handle::from_file(file.try_clone()?)?))
        }
    }

    /// The file a name points to now: its identity and metadata.
    pub fn stat(path: &Path) -> std::io::Result<(Identity, Metadata)> {
        let meta = std::fs::metadata(path)?;
        Ok((Identity(same_file::Handle::from_path(path)?), meta))
    }

    /// Reads at `offset`. Windows moves the file's position too, which
    /// nothing here relies on: every reader of a shared file gives its own
    /// offset.
    pub fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
        file.seek_read(buffer, offset)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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

    #[test]
    fn a_replaced_file_is_whole_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.svg");
        replace(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_regular_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        for (path, what) in [(&link, "a symbolic link"), (&dir.path().to_path_buf(), "a directory")] {
            assert!(replace(path, b"x").unwrap_err().to_string().contains(what), "{}", path.display());
            assert!(open_append(path, 0o600).unwrap_err().to_string().contains(what), "{}", path.display());
        }
        assert!(replace(Path::new("/dev/null"), b"x").unwrap_err().to_string().contains("a device"));
        assert!(open_append(Path::new("/dev/null"), 0o600).unwrap_err().to_string().contains("a device"));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let log = dir.path().join("log");
        writeln!(open_append(&log, 0o600).unwrap(), "one").unwrap();
        writeln!(open_append(&log, 0o600).unwrap(), "two").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
