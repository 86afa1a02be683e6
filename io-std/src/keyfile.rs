//! Key files on disk, in the format of [`tryst_core::identity`]:
//! `tryst-secret-key-v1 <64 hex>\n` and `tryst-public-key-v1 <64 hex>\n`.
//!
//! A secret key file is created with mode 0600, atomically (a temporary file
//! in the same directory, written, flushed to disk, then moved into place),
//! and is never overwritten unless the caller asks. Reading one refuses a
//! file that its group or others may read or write, or that another user
//! owns, as OpenSSH does; [`check_private_dir`] refuses a state or data
//! directory that its group or others may write, or that another user
//! (other than root) owns, since whoever can write there can swap the key
//! or the store. Key
//! bytes never appear in an error or a `Debug` output, and buffers that held
//! them are zeroed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use tryst_core::identity::{self, KeyTextError, SecretKey, KEY_TEXT_LEN, PUBLIC_KEY_LABEL};
use tryst_core::wire::PublicKey;
use zeroize::Zeroize;

/// Mode of a secret key file: read and write for its owner only.
pub const SECRET_KEY_MODE: u32 = 0o600;
/// Mode of a public key file.
pub const PUBLIC_KEY_MODE: u32 = 0o644;
/// Largest file read as a key file; a key file is [`KEY_TEXT_LEN`] bytes.
pub const MAX_KEY_FILE_LEN: usize = 4 * KEY_TEXT_LEN;

/// What to do when the target of a write already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    /// Leave it alone and fail with [`KeyFileError::AlreadyExists`].
    Refuse,
    /// Replace it atomically.
    Replace,
}

/// Why a key file could not be read or written.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// The operating system refused an operation on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A key file is already there and the caller did not ask to replace it.
    #[error("{}: a key file already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The secret key file may be read or written by its group or others.
    #[error(
        "{}: secret key file is accessible by group or others (mode {mode:03o}); \
         refusing to use it (run `chmod 600` on it)",
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret key file belongs to another user.
    #[error(
        "{}: secret key file is owned by uid {owner}, not by this user (uid {uid}); \
         refusing to use it",
        path.display()
    )]
    NotOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
    /// A state or data directory that its group or others may write.
    #[error(
        "{}: directory is writable by group or others (mode {mode:03o}); \
         refusing to use it (run `chmod 700` on it)",
        path.display()
    )]
    InsecureDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A state or data directory owned by another user (not root).
    #[error(
        "{}: directory is owned by uid {owner}, not by this user (uid {uid}) or root; \
         refusing to use it",
        path.display()
    )]
    DirNotOwned {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        uid: u32,
    },
    /// The path is a directory or a special file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is far larger than any key file.
    #[error("{}: larger than {MAX_KEY_FILE_LEN} bytes, not a key file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are not a key of the expected kind.
    #[error("{}: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with the text.
        source: KeyTextError,
    },
    /// A command-line argument taken as a bare public key is not one.
    #[error("not a public key: {source}")]
    BadArgument {
        /// What is wrong with the text.
        source: KeyTextError,
    },
}

/// Writes `key` to `path` as a secret key file with mode 0600, atomically.
pub fn write_secret_key(
    path: &Path,
    key: &SecretKey,
    if_exists: IfExists,
) -> Result<(), KeyFileError> {
    let text = identity::format_secret_key(key);
    write_atomically(path, text.as_bytes(), SECRET_KEY_MODE, if_exists)
}

/// Writes `key` to `path` as a public key file (mode 0644), atomically.
pub fn write_public_key(
    path: &Path,
    key: &PublicKey,
    if_exists: IfExists,
) -> Result<(), KeyFileError> {
    let text = identity::format_public_key(key);
    write_atomically(path, text.as_str().as_bytes(), PUBLIC_KEY_MODE, if_exists)
}

/// Reads a secret key file, refusing one that its group or others may access.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    // Checked on the open file, so the file checked is the file read.
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if let Some(mode) = insecure_mode(&meta) {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if let Some((owner, uid)) = foreign_owner(&meta) {
        return Err(KeyFileError::NotOwner {
            path: path.to_path_buf(),
            owner,
            uid,
        });
    }
    let mut buf = [0u8; MAX_KEY_FILE_LEN];
    let result = read_bounded(&mut file, &mut buf, path).and_then(|len| {
        identity::parse_secret_key(buf.get(..len).unwrap_or_default()).map_err(|source| {
            KeyFileError::Format {
                path: path.to_path_buf(),
                source,
            }
        })
    });
    buf.zeroize();
    result
}

/// Reads a public key given on a command line: the bare 64 hex digits, a
/// whole `tryst-public-key-v1 <hex>` line, or else the path of a public key
/// file. An argument made only of hex digits is always taken as a key (to
/// read a file with such a name, write `./name`).
pub fn read_public_key(path_or_hex: &str) -> Result<PublicKey, KeyFileError> {
    let all_hex = !path_or_hex.is_empty() && path_or_hex.bytes().all(|b| b.is_ascii_hexdigit());
    let key_line = path_or_hex
        .strip_prefix(PUBLIC_KEY_LABEL)
        .is_some_and(|rest| rest.starts_with(' '));
    let looks_like_key = all_hex || key_line;
    if looks_like_key {
        return identity::parse_public_key(path_or_hex.as_bytes())
            .map_err(|source| KeyFileError::BadArgument { source });
    }
    read_public_key_file(Path::new(path_or_hex))
}

/// Reads a public key file (or a file holding the bare 64 hex digits).
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut buf = [0u8; MAX_KEY_FILE_LEN];
    let len = read_bounded(&mut file, &mut buf, path)?;
    identity::parse_public_key(buf.get(..len).unwrap_or_default()).map_err(|source| {
        KeyFileError::Format {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads the whole file into `buf`, or fails if it does not fit.
fn read_bounded(file: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, KeyFileError> {
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => return Ok(len),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(KeyFileError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    // The buffer is full: one more byte means the file is too large.
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(len),
        Ok(_) => Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Mode bits of any access by group or others (refused on a secret key).
const GROUP_OTHER_ANY: u32 = 0o077;
/// Mode bits of writing by group or others (refused on a state or data dir).
const GROUP_OTHER_WRITE: u32 = 0o022;

/// The permission bits of `meta` if group or others have any access.
fn insecure_mode(meta: &fs::Metadata) -> Option<u32> {
    mode_with_any(meta, GROUP_OTHER_ANY)
}

/// The permission bits of `meta` if any of the bits of `mask` is set.
#[cfg(unix)]
fn mode_with_any(meta: &fs::Metadata, mask: u32) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o7777;
    (mode & mask != 0).then_some(mode)
}

/// Other systems have no mode bits to check.
#[cfg(not(unix))]
fn mode_with_any(_meta: &fs::Metadata, _mask: u32) -> Option<u32> {
    None
}

/// Checks a directory that holds keys or a store (a terminal's state dir,
/// a server's data dir): it must be a directory (symlinks followed, as
/// the callers open it), not writable by group or others, and owned by
/// this user or root.
pub fn check_private_dir(path: &Path) -> Result<(), KeyFileError> {
    let meta = fs::metadata(path).map_err(|source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(KeyFileError::Io {
            path: path.to_path_buf(),
            source: io::Error::other("not a directory"),
        });
    }
    if let Some(mode) = mode_with_any(&meta, GROUP_OTHER_WRITE) {
        return Err(KeyFileError::InsecureDir {
            path: path.to_path_buf(),
            mode,
        });
    }
    match foreign_owner(&meta) {
        Some((owner, uid)) if owner != ROOT_UID => Err(KeyFileError::DirNotOwned {
            path: path.to_path_buf(),
            owner,
            uid,
        }),
        _ => Ok(()),
    }
}

/// The uid of root, which may own a directory another user's process uses.
const ROOT_UID: u32 = 0;

/// `(owner, this process's effective uid)` if another user owns `meta`'s file.
#[cfg(unix)]
fn foreign_owner(meta: &fs::Metadata) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid().as_raw();
    (meta.uid() != uid).then_some((meta.uid(), uid))
}

/// Other systems have no owner to check.
#[cfg(not(unix))]
fn foreign_owner(_meta: &fs::Metadata) -> Option<(u32, u32)> {
    None
}

/// Removes the temporary file unless it was moved into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Creates `path` holding `contents` with permission bits `mode`: a fresh
/// temporary file in the same directory (created with `mode`, so the
/// contents are never readable by others even for a moment), written,
/// flushed, then linked (no overwrite) or renamed (overwrite) into place.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
    if_exists: IfExists,
) -> Result<(), KeyFileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_err = |path: &Path, source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        return Err(io_err(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
        ));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let already_exists = || KeyFileError::AlreadyExists {
        path: path.to_path_buf(),
    };
    if if_exists == IfExists::Refuse && fs::symlink_metadata(path).is_ok() {
        return Err(already_exists());
    }

    let tmp_path = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(mode);
    let mut file = options.open(&tmp_path).map_err(|e| io_err(&tmp_path, e))?;
    let tmp = TempFile(Some(tmp_path.clone()));
    // The umask may have removed bits the caller asked for (0644 under 077);
    // set them exactly.
    #[cfg(unix)]
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(&tmp_path, e))?;
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(|e| io_err(&tmp_path, e))?;
    file.sync_all().map_err(|e| io_err(&tmp_path, e))?;
    drop(file);

    match if_exists {
        IfExists::Refuse => {
            // A hard link never replaces an existing file: no race with
            // another writer between the check above and this.
            fs::hard_link(&tmp_path, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    already_exists()
                } else {
                    io_err(path, e)
                }
            })?;
            // Dropping `tmp` removes the temporary name; the key stays at `path`.
        }
        IfExists::Replace => {
            fs::rename(&tmp_path, path).map_err(|e| io_err(path, e))?;
            let mut tmp = tmp;
            tmp.0 = None;
        }
    }
    // Make the new directory entry durable too (best effort: some file
    // systems cannot sync a directory).
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn secret_key_file_is_created_with_mode_0600_in_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("terminal.key");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("tryst-secret-key-v1 {}\n", "01".repeat(32)));
    }

    #[test]
    fn secret_key_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(42), IfExists::Refuse).unwrap();
        let back = read_secret_key(&path).unwrap();
        assert_eq!(back.as_bytes(), key(42).as_bytes());
    }

    #[test]
    fn existing_key_is_not_overwritten_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        let err = write_secret_key(&path, &key(2), IfExists::Refuse).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
        assert_eq!(
            read_secret_key(&path).unwrap().as_bytes(),
            key(1).as_bytes()
        );
        write_secret_key(&path, &key(2), IfExists::Replace).unwrap();
        assert_eq!(
            read_secret_key(&path).unwrap().as_bytes(),
            key(2).as_bytes()
        );
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn replacing_a_loose_file_leaves_a_0600_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_secret_key(&path, &key(3), IfExists::Replace).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        let _ = write_secret_key(&path, &key(2), IfExists::Refuse);
        write_secret_key(&path, &key(3), IfExists::Replace).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k")]);
    }

    #[test]
    fn world_or_group_readable_secret_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
            match read_secret_key(&path) {
                Err(KeyFileError::InsecurePermissions { mode: found, .. }) => {
                    assert_eq!(found, mode)
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        fs::set_permissions(&path, Permissions::from_mode(0o400)).unwrap();
        assert!(read_secret_key(&path).is_ok());
    }

    #[test]
    fn group_or_world_writable_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
        assert!(check_private_dir(dir.path()).is_ok());
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        assert!(check_private_dir(dir.path()).is_ok());
        for mode in [0o777, 0o770, 0o707, 0o1777, 0o720, 0o702] {
            fs::set_permissions(dir.path(), Permissions::from_mode(mode)).unwrap();
            match check_private_dir(dir.path()) {
                Err(KeyFileError::InsecureDir { mode: found, .. }) => assert_eq!(found, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(check_private_dir(&file).is_err());
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
    }

    /// Whether this process may give files away (root): the owner cases
    /// need it.
    fn can_chown() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn key_file_or_dir_of_another_user_is_refused() {
        if !can_chown() {
            eprintln!("not root: the other-owner case was not exercised");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        match read_secret_key(&path) {
            Err(KeyFileError::NotOwner { owner: 65534, .. }) => {}
            other => panic!("{other:?}"),
        }
        let sub = dir.path().join("state");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&sub, Some(65534), None).unwrap();
        match check_private_dir(&sub) {
            Err(KeyFileError::DirNotOwned { owner: 65534, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_key_files_are_refused_with_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let cases: [&[u8]; 5] = [
            b"",
            b"hello\n",
            b"tryst-secret-key-v1 zz\n",
            b"tryst-public-key-v1 0101010101010101010101010101010101010101010101010101010101010101\n",
            &[0xff; 100],
        ];
        for contents in cases {
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
            let err = read_secret_key(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Format { .. }), "{err}");
        }
    }

    #[test]
    fn oversized_file_is_refused_as_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, vec![b'0'; 1 << 20]).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_secret_key(&path),
            Err(KeyFileError::TooLarge { .. })
        ));
        assert!(matches!(
            read_public_key_file(&path),
            Err(KeyFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_secret_key(dir.path()),
            Err(KeyFileError::NotAFile { .. })
        ));
    }

    #[test]
    fn errors_never_show_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // A secret whose hex is distinctive, one digit short.
        let text = format!("tryst-secret-key-v1 {}\n", &"ab".repeat(32)[..63]);
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let err = read_secret_key(&path).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("abab"), "{shown}");
    }

    #[test]
    fn public_key_is_read_from_bare_hex_a_key_line_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let public = key(5).public_key();
        let text = identity::format_public_key(&public);
        assert_eq!(read_public_key(text.hex()).unwrap(), public);
        assert_eq!(read_public_key(text.as_str().trim_end()).unwrap(), public);
        let path = dir.path().join("peer.pub");
        write_public_key(&path, &public, IfExists::Refuse).unwrap();
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(read_public_key(path.to_str().unwrap()).unwrap(), public);
        // A bare-hex file works too.
        let bare = dir.path().join("peer.hex");
        fs::write(&bare, format!("{}\n", text.hex())).unwrap();
        assert_eq!(read_public_key(bare.to_str().unwrap()).unwrap(), public);
    }

    #[test]
    fn bad_public_key_arguments_are_refused() {
        let err = read_public_key(&"ab".repeat(31)).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::BadArgument {
                    source: KeyTextError::WrongLength { digits: 62 }
                }
            ),
            "{err}"
        );
        let err = read_public_key("/nonexistent/peer.pub").unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }), "{err}");
        // A secret key file is never taken for a public key.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        write_secret_key(&path, &key(1), IfExists::Refuse).unwrap();
        let err = read_public_key(path.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::Format {
                    source: KeyTextError::BadPrefix,
                    ..
                }
            ),
            "{err}"
        );
    }
}
