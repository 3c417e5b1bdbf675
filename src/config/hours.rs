//! Working hours: a user's weekly schedule in their own time zone, which
//! switches their availability automatically.
//!
//! Pure: every function takes the instant to evaluate; no clock is read here.
//! A manual change (API/CLI) holds until the next switch of the schedule.

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

/// `[users.working_hours]`.
#[derive(Debug, Clone)]
pub struct WorkingHours {
    /// IANA name as written, e.g. `"Europe/Berlin"`.
    pub timezone_name: String,
    pub timezone: TimeZone,
    /// Working days, at least one (`check` refuses `[]`). Default Monday to Friday.
    pub days: Vec<Weekday>,
    /// Local start of the working day, e.g. 09:00.
    pub start: Time,
    /// Local end of the working day (after `start`), e.g. 17:30.
    pub end: Time,
}

impl PartialEq for WorkingHours {
    fn eq(&self, other: &Self) -> bool {
        (&self.timezone_name, &self.days, self.start, self.end)
            == (&other.timezone_name, &other.days, other.start, other.end)
    }
}

impl Eq for WorkingHours {}

/// Days to look back for the last switch: a schedule has at least one
/// working day a week, so eight days always find one.
const LOOKBACK_DAYS: i64 = 8;

impl WorkingHours {
    /// Whether `now` falls inside the schedule.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.timezone.clone());
        let t = local.time();
        self.days.contains(&local.weekday()) && t >= self.start && t < self.end
    }

    /// The most recent start or end of a working day at or before `now`.
    pub fn last_switch(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned(self.timezone.clone()).date();
        let mut best: Option<Timestamp> = None;
        for back in 0..LOOKBACK_DAYS {
            let Ok(day) = today.checked_sub(jiff::Span::new().days(back)) else {
                continue;
            };
            if !self.days.contains(&day.weekday()) {
                continue;
            }
            for t in [self.start, self.end] {
                let Ok(z) = day.to_datetime(t).to_zoned(self.timezone.clone()) else {
                    continue;
                };
                let ts = z.timestamp();
                if ts <= now && best.is_none_or(|b| ts > b) {
                    best = Some(ts);
                }
            }
            if best.is_some() {
                break;
            }
        }
        best
    }

    /// Availability at `now`: a manual setting made after the last switch
    /// wins; otherwise the schedule decides.
    pub fn available(&self, now: Timestamp, manual: Option<(bool, Timestamp)>) -> bool {
        match (manual, self.last_switch(now)) {
            (Some((value, at)), Some(switch)) if at >= switch => value,
            (Some((value, _)), None) => value,
            _ => self.contains(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin_9_to_5() -> WorkingHours {
        WorkingHours {
            timezone_name: "Europe/Berlin".into(),
            timezone: TimeZone::get("Europe/Berlin").expect("tzdb"),
            days: vec![
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ],
            start: Time::constant(9, 0, 0, 0),
            end: Time::constant(17, 0, 0, 0),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn schedule_in_local_time() {
        let h = berlin_9_to_5();
        let cases = [
            ("2026-11-26T07:59:00Z", false), // Thu 08:59 in Berlin (UTC+1)
            ("2026-11-26T08:00:00Z", true),  // Thu 09:00
            ("2026-11-26T15:59:59Z", true),  // Thu 16:59:59
            ("2026-11-26T16:00:00Z", false), // Thu 17:00
            ("2026-11-28T10:00:00Z", false), // Saturday
            ("2026-07-01T07:30:00Z", true),  // summer time: 09:30 local (UTC+2)
            ("2026-07-01T15:30:00Z", false), // 17:30 local
        ];
        for (at, want) in cases {
            assert_eq!(h.contains(ts(at)), want, "{at}");
        }
    }

    #[test]
    fn manual_setting_holds_until_the_next_switch() {
        let h = berlin_9_to_5();
        // Ann goes away at 11:00 on Thursday…
        let away = Some((false, ts("2026-11-26T10:00:00Z")));
        assert!(!h.available(ts("2026-11-26T12:00:00Z"), away));
        // …the end of day keeps her away, and Friday 09:00 brings her back.
        assert!(!h.available(ts("2026-11-26T20:00:00Z"), away));
        assert!(h.available(ts("2026-11-27T08:00:00Z"), away));
        // Marked available on Saturday: holds until Monday's start, then the schedule rules.
        let weekend = Some((true, ts("2026-11-28T10:00:00Z")));
        assert!(h.available(ts("2026-11-29T10:00:00Z"), weekend));
        assert!(h.available(ts("2026-11-30T08:30:00Z"), weekend));
        assert!(!h.available(ts("2026-11-30T16:30:00Z"), weekend));
        // No manual setting: the schedule alone.
        assert!(!h.available(ts("2026-11-28T10:00:00Z"), None));
    }

    #[test]
    fn last_switch_finds_the_previous_working_day() {
        let h = berlin_9_to_5();
        // Monday 08:00 local: the last switch is Friday's 17:00.
        assert_eq!(
            h.last_switch(ts("2026-11-30T07:00:00Z")),
            Some(ts("2026-11-27T16:00:00Z"))
        );
        assert_eq!(
            h.last_switch(ts("2026-11-30T08:00:00Z")),
            Some(ts("2026-11-30T08:00:00Z"))
        );
    }
}
