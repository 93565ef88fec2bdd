//! The logs web app: the terminal-like page (`/`), the logs as JSON
//! (`/logs`), new logs as server-sent events (`/logs/stream`), the standings
//! from Redis (`/results`), and the operational endpoints ([`crate::ops`]):
//! healthy whatever MongoDB and Redis do, ready when both answer.
//!
//! [`LogsApp::build`] binds the listener (tests bind port 0 and read
//! [`LogsApp::addr`]); [`LogsApp::run`] serves until the shutdown future
//! resolves. MongoDB and Redis are reached lazily: the app starts while they
//! are down, answers 503 meanwhile, and recovers by itself.

mod error;
mod metrics;
mod page;
mod pause;
mod query;
mod standings;
mod status;
mod store;
mod stream;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::http::header::CACHE_CONTROL;
use actix_web::{App, HttpResponse, HttpServer, middleware, web};
use anyhow::Context;
use prometheus_client::registry::Registry;

use crate::config::LogsSettings;
use crate::ops::{self, Dependency, Probes, Readiness};
use crate::schema::redis::RedisKeys;
use crate::serving::{self, ConnectionMetrics, PublicListener};
use crate::stores::redis_pool;
use crate::tls::ServerTls;
use error::LogsError;
use metrics::{Metrics, RequestLabels};
use standings::StandingsReader;
use store::LogStore;
use stream::{Hub, TailSource};

/// How long open requests may take to finish once shutdown starts. Streams
/// end at once (the hub closes them), so this only bounds ordinary requests.
const SHUTDOWN_GRACE_SECS: u64 = 10;

struct State {
    store: LogStore,
    standings: StandingsReader,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

pub struct LogsApp {
    listener: TcpListener,
    addr: SocketAddr,
    state: web::Data<State>,
    tail: TailSource,
    /// TLS and cut-offs of the public listener, and the admin port (issue 15).
    public: PublicListener,
    admin: Option<(TcpListener, SocketAddr)>,
}

impl LogsApp {
    /// Checks the settings, prepares the MongoDB and Redis clients (without
    /// connecting) and binds the listen address (`PORT` wins, for Cloud Run).
    pub async fn build(settings: &LogsSettings) -> anyhow::Result<LogsApp> {
        let logs = &settings.logs;
        anyhow::ensure!(logs.logs_stream_buffer >= 1, "--logs-stream-buffer must be at least 1");
        anyhow::ensure!(logs.logs_max_queries >= 1, "--logs-max-queries must be at least 1");
        anyhow::ensure!(
            logs.logs_backend_timeout_ms >= 1,
            "--logs-backend-timeout-ms must be at least 1"
        );
        let timeout = logs.backend_timeout();
        let connections = &settings.serving.connections;
        connections.check()?;
        let tls = ServerTls::from_args(&settings.serving.tls, None)?;
        let mut metrics = Metrics::new();
        let cap = ConnectionMetrics::register(metrics.registry_mut()).cap("http", connections.max_connections);
        let public = PublicListener::new(tls, cap, connections);
        let metrics = Arc::new(metrics);
        let store = LogStore::new(
            &settings.mongo.mongodb_uri,
            &settings.mongo.mongodb_database,
            timeout,
            logs.logs_max_queries,
            metrics.clone(),
        )
        .await
        .context("MongoDB settings (--mongodb-uri)")?;
        let keys = RedisKeys::new(&settings.redis.redis_key_prefix);
        let window = settings.contest.window()?;
        let standings = StandingsReader::new(&settings.redis.redis_url, keys.clone(), timeout, window)
            .context("Redis settings (--redis-url)")?;
        // Its own connections: a blocking read must not hold up /results.
        let tail = TailSource::new(
            redis_pool(&settings.redis.redis_url, timeout).context("Redis settings (--redis-url)")?,
            keys.logs_tail,
        );
        let hub = Arc::new(Hub::new(
            logs.logs_stream_buffer,
            logs.logs_max_streams,
            metrics.clone(),
        ));
        let wanted = logs.listen_addr();
        let listener = TcpListener::bind(wanted).with_context(|| format!("cannot listen on {wanted}"))?;
        let addr = listener.local_addr()?;
        let admin = match settings.admin.admin_addr {
            None => None,
            Some(wanted) => {
                let listener =
                    TcpListener::bind(wanted).with_context(|| format!("cannot listen on {wanted} (--admin-addr)"))?;
                let addr = listener.local_addr()?;
                Some((listener, addr))
            }
        };
        Ok(LogsApp {
            listener,
            addr,
            state: web::Data::new(State {
                store,
                standings,
                hub,
                metrics,
            }),
            tail,
            public,
            admin,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are, when apart from the app.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, addr)| *addr)
    }

    /// `https` with `--tls-cert`, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.public.scheme()
    }

    /// The address actually bound (the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then ends the live streams and stops
    /// gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let state = self.state.clone();
        let ops_elsewhere = self.admin.is_some();
        let admin = match self.admin {
            None => None,
            Some((listener, _)) => {
                let server = ops::admin_server(listener, state.clone()).context("starting the admin server")?;
                Some((server.handle(), tokio::spawn(server)))
            }
        };
        let server = HttpServer::new(move || {
            let metrics = state.metrics.clone();
            App::new()
                .wrap_fn(move |req, service| {
                    let path = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let metrics = metrics.clone();
                    let response = service.call(req);
                    async move {
                        let response = response.await?;
                        let status = response.status().as_u16();
                        metrics.requests.get_or_create(&RequestLabels { path, status }).inc();
                        Ok(response)
                    }
                })
                .route("/", web::get().to(page::html))
                .route("/page.js", web::get().to(page::js))
                .route("/page.css", web::get().to(page::css))
                .route("/logs", web::get().to(list_logs))
                .route("/logs/stream", web::get().to(stream_logs))
                .route("/results", web::get().to(results))
                .app_data(state.clone())
                .configure(|cfg| {
                    if !ops_elsewhere {
                        ops::routes(state.clone())(cfg);
                    }
                })
                .default_service(web::to(not_found))
                .wrap(middleware::from_fn(serving::refuse_over_cap))
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .client_request_timeout(self.public.header_timeout)
        .tls_handshake_timeout(self.public.header_timeout)
        // Per worker: a hard bound under the process-wide cap that refuse_over_cap answers.
        .max_connections(self.public.cap.max())
        .on_connect(self.public.cap.on_connect());
        let server = match &self.public.tls {
            Some(tls) => server.listen_rustls_0_23(self.listener, tls.http())?,
            None => server.listen(self.listener)?,
        }
        .run();
        let handle = server.handle();

        let tail = tokio::spawn(stream::run_tail(self.state.hub.clone(), self.tail));
        let indexes = tokio::spawn(self.state.store.clone().ensure_indexes());

        tokio::pin!(server);
        let served = tokio::select! {
            served = &mut server => served,
            () = shutdown => {
                tracing::info!("logs app shutting down");
                self.state.hub.close();
                // The stop command is sent now; the server future carries it
                // out, so it is that future we await, not the handle's.
                drop(handle.stop(true));
                server.await
            }
        };
        tail.abort();
        indexes.abort();
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            task.await.context("admin server task")?.context("admin server")?;
        }
        served.context("logs HTTP server")
    }
}

type Params = web::Query<Vec<(String, String)>>;

async fn list_logs(state: web::Data<State>, params: Params) -> Result<HttpResponse, LogsError> {
    let query = query::page(&params)?;
    let page = state.store.page(&query).await?;
    Ok(HttpResponse::Ok().insert_header((CACHE_CONTROL, "no-store")).json(page))
}

async fn stream_logs(state: web::Data<State>, params: Params) -> Result<HttpResponse, LogsError> {
    let filter = query::stream(&params)?;
    let events = state.hub.subscribe(filter)?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, "no-store"))
        // Reverse proxies (nginx and the like) must pass events on at once.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}

async fn results(state: web::Data<State>) -> Result<HttpResponse, LogsError> {
    let standings = state.standings.read().await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(standings))
}

/// Healthy whatever MongoDB and Redis do (the default `failure`), so an
/// outage of theirs never gets this app restarted.
impl Probes for State {
    async fn readiness(&self) -> Readiness {
        let (mongo, redis) = tokio::join!(self.store.ping(), self.standings.ping());
        // Why goes to the log; the probe's answer names only what is down.
        if let Err(error) = &mongo {
            tracing::warn!(?error, "not ready: MongoDB does not answer");
        }
        if let Err(error) = &redis {
            tracing::warn!(?error, "not ready: Redis does not answer");
        }
        Readiness::of([(Dependency::Mongodb, mongo.is_ok()), (Dependency::Redis, redis.is_ok())])
    }

    fn registry(&self) -> &Registry {
        self.metrics.registry()
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found" }))
}
