//! Wall-clock time as the store records it: milliseconds since the Unix epoch, ISO weeks.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The week of a time in ms since the epoch, named as the store's weekly metrics and drift events
/// name weeks (`strftime('%G-W%V')`): `2026-W48`.
pub fn iso_week(ms: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, week, _) = time.to_iso_week_date();
    format!("{year}-W{week:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_weeks_match_the_metrics_naming() {
        const NOW: i64 = 1_795_608_000_000;
        const DAY: i64 = 86_400_000;
        assert_eq!(iso_week(NOW), "2026-W48");
        assert_eq!(iso_week(NOW - 7 * DAY), "2026-W47");
        let sqlite = rusqlite::Connection::open_in_memory().unwrap();
        for ms in [NOW, NOW - 7 * DAY, 1_735_689_600_000, 1_767_225_600_000] {
            let named: String =
                sqlite.query_row("SELECT strftime('%G-W%V', ?1 / 1000, 'unixepoch')", [ms], |row| row.get(0)).unwrap();
            assert_eq!(iso_week(ms), named, "{ms}");
        }
    }
}
