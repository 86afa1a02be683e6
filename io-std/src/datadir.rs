//! The server's data dir lock: a server (`server`, `session-server`,
//! `trigger-server`) holds an exclusive `flock` on [`LOCK_FILE`] in its data
//! dir for its whole life, so a second server on the same dir refuses to
//! start instead of sharing the database and the keys. The kernel drops the
//! lock when the process ends, however it ends (kill -9 included), so a
//! crashed server never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// The lock file inside the data dir.
pub const LOCK_FILE: &str = "server.lock";
/// Mode of the lock file (it holds nothing; only its lock matters).
const LOCK_FILE_MODE: u32 = 0o600;

/// Why the data dir lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: a server already runs on the dir.
    #[error("data dir {}: another server holds it (lock {})", dir.display(), lock.display())]
    Held {
        /// The data dir.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("data dir {}: cannot lock {}: {source}", dir.display(), lock.display())]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// An exclusive hold on a data dir; released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file: the `flock` lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `dir` (an existing directory) without waiting:
    /// [`LockError::Held`] when another server holds it.
    pub fn take(dir: &Path) -> Result<DataDirLock, LockError> {
        let lock = dir.join(LOCK_FILE);
        let io_error = |source: io::Error| LockError::Io {
            dir: dir.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        options
            .mode(LOCK_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        let file = options.open(&lock).map_err(io_error)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DataDirLock {
                _file: file,
                path: lock,
            }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LockError::Held {
                dir: dir.to_path_buf(),
                lock,
            }),
            Err(e) => Err(io_error(e.into())),
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::take(dir.path()).expect("first lock");
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        match DataDirLock::take(dir.path()) {
            Err(LockError::Held { dir: d, .. }) => assert_eq!(d, dir.path()),
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        DataDirLock::take(dir.path()).expect("lock again after the drop");
    }

    #[test]
    fn two_dirs_lock_independently() {
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let _la = DataDirLock::take(a.path()).expect("a");
        let _lb = DataDirLock::take(b.path()).expect("b");
    }

    #[test]
    fn a_missing_dir_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert!(matches!(
            DataDirLock::take(&missing),
            Err(LockError::Io { .. })
        ));
    }
}
