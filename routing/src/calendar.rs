//! Opening hours and public holidays, in a queue's own time zone.
//!
//! A queue is open when the local date is not a holiday and the local time
//! falls in one of that weekday's ranges. Everything is computed in the
//! zone's civil time (Europe/Rome for the demo city) so daylight-saving
//! changes move the opening instant with the clock on the office wall, as
//! citizens expect: "08:30" stays 08:30 in March and in November.
//!
//! Italian national holidays are built in, with Easter Monday (Pasquetta)
//! computed from the Gregorian computus rather than listed, so the calendar
//! never runs out. A city adds its patron saint's day and one-off closures.
//!
//! ```
//! use ccu_routing::calendar::{HolidayCalendar, OpeningHours, WeeklyHours};
//! use chrono::{TimeZone, Utc};
//!
//! let weekly = WeeklyHours::parse_days(&[("mon-fri", "08:30-12:30,14:30-16:30")]).unwrap();
//! let hours = OpeningHours::new(chrono_tz::Europe::Rome, weekly, HolidayCalendar::italy());
//! // Tuesday 2026-11-24 09:00 in Rome is 08:00 UTC.
//! assert!(hours.is_open(Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap()));
//! // 2026-12-08 (Immacolata Concezione) is a national holiday.
//! assert!(!hours.is_open(Utc.with_ymd_and_hms(2026, 12, 8, 9, 0, 0).unwrap()));
//! ```

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// Why a piece of an opening-hours specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown day {0:?}: use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")]
    UnknownDay(String),
    #[error("bad time range {0:?}: expected HH:MM-HH:MM with the start before the end")]
    BadRange(String),
    #[error("time ranges {0} and {1} overlap on the same day")]
    Overlap(String, String),
    #[error("bad date {0:?}: expected MM-DD for a yearly holiday or YYYY-MM-DD for a single day")]
    BadDate(String),
}

/// Opening ranges for each weekday, Monday first. Ranges are half-open
/// `[start, end)`, sorted and non-overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeeklyHours {
    days: [Vec<(NaiveTime, NaiveTime)>; 7],
}

impl WeeklyHours {
    /// Open around the clock, every day (an emergency line, an e-mail queue).
    pub fn always() -> Self {
        let all_day = (NaiveTime::MIN, NaiveTime::MIN);
        Self {
            days: std::array::from_fn(|_| vec![all_day]),
        }
    }

    /// Builds the week from `(days, ranges)` pairs such as
    /// `("mon-fri", "08:30-12:30,14:30-16:30")` or `("sat", "09:00-12:00")`.
    /// `"00:00-24:00"` means the whole day.
    pub fn parse_days(spec: &[(&str, &str)]) -> Result<Self, CalendarError> {
        let mut week = Self::default();
        for (days, ranges) in spec {
            let parsed = parse_ranges(ranges)?;
            for day in parse_day_set(days)? {
                week.days[day].extend(parsed.iter().copied());
            }
        }
        for day in &mut week.days {
            day.sort();
            for pair in day.windows(2) {
                // `MIN` as an end means midnight at the end of the day.
                let first_end = pair[0].1;
                if first_end == NaiveTime::MIN || first_end > pair[1].0 {
                    return Err(CalendarError::Overlap(
                        fmt_range(pair[0]),
                        fmt_range(pair[1]),
                    ));
                }
            }
        }
        Ok(week)
    }

    /// The ranges of one weekday.
    pub fn ranges(&self, day: Weekday) -> &[(NaiveTime, NaiveTime)] {
        &self.days[day.num_days_from_monday() as usize]
    }

    fn contains(&self, day: Weekday, time: NaiveTime) -> bool {
        self.ranges(day)
            .iter()
            .any(|&(start, end)| time >= start && (end == NaiveTime::MIN || time < end))
    }
}

fn fmt_range((start, end): (NaiveTime, NaiveTime)) -> String {
    let end = if end == NaiveTime::MIN {
        "24:00".to_owned()
    } else {
        end.format("%H:%M").to_string()
    };
    format!("{}-{end}", start.format("%H:%M"))
}

fn parse_day(name: &str) -> Option<usize> {
    let day = match name.trim().to_ascii_lowercase().as_str() {
        "mon" | "lun" => Weekday::Mon,
        "tue" | "mar" => Weekday::Tue,
        "wed" | "mer" => Weekday::Wed,
        "thu" | "gio" => Weekday::Thu,
        "fri" | "ven" => Weekday::Fri,
        "sat" | "sab" => Weekday::Sat,
        "sun" | "dom" => Weekday::Sun,
        _ => return None,
    };
    Some(day.num_days_from_monday() as usize)
}

fn parse_day_set(spec: &str) -> Result<Vec<usize>, CalendarError> {
    let mut days = Vec::new();
    for part in spec.split(',') {
        let unknown = || CalendarError::UnknownDay(part.trim().to_owned());
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (
                    parse_day(from).ok_or_else(unknown)?,
                    parse_day(to).ok_or_else(unknown)?,
                );
                if from > to {
                    return Err(unknown());
                }
                days.extend(from..=to);
            }
            None => days.push(parse_day(part).ok_or_else(unknown)?),
        }
    }
    Ok(days)
}

fn parse_ranges(spec: &str) -> Result<Vec<(NaiveTime, NaiveTime)>, CalendarError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || CalendarError::BadRange(part.to_owned());
        let (start, end) = part.split_once('-').ok_or_else(bad)?;
        let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").map_err(|_| bad())?;
        let end = match end.trim() {
            "24:00" => NaiveTime::MIN,
            other => {
                let end = NaiveTime::parse_from_str(other, "%H:%M").map_err(|_| bad())?;
                if end <= start {
                    return Err(bad());
                }
                end
            }
        };
        out.push((start, end));
    }
    Ok(out)
}

/// Public holidays: yearly fixed dates, Easter-relative days, and single dates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayCalendar {
    yearly: Vec<(u32, u32)>,
    easter_sunday: bool,
    easter_monday: bool,
    single: Vec<NaiveDate>,
}

impl HolidayCalendar {
    /// No holidays at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The national public holidays of Italy (L. 260/1949 and later laws):
    /// Capodanno, Epifania, Pasqua, Pasquetta, Liberazione, Festa del Lavoro,
    /// Festa della Repubblica, Ferragosto, Ognissanti, Immacolata, Natale,
    /// Santo Stefano. The patron saint's day is local: add it with
    /// [`HolidayCalendar::with_dates`], like any other day a city's offices
    /// close (a change in national law is also one line of config).
    pub fn italy() -> Self {
        Self {
            yearly: vec![
                (1, 1),
                (1, 6),
                (4, 25),
                (5, 1),
                (6, 2),
                (8, 15),
                (11, 1),
                (12, 8),
                (12, 25),
                (12, 26),
            ],
            easter_sunday: true,
            easter_monday: true,
            single: Vec::new(),
        }
    }

    /// Adds dates written `MM-DD` (every year) or `YYYY-MM-DD` (once).
    pub fn with_dates<S: AsRef<str>>(mut self, dates: &[S]) -> Result<Self, CalendarError> {
        for date in dates {
            let text = date.as_ref().trim();
            let bad = || CalendarError::BadDate(text.to_owned());
            if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                self.single.push(day);
                continue;
            }
            let (month, day) = text.split_once('-').ok_or_else(bad)?;
            let (month, day): (u32, u32) = (
                month.parse().map_err(|_| bad())?,
                day.parse().map_err(|_| bad())?,
            );
            // 2024 is a leap year, so 02-29 is accepted as a yearly date.
            NaiveDate::from_ymd_opt(2024, month, day).ok_or_else(bad)?;
            self.yearly.push((month, day));
        }
        Ok(self)
    }

    /// Whether `date` (a civil date in the calendar's zone) is a holiday.
    pub fn is_holiday(&self, date: NaiveDate) -> bool {
        if self.yearly.contains(&(date.month(), date.day())) || self.single.contains(&date) {
            return true;
        }
        if self.easter_sunday || self.easter_monday {
            let easter = easter_sunday(date.year());
            if (self.easter_sunday && date == easter)
                || (self.easter_monday && Some(date) == easter.succ_opt())
            {
                return true;
            }
        }
        false
    }
}

/// Easter Sunday of a Gregorian year: the anonymous Gregorian computus
/// (Meeus/Jones/Butcher), exact for every year of the Gregorian calendar.
pub fn easter_sunday(year: i32) -> NaiveDate {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c.div_euclid(4);
    let k = c.rem_euclid(4);
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l).div_euclid(451);
    let month = (h + l - 7 * m + 114).div_euclid(31);
    let day = (h + l - 7 * m + 114).rem_euclid(31) + 1;
    // month is 3 or 4 and day 1..=31 by construction; the fallback is never
    // taken but keeps this function total.
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or(NaiveDate::MIN)
}

/// A queue's opening hours: a weekly pattern, holidays, and a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct OpeningHours {
    zone: Tz,
    weekly: WeeklyHours,
    holidays: HolidayCalendar,
}

impl OpeningHours {
    pub fn new(zone: Tz, weekly: WeeklyHours, holidays: HolidayCalendar) -> Self {
        Self {
            zone,
            weekly,
            holidays,
        }
    }

    /// Open every minute of every day, holidays included.
    pub fn always(zone: Tz) -> Self {
        Self::new(zone, WeeklyHours::always(), HolidayCalendar::none())
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Whether the queue is open at the instant `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.zone).naive_local();
        !self.holidays.is_holiday(local.date())
            && self.weekly.contains(local.date().weekday(), local.time())
    }

    /// The next instant after `at` when [`is_open`](Self::is_open) changes,
    /// searched up to 14 days ahead (enough to cross any run of holidays a
    /// real calendar has); `None` when it never changes in that span.
    ///
    /// Boundaries are local wall-clock times; one that falls in a
    /// daylight-saving gap is taken at the first valid instant after it.
    pub fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let open_now = self.is_open(at);
        let start_date = at.with_timezone(&self.zone).date_naive();
        for offset in 0..=14 {
            let date = start_date + Duration::days(offset);
            let mut boundaries: Vec<NaiveTime> = vec![NaiveTime::MIN];
            for &(start, end) in self.weekly.ranges(date.weekday()) {
                boundaries.push(start);
                boundaries.push(end);
            }
            boundaries.sort();
            boundaries.dedup();
            for time in boundaries {
                let Some(instant) = self.local_to_utc(date, time) else {
                    continue;
                };
                if instant > at && self.is_open(instant) != open_now {
                    return Some(instant);
                }
            }
        }
        None
    }

    fn local_to_utc(&self, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let naive = date.and_time(time);
        match self.zone.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            // Ambiguous (clocks go back): the first occurrence.
            chrono::LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
            // In the gap (clocks go forward): the first minute after it.
            chrono::LocalResult::None => (1..=120).find_map(|m| {
                self.zone
                    .from_local_datetime(&(naive + Duration::minutes(m)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Rome;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn office() -> OpeningHours {
        let weekly = WeeklyHours::parse_days(&[
            ("mon-fri", "08:30-12:30,14:30-16:30"),
            ("sat", "09:00-12:00"),
        ])
        .unwrap();
        OpeningHours::new(Rome, weekly, HolidayCalendar::italy())
    }

    #[test]
    fn easter_is_computed_for_known_years() {
        for (year, month, day) in [
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
            (2285, 3, 22),
            (1943, 4, 25),
        ] {
            assert_eq!(
                easter_sunday(year),
                NaiveDate::from_ymd_opt(year, month, day).unwrap(),
                "{year}"
            );
        }
    }

    #[test]
    fn easter_monday_is_a_holiday_and_the_tuesday_after_is_not() {
        let cal = HolidayCalendar::italy();
        assert!(cal.is_holiday(NaiveDate::from_ymd_opt(2026, 4, 6).unwrap()));
        assert!(!cal.is_holiday(NaiveDate::from_ymd_opt(2026, 4, 7).unwrap()));
        assert!(cal.is_holiday(NaiveDate::from_ymd_opt(2027, 3, 29).unwrap()));
    }

    #[test]
    fn patron_saint_and_single_closures_are_added() {
        let cal = HolidayCalendar::italy()
            .with_dates(&["09-29", "2026-12-24"])
            .unwrap();
        assert!(cal.is_holiday(NaiveDate::from_ymd_opt(2031, 9, 29).unwrap()));
        assert!(cal.is_holiday(NaiveDate::from_ymd_opt(2026, 12, 24).unwrap()));
        assert!(!cal.is_holiday(NaiveDate::from_ymd_opt(2027, 12, 24).unwrap()));
        assert_eq!(
            HolidayCalendar::none().with_dates(&["13-01"]),
            Err(CalendarError::BadDate("13-01".into()))
        );
    }

    #[test]
    fn hours_follow_local_time_across_daylight_saving() {
        let hours = office();
        // Monday 2026-03-30 (CEST, UTC+2): 08:30 local is 06:30 UTC.
        assert!(!hours.is_open(utc(2026, 3, 30, 6, 29)));
        assert!(hours.is_open(utc(2026, 3, 30, 6, 30)));
        // Monday 2026-11-23 (CET, UTC+1): 08:30 local is 07:30 UTC.
        assert!(!hours.is_open(utc(2026, 11, 23, 7, 29)));
        assert!(hours.is_open(utc(2026, 11, 23, 7, 30)));
        // Lunch break and the end of the day are closed (ranges are half-open).
        assert!(!hours.is_open(utc(2026, 11, 23, 11, 30)));
        assert!(!hours.is_open(utc(2026, 11, 23, 15, 30)));
        // Sunday closed.
        assert!(!hours.is_open(utc(2026, 11, 22, 9, 0)));
    }

    #[test]
    fn next_change_skips_holidays_and_weekends() {
        let hours = office();
        // Friday 2026-12-04 17:00 local: next opening is Saturday 09:00.
        assert_eq!(
            hours.next_change(utc(2026, 12, 4, 16, 0)),
            Some(utc(2026, 12, 5, 8, 0))
        );
        // Monday 2026-12-07 17:00: Tuesday 8 is the Immacolata, so Wednesday 08:30.
        assert_eq!(
            hours.next_change(utc(2026, 12, 7, 16, 0)),
            Some(utc(2026, 12, 9, 7, 30))
        );
        // Open now: the next change is the lunch break.
        assert_eq!(
            hours.next_change(utc(2026, 12, 9, 9, 0)),
            Some(utc(2026, 12, 9, 11, 30))
        );
        assert_eq!(
            OpeningHours::always(Rome).next_change(utc(2026, 1, 1, 0, 0)),
            None
        );
    }

    #[test]
    fn whole_day_ranges_and_bad_specs() {
        let week = WeeklyHours::parse_days(&[("sun", "00:00-24:00")]).unwrap();
        let hours = OpeningHours::new(Rome, week, HolidayCalendar::none());
        assert!(hours.is_open(utc(2026, 11, 22, 22, 59)));
        assert!(matches!(
            WeeklyHours::parse_days(&[("mon", "12:00-09:00")]),
            Err(CalendarError::BadRange(_))
        ));
        assert!(matches!(
            WeeklyHours::parse_days(&[("funday", "09:00-10:00")]),
            Err(CalendarError::UnknownDay(_))
        ));
        assert!(matches!(
            WeeklyHours::parse_days(&[("mon", "09:00-12:00"), ("mon-tue", "11:00-13:00")]),
            Err(CalendarError::Overlap(_, _))
        ));
    }
}
