//! Authenticated stores, for real (issue 15): every Kafka client of every
//! process over SASL/SCRAM with TLS, Redis over TLS as an ACL user, MongoDB
//! with a user, all credentials read from files; wrong credentials stop each
//! process with the store named; no output ever holds a secret.
//!
//! Kafka and Redis are the local stack's authenticated endpoints
//! (`scripts/stack up` writes them to `$STACK_DIR/secure.env`). MongoDB is
//! FerretDB 1.24, whose authentication goes only so far: on SQLite it takes
//! `PLAIN` credentials without checking them (the stack's own, for the
//! pipeline: the driver sends them, nothing prints them), and its experimental
//! SCRAM-SHA-256 (`--test-enable-new-auth`, a private server here) refuses a
//! wrong password for real, but ends even a right one in a way the Rust
//! driver does not accept (it answers `done: false` after the server's final
//! message, ignoring the driver's `skipEmptyExchange`), so a user it accepts
//! is tested only against a real MongoDB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use harness::servers::PrivateMongo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use votestream::schema::redis::RedisKeys;

use crate::common::{TempTopic, eventually, free_port, kafka_brokers, redis_url, scratch_dir, unique};

/// The stack's authenticated endpoints, from `$STACK_DIR/secure.env`
/// (`STACK_DIR` as `scripts/stack` takes it: by default the repository's `.stack`).
struct Secure(BTreeMap<String, String>);

impl Secure {
    fn read() -> Secure {
        let dir = std::env::var_os("STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack"));
        let file = dir.join("secure.env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}. The stack's authenticated endpoints are written there by `scripts/stack up` \
                 (a stack started by an older scripts/stack lacks them: `scripts/stack down && scripts/stack up`)",
                file.display()
            )
        });
        Secure(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0.get(key).unwrap_or_else(|| panic!("secure.env has no {key}"))
    }

    /// librdkafka options for SCRAM over TLS, the user and password left to a file.
    fn tls_options(&self) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,ssl.ca.location={}",
            self.get("STACK_CA_FILE")
        )
    }

    /// The options file: the SCRAM user and `password`.
    fn kafka_credentials(&self, password: &str) -> String {
        format!(
            "# SCRAM credentials\nsasl.username={}\nsasl.password={password}\n",
            self.get("KAFKA_SASL_USER")
        )
    }
}

fn write_secret(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("secret file");
    path
}

/// A process's environment variables.
type Env<'a> = Vec<(&'a str, String)>;

/// A `votestream` process whose stderr goes to a file, read back at the end.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(subcommand: &str, env: &[(&str, String)], dir: &Path, log: &str) -> Process {
        let log = dir.join(log);
        let child = Command::new(env!("CARGO_BIN_EXE_votestream"))
            .arg(subcommand)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info,votestream=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn votestream");
        Process { child, log }
    }

    /// Waits for the process to end on its own (at most a minute).
    async fn exit(mut self) -> (ExitStatus, String) {
        let status = eventually(
            &format!("{} exits", self.log.display()),
            Duration::from_secs(60),
            || {
                let status = self.child.try_wait().expect("try_wait");
                async move { status }
            },
        )
        .await;
        (status, std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGTERM, then its exit.
    async fn stop(self) -> (ExitStatus, String) {
        harness::send_term(self.child.id()).expect("SIGTERM");
        self.exit().await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers 200.
async fn ready(http: &reqwest::Client, url: &str) {
    eventually(&format!("{url} answers 200"), Duration::from_secs(60), || async {
        let response = http.get(url).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

fn assert_no_secret(what: &str, output: &str, secrets: &[&str]) {
    assert!(!output.contains("panicked"), "{what} panicked:\n{output}");
    for secret in secrets {
        assert!(!output.contains(secret), "{what} printed a secret:\n{output}");
    }
}

#[tokio::test]
async fn every_kafka_client_uses_scram_over_tls_and_the_stores_their_users() {
    let secure = Secure::read();
    let dir = scratch_dir("secure-pipeline");
    let topic = TempTopic::create("secure-votes", 3).await;
    let dlq = TempTopic::create("secure-dlq", 1).await;
    let prefix = format!("{}:", unique("secure"));
    let database = unique("secure");
    let mongo_password = unique("mongo-secret");
    let mongo_uri = format!(
        "{}/?authMechanism=PLAIN&authSource=%24external",
        crate::common::mongodb_uri().replace("mongodb://", &format!("mongodb://votestream:{mongo_password}@"))
    );
    let (kafka_password, redis_password) = (secure.get("KAFKA_SASL_PASSWORD"), secure.get("REDIS_ACL_PASSWORD"));
    let secrets = [kafka_password, redis_password, mongo_password.as_str()];

    // Every secret from a file; the non-secret Kafka options from the environment.
    let env = vec![
        ("KAFKA_BROKERS", secure.get("KAFKA_SASL_TLS_BROKERS").to_owned()),
        ("KAFKA_OPTIONS", secure.tls_options()),
        (
            "KAFKA_OPTIONS_FILE",
            write_secret(&dir, "kafka.properties", &secure.kafka_credentials(kafka_password))
                .display()
                .to_string(),
        ),
        (
            "REDIS_URL_FILE",
            write_secret(&dir, "redis-url", &format!("{}\n", secure.get("REDIS_TLS_URL")))
                .display()
                .to_string(),
        ),
        // The Redis server's certificate is checked against the stack's CA.
        ("SSL_CERT_FILE", secure.get("STACK_CA_FILE").to_owned()),
        (
            "MONGODB_URI_FILE",
            write_secret(&dir, "mongodb-uri", &format!("{mongo_uri}\n"))
                .display()
                .to_string(),
        ),
        ("VOTES_TOPIC", topic.name.clone()),
        ("DLQ_TOPIC", dlq.name.clone()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("MONGODB_DATABASE", database.clone()),
        ("CONSUMER_GROUP", unique("secure-group")),
    ];
    let http = reqwest::Client::new();

    // The ingress's producer: 20 votes accepted means Kafka acknowledged each over SASL_SSL.
    let port = free_port();
    let mut ingress_env = env.clone();
    ingress_env.push(("HTTP_ADDR", format!("127.0.0.1:{port}")));
    ingress_env.push(("GRPC_ADDR", format!("127.0.0.1:{}", free_port())));
    let ingress = Process::spawn("ingress", &ingress_env, &dir, "ingress.log");
    ready(&http, &format!("http://127.0.0.1:{port}/readyz")).await;
    let votes: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({"name": "Alux Nahual", "album": "Conquista", "year": 1982, "rank": i % 10, "voter": format!("v{i}")})
        })
        .collect();
    let reply = http
        .post(format!("http://127.0.0.1:{port}/votes"))
        .json(&votes)
        .send()
        .await
        .expect("POST /votes");
    assert_eq!(reply.status(), 200);
    let reply: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(reply["accepted"], 20, "{reply}");
    let (status, ingress_log) = ingress.stop().await;
    assert!(status.success(), "ingress: {status}\n{ingress_log}");
    // A record no vote decodes from, for the dead-letter producer (the test's own client: plain).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic.name).key("x").payload("not a vote"),
            Duration::from_secs(10),
        )
        .await
        .expect("poison record produced");

    // The consumer: its group consumer and dead-letter producer, and the end offsets it takes
    // once voting is closed (now, after every record), to call the result final.
    let closes = votestream::vote::format_instant(&chrono::Utc::now());
    let mut consumer_env = env.clone();
    consumer_env.push(("CONSUMER_HTTP_ADDR", format!("127.0.0.1:{}", free_port())));
    consumer_env.push(("VOTING_CLOSES_AT", closes.clone()));
    consumer_env.push(("FINAL_GRACE_SECS", "0".into()));
    let consumer = Process::spawn("consumer", &consumer_env, &dir, "consumer.log");
    let keys = RedisKeys::new(&prefix);
    let mut plain = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let status: String = eventually("the result is final", Duration::from_secs(90), || {
        let (mut conn, key) = (plain.clone(), keys.contest_status.clone());
        async move {
            let status: Option<String> = conn.hget(&key, "status").await.ok()?;
            (status.as_deref() == Some("final")).then_some("final".to_owned())
        }
    })
    .await;
    assert_eq!(status, "final");
    let received: i64 = plain.get(&keys.received).await.unwrap();
    assert_eq!(received, 20);
    let dead = eventually("the dead letter", Duration::from_secs(30), || {
        let name = dlq.name.clone();
        async move {
            let marks = harness::kafka::high_watermarks(&kafka_brokers(), &name).ok()?;
            let n: i64 = marks.values().sum();
            (n > 0).then_some(n)
        }
    })
    .await;
    assert_eq!(dead, 1);
    let (status, consumer_log) = consumer.stop().await;
    assert!(status.success(), "consumer: {status}\n{consumer_log}");

    // MongoDB holds one log per vote.
    let client = votestream::stores::mongo_client(&mongo_uri, "secure-test", Duration::from_secs(5))
        .await
        .unwrap();
    let db = client.database(&database);
    let logs = db
        .collection::<mongodb::bson::Document>("logs")
        .count_documents(mongodb::bson::doc! {})
        .await
        .expect("count logs as the user");
    assert_eq!(logs, 20);

    // The logs app reads both stores with the same files.
    let port = free_port();
    let mut logs_env = env.clone();
    logs_env.push(("LOGS_ADDR", format!("127.0.0.1:{port}")));
    logs_env.push(("VOTING_CLOSES_AT", closes.clone()));
    let logs_app = Process::spawn("logs", &logs_env, &dir, "logs.log");
    ready(&http, &format!("http://127.0.0.1:{port}/readyz")).await;
    let results: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/results"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(results["status"], "final", "{results}");
    let page: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/logs?limit=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(20), "{page}");
    let (status, logs_log) = logs_app.stop().await;
    assert!(status.success(), "logs: {status}\n{logs_log}");

    // The recount reads the topic over SASL_SSL too, and agrees.
    let mut recount_env = env.clone();
    recount_env.push(("VOTING_CLOSES_AT", closes));
    let recount = Process::spawn("recount", &recount_env, &dir, "recount.log");
    let (status, recount_log) = recount.exit().await;
    assert_eq!(status.code(), Some(0), "recount:\n{recount_log}");

    for (what, log) in [
        ("ingress", ingress_log),
        ("consumer", consumer_log),
        ("logs", logs_log),
        ("recount", recount_log),
    ] {
        assert_no_secret(what, &log, &secrets);
    }
    let _ = crate::common::delete_prefix(&mut plain, &prefix).await;
    let _ = db.drop().await;
}

#[tokio::test]
async fn wrong_credentials_stop_each_process_naming_the_store_and_never_showing_them() {
    let secure = Secure::read();
    let dir = scratch_dir("secure-refused");
    let wrong = unique("not-the-password");
    let mongo = PrivateMongo::start_with_user(&dir, "votestream", &unique("mongo-secret")).expect("FerretDB with auth");
    let sasl = |password: &str| {
        let file = unique("kafka.properties");
        vec![
            ("KAFKA_BROKERS", secure.get("KAFKA_SASL_BROKERS").to_owned()),
            (
                "KAFKA_OPTIONS",
                format!(
                    "security.protocol=SASL_PLAINTEXT,sasl.mechanism=SCRAM-SHA-512,sasl.username={}",
                    secure.get("KAFKA_SASL_USER")
                ),
            ),
            (
                "KAFKA_OPTIONS_FILE",
                write_secret(&dir, &file, &format!("sasl.password={password}\n"))
                    .display()
                    .to_string(),
            ),
        ]
    };
    let redis_acl = |password: &str| {
        secure
            .get("REDIS_ACL_URL")
            .replace(secure.get("REDIS_ACL_PASSWORD"), password)
    };
    let mongo_uri = |password: &str| {
        mongo
            .uri()
            .replace("mongodb://", &format!("mongodb://votestream:{password}@"))
    };
    let addr = || format!("127.0.0.1:{}", free_port());

    // (subcommand, its environment, its exit status, what it must say)
    type Case<'a> = (&'a str, Env<'a>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (
            "ingress",
            [sasl(&wrong), vec![("HTTP_ADDR", addr()), ("GRPC_ADDR", addr())]].concat(),
            1,
            "kafka refused the SASL credentials",
        ),
        (
            "recount",
            [sasl(&wrong), vec![("REDIS_URL", redis_url())]].concat(),
            2,
            "kafka refused the SASL credentials",
        ),
        (
            "logs",
            vec![
                ("REDIS_URL", redis_acl(&wrong)),
                ("MONGODB_URI", mongo.uri()),
                ("LOGS_ADDR", addr()),
            ],
            1,
            "redis refused the user and password",
        ),
        (
            "consumer",
            [
                sasl(secure.get("KAFKA_SASL_PASSWORD")),
                vec![
                    ("REDIS_URL", redis_url()),
                    ("MONGODB_URI", format!("{}/?authSource=admin", mongo_uri(&wrong))),
                    ("CONSUMER_HTTP_ADDR", addr()),
                ],
            ]
            .concat(),
            1,
            "mongodb refused the credentials",
        ),
    ];
    for (subcommand, env, code, expected) in cases {
        let process = Process::spawn(subcommand, &env, &dir, &format!("{subcommand}.log"));
        let (status, log) = process.exit().await;
        assert_eq!(status.code(), Some(code), "{subcommand}: {status}\n{log}");
        assert!(log.contains(expected), "{subcommand} does not say {expected:?}:\n{log}");
        assert_no_secret(subcommand, &log, &[&wrong, secure.get("KAFKA_SASL_PASSWORD")]);
    }
}

#[tokio::test]
async fn a_url_given_by_variable_and_by_file_is_refused_without_showing_it() {
    let dir = scratch_dir("secure-conflict");
    let secret = unique("s3cret");
    let file = write_secret(&dir, "redis-url", &format!("redis://u:{secret}@127.0.0.1:1\n"));
    let env = vec![
        ("REDIS_URL", format!("redis://u:{secret}@127.0.0.1:1")),
        ("REDIS_URL_FILE", file.display().to_string()),
        ("LOGS_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    let (status, log) = Process::spawn("logs", &env, &dir, "logs.log").exit().await;
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("--redis-url") && log.contains("cannot be used with"),
        "{log}"
    );
    assert_no_secret("logs", &log, &[&secret]);
}
