//! Paths inside the container's rootfs, resolved by the kernel and held as descriptors.
//!
//! Every lookup is openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) on a descriptor of the
//! rootfs: symlinks and `..` are followed as if the rootfs were "/", so a hostile image cannot
//! point a destination at the host. Missing components are created with mkdirat relative to
//! the descriptor of their (already resolved) parent, and callers mount onto the resolved
//! descriptor, never onto a path that could be swapped for a symlink afterwards
//! (the CVE-2021-30465 class).

use std::{
    ffi::OsString,
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

use crate::{
    fd::{self, create_file, mkdirat, openat2, readlinkat, RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS},
    Error, Result,
};

/// Symlinks followed while creating one path, as the kernel's own limit.
const MAX_SYMLINKS: usize = 40;

/// What a missing final component is created as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    /// An empty file (the target of a bind mount of a file).
    File,
}

/// The rootfs as a directory descriptor.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The components of a container path, without the root and `.`; `..` is kept (the kernel
/// resolves it, and never above the root).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

impl RootDir {
    /// Opens the directory `path` (a host path) as the root for lookups.
    pub fn open(path: &Path) -> Result<RootDir> {
        let fd = openat2(fd::cwd(), path, libc::O_PATH | libc::O_DIRECTORY, 0, 0)
            .map_err(|e| Error::io(path, e))?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves `path` inside the root; `flags` are open(2) flags (O_PATH for a handle).
    pub fn open_in(&self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        openat2(
            self.fd.as_fd(),
            &join(&components(path)),
            flags,
            0,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        )
    }

    /// An O_PATH handle on `path` inside the root, which must exist.
    pub fn resolve(&self, path: &Path) -> Result<OwnedFd> {
        self.open_in(path, libc::O_PATH).map_err(|e| {
            Error::Init(format!(
                "{}: resolve inside the rootfs: {e}",
                path.display()
            ))
        })
    }

    /// An O_PATH handle on `path` inside the root, creating what is missing: directories,
    /// and the last component as `last`. A dangling symlink is followed inside the root and
    /// its target created there.
    pub fn create(&self, path: &Path, last: Create) -> Result<OwnedFd> {
        let err = |e: io::Error| {
            Error::Init(format!("{}: create inside the rootfs: {e}", path.display()))
        };
        let mut parts = components(path);
        let mut links = 0;
        // Each round creates one component or expands one symlink; the bound only guards
        // against a rootfs that keeps changing under us.
        for _ in 0..(4 * (parts.len() + MAX_SYMLINKS) + 16) {
            match self.open_in(&join(&parts), libc::O_PATH) {
                Ok(fd) => return Ok(fd),
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) => return Err(err(e)),
            }
            // The deepest prefix that exists; parts[missing] is the first missing component.
            let mut parent = self.open_in(Path::new("."), libc::O_PATH).map_err(err)?;
            let mut missing = parts.len();
            for i in 0..parts.len() {
                match self.open_in(&join(&parts[..=i]), libc::O_PATH) {
                    Ok(fd) => parent = fd,
                    Err(e) if errno(&e) == libc::ENOENT => {
                        missing = i;
                        break;
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            if missing == parts.len() {
                continue; // appeared meanwhile
            }
            let name = parts[missing].clone();
            match readlinkat(parent.as_fd(), &name) {
                Ok(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(err(io::Error::from_raw_os_error(libc::ELOOP)));
                    }
                    // Continue with the link's target in place of the link; an absolute
                    // target starts again at the root, a relative one at the link's parent.
                    let mut next = if target.is_absolute() {
                        Vec::new()
                    } else {
                        parts[..missing].to_vec()
                    };
                    next.extend(components(&target));
                    next.extend_from_slice(&parts[missing + 1..]);
                    parts = next;
                    continue;
                }
                Err(e) if errno(&e) == libc::ENOENT => {}
                Err(e) if errno(&e) == libc::EINVAL => continue, // not a symlink (any more)
                Err(e) => return Err(err(e)),
            }
            let is_last = missing + 1 == parts.len();
            let r = if is_last && last == Create::File {
                create_file(parent.as_fd(), &name)
            } else {
                mkdirat(parent.as_fd(), &name, 0o755)
            };
            match r {
                Ok(()) => {}
                Err(e) if errno(&e) == libc::EEXIST => {}
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(io::Error::other(
            "the path kept changing while it was created",
        )))
    }

    /// `create` for the parent of `path`, returning it with the last component's name.
    pub fn create_parent(&self, path: &Path) -> Result<(OwnedFd, OsString)> {
        let name = match path.components().next_back() {
            Some(Component::Normal(n)) => n.to_owned(),
            _ => {
                return Err(Error::Init(format!(
                    "{}: does not name a file",
                    path.display()
                )))
            }
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        Ok((self.create(parent, Create::Dir)?, name))
    }
}

impl AsFd for RootDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, os::unix::fs::symlink};

    struct TempRoot(PathBuf);

    impl TempRoot {
        fn new(tag: &str) -> TempRoot {
            let dir =
                std::env::temp_dir().join(format!("shim-rs-rootdir-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("root/etc")).unwrap();
            fs::create_dir_all(dir.join("outside")).unwrap();
            TempRoot(dir)
        }
        fn root(&self) -> PathBuf {
            self.0.join("root")
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The host path an O_PATH descriptor refers to.
    fn where_is(fd: &OwnedFd) -> PathBuf {
        fs::read_link(crate::rootfs::mount::proc_fd_path(fd.as_fd())).unwrap()
    }

    #[test]
    fn symlinks_and_dotdot_cannot_leave_the_root() {
        let t = TempRoot::new("escape");
        let root = t.root();
        let outside = t.0.join("outside");
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../../etc", root.join("rel")).unwrap();
        symlink(&outside, root.join("host")).unwrap();
        let r = RootDir::open(&root).unwrap();

        let fd = r.create(Path::new("/abs/target"), Create::Dir).unwrap();
        assert_eq!(where_is(&fd), root.join("etc/target"));
        let fd = r.create(Path::new("/rel/x/y"), Create::Dir).unwrap();
        assert_eq!(where_is(&fd), root.join("etc/x/y"));
        let fd = r.create(Path::new("/../../../z"), Create::File).unwrap();
        assert_eq!(where_is(&fd), root.join("z"));
        assert!(root.join("z").is_file());
        // A symlink naming a host directory by its absolute path stays in the root too.
        let fd = r.create(Path::new("/host/inside"), Create::Dir).unwrap();
        assert!(where_is(&fd).starts_with(&root), "{:?}", where_is(&fd));
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "created outside"
        );
    }

    #[test]
    fn dangling_symlinks_are_created_inside_the_root() {
        let t = TempRoot::new("dangling");
        let root = t.root();
        symlink("/nonexistent-host-dir/sub", root.join("dangle")).unwrap();
        symlink("../gone/deeper", root.join("etc/rel-dangle")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let fd = r.create(Path::new("/dangle/mnt"), Create::Dir).unwrap();
        assert_eq!(where_is(&fd), root.join("nonexistent-host-dir/sub/mnt"));
        let fd = r
            .create(Path::new("/etc/rel-dangle"), Create::File)
            .unwrap();
        assert_eq!(where_is(&fd), root.join("gone/deeper"));
        assert!(root.join("gone/deeper").is_file());
        assert!(!Path::new("/nonexistent-host-dir").exists());
    }

    #[test]
    fn symlink_loops_are_an_error_naming_the_path() {
        let t = TempRoot::new("loop");
        let root = t.root();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let e = r
            .create(Path::new("/loop1/x"), Create::Dir)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/loop1/x: create inside the rootfs"), "{e}");
        let e = r.resolve(Path::new("/loop1")).unwrap_err().to_string();
        assert!(e.contains("/loop1"), "{e}");
    }

    #[test]
    fn existing_paths_resolve_and_files_are_not_directories() {
        let t = TempRoot::new("exist");
        let root = t.root();
        fs::write(root.join("etc/passwd"), "x").unwrap();
        let r = RootDir::open(&root).unwrap();
        let fd = r.create(Path::new("/etc/passwd"), Create::Dir).unwrap();
        assert_eq!(where_is(&fd), root.join("etc/passwd"));
        assert!(r.create(Path::new("/etc/passwd/x"), Create::Dir).is_err());
        let (dir, name) = r.create_parent(Path::new("/dev/null")).unwrap();
        assert_eq!(where_is(&dir), root.join("dev"));
        assert_eq!(name, "null");
        assert!(r.create_parent(Path::new("/")).is_err());
    }
}
