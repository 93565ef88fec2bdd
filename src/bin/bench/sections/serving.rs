//! The ingress's routes and the whole pipeline end to end, under load.

use std::time::Duration;

use anyhow::Context as _;

use super::step;
use crate::report::{self, Report, Target, median};
use crate::stack::Stack;
use crate::{Args, e2e, ingress};

pub(super) async fn ingress_routes(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
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

pub(super) async fn end_to_end(args: &Args, stack: &Stack, report: &mut Report) -> anyhow::Result<()> {
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
