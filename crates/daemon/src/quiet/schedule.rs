//! When a notifier is quiet and when its digest goes: the `quiet_hours` window in the notifier's `timezone`,
//! and the `digest` period, as pure functions of an instant.
//!
//! Times of day are wall-clock times in the zone (so a window follows daylight saving); a digest period is
//! counted in elapsed time from each local midnight. Instants are milliseconds since the Unix epoch, passed
//! in: this module never reads the clock, so tests choose the time.

use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

/// A `quiet_hours` window, `"22:30-07:00"`: from `start` (included) to `end` (excluded), wall-clock times
/// that may wrap midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight the window starts.
    pub start: u16,
    /// Minutes after midnight the window ends.
    pub end: u16,
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Window, String> {
        let bad = || {
            format!("`{s}` is not a window of two times of day: write `HH:MM-HH:MM`, such as `22:30-07:00`")
        };
        let (start, end) = s.trim().split_once('-').ok_or_else(bad)?;
        let start = minutes(start.trim()).ok_or_else(bad)?;
        let end = minutes(end.trim()).ok_or_else(bad)?;
        if start == end {
            return Err(format!("`{s}` starts and ends at the same time: give a window of some length"));
        }
        Ok(Window { start, end })
    }
}

/// `HH:MM` (24-hour clock) as minutes after midnight.
fn minutes(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Window {
    /// Whether the wall-clock time `minute` (after midnight) is in the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, e) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
    }
}

/// A notifier's quiet hours and digest period, in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Quiet {
    /// `quiet_hours`, if set.
    pub hours: Option<Window>,
    /// `digest`: one digest per this period instead of each notification, if set.
    pub digest: Option<Duration>,
    /// The zone `hours` and the digest periods are read in (`timezone`, default the machine's).
    pub zone: TimeZone,
    /// The zone's name, as configured or as the system reports it (for messages).
    pub zone_name: String,
}

impl Quiet {
    /// When a notification that may wait, made at `now_ms`, goes out in a digest: the end of the quiet
    /// hours `now_ms` is in, else the end of the digest period (pushed past quiet hours it falls in); None
    /// to deliver it at once (not quiet, no digest).
    pub fn release_ms(&self, now_ms: u64) -> Option<u64> {
        let now = timestamp(now_ms)?;
        let at = match (self.quiet_end(now), self.digest) {
            (Some(end), _) => end,
            (None, Some(period)) => {
                let boundary = self.next_boundary(now, period)?;
                self.quiet_end(boundary).unwrap_or(boundary)
            }
            (None, None) => return None,
        };
        u64::try_from(at.as_millisecond()).ok()
    }

    /// Whether `now_ms` is in the quiet hours.
    pub fn is_quiet(&self, now_ms: u64) -> bool {
        timestamp(now_ms).is_some_and(|now| self.quiet_end(now).is_some())
    }

    /// The end of the quiet hours `at` is in; None when `at` is not in them.
    fn quiet_end(&self, at: Timestamp) -> Option<Timestamp> {
        let window = self.hours?;
        let local = at.to_zoned_datetime(self.zone.clone());
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).ok()?;
        if !window.contains(minute) {
            return None;
        }
        let end =
            Time::new(i8::try_from(window.end / 60).ok()?, i8::try_from(window.end % 60).ok()?, 0, 0).ok()?;
        // The next wall-clock `end` after `at`: today's, or tomorrow's. A time that a daylight-saving jump
        // skips is read as after the jump (jiff's `compatible`).
        let mut day: Date = local.date();
        for _ in 0..3 {
            let candidate = day.to_datetime(end).to_zoned_datetime(self.zone.clone()).ok()?.timestamp();
            if candidate > at {
                return Some(candidate);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The first digest boundary after `at`: local midnight plus a whole number of periods, the periods
    /// starting again at each local midnight.
    fn next_boundary(&self, at: Timestamp, period: Duration) -> Option<Timestamp> {
        let local = at.to_zoned_datetime(self.zone.clone());
        let midnight = local.start_of_day().ok()?.timestamp();
        let next_midnight = local.tomorrow().ok()?.start_of_day().ok()?.timestamp();
        let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
        let elapsed = at.as_millisecond() - midnight.as_millisecond();
        let boundary = midnight.as_millisecond() + (elapsed / period_ms + 1).saturating_mul(period_ms);
        Some(timestamp_i64(boundary)?.min(next_midnight))
    }
}

fn timestamp(ms: u64) -> Option<Timestamp> {
    timestamp_i64(i64::try_from(ms).ok()?)
}

fn timestamp_i64(ms: i64) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

/// The time zone named `name` (IANA, such as `Europe/Berlin`), or the machine's when `name` is None.
pub fn zone(name: Option<&str>) -> Result<(TimeZone, String), String> {
    match name {
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => Ok((tz, name.to_owned())),
            Err(e) => Err(format!(
                "`{name}` is not a time zone this machine knows ({e}): use an IANA name such as \
                 `Europe/Berlin` (the time zone database is in /usr/share/zoneinfo; on Debian, install `tzdata`)"
            )),
        },
        None => {
            let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
            let name = tz.iana_name().unwrap_or("UTC").to_owned();
            Ok((tz, name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of an RFC 3339 instant.
    pub(crate) fn ms(s: &str) -> u64 {
        let t: Timestamp = s.parse().expect("test instants are valid");
        u64::try_from(t.as_millisecond()).expect("after 1970")
    }

    fn quiet(hours: Option<&str>, digest: Option<u64>, zone_name: &str) -> Quiet {
        let (zone, zone_name) = zone(Some(zone_name)).expect("the test machine has tzdata");
        Quiet {
            hours: hours.map(|h| h.parse().expect("valid window")),
            digest: digest.map(Duration::from_secs),
            zone,
            zone_name,
        }
    }

    #[test]
    fn windows_parse_and_reject() {
        assert_eq!("22:30-07:00".parse(), Ok(Window { start: 22 * 60 + 30, end: 7 * 60 }));
        assert_eq!(" 9:05 - 17:00 ".parse(), Ok(Window { start: 9 * 60 + 5, end: 17 * 60 }));
        for bad in ["", "22:30", "22:30-", "24:00-07:00", "22:60-07:00", "22-07", "22:3-07:00", "ab:cd-07:00"]
        {
            let err = bad.parse::<Window>().expect_err(bad);
            assert!(err.contains("HH:MM-HH:MM"), "{bad}: {err}");
        }
        assert!("07:00-07:00".parse::<Window>().expect_err("empty").contains("same time"));
        assert_eq!("22:30-07:00".parse::<Window>().map(|w| w.to_string()), Ok("22:30-07:00".to_owned()));
    }

    #[test]
    fn a_window_across_midnight() {
        let q = quiet(Some("22:30-07:00"), None, "Europe/Berlin");
        // Berlin is UTC+1 in January.
        let check = |at: &str, release: Option<&str>| {
            assert_eq!(q.release_ms(ms(at)), release.map(ms), "{at}");
            assert_eq!(q.is_quiet(ms(at)), release.is_some(), "{at}");
        };
        check("2026-01-14T21:29:59Z", None);
        check("2026-01-14T21:30:00Z", Some("2026-01-15T06:00:00Z"));
        check("2026-01-14T23:00:00Z", Some("2026-01-15T06:00:00Z"));
        check("2026-01-15T05:59:59Z", Some("2026-01-15T06:00:00Z"));
        check("2026-01-15T06:00:00Z", None);
        check("2026-01-15T12:00:00Z", None);
    }

    #[test]
    fn a_window_within_a_day() {
        let q = quiet(Some("01:00-05:00"), None, "UTC");
        assert_eq!(q.release_ms(ms("2026-05-01T00:59:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-05-01T03:00:00Z")), Some(ms("2026-05-01T05:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-05-01T05:00:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-05-01T23:00:00Z")), None);
    }

    #[test]
    fn daylight_saving_starts_in_the_night() {
        // 2026-03-29: Berlin goes from 02:00 CET (+01) to 03:00 CEST (+02); the night is an hour shorter.
        let q = quiet(Some("22:30-07:00"), None, "Europe/Berlin");
        assert_eq!(q.release_ms(ms("2026-03-28T21:29:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-03-28T21:30:00Z")), Some(ms("2026-03-29T05:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-03-29T00:59:00Z")), Some(ms("2026-03-29T05:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-03-29T01:00:00Z")), Some(ms("2026-03-29T05:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-03-29T05:00:00Z")), None);
        // The next evening starts at 22:30 CEST, 20:30 UTC.
        assert_eq!(q.release_ms(ms("2026-03-29T20:29:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-03-29T20:30:00Z")), Some(ms("2026-03-30T05:00:00Z")));
        // A window ending in the skipped hour ends when the clock jumps past it (02:30 reads as 03:30 CEST).
        let gap = quiet(Some("23:00-02:30"), None, "Europe/Berlin");
        assert_eq!(gap.release_ms(ms("2026-03-28T23:30:00Z")), Some(ms("2026-03-29T01:30:00Z")));
    }

    #[test]
    fn daylight_saving_ends_in_the_night() {
        // 2026-10-25: Berlin goes from 03:00 CEST (+02) back to 02:00 CET (+01); the night is an hour longer.
        let q = quiet(Some("22:30-07:00"), None, "Europe/Berlin");
        assert_eq!(q.release_ms(ms("2026-10-24T20:29:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-10-24T20:30:00Z")), Some(ms("2026-10-25T06:00:00Z")));
        // Both 02:30s are in the window.
        assert_eq!(q.release_ms(ms("2026-10-25T00:30:00Z")), Some(ms("2026-10-25T06:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-10-25T01:30:00Z")), Some(ms("2026-10-25T06:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-10-25T05:59:00Z")), Some(ms("2026-10-25T06:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-10-25T06:00:00Z")), None);
        assert_eq!(q.release_ms(ms("2026-10-25T21:30:00Z")), Some(ms("2026-10-26T06:00:00Z")));
    }

    #[test]
    fn digest_periods_count_from_local_midnight() {
        let q = quiet(None, Some(3600), "Europe/Berlin");
        // 10:20 CET goes at 11:00 CET.
        assert_eq!(q.release_ms(ms("2026-01-14T09:20:00Z")), Some(ms("2026-01-14T10:00:00Z")));
        // On the boundary: the next one.
        assert_eq!(q.release_ms(ms("2026-01-14T10:00:00Z")), Some(ms("2026-01-14T11:00:00Z")));
        // A 7-hour period restarts at midnight: 21:00 -> 00:00, not 04:00.
        let seven = quiet(None, Some(7 * 3600), "UTC");
        assert_eq!(seven.release_ms(ms("2026-01-14T21:30:00Z")), Some(ms("2026-01-15T00:00:00Z")));
        assert_eq!(seven.release_ms(ms("2026-01-14T06:59:00Z")), Some(ms("2026-01-14T07:00:00Z")));
        // On the short day of March, hours count in elapsed time from local midnight: 00:00 CET is 23:00
        // UTC, so boundaries stay on the UTC hour.
        assert_eq!(q.release_ms(ms("2026-03-29T03:10:00Z")), Some(ms("2026-03-29T04:00:00Z")));
    }

    #[test]
    fn a_digest_boundary_in_quiet_hours_waits_for_their_end() {
        let q = quiet(Some("22:30-07:00"), Some(3600), "UTC");
        assert_eq!(q.release_ms(ms("2026-01-14T21:10:00Z")), Some(ms("2026-01-14T22:00:00Z")));
        // 22:10 -> 23:00, which is quiet: 07:00.
        assert_eq!(q.release_ms(ms("2026-01-14T22:10:00Z")), Some(ms("2026-01-15T07:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-01-15T03:00:00Z")), Some(ms("2026-01-15T07:00:00Z")));
        assert_eq!(q.release_ms(ms("2026-01-15T07:00:00Z")), Some(ms("2026-01-15T08:00:00Z")));
    }

    #[test]
    fn unknown_zones_are_errors_that_say_what_to_use() {
        let err = zone(Some("Mars/Olympus")).expect_err("no such zone");
        assert!(err.contains("IANA name"), "{err}");
        assert!(zone(None).is_ok());
    }
}
