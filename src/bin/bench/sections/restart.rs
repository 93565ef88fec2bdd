//! A rolling restart: two consumers drain the backlog in one group, and one
//! of them is stopped (SIGTERM) and started again a quarter of the way in.
//! The figure is the longest time the Redis total stood still from that
//! SIGTERM until the backlog was counted: with eager rebalancing and a new
//! member per start, both consumers give up every partition twice (on the
//! leave and on the join); with cooperative-sticky assignment and a static
//! member restarted within the session timeout, the other keeps counting.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{shown, step};
use crate::Args;
use crate::report::Report;
use crate::stack::{Process, Stack, unique};

/// How often the Redis total is read.
const SAMPLE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
enum Membership {
    /// `--rebalance-protocol eager`, no `--group-instance-id`.
    EagerDynamic,
    /// `--rebalance-protocol cooperative` and a `--group-instance-id` per consumer.
    CooperativeStatic,
}

pub(super) async fn restart_pause(args: &Args, stack: &Stack, report: &mut Report, topic: &str) -> anyhow::Result<()> {
    let reps = args.reps();
    let (mut eager, mut cooperative) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        for (membership, runs) in [
            (Membership::EagerDynamic, &mut eager),
            (Membership::CooperativeStatic, &mut cooperative),
        ] {
            step(&format!(
                "two consumers, one restarted midway ({membership:?}), run {}/{reps}",
                rep + 1
            ));
            runs.push(shown(restart_once(stack, topic, membership, rep).await?, "s paused"));
        }
    }
    report.add(
        "restart.pause_eager_s",
        "longest pause in counting, one of two consumers restarted: eager, new member",
        "s",
        eager,
    );
    report.add(
        "restart.pause_static_s",
        "longest pause in counting, one of two consumers restarted: cooperative, static member",
        "s",
        cooperative,
    );
    Ok(())
}

/// One run; returns the longest pause in counting after the SIGTERM, in seconds.
async fn restart_once(stack: &Stack, topic: &str, membership: Membership, rep: usize) -> anyhow::Result<f64> {
    let expected: i64 = stack.high_watermarks(topic)?.values().sum();
    let group = unique("restart-group");
    let prefix = stack.prefix("restart");
    let database = stack.database("restart");
    let spawn = |name: &str, log: String| -> anyhow::Result<Process> {
        let mut env = stack.consumer_env(topic, &group, &prefix, &stack.mongodb_uri, &database)?;
        match membership {
            Membership::EagerDynamic => env.push(("REBALANCE_PROTOCOL", "eager".into())),
            Membership::CooperativeStatic => {
                env.push(("REBALANCE_PROTOCOL", "cooperative".into()));
                env.push(("GROUP_INSTANCE_ID", name.to_owned()));
                env.push(("SESSION_TIMEOUT_MS", "30000".into()));
            }
        }
        stack.spawn_votestream(&["consumer"], &env, &log)
    };
    let tag = format!("{membership:?}-{rep}").to_lowercase();
    let mut first = spawn("first", format!("restart-{tag}-first"))?;
    let mut second = Some(spawn("second", format!("restart-{tag}-second"))?);
    let mut redis = stack.redis().await?;
    let started = Instant::now();

    let mut stopping: Option<Process> = None;
    let mut sigterm_at: Option<Instant> = None;
    let (mut last_total, mut last_increase, mut longest) = (0, Instant::now(), Duration::ZERO);
    loop {
        tokio::time::sleep(SAMPLE).await;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the backlog was not drained within an hour"
        );
        first.ensure_running("the first consumer")?;
        let total = stack.redis_received(&mut redis, &prefix).await;
        let now = Instant::now();
        if total > last_total {
            if sigterm_at.is_some() {
                longest = longest.max(now - last_increase);
            }
            (last_total, last_increase) = (total, now);
        }
        if sigterm_at.is_none() && total >= expected / 4 {
            let process = second.take().context("the second consumer")?;
            process.send_term()?;
            (sigterm_at, last_increase) = (Some(now), now);
            stopping = Some(process);
        }
        if let Some(process) = stopping.as_mut()
            && let Some(status) = process.exited()?
        {
            anyhow::ensure!(status.success(), "the second consumer exited with {status} on SIGTERM");
            stopping = None;
            second = Some(spawn("second", format!("restart-{tag}-second-again"))?);
            eprintln!(
                "  restarted {:.2} s after its SIGTERM",
                sigterm_at.map_or(0.0, |t| t.elapsed().as_secs_f64())
            );
        }
        // Counted, and the restart done (a small backlog may be counted before it is).
        if total >= expected && sigterm_at.is_some() && stopping.is_none() {
            break;
        }
    }
    for process in [Some(first), second].into_iter().flatten() {
        let status = process.terminate()?;
        anyhow::ensure!(status.success(), "a consumer exited with {status} on SIGTERM");
    }
    let counted = stack.redis_received(&mut redis, &prefix).await;
    anyhow::ensure!(counted == expected, "Redis counted {counted} of {expected} votes");
    stack.delete_prefix(&prefix).await;
    stack.drop_database(&database).await;
    Ok(longest.as_secs_f64())
}
