//! Working hours: a user's weekly schedule in their own time zone, which
//! switches their availability automatically.
//!
//! Pure: every function takes the instant to evaluate; no clock is read here.
//! A manual change (API/CLI) holds until the next switch of the schedule.
//! The keys of `[users.working_hours]` are declared here too
//! ([`WorkingHoursKeys`]); what spans them (a known time zone, a working
//! day, start and end apart) is `read::working_hours`'s.

use jiff::Timestamp;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use toml::Spanned;

use super::section::config_section;

config_section! {
    /// `[users.working_hours]` as written, which `read::working_hours` makes
    /// a [`WorkingHours`] of.
    pub struct WorkingHoursKeys {
        /// IANA time zone name, e.g. `"Europe/Berlin"`. Required.
        pub timezone: Option<Spanned<String>> = None => required,
        /// Working days, at least one. Default Monday to Friday.
        pub days: Vec<Weekday> = vec![
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
        ],
        /// Local start of the working day, `HH:MM`. Required.
        pub start: Option<Time> = None => required,
        /// Local end of the working day, `HH:MM`; before `start`: a night
        /// shift. Required.
        pub end: Option<Time> = None => required,
    }
}

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
    /// Local end of the working day, e.g. 17:30. Before `start`: a night
    /// shift, which ends the next day (22:00 – 06:00 on a Friday ends on
    /// Saturday morning). Never equal to `start` (`check` refuses it).
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
    /// A night shift: it starts on a working day and ends the next.
    fn overnight(&self) -> bool {
        self.end < self.start
    }

    /// The shift that starts on `day` (a working day or not), as instants:
    /// its start, and its end — the next day's for a night shift. Local
    /// times a DST change repeats are taken at their first occurrence,
    /// those it skips one hour later (jiff's "compatible" rule), so a shift
    /// is one interval even across the change.
    fn shift(&self, day: jiff::civil::Date) -> Option<(Timestamp, Timestamp)> {
        let at = |d: jiff::civil::Date, t: Time| {
            d.to_datetime(t)
                .to_zoned(self.timezone.clone())
                .ok()
                .map(|z| z.timestamp())
        };
        let end_day = if self.overnight() {
            day.tomorrow().ok()?
        } else {
            day
        };
        Some((at(day, self.start)?, at(end_day, self.end)?))
    }

    /// Whether `now` falls inside the schedule: in the shift of today or,
    /// for night shifts, of yesterday, if that day is a working day.
    pub fn contains(&self, now: Timestamp) -> bool {
        let today = now.to_zoned(self.timezone.clone()).date();
        let mut days = vec![today];
        if self.overnight()
            && let Ok(yesterday) = today.yesterday()
        {
            days.push(yesterday);
        }
        days.into_iter()
            .filter(|d| self.days.contains(&d.weekday()))
            .filter_map(|d| self.shift(d))
            .any(|(start, end)| start <= now && now < end)
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
            let Some((start, end)) = self.shift(day) else {
                continue;
            };
            for ts in [start, end] {
                if ts <= now && best.is_none_or(|b| ts > b) {
                    best = Some(ts);
                }
            }
            // An earlier day's switches all come before this day's start.
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

    /// A night shift (22:00 – 06:00, Monday to Friday nights, UTC): Friday
    /// night runs into Saturday morning; Sunday night is off. Before, `check`
    /// refused start after end.
    #[test]
    fn night_shifts_end_the_next_morning() {
        let h = WorkingHours {
            timezone_name: "UTC".into(),
            timezone: TimeZone::UTC,
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(6, 0, 0, 0),
            ..berlin_9_to_5()
        };
        let cases = [
            ("2026-11-26T21:59:00Z", false), // Thu 21:59
            ("2026-11-26T22:00:00Z", true),  // Thu 22:00
            ("2026-11-27T05:59:00Z", true),  // Fri 05:59, Thursday's shift
            ("2026-11-27T06:00:00Z", false), // Fri 06:00
            ("2026-11-28T03:00:00Z", true),  // Sat 03:00, Friday's shift
            ("2026-11-28T23:00:00Z", false), // Sat night: off
            ("2026-11-30T03:00:00Z", false), // Mon 03:00: Sunday night was off
            ("2026-11-30T22:30:00Z", true),  // Mon 22:30
        ];
        for (at, want) in cases {
            assert_eq!(h.contains(ts(at)), want, "{at}");
        }
        // The switches: Friday's shift ends Saturday 06:00; on Monday
        // afternoon the last one is still that end.
        assert_eq!(
            h.last_switch(ts("2026-11-28T10:00:00Z")),
            Some(ts("2026-11-28T06:00:00Z"))
        );
        assert_eq!(
            h.last_switch(ts("2026-11-30T15:00:00Z")),
            Some(ts("2026-11-28T06:00:00Z"))
        );
        assert_eq!(
            h.last_switch(ts("2026-11-27T02:00:00Z")),
            Some(ts("2026-11-26T22:00:00Z"))
        );
        // Away during a shift holds until it ends, not longer.
        let away = Some((false, ts("2026-11-26T23:00:00Z")));
        assert!(!h.available(ts("2026-11-27T05:00:00Z"), away));
        assert!(h.available(ts("2026-11-27T22:30:00Z"), away));
    }

    /// A Saturday night shift 22:00 – 02:30 in Berlin on the night summer
    /// time ends (2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:15 comes
    /// twice): the shift ends at the first 02:30; the repeated 02:15 is not
    /// inside it again. Before (comparing local times) it was.
    #[test]
    fn a_night_shift_ends_once_when_an_hour_repeats() {
        let h = WorkingHours {
            days: vec![Weekday::Saturday],
            start: Time::constant(22, 0, 0, 0),
            end: Time::constant(2, 30, 0, 0),
            ..berlin_9_to_5()
        };
        let cases = [
            ("2026-10-24T20:30:00Z", true),  // Sat 22:30 CEST
            ("2026-10-25T00:15:00Z", true),  // Sun 02:15 CEST
            ("2026-10-25T00:45:00Z", false), // Sun 02:45 CEST
            ("2026-10-25T01:15:00Z", false), // Sun 02:15 CET, the hour again
            ("2026-10-25T01:45:00Z", false), // Sun 02:45 CET
        ];
        for (at, want) in cases {
            assert_eq!(h.contains(ts(at)), want, "{at}");
        }
        assert_eq!(
            h.last_switch(ts("2026-10-25T01:15:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
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
