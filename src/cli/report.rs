//! What several command groups share: messages and exit codes, JSON and sizes, the argument
//! parsers, and how a command finds its config and model.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::home::Home;

/// A line on stderr under our name, so that it stands apart from the output of the command or
/// language server we wrap.
pub fn say(message: impl Display) {
    eprintln!("marunochi: {message}");
}

/// A progress bar on stderr drawn with `template`, its length set as the work finds out (hidden
/// when stderr is not a terminal).
pub fn counter(template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// Says why the command failed; exit 1.
pub fn fail(error: impl Display) -> ExitCode {
    say(error);
    ExitCode::FAILURE
}

/// Says what the user has to fix first (arguments, config.toml, a model); exit 2.
pub fn usage_error(error: impl Display) -> ExitCode {
    say(error);
    ExitCode::from(2)
}

/// Whether the store exists yet. When it does not, says so: for most commands an empty history is
/// an answer, not an error, so the caller picks the exit code.
pub fn recorded(db: &Path) -> bool {
    let exists = db.exists();
    if !exists {
        say(format!("nothing recorded yet ({} does not exist)", db.display()));
    }
    exists
}

/// Pretty JSON on stdout, for `--json`. Panics on a path that is not UTF-8, which serde_json refuses.
pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("report serializes"));
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// An RFC 3339 time, normalised to UTC as the store writes them (`2026-11-25T10:00:00.000Z`).
pub fn parse_rfc3339(text: &str) -> Result<String, String> {
    let ms = parse_time_ms(text)?;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).map_err(|e| e.to_string())?;
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format).map_err(|e| e.to_string())
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-25T09:00:00Z ({e})"))?;
    Ok((time.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `2h`, `90m`, `1h30m`, `45s`: a duration of hours, minutes and seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 2h, 90m, 1h30m or 45s");
    let (mut seconds, mut number) = (0u64, String::new());
    for c in text.trim().chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let n: u64 = number.parse().map_err(|_| bad())?;
                seconds += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => return Err(bad()),
        }
    }
    if !number.is_empty() || seconds == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

pub fn parse_date(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() });
    if date_ok && (bytes.len() == 10 || bytes[10] == b'T') {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ)"))
    }
}

/// The configuration for a command the user runs by hand: a broken file is an error (exit 2), not
/// silently the defaults as for the editor-facing commands.
pub fn strict_config(home: &Home) -> Result<Config, ExitCode> {
    Config::load(&home.config_file()).map_err(usage_error)
}

/// `[engine] model` from config.toml; a broken config is reported by `doctor`, not here.
pub fn configured_model(home: &Home) -> Option<PathBuf> {
    Config::load(&home.config_file()).ok()?.engine.model
}

/// The model to use (flag, config, discovery), or the exit code after saying why there is none.
pub fn model_or_usage_error(named: Option<&Path>, configured: Option<&Path>) -> Result<PathBuf, ExitCode> {
    crate::engine::discovery::resolve_model(named, configured).map_err(usage_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        for (text, seconds) in [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), (" 1h2m3s ", 3723)] {
            assert_eq!(parse_duration(text), Ok(std::time::Duration::from_secs(seconds)), "{text}");
        }
        for bad in ["", "2", "h", "2x", "0m", "-1h", "1.5h"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("is not a duration like 2h"), "{bad}: {error}");
        }
    }
}
