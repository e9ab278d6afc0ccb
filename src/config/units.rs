//! The units config values are written in: byte sizes and durations, the same on the command
//! line, in `HERALD_*` variables and in the config file.

use std::time::Duration;

/// Parses a duration with a unit: "30s", "15m", "12h", "7d" (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. 30s, 15m, 12h or 7d"))
}

/// Parses a byte size: "65536", "64KiB", "512MiB", "1GiB"; KB, MB, GB and TB are powers of 10.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let hint = "write a whole number of bytes with an optional unit, e.g. 65536, 64KiB or 1GiB";
    if digits.is_empty() || unit.starts_with(['.', ',']) {
        return Err(format!("{s:?} is not a size; {hint}"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit {:?}; use B, KiB, MiB, GiB, TiB (powers of 2) \
                 or KB, MB, GB, TB (powers of 10)",
                unit.trim()
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("65536", 65536),
            ("64KiB", 64 * 1024),
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("64kib", 64 * 1024),
            ("10B", 10),
            ("5KB", 5_000),
            ("5kB", 5_000),
            ("3MB", 3_000_000),
            ("1GB", 1_000_000_000),
            (" 4 KiB ", 4096),
            ("18446744073709551615", u64::MAX),
        ];
        for &(text, expected) in table {
            assert_eq!(parse_size(text), Ok(expected), "{text:?}");
        }
        for bad in [
            "",
            "KiB",
            "1.5GiB",
            "-1",
            "1K",
            "1 GiBs",
            "10 parsecs",
            "1é",
            "99999999999GiB",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_parse_with_humantime_units() {
        let table: &[(&str, u64)] = &[
            ("30s", 30),
            ("15m", 15 * 60),
            ("12h", 12 * 3600),
            ("7d", 7 * 86400),
            ("1h 30m", 5400),
            (" 10s ", 10),
        ];
        for &(text, seconds) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text:?}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "30", "soon", "7 days ago", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
