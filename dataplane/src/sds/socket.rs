//! The agent's Unix socket: mode 0600 in a directory of mode 0700 owned by
//! the agent's user, so only that user (Envoy runs as it) can reach the
//! private key. A socket left by an agent that died is replaced; a live one,
//! or anything that is not a socket, is refused.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path has no parent directory or file name.
    #[error("--sds-socket {0}: must be a file path inside a directory")]
    BadPath(PathBuf),
    /// The directory belongs to another user.
    #[error(
        "socket directory {dir} belongs to uid {owner}, not to this agent (uid {me}); \
         use a directory of the agent's own (it is created with mode 0700 if missing)"
    )]
    ForeignDirectory {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The agent's uid.
        me: u32,
    },
    /// Something that is not a directory sits where the directory should be.
    #[error("socket directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Something that is not a socket sits at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another process answers on the socket.
    #[error("{0} is in use by a running process (another weft-agent?)")]
    InUse(PathBuf),
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A bound socket, removed from the file system when dropped.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Prepares `path`'s directory (created 0700, or an existing one of ours
/// tightened to 0700), clears a stale socket and binds a listener there with
/// mode 0600.
pub fn bind(path: &Path) -> Result<(UnixListener, BoundSocket), SocketError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| SocketError::Io { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if path.file_name().is_some() => {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        }
        _ => return Err(SocketError::BadPath(path.to_owned())),
    };
    private_directory(dir)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_owned()));
            }
            tracing::info!(path = %path.display(), "removing a stale socket");
            fs::remove_file(path).map_err(io(path))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io(path))?;
    let guard = BoundSocket { path: path.to_owned() };
    // The directory already keeps others out; the mode says it twice.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    Ok((listener, guard))
}

/// Makes sure `dir` exists, is a real directory owned by this user, and has
/// mode 0700.
fn private_directory(dir: &Path) -> Result<(), SocketError> {
    let io = |source| SocketError::Io { path: dir.to_owned(), source };
    let me = rustix::process::geteuid().as_raw();
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
            // `recursive` applies the mode to every directory it makes, but the
            // umask may have narrowed it further: set the last one exactly.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
            return Ok(());
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(SocketError::NotADirectory(dir.to_owned()));
    }
    if meta.uid() != me {
        return Err(SocketError::ForeignDirectory { dir: dir.to_owned(), owner: meta.uid(), me });
    }
    let mode = meta.mode() & 0o777;
    if mode != 0o700 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "tightening the socket directory to 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn creates_a_private_directory_and_a_0600_socket_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sds").join("agent.sock");
        let (listener, guard) = bind(&path).unwrap();
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        drop(listener);
        drop(guard);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_refuses_a_live_one_or_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("agent.sock");
        // A socket nobody listens on any more: a dead agent's.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (live, guard) = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(SocketError::InUse(_))));
        drop((live, guard));
        fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn tightens_an_own_directory_and_refuses_a_foreign_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let (_l, _g) = bind(&dir.join("a.sock")).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        if rustix::process::geteuid().as_raw() != 0 {
            // `/` belongs to root.
            assert!(matches!(
                bind(Path::new("/weft-agent-test.sock")),
                Err(SocketError::ForeignDirectory { .. })
            ));
        } else {
            // As root, a directory given away to another user stands in.
            let foreign = tmp.path().join("foreign");
            fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            assert!(matches!(bind(&foreign.join("a.sock")), Err(SocketError::ForeignDirectory { .. })));
        }
    }
}
