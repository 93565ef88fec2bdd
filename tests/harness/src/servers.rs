//! Private Redis and FerretDB servers, for tests and benchmark runs that stop
//! or restart their stores, so the shared local stack is never disturbed.
//! The binaries are the ones `scripts/stack up` installed; each server is
//! stopped by its own PID (SIGKILL when dropped).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::free_port;

/// The file naming the FerretDB release `scripts/stack` builds; both read
/// it (at run time here: the image build has no `scripts/`).
const FERRETDB_VERSION_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ferretdb.version");

/// The FerretDB release `scripts/stack` builds.
pub fn ferretdb_version() -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(FERRETDB_VERSION_FILE).with_context(|| format!("reading {FERRETDB_VERSION_FILE}"))?;
    Ok(text.trim().to_owned())
}

/// Where `scripts/stack up` keeps what it installs: `$STACK_CACHE`, else
/// `$XDG_CACHE_HOME/votestream`, else `~/.cache/votestream`.
pub fn stack_cache() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("STACK_CACHE").unwrap_or_else(|| {
        set("XDG_CACHE_HOME")
            .unwrap_or_else(|| set("HOME").unwrap_or_else(|| PathBuf::from("/root")).join(".cache"))
            .join("votestream")
    })
}

/// The FerretDB binary `scripts/stack up` built.
pub fn ferretdb_binary() -> anyhow::Result<PathBuf> {
    Ok(stack_cache().join(format!("ferretdb-{}/ferretdb", ferretdb_version()?)))
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

/// Waits until `port` accepts connections; an error with the server's log if it exits first.
fn wait_for_port(port: u16, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(exit) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("the server exited ({exit}) before listening on {port}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(child);
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after 60 s")
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A redis-server on a free port, with or without append-only persistence.
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    persistent: bool,
}

impl PrivateRedis {
    /// Starts it with its files under `dir/redis`.
    pub fn start(dir: &Path, persistent: bool) -> anyhow::Result<PrivateRedis> {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let child = Self::spawn(&dir, port, persistent)?;
        Ok(PrivateRedis {
            child,
            port,
            dir,
            persistent,
        })
    }

    fn spawn(dir: &Path, port: u16, persistent: bool) -> anyhow::Result<Child> {
        let appendonly = if persistent { "yes" } else { "no" };
        let log = dir.join("redis.log");
        let mut child = spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
                .args(["--appendonly", appendonly, "--dir"])
                .arg(dir),
            &log,
        )?;
        wait_for_port(port, &mut child, &log)?;
        Ok(child)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and starts it again on the same port:
    /// without persistence it comes back empty, with it up to a second of
    /// writes may be lost.
    pub fn crash_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        kill9(&mut self.child);
        std::thread::sleep(down_for);
        self.child = Self::spawn(&self.dir, self.port, self.persistent)?;
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        kill9(&mut self.child);
    }
}

/// FerretDB (SQLite) on a port of its own, its data and log under `dir/ferretdb`.
pub struct PrivateMongo {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// With authentication on: the user it creates in `admin` at its first start.
    user: Option<(String, String)>,
}

impl PrivateMongo {
    /// Starts it on a free port.
    pub fn start(dir: &Path) -> anyhow::Result<PrivateMongo> {
        Self::start_on(dir, free_port()?)
    }

    /// Starts it on a port the caller chose (e.g. one an app already points at).
    pub fn start_on(dir: &Path, port: u16) -> anyhow::Result<PrivateMongo> {
        let dir = dir.join("ferretdb");
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        let mut mongo = PrivateMongo {
            child: None,
            port,
            dir,
            user: None,
        };
        mongo.start_again()?;
        Ok(mongo)
    }

    /// Starts it on a free port with authentication on (FerretDB 1.x's
    /// experimental SCRAM-SHA-256 authentication, `--test-enable-new-auth`):
    /// every command but the handshake needs a user, and `user` with
    /// `password` is created in the `admin` database at the first start.
    pub fn start_with_user(dir: &Path, user: &str, password: &str) -> anyhow::Result<PrivateMongo> {
        let dir = dir.join("ferretdb");
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        let mut mongo = PrivateMongo {
            child: None,
            port: free_port()?,
            dir,
            user: Some((user.to_owned(), password.to_owned())),
        };
        mongo.start_again()?;
        Ok(mongo)
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL; [`start_again`](Self::start_again) brings it back.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }

    /// Starts the server (again) on the same port and data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.crash();
        let binary = ferretdb_binary()?;
        anyhow::ensure!(
            binary.exists(),
            "FerretDB is not at {}; `scripts/stack up` installs it",
            binary.display()
        );
        let log = self.dir.join("ferretdb.log");
        let mut command = Command::new(binary);
        command
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", self.dir.join("data").display()))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--state-dir={}", self.dir.join("state").display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=warn"]);
        if let Some((user, password)) = &self.user {
            // The password through the environment, not the command line.
            command
                .args(["--test-enable-new-auth", "--setup-database=admin"])
                .arg(format!("--setup-username={user}"))
                .env("FERRETDB_SETUP_PASSWORD", password);
        }
        let mut child = spawn(&mut command, &log)?;
        wait_for_port(self.port, &mut child, &log)?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the server and deletes its data (a benchmark's scratch can be large).
    pub fn discard(mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        self.crash();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ferretdb_version_is_read_from_the_file_scripts_stack_reads() {
        let version = ferretdb_version().unwrap();
        assert!(
            version.starts_with('v') && !version.contains(char::is_whitespace),
            "{version:?}"
        );
        let stack = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/stack")).unwrap();
        assert!(
            stack.contains("scripts/ferretdb.version"),
            "scripts/stack reads the same file"
        );
    }
}
