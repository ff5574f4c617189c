//! Command-line values for the run's limits: durations in seconds and sizes with a suffix.
//! Each parser returns a message that clap shows after naming the flag and the value.

use std::time::Duration;

/// A positive, finite number of seconds, such as `0.5` or `30`.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, such as 0.5 or 30".to_owned())?;
    if !(value.is_finite() && value > 0.0) {
        return Err("expected a positive, finite number of seconds".to_owned());
    }
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if duration.is_zero() => Err("the duration is too short".to_owned()),
        Ok(duration) => Ok(duration),
        Err(_) => Err("the duration is too long".to_owned()),
    }
}

/// A size in bytes: a whole number with an optional `K`, `M` or `G` suffix (powers of 1024),
/// such as `65536`, `512K`, `256M` or `2G`. A trailing `B` (`512KB`, `2GiB`) is accepted too.
pub(crate) fn size(text: &str) -> Result<usize, String> {
    const EXPECTED: &str = "expected a size in bytes such as 65536, 512K, 256M or 2G";
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    let number_end = upper
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(upper.len());
    let (digits, suffix) = upper.split_at(number_end);
    let shift = match suffix.trim_start() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(EXPECTED.to_owned()),
    };
    let number: usize = digits.parse().map_err(|_| EXPECTED.to_owned())?;
    if number == 0 {
        return Err("the size must be more than 0".to_owned());
    }
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is more than this machine can address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_refuse_what_is_not_a_positive_duration() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        for bad in ["", "abc", "0", "-1", "inf", "NaN", "1e300", "1e-300"] {
            assert!(seconds(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes_take_binary_suffixes_in_either_case() {
        assert_eq!(size("65536"), Ok(65536));
        assert_eq!(size("512K"), Ok(512 << 10));
        assert_eq!(size("256m"), Ok(256 << 20));
        assert_eq!(size("2G"), Ok(2 << 30));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("64 MB"), Ok(64 << 20));
        for bad in ["", "M", "12T", "1.5G", "-1M", "0", "99999999999999999999G"] {
            assert!(size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
