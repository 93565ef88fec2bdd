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
mod settings;
mod stack;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde_json::json;

use report::{Report, Target, median};
use stack::Stack;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Raw,
    Drain,
    Memory,
    Ingress,
    E2e,
}

#[derive(Debug, Parser)]
#[command(
    name = "votestream-bench",
    about = "Benchmarks the votestream pipeline against the local stack"
)]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    #[arg(
        long,
        env = "MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    mongodb_uri: String,
    /// Sections to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["raw", "drain", "memory", "ingress", "e2e"])]
    only: Vec<Section>,
    /// Repetitions of every measurement (figures are their medians).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Votes in the backlog the consumer drains.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
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

    fn runs(&self, section: Section) -> bool {
        self.only.contains(&section)
    }
}

/// `target/` of this build: the program lives in `target/<profile>/`.
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe.parent().context("the program's folder")?;
    Ok(profile.parent().context("the target folder")?.to_path_buf())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse().smoke();
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("the program's folder")?
        .to_path_buf();
    let votestream = args.votestream.clone().unwrap_or_else(|| exe_dir.join("votestream"));
    let target = target_dir()?;
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
        let result = run(&args, &stack, &mut report).await;
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

async fn run(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let reps = args.reps.max(1);
    let batch_size = settings::consumer()?.consumer.batch_max_records;
    let step = |what: &str| eprintln!("[bench] {what}");

    if args.runs(Section::Raw) {
        let records = data::votes(args.produce_votes);
        let mut runs = Vec::new();
        for rep in 0..reps {
            step(&format!("raw Kafka produce, run {}/{reps}", rep + 1));
            let topic = stack.topic("produce", 6).await?;
            runs.push(shown(raw::produce(stack, &topic, &records).await?, "votes/s"));
            stack.delete_topic(&topic).await;
        }
        report.add(
            "raw.kafka_produce",
            format!("raw Kafka produce, idempotent acks=all ({} votes)", args.produce_votes),
            "votes/s",
            runs,
        );
    }

    let needs_backlog = args.runs(Section::Raw) || args.runs(Section::Drain) || args.runs(Section::Memory);
    let backlog = match needs_backlog {
        true => {
            step(&format!("producing the {}-vote backlog", args.backlog));
            let topic = stack.topic("backlog", 6).await?;
            let chunk = 100_000;
            for start in (0..args.backlog).step_by(chunk) {
                let records: Vec<_> = (start..args.backlog.min(start + chunk)).map(data::vote).collect();
                raw::produce(stack, &topic, &records).await?;
            }
            Some(topic)
        }
        false => None,
    };

    if args.runs(Section::Raw) {
        let topic = backlog.as_deref().context("the backlog")?;
        let mut runs = Vec::new();
        for rep in 0..reps {
            step(&format!("raw Kafka consume, run {}/{reps}", rep + 1));
            runs.push(shown(raw::consume(stack, topic).await?, "records/s"));
        }
        report.add(
            "raw.kafka_consume",
            format!("raw Kafka consume of the backlog ({} records)", args.backlog),
            "records/s",
            runs,
        );

        let batches = data::batches(args.redis_batches, batch_size, 6, "votes");
        let mut runs = Vec::new();
        for rep in 0..reps {
            step(&format!("raw Redis apply, run {}/{reps}", rep + 1));
            runs.push(shown(raw::redis(stack, &batches).await?, "votes/s"));
        }
        report.add(
            "raw.redis_apply",
            format!("raw Redis apply.lua ({} batches of {batch_size})", args.redis_batches),
            "votes/s",
            runs,
        );

        let batches = data::batches(args.mongo_batches, batch_size, 6, "votes");
        let mut runs = Vec::new();
        for rep in 0..reps {
            step(&format!("raw Mongo insert_many, run {}/{reps}", rep + 1));
            runs.push(shown(raw::mongo(stack, &batches).await?, "docs/s"));
        }
        report.add(
            "raw.mongo_insert",
            format!("raw Mongo insert_many ({} batches of {batch_size})", args.mongo_batches),
            "docs/s",
            runs,
        );
    }

    if args.runs(Section::Drain) {
        let topic = backlog.as_deref().context("the backlog")?;
        let (mut rates, mut startups, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            step(&format!(
                "consumer drain of {} votes, run {}/{reps}",
                args.backlog,
                rep + 1
            ));
            let drained = drain::drain(stack, topic, None, &format!("drain-{rep}")).await?;
            eprintln!(
                "  {:.0} votes/s, started in {:.1} s, peak RSS {:.1} MiB",
                drained.votes_per_s, drained.startup_s, drained.peak_rss_mib
            );
            rates.push(drained.votes_per_s);
            startups.push(drained.startup_s);
            peaks.push(drained.peak_rss_mib);
        }
        report.add(
            "drain.votes_per_s",
            format!(
                "consumer drain of {} votes (first batch to all committed)",
                args.backlog
            ),
            "votes/s",
            rates,
        );
        report.add(
            "drain.startup_s",
            "consumer start to first batch counted",
            "s",
            startups,
        );
        report.add(
            "memory.drain_peak_rss_mib",
            "consumer peak RSS while draining",
            "MiB",
            peaks,
        );
        let sinks = [("Redis", "raw.redis_apply"), ("Mongo", "raw.mongo_insert")];
        let slowest = sinks
            .iter()
            .filter_map(|(name, key)| report.median(key).map(|m| (*name, m)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some((name, slowest)), Some(drain)) = (slowest, report.median("drain.votes_per_s")) {
            report.target(Target {
                key: "drain_vs_slowest_sink".into(),
                label: format!("drain / slowest raw sink ({name})"),
                value: drain / slowest,
                bound: (">=", 0.8),
                unit: "x",
            });
        }
    }

    if args.runs(Section::Memory) {
        let topic = backlog.as_deref().context("the backlog")?;
        let (mut peaks, mut rates) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            step(&format!(
                "consumer drain with Mongo stopped {} s midway, run {}/{reps}",
                args.mongo_outage_secs,
                rep + 1
            ));
            let outage = drain::Outage {
                down_for: Duration::from_secs(args.mongo_outage_secs),
            };
            let drained = drain::drain(stack, topic, Some(outage), &format!("outage-{rep}")).await?;
            eprintln!("  peak RSS {:.1} MiB", drained.peak_rss_mib);
            peaks.push(drained.peak_rss_mib);
            rates.push(drained.votes_per_s);
        }
        report.add(
            "memory.outage_peak_rss_mib",
            format!("consumer peak RSS, Mongo stopped {} s midway", args.mongo_outage_secs),
            "MiB",
            peaks,
        );
        report.add(
            "memory.outage_votes_per_s",
            "consumer drain with the outage (private FerretDB)",
            "votes/s",
            rates,
        );
    }
    for (key, label) in [
        ("memory.drain_peak_rss_mib", "peak RSS draining, highest run"),
        ("memory.outage_peak_rss_mib", "peak RSS with Mongo stopped, highest run"),
    ] {
        let highest = report
            .figures
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.runs.iter().copied().fold(f64::NAN, f64::max));
        if let Some(value) = highest {
            report.target(Target {
                key: key.replace("memory.", "memory_max."),
                label: label.into(),
                value,
                bound: ("<=", 150.0),
                unit: "MiB",
            });
        }
    }
    if let Some(topic) = backlog {
        stack.delete_topic(&topic).await;
    }

    if args.runs(Section::Ingress) {
        let topic = stack.topic("ingress", 6).await?;
        let ingress = ingress::Ingress::start(stack, &topic, "ingress").await?;
        let load = ingress::Load {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs_f64(args.ingress_seconds),
            concurrency: args.concurrency,
            batch: args.batch,
        };
        let mut measured: Vec<Vec<ingress::Measured>> = ingress::Route::ALL.iter().map(|_| Vec::new()).collect();
        // Routes take turns in every run, so slow drifts of the machine's load touch them alike.
        for rep in 0..reps {
            for (i, route) in ingress::Route::ALL.iter().enumerate() {
                step(&format!("ingress {}, run {}/{reps}", route.key(), rep + 1));
                let m = ingress::measure(&ingress, *route, &load).await?;
                eprintln!(
                    "  {} votes/s, p50 {:.1} ms, p99 {:.1} ms",
                    report::number(m.votes_per_s),
                    m.p50_ms,
                    m.p99_ms
                );
                if m.errors > 0 {
                    report
                        .notes
                        .push(format!("ingress {}: {} failed requests", route.key(), m.errors));
                }
                measured[i].push(m);
            }
        }
        drop(ingress);
        stack.delete_topic(&topic).await;
        for (route, runs) in ingress::Route::ALL.iter().zip(measured) {
            let label = format!("ingress {}, {} clients", route.label(args.batch), args.concurrency);
            let key = route.key();
            report.add(
                format!("ingress.{key}.votes_per_s"),
                label,
                "votes/s",
                runs.iter().map(|m| m.votes_per_s).collect(),
            );
            report.add(
                format!("ingress.{key}.p50_ms"),
                "  request latency p50",
                "ms",
                runs.iter().map(|m| m.p50_ms).collect(),
            );
            report.add(
                format!("ingress.{key}.p99_ms"),
                "  request latency p99",
                "ms",
                runs.iter().map(|m| m.p99_ms).collect(),
            );
        }
        if let (Some(grpc), Some(produce)) = (
            report.median("ingress.grpc_batch.votes_per_s"),
            report.median("raw.kafka_produce"),
        ) {
            report.target(Target {
                key: "grpc_batch_vs_raw_produce".into(),
                label: "gRPC batch ingress / raw Kafka produce".into(),
                value: grpc / produce,
                bound: (">=", 0.5),
                unit: "x",
            });
        }
    }

    if args.runs(Section::E2e) {
        let sustainable = [
            report.median("drain.votes_per_s"),
            report.median("ingress.grpc_batch.votes_per_s"),
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min);
        let rate = args
            .e2e_rate
            .or(sustainable.map(|s| s / 2.0))
            .context("the end-to-end rate: run the drain or ingress section, or give --e2e-rate")?;
        step(&format!("end to end at {rate:.0} votes/s, {reps} windows"));
        let load = e2e::Paced {
            rate,
            batch: args.e2e_batch,
            window: Duration::from_secs_f64(args.e2e_seconds),
        };
        let windows = e2e::run(stack, &load, reps).await?;
        for w in &windows {
            eprintln!(
                "  {:.0} votes/s sent: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} votes",
                w.achieved_per_s, w.p50_ms, w.p99_ms, w.max_ms, w.votes
            );
        }
        let label = format!(
            "end to end at {rate:.0} votes/s (gRPC batches of {}), received_at to Redis",
            args.e2e_batch
        );
        report.add(
            "e2e.achieved_per_s",
            label,
            "votes/s",
            windows.iter().map(|w| w.achieved_per_s).collect(),
        );
        report.add("e2e.p50_ms", "  p50", "ms", windows.iter().map(|w| w.p50_ms).collect());
        report.add("e2e.p99_ms", "  p99", "ms", windows.iter().map(|w| w.p99_ms).collect());
        report.add("e2e.max_ms", "  max", "ms", windows.iter().map(|w| w.max_ms).collect());
        report.add(
            "e2e.votes",
            "  votes measured per window",
            "votes",
            windows.iter().map(|w| w.votes as f64).collect(),
        );
        if let Some(s) = sustainable {
            report.notes.push(format!("sustainable rate taken as {s:.0} votes/s"));
        }
        report.target(Target {
            key: "e2e_p99".into(),
            label: "end-to-end p99 at half the sustainable rate".into(),
            value: median(&windows.iter().map(|w| w.p99_ms).collect::<Vec<_>>()),
            bound: ("<=", 100.0),
            unit: "ms",
        });
    }
    Ok(())
}

/// Prints one run's figure as it comes (the table waits for the end).
fn shown(value: f64, unit: &str) -> f64 {
    eprintln!("  {} {unit}", report::number(value));
    value
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
