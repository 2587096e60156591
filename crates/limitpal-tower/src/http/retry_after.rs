//! Reading an upstream's `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{DATE, RETRY_AFTER};

/// The wait an HTTP response's `Retry-After` asks for, in either form: delay-seconds
/// (`Retry-After: 120`) or an HTTP-date (`Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`, and
/// the two obsolete date forms recipients must accept). A date is measured against the
/// response's own `Date` field when it has one (so the two clocks that matter are the
/// server's), else against this machine's clock; a date already past means zero.
///
/// Anything else is ignored (`None`), never an error: a negative or fractional number,
/// garbage, an impossible date, several values. How long to honour a huge value is the
/// caller's bound (the pipeline cuts holds and retries at `max_delay`).
///
/// ```
/// use http::HeaderMap;
/// use limitpal_tower::http::retry_after;
/// use std::time::Duration;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2".parse()?);
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
/// headers.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse()?);
/// headers.insert("date", "Sun, 06 Nov 1994 08:49:07 GMT".parse()?);
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(30)));
/// headers.insert("retry-after", "-1".parse()?);
/// assert_eq!(retry_after(&headers), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let mut values = headers.get_all(RETRY_AFTER).iter();
    let value = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() {
        return None; // conflicting answers: trust neither
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = http_date(value)?;
    let now = headers
        .get(DATE)
        .and_then(|d| http_date(d.to_str().ok()?.trim()))
        .unwrap_or_else(unix_now);
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch on this machine's wall clock.
fn unix_now() -> u64 {
    #[allow(clippy::disallowed_methods)] // wall time, only to compare with an HTTP-date
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date as Unix seconds: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime (`Sun Nov  6 08:49:37 1994`).
fn http_date(s: &str) -> Option<u64> {
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(',') {
        let parts: Vec<&str> = rest.split_ascii_whitespace().collect();
        match parts.as_slice() {
            [day, month, year, time, "GMT"] => (*day, *month, year.parse().ok()?, *time),
            [date, time, "GMT"] => {
                let mut d = date.split('-');
                let (day, month, yy) = (d.next()?, d.next()?, d.next()?);
                if d.next().is_some() || yy.len() != 2 {
                    return None;
                }
                let yy: u64 = yy.parse().ok()?;
                (
                    day,
                    month,
                    if yy < 70 { 2000 + yy } else { 1900 + yy },
                    *time,
                )
            }
            _ => return None,
        }
    } else {
        match s.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
            [_, month, day, time, year] => (*day, *month, year.parse().ok()?, *time),
            _ => return None,
        }
    };
    let day: u64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)?;
    let mut hms = time
        .split(':')
        .map(|p| (p.len() == 2).then(|| p.parse::<u64>().ok())?);
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some()
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || h > 23
        || m > 59
        || sec > 60
    {
        return None;
    }
    let days = days_from_civil(year, month as u64 + 1, day);
    Some(days * 86_400 + h * 3_600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, for years from 1970 on
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_date_forms_agree() {
        let imf = http_date("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf, Some(784_111_777));
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), imf);
        assert_eq!(http_date("Sun Nov  6 08:49:37 1994"), imf);
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Sat, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
    }

    #[test]
    fn hostile_values_are_ignored() {
        let value = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, v.parse().unwrap());
            retry_after(&headers)
        };
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "99999999999999999999999",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Nov 0000 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
        ] {
            assert_eq!(value(bad), None, "{bad:?}");
        }
        assert_eq!(value(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            value("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO),
            "a past date: go now"
        );
    }
}
