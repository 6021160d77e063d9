//! The embedded state store: one JSON document under the state directory, replaced atomically
//! (write a temporary file, fsync it, rename over the old one, fsync the directory) before any
//! change is acknowledged, so a crash at any instant leaves either the old or the new state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::model::{State, STATE_VERSION};

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Held (flock) for the store's lifetime: one daemon per state directory.
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {0}: {1}")]
    Dir(PathBuf, io::Error),
    #[error("cannot write state {0}: {1}")]
    Write(PathBuf, io::Error),
    #[error("cannot read state {0}: {1}")]
    Read(PathBuf, io::Error),
    #[error("state file {0} is corrupt ({1}); it was left in place: move it aside to start empty")]
    Corrupt(PathBuf, serde_json::Error),
    #[error(
        "state directory {0} is in use by another vswitchd (its lock file is held): stop that daemon, or give --state-dir another path"
    )]
    Locked(PathBuf),
    #[error("state file {0} has version {1}, newer than this vswitchd understands ({2})")]
    Version(PathBuf, u32, u32),
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("lock"))
            .map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => StoreError::Locked(dir.to_path_buf()),
            fs::TryLockError::Error(e) => StoreError::Dir(dir.to_path_buf(), e),
        })?;
        Ok(Self { dir: dir.to_path_buf(), _lock: lock })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The stored state, or None on a first start.
    pub fn load(&self) -> Result<Option<State>, StoreError> {
        let p = self.path();
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Read(p, e)),
        };
        let st: State = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(p.clone(), e))?;
        if st.version > STATE_VERSION {
            return Err(StoreError::Version(p, st.version, STATE_VERSION));
        }
        Ok(Some(st))
    }

    /// Makes `state` durable; returns only once it would survive a crash or power loss.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let p = self.path();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Write(p.clone(), io::Error::other(e)))?;
        write_durably(&p, &bytes).map_err(|e| StoreError::Write(p, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Replaces `path` with `bytes` so that a crash at any instant leaves the old or the new
/// content: a temporary file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir).and_then(|d| d.sync_all())?;
    Ok(())
}

impl Store {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.load().unwrap(), None);
        let st = State { version: STATE_VERSION, ..Default::default() };
        s.save(&st).unwrap();
        assert_eq!(s.load().unwrap(), Some(st));
        fs::write(d.path().join("state.json"), b"{not json").unwrap();
        assert!(matches!(s.load(), Err(StoreError::Corrupt(..))));
        assert!(matches!(Store::open(d.path()), Err(StoreError::Locked(_))), "one daemon per state directory");
        drop(s);
        assert!(Store::open(d.path()).is_ok(), "the lock goes with the store");
    }
}
