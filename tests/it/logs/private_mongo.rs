//! A FerretDB of the test's own on a port of its choosing, to bring MongoDB
//! "back" without touching the shared one. Uses the binary `scripts/stack`
//! installs; the test installs nothing and kills only the process it started.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::unique;

const FERRETDB_VERSION: &str = "v1.24.2";

/// Where `scripts/stack` keeps FerretDB:
/// `${STACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/votestream}/ferretdb-<version>/ferretdb`.
fn ferretdb_binary() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = set("STACK_CACHE").unwrap_or_else(|| {
        set("XDG_CACHE_HOME")
            .or_else(|| set("HOME").map(|home| home.join(".cache")))
            .expect("HOME or XDG_CACHE_HOME is set")
            .join("votestream")
    });
    cache.join(format!("ferretdb-{FERRETDB_VERSION}")).join("ferretdb")
}

pub struct PrivateFerretDb {
    child: Child,
    root: PathBuf,
}

impl PrivateFerretDb {
    /// Starts FerretDB on 127.0.0.1:`port` with fresh data and waits until it accepts connections.
    pub async fn start(port: u16) -> PrivateFerretDb {
        let binary = ferretdb_binary();
        assert!(
            binary.exists(),
            "FerretDB is not at {}; `scripts/stack up` installs it",
            binary.display()
        );
        let root = std::env::temp_dir().join(unique("votestream-ferretdb"));
        let (data, state) = (root.join("data"), root.join("state"));
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&state).expect("state dir");
        let log = std::fs::File::create(root.join("ferretdb.log")).expect("log file");
        let child = Command::new(&binary)
            .arg("--handler=sqlite")
            .arg(format!("--sqlite-url=file:{}/", data.display()))
            .arg(format!("--listen-addr=127.0.0.1:{port}"))
            .arg(format!("--state-dir={}", state.display()))
            .args(["--telemetry=disable", "--debug-addr=-", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("FerretDB starts");
        let mut ferretdb = PrivateFerretDb { child, root };
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return ferretdb;
            }
            if let Ok(Some(exit)) = ferretdb.child.try_wait() {
                let log = std::fs::read_to_string(ferretdb.root.join("ferretdb.log")).unwrap_or_default();
                panic!("FerretDB exited ({exit}) before listening on {port}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("FerretDB did not listen on {port} within 60 s");
    }
}

impl Drop for PrivateFerretDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
