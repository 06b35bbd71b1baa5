//! When a failed delivery goes again (docs/webhooks.md#retries): after 5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h, each ±10 % so a receiver that comes
//! back is not hit by every delivery at once; then the delivery has failed.
//! `RECUR_WEBHOOK_SCHEDULE` (seconds, comma-separated) replaces it, for tests.

use std::time::Duration;

const DEFAULT_SECS: [u64; 9] = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400];

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule(Vec<Duration>);

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule(DEFAULT_SECS.iter().map(|s| Duration::from_secs(*s)).collect())
    }
}

impl Schedule {
    pub fn parse(text: &str) -> anyhow::Result<Schedule> {
        let steps = text
            .split(',')
            .map(|s| s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0 && *v <= 7.0 * 86_400.0))
            .map(|v| v.map(Duration::from_secs_f64))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow::anyhow!("RECUR_WEBHOOK_SCHEDULE must be seconds (0 to 604800), comma-separated"))?;
        if steps.len() > 50 {
            anyhow::bail!("RECUR_WEBHOOK_SCHEDULE has at most 50 steps");
        }
        Ok(Schedule(steps))
    }

    /// How many attempts a delivery gets in all (the first plus one per step).
    pub fn attempts(&self) -> usize {
        self.0.len() + 1
    }

    /// The wait after failed attempt `failed` (1-based), jittered by `unit` in [0, 1);
    /// None when the schedule is spent.
    pub fn delay(&self, failed: usize, unit: f64) -> Option<Duration> {
        let base = *self.0.get(failed.checked_sub(1)?)?;
        Some(base.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_spans_about_three_days() {
        let s = Schedule::default();
        assert_eq!(s.attempts(), 10);
        assert_eq!(s.delay(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.delay(9, 0.5), Some(Duration::from_secs(86_400)));
        assert_eq!(s.delay(10, 0.5), None);
        let total: u64 = DEFAULT_SECS.iter().sum();
        assert!((3 * 86_400..4 * 86_400).contains(&total));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let s = Schedule::default();
        assert_eq!(s.delay(2, 0.0), Some(Duration::from_secs(270)));
        assert_eq!(s.delay(2, 1.0), Some(Duration::from_secs(330)));
    }

    #[test]
    fn the_override_is_parsed_and_checked() {
        let s = Schedule::parse("1, 2,0.5").unwrap();
        assert_eq!(s.attempts(), 4);
        assert_eq!(s.delay(3, 0.5), Some(Duration::from_millis(500)));
        assert!(Schedule::parse("1,x").is_err());
        assert!(Schedule::parse("-1").is_err());
    }
}
