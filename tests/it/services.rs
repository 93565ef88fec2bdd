//! Private Redis and FerretDB servers for tests that restart their stores, so
//! the shared local stack is never disturbed. The binaries are the ones
//! `scripts/stack up` installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::free_port;

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn server")
}

/// Waits until `port` accepts connections; panics with the server's log if it exits first.
fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the server exited ({exit}) before listening on {port}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on 127.0.0.1:{port} after 60 s");
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
    pub fn start(dir: &Path, persistent: bool) -> PrivateRedis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("redis dir");
        let port = free_port();
        let child = Self::spawn(&dir, port, persistent);
        PrivateRedis {
            child,
            port,
            dir,
            persistent,
        }
    }

    fn spawn(dir: &Path, port: u16, persistent: bool) -> Child {
        let appendonly = if persistent { "yes" } else { "no" };
        let log = dir.join("redis.log");
        let mut child = spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
                .args(["--appendonly", appendonly, "--dir"])
                .arg(dir),
            &log,
        );
        wait_for_port(port, &mut child, &log);
        child
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL and starts it again on the same port:
    /// without persistence it comes back empty, with it up to a second of
    /// writes may be lost.
    pub fn crash_and_restart(&mut self, down_for: Duration) {
        kill9(&mut self.child);
        std::thread::sleep(down_for);
        self.child = Self::spawn(&self.dir, self.port, self.persistent);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        kill9(&mut self.child);
    }
}

/// FerretDB (SQLite) on a free port.
pub struct PrivateMongo {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl PrivateMongo {
    pub fn binary() -> PathBuf {
        let cache = std::env::var("STACK_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
            let base = std::env::var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
            base.join("votestream")
        });
        cache.join("ferretdb-v1.24.2/ferretdb")
    }

    pub fn start(dir: &Path) -> PrivateMongo {
        Self::start_on(dir, free_port())
    }

    /// Starts FerretDB on a port the caller chose (e.g. one an app already points at).
    pub fn start_on(dir: &Path, port: u16) -> PrivateMongo {
        let binary = Self::binary();
        assert!(
            binary.exists(),
            "FerretDB is not at {}; `scripts/stack up` installs it",
            binary.display()
        );
        let dir = dir.join("ferretdb");
        std::fs::create_dir_all(dir.join("data")).expect("ferretdb dir");
        std::fs::create_dir_all(dir.join("state")).expect("ferretdb dir");
        let child = Self::spawn(&dir, port);
        PrivateMongo { child, port, dir }
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let log = dir.join("ferretdb.log");
        let mut child = spawn(
            Command::new(Self::binary())
                .arg("--handler=sqlite")
                .arg(format!("--sqlite-url=file:{}/", dir.join("data").display()))
                .arg(format!("--listen-addr=127.0.0.1:{port}"))
                .arg(format!("--state-dir={}", dir.join("state").display()))
                .args(["--telemetry=disable", "--debug-addr=-", "--log-level=warn"]),
            &log,
        );
        wait_for_port(port, &mut child, &log);
        child
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// The server's resident memory, in MiB (VmRSS).
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Kills the server with SIGKILL; [`start_again`](Self::start_again) brings it back.
    pub fn crash(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts the server again on the same port and data.
    pub fn start_again(&mut self) {
        self.child = Self::spawn(&self.dir, self.port);
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        kill9(&mut self.child);
    }
}
