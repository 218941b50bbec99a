//! Child processes of the harness (Envoy, weft-proxy, `weft control`), each
//! logging to a file in a temporary directory of its own.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use tokio::sync::Mutex;

/// Lines of a child's log shown when something about it fails.
pub(crate) const LOG_TAIL_LINES: usize = 200;

/// A child process whose stdout and stderr go to a log file in its own temporary
/// directory. Killed (SIGKILL) and reaped when dropped; if the thread is panicking,
/// the directory is kept and the log's tail printed, so a failed test shows what it said.
#[derive(Debug)]
pub struct LoggedChild {
    what: String,
    child: Mutex<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl LoggedChild {
    /// Spawns `command` (stdin closed, output to `<dir>/<what>.log`); `what` names it in messages.
    pub fn spawn(what: &str, command: Command) -> anyhow::Result<LoggedChild> {
        let dir = tempfile::Builder::new().prefix(&format!("weft-{what}-")).tempdir()?;
        LoggedChild::spawn_in(dir, what, command)
    }

    /// [`LoggedChild::spawn`] in a directory the caller made (and may have put files in).
    pub fn spawn_in(dir: tempfile::TempDir, what: &str, mut command: Command) -> anyhow::Result<LoggedChild> {
        let log_path = dir.path().join(format!("{what}.log"));
        let log = File::create(&log_path)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {what} ({:?}): {e}", command.get_program()))?;
        Ok(LoggedChild { what: what.to_owned(), pid: child.id(), child: Mutex::new(child), dir, log_path })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temporary directory holding the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log_path, n)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        // Only `exited`, `kill` and drop touch the child, never across an `.await`, so the
        // lock is free; were it not, "not known to have exited" is a fine answer.
        let mut child = self.child.try_lock().ok()?;
        child.try_wait().ok().flatten()
    }

    /// Kills the process (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&self) -> anyhow::Result<()> {
        let mut child = self.child.try_lock().map_err(|_| anyhow::anyhow!("{} is busy", self.what))?;
        let _ = child.kill();
        child.wait()?;
        Ok(())
    }

    /// Waits until the `weft control` this process runs answers 200 on its admin `/ready`;
    /// panics with the log's tail if it exits or never gets ready.
    pub async fn wait_control_ready(&self, admin: std::net::SocketAddr) {
        let ready = crate::eventually(&format!("{} to be ready", self.what), || async {
            if let Some(status) = self.exited() {
                return Err(anyhow::anyhow!("weft control exited ({status})"));
            }
            let (status, body) = crate::load::send(admin, "admin", "/ready").await?;
            anyhow::ensure!(status == 200, "/ready: {status} {body}");
            anyhow::Ok(Some(()))
        })
        .await;
        if let Err(e) = ready {
            panic!("{}", self.failed(format!("{e:#}")));
        }
    }

    /// Prints the log's tail to stderr and makes an error saying `what` went wrong.
    pub fn failed(&self, what: String) -> anyhow::Error {
        eprintln!(
            "---- last {LOG_TAIL_LINES} lines of {} ----\n{}\n---- end of {} log ----",
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES),
            self.what
        );
        anyhow::anyhow!("{what} (the {} log tail is printed above)", self.what)
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "---- test failed; {}'s files are kept in {}; last {LOG_TAIL_LINES} lines of its log ----\n{}",
                self.what,
                self.dir.path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

/// The last `n` lines of a file, or why it could not be read.
fn tail_lines(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail_lines(&path, 2), "3\n4");
        assert_eq!(tail_lines(&path, 10), "1\n2\n3\n4");
    }
}
