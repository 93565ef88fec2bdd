//! A process's memory, from `/proc/<pid>/status` (Linux).

/// Resident memory now (VmRSS), in MiB; `None` once the process is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// Peak resident memory so far (VmHWM), in MiB; `None` once the process is gone.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_a_peak_at_least_as_large() {
        let pid = std::process::id();
        let (now, peak) = (rss_mib(pid).unwrap(), peak_rss_mib(pid).unwrap());
        assert!(now > 0.0 && peak >= now, "rss {now} MiB, peak {peak} MiB");
    }
}
