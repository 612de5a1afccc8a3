//! Durations as people write them in flags and config files: `90s`, `10m`, `3d`,
//! `1h30m`, `500ms`.

use std::time::Duration;

/// Parses one or more `<number><unit>` parts (units `ms`, `s`, `m`, `h`, `d`). A bare
/// number is refused: `--timeout 10` could mean seconds or minutes.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let total = parse_delay(s)?;
    if total.is_zero() {
        // Timeouts and intervals: zero is always a mistake.
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(total)
}

/// A delay, which may be zero (`0s`: at once), e.g. the demo devices' step delay.
pub fn parse_delay(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 90s, 10m, 3d".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}; write e.g. 90s, 10m, 3d"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("missing unit in duration {s:?} (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {s:?} (ms, s, m, h or d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        let part = number
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    Ok(total)
}

/// The shortest exact form of `d` in the units `parse_duration` reads (`1h30m`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn refuses_what_is_ambiguous_or_wrong() {
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "1.5h",
            "-1s",
            "1 h",
            "0s",
            "0m0s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        // A delay may be zero; nothing else may.
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_delay("0").is_err() && parse_delay("-1s").is_err());
        assert!(parse_duration("1w")
            .unwrap_err()
            .contains("unknown unit \"w\""));
        assert!(parse_duration("18446744073709551615d")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn formats_back_to_the_parsed_value() {
        for (d, text) in [
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3 * 86_400), "3d"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(600), "10m"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
