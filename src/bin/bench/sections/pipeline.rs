//! The pipeline as users run it: the consumer alone against `votestream all`
//! with a logs page open, on the same backlog.

use anyhow::Context as _;

use super::{shown, step};
use crate::report::{Report, Target};
use crate::stack::Stack;
use crate::{Args, drain};

/// The pipeline as users run it: the same backlog drained by the consumer
/// alone, then by `votestream all` with a logs page open, in one invocation.
pub(super) async fn pipeline_with_page(
    args: &Args,
    stack: &Stack,
    report: &mut Report,
    topic: &str,
) -> anyhow::Result<()> {
    let reps = args.reps();
    let (mut alone, mut all, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = drain::PageSeen::default();
    for rep in 0..reps {
        step(&format!("pipeline: consumer alone, run {}/{reps}", rep + 1));
        alone.push(shown(
            drain::drain(stack, topic, drain::Drain::default(), &format!("alone-{rep}"))
                .await?
                .votes_per_s,
            "votes/s",
        ));
        step(&format!(
            "pipeline: votestream all with a logs page open, run {}/{reps}",
            rep + 1
        ));
        let drained = drain::drain(
            stack,
            topic,
            drain::Drain {
                page: true,
                ..Default::default()
            },
            &format!("all-{rep}"),
        )
        .await?;
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
