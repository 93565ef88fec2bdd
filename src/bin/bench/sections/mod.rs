//! The sections of a run, in order: raw limits, the backlog, consumer drain,
//! memory with a Mongo outage, ingress, end to end. Each adds its figures
//! (and the targets it can judge) to the report.

use std::time::Duration;

use crate::report::{self, Report, Target, median};
use crate::stack::Stack;
use crate::{Args, Section, data, drain, raw, settings};

mod pipeline;
mod restart;
mod serving;
mod voters;

use pipeline::pipeline_with_page;
use restart::restart_pause;
use serving::{end_to_end, ingress_routes};

pub async fn run(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    if args.runs(Section::Raw) {
        raw_produce(args, stack, report).await?;
    }
    let reads_backlog = [
        Section::Raw,
        Section::Drain,
        Section::Memory,
        Section::Pipeline,
        Section::Restart,
    ];
    if reads_backlog.iter().any(|&s| args.runs(s)) {
        let topic = backlog(args, stack).await?;
        let sections = async {
            if args.runs(Section::Raw) {
                raw_read_and_sinks(args, stack, report, &topic).await?;
            }
            if args.runs(Section::Drain) {
                consumer_drain(args, stack, report, &topic).await?;
            }
            if args.runs(Section::Memory) {
                mongo_outage(args, stack, report, &topic).await?;
            }
            if args.runs(Section::Pipeline) {
                pipeline_with_page(args, stack, report, &topic).await?;
            }
            if args.runs(Section::Restart) {
                restart_pause(args, stack, report, &topic).await?;
            }
            anyhow::Ok(())
        }
        .await;
        // ~200 MB on the broker's disk: gone as soon as the sections that read it are done.
        stack.delete_topic(&topic).await;
        sections?;
        memory_targets(report);
    }
    if args.runs(Section::Contest) {
        voters::contest(args, stack, report).await?;
    }
    if args.runs(Section::Ingress) {
        ingress_routes(args, stack, report).await?;
    }
    if args.runs(Section::E2e) {
        end_to_end(args, stack, report).await?;
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("[bench] {what}");
}

/// Prints one run's figure as it comes (the table waits for the end).
fn shown(value: f64, unit: &str) -> f64 {
    eprintln!("  {} {unit}", report::number(value));
    value
}

/// `reps` runs of `run`, each announced as "`what`, run i/reps" and its figure shown in `unit`.
async fn repeated(
    reps: usize,
    what: &str,
    unit: &str,
    mut run: impl AsyncFnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Vec<f64>> {
    let mut runs = Vec::new();
    for rep in 0..reps {
        step(&format!("{what}, run {}/{reps}", rep + 1));
        runs.push(shown(run().await?, unit));
    }
    Ok(runs)
}

async fn raw_produce(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let reps = args.reps();
    let records = data::votes(args.produce_votes);
    let runs = repeated(reps, "raw Kafka produce", "votes/s", async || {
        let topic = stack.topic("produce", 6).await?;
        let rate = raw::produce(stack, &topic, &records).await?;
        stack.delete_topic(&topic).await;
        Ok(rate)
    })
    .await?;
    report.add(
        "raw.kafka_produce",
        format!("raw Kafka produce, idempotent acks=all ({} votes)", args.produce_votes),
        "votes/s",
        runs,
    );
    Ok(())
}

/// The backlog the raw consume, the drains and the memory runs read.
async fn backlog(args: &Args, stack: &Stack) -> anyhow::Result<String> {
    step(&format!("producing the {}-vote backlog", args.backlog));
    let topic = stack.topic("backlog", 6).await?;
    let producer = raw::producer(stack, &topic)?;
    let chunk = 100_000;
    for start in (0..args.backlog).step_by(chunk) {
        let records: Vec<_> = (start..args.backlog.min(start + chunk)).map(data::vote).collect();
        raw::produce_with(&producer, &records).await?;
    }
    Ok(topic)
}

async fn raw_read_and_sinks(args: &Args, stack: &Stack, report: &mut Report, topic: &str) -> anyhow::Result<()> {
    let reps = args.reps();
    let batch_size = settings::consumer()?.consumer.batch_max_records;
    let runs = repeated(reps, "raw Kafka consume", "records/s", async || {
        raw::consume(stack, topic).await
    })
    .await?;
    report.add(
        "raw.kafka_consume",
        format!("raw Kafka consume of the backlog ({} records)", args.backlog),
        "records/s",
        runs,
    );

    let batches = data::batches(args.redis_batches, batch_size, 6, "votes");
    let runs = repeated(reps, "raw Redis apply", "votes/s", async || {
        raw::redis(stack, &batches).await
    })
    .await?;
    report.add(
        "raw.redis_apply",
        format!("raw Redis apply.lua ({} batches of {batch_size})", args.redis_batches),
        "votes/s",
        runs,
    );

    // The logger keeps several batches in flight, so the store's raw rate is
    // the best of several concurrent writers, each count measured alike.
    let batches = data::batches(args.mongo_batches, batch_size, 6, "votes");
    let mut best: Option<(usize, Vec<f64>)> = None;
    for writers in MONGO_WRITERS {
        let what = format!("raw Mongo insert_many, {writers} writer(s)");
        let runs = repeated(reps, &what, "docs/s", async || {
            raw::mongo(stack, &batches, writers).await
        })
        .await?;
        report.add(
            format!("raw.mongo_insert_w{writers}"),
            format!(
                "raw Mongo insert_many, {writers} in flight ({} batches of {batch_size})",
                args.mongo_batches
            ),
            "docs/s",
            runs.clone(),
        );
        if best.as_ref().is_none_or(|(_, b)| median(b) < median(&runs)) {
            best = Some((writers, runs));
        }
    }
    if let Some((writers, runs)) = best {
        report.add(
            "raw.mongo_insert",
            format!("raw Mongo insert_many, best of 1/2/4/8 writers ({writers})"),
            "docs/s",
            runs,
        );
    }
    Ok(())
}

/// The concurrent writers the raw Mongo figure is the best of.
const MONGO_WRITERS: [usize; 4] = [1, 2, 4, 8];

async fn consumer_drain(args: &Args, stack: &Stack, report: &mut Report, topic: &str) -> anyhow::Result<()> {
    let reps = args.reps();
    let (mut rates, mut startups, mut peaks, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        step(&format!(
            "consumer drain of {} votes, run {}/{reps}",
            args.backlog,
            rep + 1
        ));
        let drained = drain::drain(stack, topic, drain::Drain::default(), &format!("drain-{rep}")).await?;
        eprintln!(
            "  {:.0} votes/s, started in {:.1} s, peak RSS {:.1} MiB, {:.1} µs CPU per vote",
            drained.votes_per_s, drained.startup_s, drained.peak_rss_mib, drained.cpu_us_per_vote
        );
        rates.push(drained.votes_per_s);
        startups.push(drained.startup_s);
        peaks.push(drained.peak_rss_mib);
        cpu.push(drained.cpu_us_per_vote);
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
    report.add(
        "drain.cpu_us_per_vote",
        "consumer CPU per vote (its whole CPU time over the votes)",
        "µs",
        cpu,
    );
    against_slowest_sink(report, "drain.votes_per_s", "drain", "drain");
    Ok(())
}

/// The raw section's sink figures: the Redis script and the Mongo insert.
const RAW_SINKS: [(&str, &str); 2] = [("Redis", "raw.redis_apply"), ("Mongo", "raw.mongo_insert")];

/// The target "`figure` >= 0.8x the slower of the raw Redis and Mongo
/// rates", under `<key>_vs_slowest_sink`, when the report has all three.
fn against_slowest_sink(report: &mut Report, figure: &str, key: &str, label: &str) {
    against_slowest_of(report, figure, key, label, RAW_SINKS);
}

/// The slowest of `sinks` (name, key) the report has a figure for: its name and median.
fn slowest_of<'a>(report: &Report, sinks: [(&'a str, &str); 2]) -> Option<(&'a str, f64)> {
    sinks
        .iter()
        .filter_map(|&(name, key)| report.median(key).map(|m| (name, m)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// [`against_slowest_sink`] with the sinks' figures under `sinks` (name, key).
fn against_slowest_of(report: &mut Report, figure: &str, key: &str, label: &str, sinks: [(&str, &str); 2]) {
    if let (Some((name, slowest)), Some(drain)) = (slowest_of(report, sinks), report.median(figure)) {
        report.target(Target {
            key: format!("{key}_vs_slowest_sink"),
            label: format!("{label} / slowest raw sink ({name})"),
            value: drain / slowest,
            bound: (">=", 0.8),
            unit: "x",
        });
    }
}

async fn mongo_outage(args: &Args, stack: &Stack, report: &mut Report, topic: &str) -> anyhow::Result<()> {
    let reps = args.reps();
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
        let drained = drain::drain(
            stack,
            topic,
            drain::Drain {
                outage: Some(outage),
                ..Default::default()
            },
            &format!("outage-{rep}"),
        )
        .await?;
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
    Ok(())
}

/// Judges the highest peak RSS of each memory figure present.
fn memory_targets(report: &mut Report) {
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
}
