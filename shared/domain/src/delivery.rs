//! When a manager's notification may be delivered (DESIGN.md, "Manager settings"): never on
//! the recipient's weekend. The weekend comes from the region of their locale (CLDR week data:
//! Sat–Sun for `en-US`, Fri–Sat for `he-IL`, Fri for `fa-IR`, Sun for `en-IN`), the day from
//! their effective time zone. A delivery due on a weekend day moves to the next working day at
//! 09:00 local time; a delivery due on a working day is not moved.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use icu_calendar::week::WeekInformation;

/// The local hour a delivery moved off a weekend is made at.
pub const WORKDAY_START_HOUR: u32 = 9;

/// The days of a weekend, Monday = bit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekend(u8);

impl Weekend {
    /// Saturday and Sunday: the weekend of a locale without a region CLDR knows.
    pub const SATURDAY_SUNDAY: Weekend = Weekend(0b110_0000);

    /// A weekend of the given days.
    pub fn of(days: &[Weekday]) -> Weekend {
        Weekend(days.iter().fold(0, |bits, d| bits | 1 << d.num_days_from_monday()))
    }

    /// The weekend of a BCP 47 locale's region (`en_US` is read as `en-US`); an unreadable
    /// locale has Saturday and Sunday.
    pub fn for_locale(locale: &str) -> Weekend {
        let Ok(locale) = icu_locale::Locale::try_from_str(&locale.replace('_', "-")) else {
            return Weekend::SATURDAY_SUNDAY;
        };
        let Ok(info) = WeekInformation::try_new((&locale).into()) else {
            return Weekend::SATURDAY_SUNDAY;
        };
        let days: Vec<Weekday> = info.weekend().map(weekday).collect();
        if days.is_empty() { Weekend::SATURDAY_SUNDAY } else { Weekend::of(&days) }
    }

    /// Whether `day` is part of this weekend.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// The days, Monday first.
    pub fn days(self) -> Vec<Weekday> {
        (0..7u8).filter(|n| self.0 & (1 << n) != 0).filter_map(|n| Weekday::try_from(n).ok()).collect()
    }
}

fn weekday(day: icu_calendar::types::Weekday) -> Weekday {
    use icu_calendar::types::Weekday as W;
    match day {
        W::Monday => Weekday::Mon,
        W::Tuesday => Weekday::Tue,
        W::Wednesday => Weekday::Wed,
        W::Thursday => Weekday::Thu,
        W::Friday => Weekday::Fri,
        W::Saturday => Weekday::Sat,
        W::Sunday => Weekday::Sun,
    }
}

/// 09:00 on `date` in `zone`; if a DST change skips that hour, the first instant after it.
fn workday_start(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    let nine = NaiveTime::from_hms_opt(WORKDAY_START_HOUR, 0, 0).unwrap_or(NaiveTime::MIN);
    let mut local = date.and_time(nine);
    // A gap is at most a few hours; step forward until the local time exists.
    for _ in 0..48 {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => local += Duration::minutes(30),
        }
    }
    Utc.from_utc_datetime(&date.and_time(nine))
}

/// When a delivery due at `due` is made for a recipient in `zone` with `weekend`: at `due` on a
/// working day, else 09:00 local on the next working day.
pub fn deliver_at(due: DateTime<Utc>, zone: Tz, weekend: Weekend) -> DateTime<Utc> {
    let local = due.with_timezone(&zone).date_naive();
    if !weekend.contains(local.weekday()) {
        return due;
    }
    let mut day = local;
    // A weekend has at most six days; a seven-day one would have no working day at all.
    for _ in 0..7 {
        day = day.succ_opt().unwrap_or(day);
        if !weekend.contains(day.weekday()) {
            return workday_start(zone, day);
        }
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekends_come_from_the_locales_region() {
        use Weekday::*;
        assert_eq!(Weekend::for_locale("en-US").days(), vec![Sat, Sun]);
        assert_eq!(Weekend::for_locale("en_US").days(), vec![Sat, Sun], "underscore form");
        assert_eq!(Weekend::for_locale("he-IL").days(), vec![Fri, Sat]);
        assert_eq!(Weekend::for_locale("ar-SA").days(), vec![Fri, Sat]);
        assert_eq!(Weekend::for_locale("fa-IR").days(), vec![Fri]);
        assert_eq!(Weekend::for_locale("en-IN").days(), vec![Sun]);
        assert_eq!(Weekend::for_locale("de-DE").days(), vec![Sat, Sun]);
        assert_eq!(Weekend::for_locale("not a locale").days(), vec![Sat, Sun], "unreadable: Sat–Sun");
    }

    #[test]
    fn a_working_day_delivery_is_not_moved() {
        let zone: Tz = "America/New_York".parse().unwrap();
        let wednesday = utc("2026-12-02T19:30:00Z");
        assert_eq!(deliver_at(wednesday, zone, Weekend::for_locale("en-US")), wednesday);
        // Friday evening in New York is already Saturday in UTC: the local day decides.
        let friday_evening = utc("2026-12-05T02:00:00Z");
        assert_eq!(deliver_at(friday_evening, zone, Weekend::for_locale("en-US")), friday_evening);
    }

    #[test]
    fn a_weekend_delivery_waits_for_monday_nine_local() {
        let zone: Tz = "America/New_York".parse().unwrap();
        let saturday = utc("2026-12-05T15:00:00Z");
        assert_eq!(deliver_at(saturday, zone, Weekend::for_locale("en-US")), utc("2026-12-07T14:00:00Z"));
        let sunday_late = utc("2026-12-07T04:59:00Z"); // 23:59 Sunday in New York
        assert_eq!(deliver_at(sunday_late, zone, Weekend::for_locale("en-US")), utc("2026-12-07T14:00:00Z"));
    }

    #[test]
    fn a_friday_saturday_weekend_delivers_on_sunday() {
        let zone: Tz = "Asia/Jerusalem".parse().unwrap();
        let friday = utc("2026-12-04T08:00:00Z");
        // Sunday 09:00 in Jerusalem (UTC+2 in winter).
        assert_eq!(deliver_at(friday, zone, Weekend::for_locale("he-IL")), utc("2026-12-06T07:00:00Z"));
        let sunday = utc("2026-12-06T08:00:00Z");
        assert_eq!(deliver_at(sunday, zone, Weekend::for_locale("he-IL")), sunday, "a working day there");
        // The same Sunday is a weekend day for a recipient in the US.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_ne!(deliver_at(sunday, ny, Weekend::for_locale("en-US")), sunday);
    }

    #[test]
    fn nine_local_follows_daylight_saving_changes() {
        // Europe/Berlin moves to summer time on Sunday 2026-03-29: Monday 09:00 is 07:00 UTC,
        // while the Saturday before it was UTC+1.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let saturday = utc("2026-03-28T12:00:00Z");
        assert_eq!(deliver_at(saturday, berlin, Weekend::for_locale("de-DE")), utc("2026-03-30T07:00:00Z"));
        // New York leaves summer time on Sunday 2026-11-01: Monday 09:00 is 14:00 UTC, an hour
        // later in UTC than the Saturday's 09:00 was.
        let ny: Tz = "America/New_York".parse().unwrap();
        let saturday = utc("2026-10-31T13:00:00Z");
        assert_eq!(deliver_at(saturday, ny, Weekend::for_locale("en-US")), utc("2026-11-02T14:00:00Z"));
        // Sydney's summer (UTC+11): Saturday noon local waits for Monday 09:00 = Sunday 22:00 UTC.
        let sydney: Tz = "Australia/Sydney".parse().unwrap();
        assert_eq!(
            deliver_at(utc("2026-12-05T01:00:00Z"), sydney, Weekend::for_locale("en-AU")),
            utc("2026-12-06T22:00:00Z")
        );
    }

    #[test]
    fn nine_local_on_the_day_of_a_clock_change_uses_the_new_offset() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // Clocks go forward at 02:00 on Sunday 2026-03-08 and back at 02:00 on 2026-11-01.
        let spring = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap();
        assert_eq!(workday_start(ny, spring), utc("2026-03-08T13:00:00Z"));
        let autumn = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        assert_eq!(workday_start(ny, autumn), utc("2026-11-01T14:00:00Z"));
    }

    #[test]
    fn every_weekday_of_the_year_lands_on_a_working_day_at_or_after_due() {
        let zones: [(&str, &str); 4] = [
            ("America/New_York", "en-US"),
            ("Asia/Jerusalem", "he-IL"),
            ("Asia/Tehran", "fa-IR"),
            ("Asia/Kolkata", "en-IN"),
        ];
        for (zone, locale) in zones {
            let zone: Tz = zone.parse().unwrap();
            let weekend = Weekend::for_locale(locale);
            let mut due = utc("2026-01-01T00:00:00Z");
            while due < utc("2027-01-01T00:00:00Z") {
                let at = deliver_at(due, zone, weekend);
                assert!(at >= due, "{zone} {due}: {at}");
                assert!(!weekend.contains(at.with_timezone(&zone).weekday()), "{zone} {due}: {at}");
                assert!(at - due < Duration::days(4), "{zone} {due}: {at}");
                due += Duration::minutes(97);
            }
        }
    }
}
