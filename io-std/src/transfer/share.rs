//! A shared folder (`tryst terminal --share DIR`), read-only, as a permitted
//! peer sees it: its listing and its files, never anything outside it.
//!
//! - a path from a peer is checked by the core's one relative-path policy
//!   ([`check_relative_path`]: plain components, no `..`, no hidden name);
//! - every folder on the way must be a real folder (`lstat`, never a
//!   symlink), the file is opened with `O_NOFOLLOW`, and its canonical path
//!   must still be under the share's canonical root;
//! - hidden files and folders and symlinks are neither listed nor served;
//! - whatever the reason a path is not served, the answer is the one
//!   [`ShareMessage::NoSuchFile`].

use std::fs::OpenOptions;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use tryst_core::peer::share::{
    ListEntry, ListingWriter, ShareMessage, MAX_LISTING_ENTRIES, MAX_PATH_DEPTH,
    MAX_SHARE_MESSAGE_LEN,
};
use tryst_core::peer::transfer::{check_file_name, check_relative_path};

use super::FileSource;

/// Most folder entries a listing looks at before it stops (a share holding
/// a huge tree lists what it found so far, in bounded time).
pub const MAX_SCANNED_ENTRIES: usize = 16 * 1024;

/// Why a folder cannot be shared.
#[derive(Debug, thiserror::Error)]
pub enum ShareDirError {
    /// It cannot be resolved (missing, unreadable).
    #[error("cannot share {0}: {1}")]
    Resolve(PathBuf, std::io::Error),
    /// It is not a folder.
    #[error("cannot share {0}: not a folder")]
    NotADirectory(PathBuf),
}

/// One shared file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Its path relative to the shared folder (`/`-separated).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// A shared folder.
#[derive(Debug, Clone)]
pub struct Share {
    root: PathBuf,
}

impl Share {
    /// Shares `dir` (resolved once, to its canonical path).
    pub fn open(dir: &Path) -> Result<Share, ShareDirError> {
        let root = dir
            .canonicalize()
            .map_err(|e| ShareDirError::Resolve(dir.to_path_buf(), e))?;
        if !root.is_dir() {
            return Err(ShareDirError::NotADirectory(dir.to_path_buf()));
        }
        Ok(Share { root })
    }

    /// The shared files, in path order, at most [`MAX_LISTING_ENTRIES`]:
    /// regular files whose path the core accepts, found through real
    /// folders only (symlinks and hidden names are skipped).
    pub fn files(&self) -> Vec<SharedFile> {
        let mut found = Vec::new();
        let mut scanned = 0;
        walk(&self.root, "", 1, &mut found, &mut scanned);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.truncate(MAX_LISTING_ENTRIES);
        found
    }

    /// The listing message of [`Share::files`].
    pub fn listing(&self) -> Vec<u8> {
        let mut out = vec![0u8; MAX_SHARE_MESSAGE_LEN];
        let Ok(mut writer) = ListingWriter::new(&mut out) else {
            return Vec::new();
        };
        for file in self.files() {
            let _ = writer.push(&ListEntry {
                path: &file.path,
                size: file.size,
                mtime: file.mtime,
            });
        }
        let n = writer.finish();
        out.truncate(n);
        out
    }

    /// The listing of a terminal that shares nothing.
    pub fn empty_listing() -> Vec<u8> {
        let mut out = vec![0u8; tryst_core::peer::share::SHARE_HEADER_LEN + 2];
        match ListingWriter::new(&mut out) {
            Ok(writer) => {
                let n = writer.finish();
                out.truncate(n);
                out
            }
            Err(_) => Vec::new(),
        }
    }

    /// The file at `path` in the share, ready to send under that path, or
    /// `None` for anything not shared (missing, refused name, hidden,
    /// behind a symlink, outside the folder, not a regular file).
    pub fn open_file(&self, path: &str) -> Option<FileSource> {
        check_relative_path(path).ok()?;
        let mut at = self.root.clone();
        let mut components = path.split('/').peekable();
        while let Some(component) = components.next() {
            at.push(component);
            let meta = std::fs::symlink_metadata(&at).ok()?;
            let real = if components.peek().is_some() {
                meta.file_type().is_dir()
            } else {
                meta.file_type().is_file()
            };
            if !real {
                return None;
            }
        }
        let mut options = OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        options.custom_flags(libc::O_NOFOLLOW);
        let file = options.open(&at).ok()?;
        if !at.canonicalize().ok()?.starts_with(&self.root) {
            return None;
        }
        FileSource::from_file(&at, file, path).ok()
    }
}

/// Collects the shared files under `dir` (its path in the share `prefix`).
fn walk(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<SharedFile>, scanned: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        *scanned += 1;
        if *scanned > MAX_SCANNED_ENTRIES {
            return;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_file_name(&name).is_err() {
            continue;
        }
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // `DirEntry::file_type` does not follow symlinks.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth < MAX_PATH_DEPTH {
            walk(&entry.path(), &path, depth + 1, found, scanned);
        } else if kind.is_file() && check_relative_path(&path).is_ok() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            found.push(SharedFile {
                path,
                size: meta.len(),
                mtime,
            });
        }
    }
}

/// The files of a decoded listing, owned.
pub fn listed_files(message: &ShareMessage<'_>) -> Vec<SharedFile> {
    match message {
        ShareMessage::Listing(listing) => listing
            .entries()
            .map(|e| SharedFile {
                path: e.path.to_owned(),
                size: e.size,
                mtime: e.mtime,
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let mut nonce = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect::<String>() + tag;
        let dir = std::env::temp_dir().join(format!("tryst-share-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_plain_files_through_real_folders_are_listed_and_served() {
        let root = tempdir("root");
        let outside = tempdir("outside");
        std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
        std::fs::write(root.join("a.jpg"), b"aaaa").unwrap();
        std::fs::write(root.join(".hidden"), b"h").unwrap();
        std::fs::create_dir(root.join("pics")).unwrap();
        std::fs::write(root.join("pics/b.jpg"), b"bb").unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), b"c").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let share = Share::open(&root).unwrap();
        let paths: Vec<String> = share.files().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["a.jpg", "pics/b.jpg"]);
        assert_eq!(share.open_file("pics/b.jpg").unwrap().file_size(), 2);
        for refused in [
            ".hidden",
            ".git/config",
            "link.txt",
            "out/secret.txt",
            "../outside/secret.txt",
            "pics",
            "missing",
            "/etc/passwd",
        ] {
            assert!(share.open_file(refused).is_none(), "{refused}");
        }
        let listing = share.listing();
        let (m, _) = ShareMessage::decode(&listing).unwrap().unwrap();
        assert_eq!(listed_files(&m).len(), 2);
    }
}
