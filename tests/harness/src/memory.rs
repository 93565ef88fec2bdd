//! A process's memory, from `/proc/<pid>/status`, and its CPU time, from
//! `/proc/<pid>/stat` (Linux).

/// Resident memory now (VmRSS), in MiB; `None` once the process is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// Peak resident memory so far (VmHWM), in MiB; `None` once the process is gone.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// CPU time used so far (user + system, all threads), in seconds; `None`
/// once the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold spaces): state is
    // field 3 of the whole line, utime and stime are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (f64, f64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    Some((user + system) / clock_ticks_per_second())
}

/// The unit of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
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

    #[test]
    fn cpu_time_grows_as_this_process_works() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0_u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_seconds(pid).unwrap();
        assert!(after > before, "CPU time {before} s, then {after} s");
    }
}
