//! The public listeners and the admin port (issue 15): TLS on the ingress's
//! gRPC and HTTP and on the logs app, with certificates made at run time
//! ([`certs`]); client certificates on gRPC; `/healthz`, `/readyz` and
//! `/metrics` on a port of their own; the cut-offs of slow, oversized and too
//! many clients, driven with raw TCP and HTTP/2 clients. Every server is the
//! real one, in process, on free ports of 127.0.0.1.

mod admin;
mod certs;
mod cutoffs;
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use votestream::config::{Cli, Command};
use votestream::ingress::Ingress;
use votestream::logs::LogsApp;

use crate::common::{kafka_brokers, mongodb_uri, redis_url, unique};

/// `GET url` with `client`; a request that gets no response fails the test, saying `what`.
pub async fn get(client: &reqwest::Client, url: impl reqwest::IntoUrl, what: &str) -> reqwest::Response {
    client.get(url).send().await.expect(what)
}

/// A server running in the test's runtime until [`Running::stop`] (or drop).
pub struct Running {
    /// The HTTP listener (the ingress's, or the logs app's).
    pub http: SocketAddr,
    pub grpc: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The logs app's own database, dropped by [`Running::stop`].
    database: Option<mongodb::Database>,
}

impl Running {
    fn spawn(
        http: SocketAddr,
        grpc: Option<SocketAddr>,
        admin: Option<SocketAddr>,
        run: impl FnOnce(oneshot::Receiver<()>) -> JoinHandle<anyhow::Result<()>>,
    ) -> Running {
        let (stop, stopped) = oneshot::channel();
        Running {
            http,
            grpc,
            admin,
            stop: Some(stop),
            task: Some(run(stopped)),
            database: None,
        }
    }

    pub fn grpc(&self) -> SocketAddr {
        self.grpc.expect("gRPC is on")
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("an admin port")
    }

    /// Stops it as SIGTERM would and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("the server stops cleanly");
        }
        if let Some(database) = self.database.take() {
            let _ = database.drop().await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn stopped_by(stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
}

/// `votestream ingress` on free ports with `extra` flags, producing to `topic`.
pub async fn ingress(topic: &str, extra: &[&str]) -> Running {
    let settings = crate::ingress::support::settings(&kafka_brokers(), topic, extra);
    let ingress = Ingress::build(&settings).expect("the ingress builds");
    let (http, grpc, admin) = (ingress.http_addr(), ingress.grpc_addr(), ingress.admin_addr());
    Running::spawn(http, grpc, admin, |stopped| {
        tokio::spawn(ingress.run(stopped_by(stopped)))
    })
}

/// `votestream logs` on a free port with its own database and key prefix.
pub async fn logs_app(extra: &[&str]) -> Running {
    let (mongo, redis) = (mongodb_uri(), redis_url());
    let (database, prefix) = (unique("listeners"), format!("{}:", unique("listeners")));
    let mut args = vec![
        "votestream",
        "logs",
        "--logs-addr",
        "127.0.0.1:0",
        "--mongodb-uri",
        &mongo,
        "--mongodb-database",
        &database,
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
    ];
    args.extend_from_slice(extra);
    let Command::Logs(settings) = Cli::try_parse_from(args).expect("valid logs flags").command else {
        panic!("logs settings")
    };
    let app = LogsApp::build(&settings).await.expect("the logs app builds");
    let (http, admin) = (app.addr(), app.admin_addr());
    let mut running = Running::spawn(http, None, admin, |stopped| tokio::spawn(app.run(stopped_by(stopped))));
    let client = mongodb::Client::with_uri_str(&mongo).await.expect("a MongoDB client");
    running.database = Some(client.database(&database));
    running
}

/// Generous bound on a reply the server owes us.
const PATIENCE: Duration = Duration::from_secs(30);

/// Writes `request` on a new plain connection and reads until the server
/// closes it (or `PATIENCE` passes); returns what came back.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request).await.expect("request written");
    read_to_close(&mut stream).await
}

/// Everything the server sends until it closes the connection.
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&reply).into_owned()
}

/// One plain HTTP/1.1 GET on an open connection; returns the status line's code.
pub async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request written");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // The head only: enough to read the status; the body stays for the next read to skip.
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("a reply")
            .expect("read");
        assert!(
            n == 1,
            "the connection closed before a reply: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if name.eq_ignore_ascii_case("content-length") {
                value.trim().parse().ok()
            } else {
                None
            }
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("the body");
    status_of(&head)
}

/// The status code of an HTTP/1.1 reply.
pub fn status_of(reply: &str) -> u16 {
    reply
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"))
}
