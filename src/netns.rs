//! Network namespaces: open them by path, create and delete named ones, run code inside one.
//!
//! `setns` moves only the calling thread, so code that must run in another namespace runs on
//! a short-lived dedicated thread; the caller's thread never changes namespace.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("setns into {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create network namespace {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is the host's own network namespace, not a container's")]
    HostNamespace { path: PathBuf },
    #[error("a thread running inside {0} panicked")]
    Panicked(PathBuf),
}

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace.
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // NSFS_MAGIC: a bind-mounted namespace file, or /proc/PID/ns/net.
        // SAFETY: fstatfs writes into a zeroed struct of the right type.
        let magic = unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            if libc::fstatfs(file.as_raw_fd(), &mut st) != 0 {
                return Err(NetnsError::Open {
                    path: path.to_path_buf(),
                    source: io::Error::last_os_error(),
                });
            }
            st.f_type
        };
        const NSFS_MAGIC: libc::c_long = 0x6e736673;
        if magic as libc::c_long != NSFS_MAGIC {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a container's namespace: like [`Netns::open`], and refuses the namespace the
    /// caller runs in (attaching the host to its own bridge would move its `eth0`-named
    /// interface around and route the host through a container port).
    pub fn open_container(path: &Path) -> Result<Netns, NetnsError> {
        let ns = Netns::open(path)?;
        let current =
            fs::metadata("/proc/thread-self/ns/net").map_err(|source| NetnsError::Open {
                path: "/proc/thread-self/ns/net".into(),
                source,
            })?;
        let this = ns.file.metadata().map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        use std::os::unix::fs::MetadataExt;
        if (this.dev(), this.ino()) == (current.dev(), current.ino()) {
            return Err(NetnsError::HostNamespace {
                path: path.to_path_buf(),
            });
        }
        Ok(ns)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on the calling thread inside this namespace, and moves the thread back
    /// afterwards, also when `f` panics. Cheaper than [`Netns::run`]'s thread (a spawn and a
    /// join cost ~0.1 ms, as much as a container's whole netlink work); `f` must not keep
    /// the thread (sockets it opens stay bound to this namespace, which is the point).
    pub fn run_here<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let home_path = Path::new("/proc/thread-self/ns/net");
        let home = File::open(home_path).map_err(|source| NetnsError::Open {
            path: home_path.to_path_buf(),
            source,
        })?;
        // SAFETY: both descriptors are valid network namespace files.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetnsError::Enter {
                path: self.path.clone(),
                source: io::Error::last_os_error(),
            });
        }
        struct Back(File);
        impl Drop for Back {
            fn drop(&mut self) {
                // A thread left in a container's namespace would carry on acting there as if
                // it were the host: better to stop the process than to let it.
                // SAFETY: a valid namespace descriptor.
                if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    std::process::abort();
                }
            }
        }
        let _back = Back(home);
        Ok(f())
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: fd is a valid namespace descriptor borrowed for the scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        path: self.path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(self.path.clone()))?
        })
    }
}

/// Creates a named namespace as `ip netns add NAME` does: a new namespace bind-mounted on
/// /run/netns/NAME. Returns its path.
pub fn create_named(name: &str) -> Result<PathBuf, NetnsError> {
    let err = |source| NetnsError::Create {
        name: name.to_string(),
        source,
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid namespace name",
        )));
    }
    fs::create_dir_all(NETNS_RUN_DIR).map_err(err)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(err)?;
    let target = path.clone();
    let res = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare/mount on this thread only; paths are valid C strings.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            let src = c"/proc/thread-self/ns/net";
            let dst = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(err(e));
    }
    Ok(path)
}

/// Deletes a namespace created by [`create_named`] (or `ip netns add`). Missing is fine.
pub fn delete_named(name: &str) -> io::Result<()> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid C string; a failure (not mounted) is ignored.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes a sysctl of the calling thread's network namespace (`net/ipv4/ip_forward`).
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = Path::new("/proc/sys").join(key);
    let current = fs::read_to_string(&path)?;
    if current.trim() == value {
        return Ok(());
    }
    fs::write(&path, value)
}

/// Turns IPv6 forwarding on for the whole namespace (of the calling thread) without taking
/// router advertisements away from the interfaces that use them: `forwarding=1` makes the
/// kernel ignore RAs where `accept_ra` is 1, so those (and the default for new interfaces)
/// become 2 first. A host that learns its default route by RA keeps it. Control path only.
pub fn enable_ipv6_forwarding() -> io::Result<()> {
    for entry in fs::read_dir("/proc/sys/net/ipv6/conf")?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "all" {
            continue;
        }
        let key = format!("net/ipv6/conf/{name}/accept_ra");
        let accept_ra = fs::read_to_string(Path::new("/proc/sys").join(&key)).unwrap_or_default();
        if accept_ra.trim() == "1" {
            write_sysctl(&key, "2")?;
        }
    }
    write_sysctl("net/ipv6/conf/all/forwarding", "1")
}

/// Whether a named namespace exists (its mount point is there).
pub fn named_exists(name: &str) -> bool {
    Path::new(NETNS_RUN_DIR).join(name).exists()
}
