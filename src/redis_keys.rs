//! The Redis key names of DESIGN.md ("Redis keys"), with the configured prefix.
//! Grafana's dashboards and the logs app read the same names.

/// About how many entries the `logs:tail` stream keeps (XADD MAXLEN ~), one
/// per applied batch (a JSON array of its newly counted votes, at most a
/// batch's worth): the live page's buffer of a few seconds at full speed, not
/// a history (MongoDB has every log).
pub const LOGS_TAIL_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    pub total: String,
    pub by_band: String,
    pub by_album: String,
    pub by_route: String,
    pub rank_sum_by_album: String,
    pub rank_avg_by_album: String,
    pub timeline: String,
    pub offsets: String,
    pub logs_tail: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> RedisKeys {
        let key = |name: &str| format!("{prefix}{name}");
        RedisKeys {
            total: key("votes:total"),
            by_band: key("votes:by_band"),
            by_album: key("votes:by_album"),
            by_route: key("votes:by_route"),
            rank_sum_by_album: key("rank:sum_by_album"),
            rank_avg_by_album: key("rank:avg_by_album"),
            timeline: key("votes:timeline"),
            offsets: key("consumer:offsets"),
            logs_tail: key("logs:tail"),
        }
    }

    /// In the order the apply script expects them as KEYS.
    pub fn script_keys(&self) -> [&str; 9] {
        [
            &self.total,
            &self.by_band,
            &self.by_album,
            &self.by_route,
            &self.rank_sum_by_album,
            &self.rank_avg_by_album,
            &self.timeline,
            &self.offsets,
            &self.logs_tail,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design_with_the_prefix_in_front() {
        let k = RedisKeys::new("t1:");
        assert_eq!(k.total, "t1:votes:total");
        assert_eq!(k.offsets, "t1:consumer:offsets");
        assert_eq!(RedisKeys::new("").rank_avg_by_album, "rank:avg_by_album");
    }
}
