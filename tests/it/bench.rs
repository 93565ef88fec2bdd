//! The benchmark program stays runnable: `votestream-bench --smoke` runs every
//! section on a few thousand votes against the local stack and writes its
//! JSON. Only that the figures exist is checked, never what they are.

use std::process::Command;

use crate::common::scratch_dir;

#[test]
fn the_benchmark_runs_every_section_on_a_small_load_and_writes_its_figures() {
    let json = scratch_dir("bench").join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_votestream-bench"))
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .arg("--votestream")
        .arg(env!("CARGO_BIN_EXE_votestream"))
        .output()
        .expect("votestream-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "votestream-bench --smoke failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).unwrap();
    for figure in [
        "raw.kafka_produce",
        "raw.kafka_consume",
        "raw.redis_apply",
        "raw.mongo_insert",
        "drain.votes_per_s",
        "memory.drain_peak_rss_mib",
        "memory.outage_peak_rss_mib",
        "restart.pause_eager_s",
        "restart.pause_static_s",
        "ingress.grpc_single.votes_per_s",
        "ingress.grpc_batch.p99_ms",
        "ingress.http_single.p50_ms",
        "ingress.http_array.votes_per_s",
        "e2e.p99_ms",
    ] {
        let median = &report["figures"][figure]["median"];
        assert!(median.as_f64().is_some(), "{figure} has a median: {median}");
    }
    for target in [
        "drain_vs_slowest_sink",
        "grpc_batch_vs_raw_produce",
        "e2e_p99",
        "memory_max.drain_peak_rss_mib",
        "memory_max.outage_peak_rss_mib",
    ] {
        assert!(
            report["targets"][target]["met"].is_boolean(),
            "target {target} is judged"
        );
    }
    assert!(
        stdout.contains("drain / slowest raw sink"),
        "the table is printed:\n{stdout}"
    );
}
