//! `votestream-bench`: the pipeline's benchmark (BENCHMARKS.md). It brings its
//! own data, runs against the local stack (`scripts/stack up`) and the release
//! `votestream` binary beside it, prints one table and writes it as JSON.
//!
//!   cargo build --release --bins && target/release/votestream-bench
//!
//! Every figure is the median of `--reps` repetitions (each run is shown too)
//! and every ratio divides two figures of the same run. Everything it creates
//! (topics, Redis keys, Mongo databases, processes) is removed at the end.
//! `--smoke` runs every section on a few thousand votes, to keep the program
//! working (the test suite runs it); its figures mean nothing.
//! A benchmark prints figures; it asserts nothing about them.

mod data;
mod drain;
mod e2e;
mod ingress;
mod raw;
mod report;
mod sections;
mod settings;
mod stack;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde_json::json;

use report::Report;
use stack::Stack;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Raw,
    Drain,
    Memory,
    Ingress,
    E2e,
    /// The drain by the consumer alone, then by `votestream all` with a logs page open.
    Pipeline,
    /// Two consumers draining, one restarted: the pause in counting, eager against
    /// cooperative with static membership.
    Restart,
    /// A contest backlog (voters, 30 % changed ratings, 5 % retries): its drain and the Redis
    /// memory per voter and per remembered vote id, at a tenth of --voters and at all of them.
    Contest,
}

#[derive(Debug, Parser)]
#[command(
    name = "votestream-bench",
    about = "Benchmarks the votestream pipeline against the local stack",
    long_about = "Benchmarks the votestream pipeline against the local stack (`scripts/stack up`) \
        and the `votestream` binary beside this one; build both with `cargo build --release --bins`. \
        Measures the raw rates of Kafka, Redis and Mongo with the pipeline's own clients and batch \
        sizes, the consumer's drain of a backlog and its peak RSS (also with Mongo stopped midway), \
        the pause in counting when one of two consumers restarts, the ingress per route, and the end-to-end latency at half the sustainable rate. Prints one \
        table (the median of --reps runs, each run beside it, and the targets of BENCHMARKS.md) and \
        writes the same figures as JSON. Everything it creates is removed at the end."
)]
struct Args {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Redis URL (the raw apply runs and the consumer under test use key prefixes of their own).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// MongoDB URI (every run writes to a database of its own, dropped at the end).
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    mongodb_uri: String,
    /// Sections to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["raw", "drain", "memory", "pipeline", "restart", "contest", "ingress", "e2e"])]
    only: Vec<Section>,
    /// Repetitions of every measurement (figures are their medians).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Votes in the backlog the consumer drains.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Voters of the contest backlog.
    #[arg(long, default_value_t = 100_000)]
    voters: usize,
    /// Records of the contest backlog.
    #[arg(long, default_value_t = 1_000_000)]
    voters_backlog: usize,
    /// Votes per raw produce run.
    #[arg(long, default_value_t = 200_000)]
    produce_votes: usize,
    /// Batches per raw Redis run (of the consumer's batch size).
    #[arg(long, default_value_t = 300)]
    redis_batches: usize,
    /// Batches per raw Mongo run (of the consumer's batch size).
    #[arg(long, default_value_t = 100)]
    mongo_batches: usize,
    /// Concurrent clients (one connection each) per ingress route.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Votes per gRPC CastVotes request and per HTTP array.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Measured seconds per ingress route and run (after 1 s of warm-up).
    #[arg(long, default_value_t = 5.0)]
    ingress_seconds: f64,
    /// End-to-end load in votes/s [default: half the sustainable rate, i.e. of
    /// the lower of the consumer's drain rate and the gRPC batch ingress rate].
    #[arg(long)]
    e2e_rate: Option<f64>,
    /// Votes per paced gRPC CastVotes request in the end-to-end run.
    #[arg(long, default_value_t = 10)]
    e2e_batch: usize,
    /// Seconds per end-to-end window.
    #[arg(long, default_value_t = 10.0)]
    e2e_seconds: f64,
    /// How long Mongo is stopped in the memory run.
    #[arg(long, default_value_t = 30)]
    mongo_outage_secs: u64,
    /// A few thousand votes through every section, one run each (keeps the program working).
    #[arg(long)]
    smoke: bool,
    /// Where the JSON goes [default: <target>/bench.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// The `votestream` binary [default: the one beside this program].
    #[arg(long)]
    votestream: Option<PathBuf>,
}

impl Args {
    fn smoke(mut self) -> Args {
        if self.smoke {
            self.reps = 1;
            self.backlog = 3_000;
            self.voters_backlog = 3_000;
            self.voters = 300;
            self.produce_votes = 2_000;
            self.redis_batches = 3;
            self.mongo_batches = 3;
            self.concurrency = 4;
            self.ingress_seconds = 1.0;
            self.e2e_rate.get_or_insert(500.0);
            self.e2e_seconds = 2.0;
            self.mongo_outage_secs = 1;
        }
        self
    }

    fn reps(&self) -> usize {
        self.reps.max(1)
    }

    fn runs(&self, section: Section) -> bool {
        self.only.contains(&section)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse().smoke();
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("the program's folder")?
        .to_path_buf();
    let votestream = args.votestream.clone().unwrap_or_else(|| exe_dir.join("votestream"));
    // `target/` of this build: the program lives in `target/<profile>/`.
    let target = exe_dir.parent().context("the target folder")?;
    let scratch = target.join("bench-scratch").join(stack::unique("run"));
    let json_path = args.json.clone().unwrap_or_else(|| target.join("bench.json"));
    let stack = Stack::new(
        args.kafka_brokers.clone(),
        args.redis_url.clone(),
        args.mongodb_uri.clone(),
        votestream,
        scratch.clone(),
    )?;
    let context = context(&args);
    println!("{}", heading(&args, &context));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = Report::default();
    let result = runtime.block_on(async {
        let result = sections::run(&args, &stack, &mut report).await;
        stack.clean_up().await;
        result
    });
    println!("{}", report.table());
    let mut context = context;
    context["load_average_at_end"] = json!(load_average());
    let document = report.json(context);
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_vec_pretty(&document)?)?;
    println!("JSON: {}", json_path.display());
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(())
        }
        Err(e) => Err(e.context(format!("process logs kept in {}", scratch.display()))),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn context(args: &Args) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "started_at": chrono::Utc::now().to_rfc3339(),
        "commit": commit,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu,
        "memory_gib": (memory_gib * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "load_average_at_start": load_average(),
        "reps": args.reps,
        "backlog": args.backlog,
        "ingress": {"concurrency": args.concurrency, "batch": args.batch, "seconds": args.ingress_seconds},
        "smoke": args.smoke,
    })
}

fn heading(args: &Args, context: &serde_json::Value) -> String {
    format!(
        "votestream-bench{}: {} build, commit {}, {} CPUs ({}), {} GiB, load average {}; {} run(s) per figure, medians",
        if args.smoke {
            " --smoke (figures meaningless)"
        } else {
            ""
        },
        context["build"].as_str().unwrap_or(""),
        context["commit"].as_str().unwrap_or(""),
        context["cpus"],
        context["cpu_model"].as_str().unwrap_or(""),
        context["memory_gib"],
        context["load_average_at_start"].as_str().unwrap_or(""),
        args.reps,
    )
}
