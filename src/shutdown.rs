//! Shutdown signals: every server takes a future that resolves when it should
//! stop, so tests pass their own and the binary passes [`signal`]. Servers
//! that run together share a `watch` flag: [`stop_all_after`] sets it when one
//! ends, [`stopped`] is the others' signal.

use std::future::Future;

use tokio::sync::watch;

/// Resolves once `stop` turns true, or when every sender is gone.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs `run`; when it ends, for whatever reason, sets `stop` so that the
/// servers waiting on it stop too.
pub async fn stop_all_after<T>(stop: watch::Sender<bool>, run: impl Future<Output = T>) -> T {
    let result = run.await;
    stop.send_replace(true);
    result
}

/// Resolves on SIGTERM (Kubernetes, Cloud Run) or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
