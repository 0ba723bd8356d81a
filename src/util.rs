//! Small helpers shared by several modules: randomness, hashing, atomic files, locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into a valid buffer.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - filled,
                0,
            )
        };
        if n > 0 {
            filled += n as usize;
        }
    }
}

/// FNV-1a: a stable hash for names derived from identifiers (std's hasher may change between
/// Rust releases, and these names must survive an upgrade).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Creates a directory tree readable by root only (every directory it creates is 0700).
pub fn ensure_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    fill_random(&mut r);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("f");
    path.with_file_name(format!(".{name}.tmp-{:016x}", u64::from_ne_bytes(r)))
}

/// Replaces `path` with `data` atomically: readers see the old or the new content, never a
/// partial one. (A process killed midway may leave a `.NAME.tmp-*` file next to it.)
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Creates `path` with `data` only if it does not exist (EEXIST otherwise), atomically: the
/// file appears complete or not at all (written under a temporary name, then hard-linked into
/// place). For the control path; a process killed midway may leave a `.NAME.tmp-*` file.
pub fn create_exclusive(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    let res = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    res
}

/// Creates `path` with `data` only if it does not exist (EEXIST otherwise), in three plain
/// syscalls. Not atomic: a process killed midway leaves an empty or partial file, so readers
/// must treat unparseable content as "being written or abandoned". (O_TMPFILE + linkat would
/// make it atomic, at the cost of more syscalls and, on ext4, an orphan-list update.)
pub fn create_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// Stores a short value as a symlink's target: created atomically, complete or not at all,
/// failing with EEXIST if `path` exists, in one syscall.
pub fn create_value_link(path: &Path, value: &str) -> io::Result<()> {
    std::os::unix::fs::symlink(value, path)
}

/// Reads a value stored by [`create_value_link`]; None if there is none.
pub fn read_value_link(path: &Path) -> io::Result<Option<String>> {
    match fs::read_link(path) {
        Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether anything (a file, a directory or a value link) exists at `path`.
pub fn entry_exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Removes a file; a missing file is not an error. Returns whether it existed.
pub fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An exclusive advisory lock on a file, released when dropped (or when the process dies).
/// The lock file can carry a small value (IPAM keeps its round-robin cursor there), read and
/// written while the lock is held, without opening another file.
pub struct FileLock {
    file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        file.lock()?;
        Ok(FileLock { file })
    }

    pub fn value(&self) -> String {
        let mut buf = [0u8; 64];
        let n = std::os::unix::fs::FileExt::read_at(&self.file, &mut buf, 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    }

    /// Overwrites the value in place. Not atomic against a crash, so only for values whose
    /// loss is harmless (a cursor that then restarts from the beginning).
    pub fn set_value(&self, v: &str) -> io::Result<()> {
        let padded = format!("{v:<32}\n");
        std::os::unix::fs::FileExt::write_all_at(&self.file, padded.as_bytes(), 0)
    }
}

/// Whether `path` is on a tmpfs (memory), as /run is on a normal host.
/// The pid a daemon wrote to `path` (BIRD's `-P` file), if any.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
}

/// Whether process `pid` runs: a zombie (exited, waiting to be reaped) counts as gone.
pub fn process_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

pub fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct of the right type.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC
    }
}

/// Step timings printed to stderr when `FERRYNET_TRACE_TIMING` is set: where a slow attach
/// spends its time, without a profiler.
pub struct StepTimer {
    start: std::time::Instant,
    enabled: bool,
    what: &'static str,
}

impl StepTimer {
    pub fn new(what: &'static str) -> StepTimer {
        StepTimer {
            start: std::time::Instant::now(),
            enabled: std::env::var_os("FERRYNET_TRACE_TIMING").is_some(),
            what,
        }
    }

    pub fn mark(&self, step: &str) {
        if self.enabled {
            eprintln!(
                "ferrynet timing: {} {step} +{}us",
                self.what,
                self.start.elapsed().as_micros()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_create_refuses_existing_and_atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("ferrynet-util-{}", std::process::id()));
        ensure_dir(&dir).unwrap();
        let p = dir.join("a");
        create_exclusive(&p, b"one").unwrap();
        create_value_link(&dir.join("v"), "10.0.0.1").unwrap();
        assert!(create_value_link(&dir.join("v"), "x").is_err());
        assert_eq!(
            read_value_link(&dir.join("v")).unwrap().as_deref(),
            Some("10.0.0.1")
        );
        assert!(entry_exists(&dir.join("v")));
        remove_if_exists(&dir.join("v")).unwrap();
        assert_eq!(read_value_link(&dir.join("v")).unwrap(), None);
        let err = create_exclusive(&p, b"two").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        write_atomic(&p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert!(remove_if_exists(&p).unwrap());
        assert!(!remove_if_exists(&p).unwrap());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }
}
