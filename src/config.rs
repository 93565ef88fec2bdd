//! Settings of every process, from command-line flags with environment
//! fallbacks (each flag names its variable in `--help`). Groups shared by
//! several subcommands (Kafka, Redis, Mongo, contest rules) are defined once
//! and flattened into each subcommand's settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use chrono::{DateTime, Utc};

use crate::contest::VotingWindow;
use crate::kafka_options::KafkaOptions;
use crate::vote::Rules;

#[derive(Debug, Parser)]
#[command(
    name = "votestream",
    version,
    about = "Real-time vote pipeline: gRPC/HTTP ingress -> Kafka -> actix consumer -> Redis counters and MongoDB logs",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept votes over gRPC (votes.v1.VoteService) and HTTP (POST /votes) and produce them to Kafka.
    Ingress(IngressSettings),
    /// Read votes from Kafka; count them in Redis and log each one in MongoDB.
    Consumer(ConsumerSettings),
    /// Serve the logs web page, the logs JSON API and the standings.
    Logs(LogsSettings),
    /// Run ingress, consumer and logs in one process (for a laptop).
    All(AllSettings),
    /// Audit the result: replay the votes topic from its beginning, up to the offsets counted
    /// live, into a scratch Redis key prefix with the consumer's rules, and compare every counter
    /// and average with the live ones. Prints the differences; exits 0 when there are none, 1
    /// when there are, 2 when the recount could not be done. Safe while votes flow.
    Recount(RecountSettings),
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Topic the votes go to.
    #[arg(long, env = "VOTES_TOPIC", default_value = "votes")]
    pub votes_topic: String,
    /// Topic for records the consumer cannot count (dead letters).
    #[arg(long, env = "DLQ_TOPIC", default_value = "votes.dlq")]
    pub dlq_topic: String,
    /// A librdkafka property for every Kafka client, as key=value (repeatable; commas separate
    /// several, so a value holding one goes in --kafka-options-file), applied over votestream's
    /// own settings: e.g. security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512,
    /// sasl.username=..., ssl.ca.location=... Values are never printed; secrets belong in
    /// --kafka-options-file. Properties votestream owns (bootstrap.servers, group.id, acks,
    /// enable.idempotence, ...) are refused.
    #[arg(
        long = "kafka-option",
        env = "KAFKA_OPTIONS",
        value_name = "KEY=VALUE",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub kafka_option: Vec<String>,
    /// A file of librdkafka properties, one key=value a line (# comments), read at start and
    /// added to --kafka-option (a key in both is refused): SASL credentials from a Kubernetes
    /// Secret mounted as a file.
    #[arg(long, env = "KAFKA_OPTIONS_FILE", value_name = "PATH")]
    pub kafka_options_file: Option<PathBuf>,
    /// The options of --kafka-option and --kafka-options-file, checked: filled by
    /// [`Command::load_secrets`] and given to every Kafka client.
    #[arg(skip)]
    pub kafka_options: KafkaOptions,
}

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL: redis://[user:password@]host:port[/db], or rediss:// for TLS (the server's
    /// certificate checked against the system's roots, or the CA bundle in SSL_CERT_FILE).
    /// Never printed.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// A file holding the Redis URL (e.g. a Kubernetes Secret mounted as a file), read at start,
    /// trailing newline trimmed; instead of --redis-url.
    #[arg(long, env = "REDIS_URL_FILE", value_name = "PATH", conflicts_with = "redis_url")]
    pub redis_url_file: Option<PathBuf>,
    /// Prefix for every Redis key (e.g. "contest1:"); empty by default.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
}

#[derive(Debug, Clone, Args)]
pub struct MongoArgs {
    /// MongoDB connection string; credentials go in it
    /// (mongodb://user:password@host:port/?authSource=admin). Never printed.
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    pub mongodb_uri: String,
    /// A file holding the MongoDB connection string (e.g. a Kubernetes Secret mounted as a
    /// file), read at start, trailing newline trimmed; instead of --mongodb-uri.
    #[arg(long, env = "MONGODB_URI_FILE", value_name = "PATH", conflicts_with = "mongodb_uri")]
    pub mongodb_uri_file: Option<PathBuf>,
    /// Database holding the `logs` collection.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "votestream")]
    pub mongodb_database: String,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct RulesArgs {
    /// Highest accepted rank (inclusive); the lowest is 0.
    #[arg(long, env = "RANK_MAX", default_value_t = crate::vote::DEFAULT_RANK_MAX)]
    pub rank_max: f64,
}

impl RulesArgs {
    /// The rules a record is decoded by (the consumer's; the ingress adds
    /// `--require-voter`: [`IngressSettings::rules`]).
    pub fn rules(&self) -> Rules {
        Rules {
            rank_max: self.rank_max,
            require_voter: false,
        }
    }
}

/// The voting window, read by the ingress (refuses outside it), the consumer
/// (marks records received outside it `late`) and the logs app (`/results`).
#[derive(Debug, Clone, Copy, Args)]
pub struct ContestArgs {
    /// When voting opens, RFC 3339 (e.g. 2026-12-24T20:00:00-06:00). Before it the ingress answers
    /// 403 voting_not_open / FAILED_PRECONDITION. Unset: open from the start.
    #[arg(long, env = "VOTING_OPENS_AT", value_parser = crate::contest::parse_instant)]
    pub voting_opens_at: Option<DateTime<Utc>>,
    /// When voting closes, RFC 3339. From then on the ingress answers 403 voting_closed /
    /// FAILED_PRECONDITION, and records received at or after it are logged as `late`, not
    /// counted. Unset: the contest never closes.
    #[arg(long, env = "VOTING_CLOSES_AT", value_parser = crate::contest::parse_instant)]
    pub voting_closes_at: Option<DateTime<Utc>>,
}

impl ContestArgs {
    /// The window; an error when it closes before it opens.
    pub fn window(&self) -> anyhow::Result<VotingWindow> {
        VotingWindow::new(self.voting_opens_at, self.voting_closes_at).map_err(anyhow::Error::msg)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
/// Compression codecs built into the bundled librdkafka (zstd would need rdkafka's `zstd` feature).
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// How long the producer waits to fill a batch before sending it, in milliseconds (librdkafka
    /// linger.ms). Every vote waits up to this long before its reply; under load batches fill
    /// anyway, so 1 ms is both faster and quicker here than 5 (BENCHMARKS.md).
    #[arg(long, env = "PRODUCER_LINGER_MS", default_value_t = 1)]
    pub producer_linger_ms: u64,
    /// Largest batch of records per partition request, in bytes (librdkafka batch.size).
    #[arg(long, env = "PRODUCER_BATCH_BYTES", default_value_t = 1_000_000)]
    pub producer_batch_bytes: u64,
    /// Compression of produced batches (lz4: cheap on CPU, and vote JSON compresses well).
    #[arg(long, env = "PRODUCER_COMPRESSION", value_enum, default_value_t = Compression::Lz4)]
    pub producer_compression: Compression,
    /// Most records waiting in the producer's queue (librdkafka queue.buffering.max.messages);
    /// past it a produce waits for room, within the produce timeout. Bounds memory when Kafka is slow.
    #[arg(long, env = "PRODUCER_QUEUE_MESSAGES", default_value_t = 100_000)]
    pub producer_queue_messages: u64,
    /// Bound on the wait for Kafka's acknowledgement of a vote, in milliseconds (also librdkafka
    /// message.timeout.ms); past it the client gets UNAVAILABLE / 503 and the vote is not reported
    /// accepted.
    #[arg(long, env = "PRODUCE_TIMEOUT_MS", default_value_t = 5_000)]
    pub produce_timeout_ms: u64,
}

impl ProducerArgs {
    pub fn produce_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct IngressArgs {
    /// Address of the gRPC server (votes.v1.VoteService, health, reflection); port 0 picks a free port.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP server (POST /votes; /healthz, /readyz, /metrics unless --admin-addr); port
    /// 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Refuse votes that do not name their voter (400 invalid_vote, field voter, problem missing /
    /// INVALID_ARGUMENT): every vote then counts as its voter's rating of the album.
    #[arg(long, env = "REQUIRE_VOTER", default_value_t = false)]
    pub require_voter: bool,
    /// Do not serve gRPC (e.g. a Deployment that serves HTTP only).
    #[arg(long, env = "NO_GRPC", default_value_t = false)]
    pub no_grpc: bool,
    /// Do not serve POST /votes (the HTTP server still answers /healthz, /readyz, /metrics).
    #[arg(long, env = "NO_HTTP_VOTES", default_value_t = false)]
    pub no_http_votes: bool,
    /// HTTP worker threads [default: one per CPU].
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Largest HTTP request body, in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Most votes in one batch (HTTP array or gRPC CastVotes); longer batches are refused whole.
    #[arg(long, env = "MAX_BATCH", default_value_t = 1_000)]
    pub max_batch: usize,
    /// Largest gRPC message, in bytes, received or sent; larger requests get OUT_OF_RANGE.
    #[arg(long, env = "GRPC_MAX_MESSAGE_BYTES", default_value_t = 4_194_304)]
    pub grpc_max_message_bytes: usize,
    /// Bound on the Kafka metadata request behind /readyz, in milliseconds (under Kubernetes'
    /// default probe timeout of 1 s, so a slow broker reads as "not ready", not as a failed probe).
    #[arg(long, env = "READINESS_TIMEOUT_MS", default_value_t = 800)]
    pub readiness_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests have to finish before connections are dropped, in
    /// seconds (under Kubernetes' default grace period of 30 s, leaving time to flush the producer).
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl IngressArgs {
    pub fn readiness_timeout(&self) -> Duration {
        Duration::from_millis(self.readiness_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

// Voter tokens and abuse limits of the ingress (src/ingress/auth.rs, src/ingress/limits.rs).

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// JWKS file (JSON Web Key Set) of the public keys voter tokens are signed with: Ed25519
    /// (OKP), ES256 (EC P-256) or RS256 (RSA), each with its `kid`. When set, every vote request
    /// needs `Authorization: Bearer <JWT>` (gRPC: `authorization` metadata) with `exp` and `sub`,
    /// the voter: a vote without a voter gets it, one naming another voter is refused (403
    /// voter_mismatch / PERMISSION_DENIED); a missing or invalid token gets 401 / UNAUTHENTICATED.
    /// The file is reread when it changes (checked at most once a second), so keys rotate without
    /// a restart. Unset: votes are not authenticated.
    #[arg(long, env = "AUTH_JWT_KEYS")]
    pub auth_jwt_keys: Option<std::path::PathBuf>,
    /// The `iss` voter tokens must carry. Unset: not checked.
    #[arg(long, env = "AUTH_JWT_ISSUER", requires = "auth_jwt_keys")]
    pub auth_jwt_issuer: Option<String>,
    /// The `aud` voter tokens must carry (one of, when a list). Unset: not checked, so set it when
    /// the same keys sign tokens for other services.
    #[arg(long, env = "AUTH_JWT_AUDIENCE", requires = "auth_jwt_keys")]
    pub auth_jwt_audience: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Votes per minute per voter (the token's `sub`, else the vote's `voter`); past it the
    /// request gets 429 with Retry-After / RESOURCE_EXHAUSTED and nothing is produced. Anonymous
    /// votes are limited only by address. Unset: no limit.
    #[arg(long, env = "RATE_LIMIT_VOTER")]
    pub rate_limit_voter: Option<std::num::NonZeroU32>,
    /// Votes a voter may send at once before the per-minute rate applies; a request with more
    /// votes of one voter is always refused [default: the rate].
    #[arg(long, env = "RATE_LIMIT_VOTER_BURST", requires = "rate_limit_voter")]
    pub rate_limit_voter_burst: Option<std::num::NonZeroU32>,
    /// Vote requests per second per client address (the TCP peer: behind a proxy or load
    /// balancer, the proxy's, unless it keeps client addresses; IPv6 by /64); past it 429 /
    /// RESOURCE_EXHAUSTED. Unset: no limit.
    #[arg(long, env = "RATE_LIMIT_IP")]
    pub rate_limit_ip: Option<std::num::NonZeroU32>,
    /// Requests an address may send at once before the per-second rate applies [default: the rate].
    #[arg(long, env = "RATE_LIMIT_IP_BURST", requires = "rate_limit_ip")]
    pub rate_limit_ip_burst: Option<std::num::NonZeroU32>,
    /// Voters (and, in a table of its own, addresses) the rate limits remember at once, 16 bytes
    /// each, allocated at start when the limit is on. A key is needed only while its bucket
    /// refills; past the size, the key closest to a full bucket is forgotten first.
    #[arg(long, env = "RATE_LIMIT_TABLE_ENTRIES", default_value_t = 1_048_576)]
    pub rate_limit_table_entries: usize,
    /// Load shedding: a request whose votes would bring the producer's queue past this fraction of
    /// --producer-queue-messages is refused at once (503 overloaded with Retry-After / UNAVAILABLE)
    /// instead of waiting for room. Above 0, at most 1.
    #[arg(long, env = "SHED_QUEUE_FILL", default_value_t = 0.9)]
    pub shed_queue_fill: f64,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Address of the consumer's HTTP server (/healthz, /readyz, /metrics): its admin port, as it
    /// has no public listener.
    #[arg(long, env = "CONSUMER_HTTP_ADDR", default_value = "0.0.0.0:9100")]
    pub consumer_http_addr: SocketAddr,
    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "votestream-consumer")]
    pub consumer_group: String,
    /// Most records in one batch. A batch is handed to Redis as soon as no further record is
    /// ready to read while Redis has no batch left to decide, so a trickle of votes leaves at
    /// once and a steady load batches at Redis's pace; a backlog forms batches of this many.
    /// Also the most votes in one Mongo write of small decided batches merged.
    #[arg(long, env = "BATCH_MAX_RECORDS", default_value_t = 1_000)]
    pub batch_max_records: usize,
    /// Longest a batch stays open while records keep coming, in milliseconds.
    #[arg(long, env = "BATCH_MAX_WAIT_MS", default_value_t = 50)]
    pub batch_max_wait_ms: u64,
    /// Full batches' worth of records in flight to the sinks at once, and the most batches
    /// waiting for Redis (its actix mailbox holds one more); when that many records are in
    /// flight, reading pauses until some are written.
    #[arg(long, env = "MAILBOX_CAPACITY", default_value_t = 8)]
    pub mailbox_capacity: usize,
    /// Log writes the Mongo logger makes at once (concurrent insert_many calls, each of one
    /// batch or several small ones merged); offsets are still committed in order. The Redis
    /// script always applies one batch at a time. FerretDB (SQLite) is fastest with 2 and
    /// slower with 4 or more; a real MongoDB takes more.
    #[arg(long, env = "MONGO_WRITERS", default_value_t = 2)]
    pub mongo_writers: usize,
    /// First delay before an actor reconnects after an I/O failure, in milliseconds (doubles each time).
    #[arg(long, env = "RESTART_BACKOFF_MIN_MS", default_value_t = 100)]
    pub restart_backoff_min_ms: u64,
    /// Longest delay between reconnect attempts, in milliseconds.
    #[arg(long, env = "RESTART_BACKOFF_MAX_MS", default_value_t = 5_000)]
    pub restart_backoff_max_ms: u64,
    /// On SIGTERM, how long the batches in flight have to be written before the offsets confirmed
    /// so far are committed, in seconds (under Kubernetes' grace period, leaving time to commit);
    /// batches not written by then are read again by the next consumer of their partitions.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// Static group membership: a name for this consumer that stays the same across its
    /// restarts (on Kubernetes, the StatefulSet pod's name). Restarted within the session
    /// timeout, it gets its partitions back without a rebalance, and the other consumers keep
    /// theirs. Unset: a new member each start. Two running consumers must not share a name.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent consumer before giving its partitions to the
    /// others, in milliseconds: the time a static member has to come back from a restart.
    #[arg(long, env = "SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How partitions move between the group's consumers. `cooperative`: a rebalance moves
    /// only the partitions that change owner, and the rest keep counting (cooperative-sticky).
    /// `eager`: every consumer gives up every partition, then all are handed out again.
    #[arg(long, env = "REBALANCE_PROTOCOL", value_enum, default_value_t = RebalanceProtocol::Cooperative)]
    pub rebalance_protocol: RebalanceProtocol,
    /// How long a vote id is remembered, in seconds: a record whose vote id was counted at most
    /// this long before it (by receive time) is a duplicate, counted nowhere. Redis keeps each
    /// counted id (about 100 bytes) for up to twice this long.
    #[arg(long, env = "DEDUP_WINDOW_SECS", default_value_t = 86_400)]
    pub dedup_window_secs: u64,
    /// After --voting-closes-at, how long to wait before taking each partition's end offset,
    /// in seconds: votes accepted just before the close may reach Kafka up to the ingress's
    /// produce timeout later. The result is final once everything up to those offsets is counted.
    #[arg(long, env = "FINAL_GRACE_SECS", default_value_t = 10)]
    pub final_grace_secs: u64,
}

/// How partitions move between a group's consumers (`--rebalance-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebalanceProtocol {
    Cooperative,
    Eager,
}

impl RebalanceProtocol {
    /// librdkafka's `partition.assignment.strategy` for it.
    pub fn assignment_strategy(self) -> &'static str {
        match self {
            RebalanceProtocol::Cooperative => "cooperative-sticky",
            RebalanceProtocol::Eager => "range,roundrobin",
        }
    }
}

impl ConsumerArgs {
    pub fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.dedup_window_secs)
    }

    pub fn final_grace(&self) -> Duration {
        Duration::from_secs(self.final_grace_secs)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Address of the logs web app. The PORT variable (Cloud Run) wins over its port.
    #[arg(long, env = "LOGS_ADDR", default_value = "0.0.0.0:8081")]
    pub logs_addr: SocketAddr,
    /// Most concurrent /logs/stream clients.
    #[arg(long, env = "LOGS_MAX_STREAMS", default_value_t = 100)]
    pub logs_max_streams: usize,
    /// Most MongoDB queries (pages of /logs) outstanding at once; a page asked for beyond it
    /// waits up to the backend timeout for a slot, then gets 503. Bounds the work a crowd on
    /// the page can put on the database, so the consumer's writes go on.
    #[arg(long, env = "LOGS_MAX_QUERIES", default_value_t = 4)]
    pub logs_max_queries: usize,
    /// Logs buffered for /logs/stream clients; a client further behind skips the oldest.
    #[arg(long, env = "LOGS_STREAM_BUFFER", default_value_t = 1_024)]
    pub logs_stream_buffer: usize,
    /// Bound on each MongoDB or Redis call (server selection included), in milliseconds;
    /// past it the request gets 503, and MongoDB is told to give the query up too (maxTimeMS).
    /// A page MongoDB gives up pauses the pages with the same filters (503 with Retry-After, no
    /// query) for four times this long, doubled after each probe it gives up again, up to 60 s.
    #[arg(long, env = "LOGS_BACKEND_TIMEOUT_MS", default_value_t = 2_000)]
    pub logs_backend_timeout_ms: u64,
}

impl LogsArgs {
    /// The listen address, with Cloud Run's `PORT` taking precedence.
    pub fn listen_addr(&self) -> SocketAddr {
        match std::env::var("PORT").ok().and_then(|p| p.parse::<u16>().ok()) {
            Some(port) => SocketAddr::new(self.logs_addr.ip(), port),
            None => self.logs_addr,
        }
    }

    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.logs_backend_timeout_ms)
    }
}

#[derive(Debug, Clone, Args)]
pub struct IngressSettings {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub contest: ContestArgs,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub serving: IngressServingArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl IngressSettings {
    /// The rules votes are validated by, `--require-voter` included.
    pub fn rules(&self) -> Rules {
        Rules {
            require_voter: self.ingress.require_voter,
            ..self.rules.rules()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerSettings {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub mongo: MongoArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub contest: ContestArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LogsSettings {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub mongo: MongoArgs,
    #[command(flatten)]
    pub contest: ContestArgs,
    #[command(flatten)]
    pub logs: LogsArgs,
    #[command(flatten)]
    pub serving: ServingArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RecountSettings {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub contest: ContestArgs,
    /// The consumer's dedup window, in seconds (give the recount the consumer's value).
    #[arg(long, env = "DEDUP_WINDOW_SECS", default_value_t = 86_400)]
    pub dedup_window_secs: u64,
    /// Where the recount counts: a Redis key prefix that must hold nothing
    /// [default: <live prefix>recount:<random id>:].
    #[arg(long, env = "RECOUNT_SCRATCH_PREFIX")]
    pub scratch_prefix: Option<String>,
    /// Keep the scratch keys afterwards (to look at them); by default they are deleted.
    #[arg(long, env = "RECOUNT_KEEP_SCRATCH", default_value_t = false)]
    pub keep_scratch: bool,
    /// Records per script call while replaying (as the consumer's --batch-max-records).
    #[arg(long, env = "BATCH_MAX_RECORDS", default_value_t = 1_000)]
    pub batch_max_records: usize,
}

#[derive(Debug, Clone, Args)]
pub struct AllSettings {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub mongo: MongoArgs,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub contest: ContestArgs,
    #[command(flatten)]
    pub ingress: IngressArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub logs: LogsArgs,
    #[command(flatten)]
    pub serving: IngressServingArgs,
    #[command(flatten)]
    pub admin: AllAdminArgs,
}

impl AllSettings {
    pub fn ingress(&self) -> IngressSettings {
        IngressSettings {
            kafka: self.kafka.clone(),
            rules: self.rules,
            contest: self.contest,
            ingress: self.ingress.clone(),
            serving: self.serving.clone(),
            admin: AdminArgs {
                admin_addr: self.admin.ingress_admin_addr,
            },
        }
    }

    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            kafka: self.kafka.clone(),
            redis: self.redis.clone(),
            mongo: self.mongo.clone(),
            rules: self.rules,
            contest: self.contest,
            consumer: self.consumer.clone(),
        }
    }

    pub fn logs(&self) -> LogsSettings {
        LogsSettings {
            redis: self.redis.clone(),
            mongo: self.mongo.clone(),
            contest: self.contest,
            logs: self.logs.clone(),
            serving: self.serving.common.clone(),
            admin: AdminArgs {
                admin_addr: self.admin.logs_admin_addr,
            },
        }
    }
}

// --- TLS, the admin port and the cut-offs of slow or crowding clients (issue 15) ---

/// TLS on a process's public listeners (the ingress's gRPC and HTTP, the logs
/// app); never on the admin port.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM file with the server's certificate chain (leaf first); with --tls-key, the public
    /// listeners speak TLS only. Unset: plain text.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Cut-offs of clients that are slow or too many, on each public listener.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Most open client connections per public listener (the ingress's HTTP and gRPC each, the
    /// logs app's). Past it a new HTTP connection is answered 503 too_many_connections and
    /// closed, a new gRPC connection is closed at once (the call fails with a transport error,
    /// UNAVAILABLE or CANCELLED). The admin port is not counted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a new connection has to finish its TLS handshake, and an HTTP request to send
    /// its headers, in milliseconds (at least 1000): past it HTTP answers 408 and closes; a gRPC
    /// connection that has sent nothing by then is closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 5_000)]
    pub header_timeout_ms: u64,
}

impl ConnectionArgs {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_connections >= 1, "--max-connections must be at least 1");
        // actix-web measures the deadline from a clock it updates every 500 ms: a shorter one may
        // pass before it is set, and then never fire for a client that sends nothing.
        anyhow::ensure!(
            self.header_timeout_ms >= 1_000,
            "--header-timeout-ms must be at least 1000"
        );
        Ok(())
    }
}

// --- Secrets from files and Kafka pass-through options (issue 15) -------------

impl KafkaArgs {
    /// Reads --kafka-options-file and checks every option into `kafka_options`.
    fn load_options(&mut self) -> anyhow::Result<()> {
        let file = match &self.kafka_options_file {
            Some(path) => Some((
                path.display().to_string(),
                crate::secrets::read_secret_file(path, "--kafka-options-file")?,
            )),
            None => None,
        };
        let file = file.as_ref().map(|(path, text)| (path.as_str(), text.as_str()));
        self.kafka_options = KafkaOptions::parse(&self.kafka_option, file).map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

/// The public listeners of the logs app: TLS and cut-offs.
#[derive(Debug, Clone, Args)]
pub struct ServingArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// The ingress's listeners: what the logs app has, plus client certificates on
/// gRPC and bounds on a request in progress.
#[derive(Debug, Clone, Args)]
pub struct IngressServingArgs {
    #[command(flatten)]
    pub common: ServingArgs,
    /// PEM file with the CA certificates that sign clients' certificates: gRPC then requires a
    /// client certificate signed by one of them (mTLS, e.g. between a front-end and the
    /// ingress). HTTP does not ask for one. Needs --tls-cert.
    #[arg(long, env = "TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How long an HTTP request's body may take to arrive once its headers have, in
    /// milliseconds; past it 408 body_timeout and the connection is closed. A gRPC call is
    /// cancelled (CANCELLED) when it takes longer than this plus --produce-timeout-ms in all.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Most calls in progress at once on one gRPC connection (HTTP/2 streams); a client opening
    /// more has the extra ones refused (REFUSED_STREAM).
    #[arg(long, env = "GRPC_MAX_STREAMS", default_value_t = 256)]
    pub grpc_max_streams: u32,
}

impl IngressServingArgs {
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

/// The private admin port of the ingress or the logs app.
#[derive(Debug, Clone, Copy, Args)]
pub struct AdminArgs {
    /// Address of the admin port: /healthz, /readyz and /metrics are served there, in plain
    /// HTTP, and no longer on the public listener. Unset: they stay on the public HTTP listener.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
}

/// `votestream all`: each of the three keeps its own port (the consumer's is
/// --consumer-http-addr).
#[derive(Debug, Clone, Copy, Args)]
pub struct AllAdminArgs {
    /// The ingress's admin port (--admin-addr of `votestream ingress`).
    #[arg(long, env = "INGRESS_ADMIN_ADDR")]
    pub ingress_admin_addr: Option<SocketAddr>,
    /// The logs app's admin port (--admin-addr of `votestream logs`).
    #[arg(long, env = "LOGS_ADMIN_ADDR")]
    pub logs_admin_addr: Option<SocketAddr>,
}

// --- end of issue 15's TLS, admin port and cut-offs ---

impl RedisArgs {
    fn load_url_file(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.redis_url_file {
            self.redis_url = crate::secrets::read_secret_file(path, "--redis-url-file")?;
        }
        Ok(())
    }
}

impl MongoArgs {
    fn load_uri_file(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.mongodb_uri_file {
            self.mongodb_uri = crate::secrets::read_secret_file(path, "--mongodb-uri-file")?;
        }
        Ok(())
    }
}

impl Command {
    /// The stores a subcommand reaches, with the settings it reaches them by.
    pub fn stores(&self) -> (Option<&KafkaArgs>, Option<&RedisArgs>, Option<&MongoArgs>) {
        match self {
            Command::Ingress(s) => (Some(&s.kafka), None, None),
            Command::Consumer(s) => (Some(&s.kafka), Some(&s.redis), Some(&s.mongo)),
            Command::Logs(s) => (None, Some(&s.redis), Some(&s.mongo)),
            Command::All(s) => (Some(&s.kafka), Some(&s.redis), Some(&s.mongo)),
            Command::Recount(s) => (Some(&s.kafka), Some(&s.redis), None),
        }
    }

    /// Reads the secret files the flags name (--redis-url-file, --mongodb-uri-file,
    /// --kafka-options-file) into the settings and checks the Kafka options; once, at start.
    /// Errors name the flag and the file, never a secret.
    pub fn load_secrets(&mut self) -> anyhow::Result<()> {
        let (kafka, redis, mongo) = match self {
            Command::Ingress(s) => (Some(&mut s.kafka), None, None),
            Command::Consumer(s) => (Some(&mut s.kafka), Some(&mut s.redis), Some(&mut s.mongo)),
            Command::Logs(s) => (None, Some(&mut s.redis), Some(&mut s.mongo)),
            Command::All(s) => (Some(&mut s.kafka), Some(&mut s.redis), Some(&mut s.mongo)),
            Command::Recount(s) => (Some(&mut s.kafka), Some(&mut s.redis), None),
        };
        if let Some(kafka) = kafka {
            kafka.load_options()?;
        }
        if let Some(redis) = redis {
            redis.load_url_file()?;
        }
        if let Some(mongo) = mongo {
            mongo.load_uri_file()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_design() {
        let cli = Cli::try_parse_from(["votestream", "all"]).unwrap();
        let Command::All(all) = cli.command else { panic!("all") };
        assert_eq!(all.kafka.votes_topic, "votes");
        assert_eq!(all.kafka.dlq_topic, "votes.dlq");
        assert_eq!(all.consumer.consumer_group, "votestream-consumer");
        assert_eq!(all.ingress.grpc_addr.port(), 50051);
        assert_eq!(all.ingress.http_addr.port(), 8080);
        assert_eq!(all.consumer.consumer_http_addr.port(), 9100);
        assert_eq!(all.consumer.drain_timeout(), Duration::from_secs(20));
        assert_eq!(all.logs.logs_addr.port(), 8081);
        assert_eq!(all.rules.rules(), Rules::default());
    }

    #[test]
    fn every_ingress_flag_is_documented_with_its_environment_variable() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let ingress = cli.find_subcommand_mut("ingress").expect("an ingress subcommand");
        let mut flags = 0;
        for arg in ingress
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help"))
        {
            let name = arg.get_id();
            assert!(arg.get_env().is_some(), "--{name} has no environment variable");
            assert!(arg.get_help().is_some(), "--{name} has no help text");
            flags += 1;
        }
        assert!(flags >= 19, "expected every ingress flag, found {flags}");
        let help = ingress.render_long_help().to_string();
        for needle in [
            "--kafka-brokers",
            "KAFKA_BROKERS",
            "--no-grpc",
            "NO_GRPC",
            "PRODUCE_TIMEOUT_MS",
        ] {
            assert!(help.contains(needle), "help lacks {needle}");
        }
    }

    // Issue 15: TLS, admin port, cut-offs.

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let err = Cli::try_parse_from(["votestream", "ingress", "--tls-cert", "server.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let err = Cli::try_parse_from(["votestream", "logs", "--tls-key", "key.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        let err = Cli::try_parse_from(["votestream", "ingress", "--tls-client-ca", "ca.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }

    #[test]
    fn in_all_the_ingress_and_the_logs_app_keep_their_own_admin_ports() {
        let cli = Cli::try_parse_from([
            "votestream",
            "all",
            "--ingress-admin-addr",
            "127.0.0.1:9090",
            "--logs-admin-addr",
            "127.0.0.1:9091",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
        ])
        .unwrap();
        let Command::All(all) = cli.command else { panic!("all") };
        assert_eq!(all.ingress().admin.admin_addr.unwrap().port(), 9090);
        assert_eq!(all.logs().admin.admin_addr.unwrap().port(), 9091);
        assert_eq!(all.consumer().consumer.consumer_http_addr.port(), 9100);
        assert!(all.ingress().serving.tls_client_ca.is_some());
        assert_eq!(
            all.logs().serving.tls.tls_cert,
            all.ingress().serving.common.tls.tls_cert
        );
    }

    #[test]
    fn without_the_new_flags_nothing_changes() {
        let cli = Cli::try_parse_from(["votestream", "all"]).unwrap();
        let Command::All(all) = cli.command else { panic!("all") };
        let ingress = all.ingress();
        assert!(ingress.admin.admin_addr.is_none() && all.logs().admin.admin_addr.is_none());
        assert!(ingress.serving.common.tls.tls_cert.is_none() && ingress.serving.tls_client_ca.is_none());
        assert_eq!(ingress.serving.common.connections.max_connections, 10_000);
        assert_eq!(
            ingress.serving.common.connections.header_timeout(),
            Duration::from_secs(5)
        );
        assert_eq!(ingress.serving.body_timeout(), Duration::from_secs(10));
    }
}
