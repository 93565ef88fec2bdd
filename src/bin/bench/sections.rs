//! The sections of a run, in order: raw limits, the backlog, consumer drain,
//! memory with a Mongo outage, ingress, end to end. Each adds its figures
//! (and the targets it can judge) to the report.

use std::time::Duration;

use anyhow::Context as _;

use crate::report::{self, Report, Target, median};
use crate::stack::Stack;
use crate::{Args, Section, data, drain, e2e, ingress, raw, settings};

pub async fn run(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    if args.runs(Section::Raw) {
        raw_produce(args, stack, report).await?;
    }
    let reads_backlog = [Section::Raw, Section::Drain, Section::Memory, Section::Pipeline];
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
            anyhow::Ok(())
        }
        .await;
        // ~200 MB on the broker's disk: gone as soon as the sections that read it are done.
        stack.delete_topic(&topic).await;
        sections?;
        memory_targets(report);
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
    let (mut rates, mut startups, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        step(&format!(
            "consumer drain of {} votes, run {}/{reps}",
            args.backlog,
            rep + 1
        ));
        let drained = drain::drain(stack, topic, None, false, &format!("drain-{rep}")).await?;
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
    Ok(())
}

/// The pipeline as users run it: the same backlog drained by the consumer
/// alone, then by `votestream all` with a logs page open, in one invocation.
async fn pipeline_with_page(args: &Args, stack: &Stack, report: &mut Report, topic: &str) -> anyhow::Result<()> {
    let reps = args.reps();
    let (mut alone, mut all, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = drain::PageSeen::default();
    for rep in 0..reps {
        step(&format!("pipeline: consumer alone, run {}/{reps}", rep + 1));
        alone.push(shown(
            drain::drain(stack, topic, None, false, &format!("alone-{rep}"))
                .await?
                .votes_per_s,
            "votes/s",
        ));
        step(&format!(
            "pipeline: votestream all with a logs page open, run {}/{reps}",
            rep + 1
        ));
        let drained = drain::drain(stack, topic, None, true, &format!("all-{rep}")).await?;
        all.push(shown(drained.votes_per_s, "votes/s"));
        rss.push(drained.peak_rss_mib);
        let page = drained.page.context("the page's figures")?;
        eprintln!(
            "  page: {} first pages, {} deeper pages, {} failed, {} logs streamed",
            page.first_ms.len(),
            page.before_ms.len(),
            page.failed,
            page.streamed
        );
        seen.first_ms.extend(page.first_ms);
        seen.before_ms.extend(page.before_ms);
        seen.failed += page.failed;
        seen.streamed += page.streamed;
    }
    report.add(
        "pipeline.alone_votes_per_s",
        "drain by the consumer alone",
        "votes/s",
        alone,
    );
    report.add(
        "pipeline.all_votes_per_s",
        "drain by votestream all, logs page open (SSE + GET /logs each second)",
        "votes/s",
        all,
    );
    report.add(
        "pipeline.all_peak_rss_mib",
        "votestream all peak RSS, page open",
        "MiB",
        rss,
    );
    report.add(
        "pipeline.page_failed",
        "page loads not answered 200 (all runs)",
        "pages",
        vec![seen.failed as f64],
    );
    report.add(
        "pipeline.logs_streamed",
        "logs the live stream pushed (all runs)",
        "logs",
        vec![seen.streamed as f64],
    );
    if let (Some(alone), Some(all)) = (
        report.median("pipeline.alone_votes_per_s"),
        report.median("pipeline.all_votes_per_s"),
    ) {
        report.target(Target {
            key: "pipeline_all_vs_alone".into(),
            label: "drain with the page open / consumer alone".into(),
            value: all / alone,
            bound: (">=", 0.9),
            unit: "x",
        });
    }
    for (key, label, samples) in [
        (
            "pipeline_logs_first_p99_ms",
            "GET /logs?limit=20 p99 while draining",
            &seen.first_ms,
        ),
        (
            "pipeline_logs_before_p99_ms",
            "GET /logs before=... p99 while draining",
            &seen.before_ms,
        ),
    ] {
        if let Some(p99) = percentile(samples, 0.99) {
            report.target(Target {
                key: key.into(),
                label: format!("{label} ({} pages)", samples.len()),
                value: p99,
                bound: ("<=", 50.0),
                unit: "ms",
            });
        }
    }
    Ok(())
}

/// The `q` quantile of `samples` (nearest rank), `None` when there are none.
fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
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
        let drained = drain::drain(stack, topic, Some(outage), false, &format!("outage-{rep}")).await?;
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

async fn ingress_routes(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let reps = args.reps();
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
    Ok(())
}

async fn end_to_end(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
    let reps = args.reps();
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
    Ok(())
}
