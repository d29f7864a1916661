//! Numbers with DRBD's unit suffixes.
//!
//! A numeric option is written as digits with at most one suffix: `k`/`K` (KiB), `m`/`M`
//! (MiB), `g`/`G` (GiB) or `s` (512-byte sectors). Each option has a *scale*, the unit a
//! bare number is in: `1` (a plain count, seconds, tenths of seconds, bytes...), `k` (KiB,
//! for `resync-rate`, `c-max-rate`, `c-min-rate`) or `s` (sectors, for `size`,
//! `c-fill-target`, `congestion-fill`). A suffixed value is converted into the scale;
//! converting down rounds up (`1s` with scale `k` is 1). This is drbd-utils'
//! `new_strtoll()`; `drbdadm dump` keeps the value as written, so urbd does too and
//! converts only when a number is needed.

use serde::Serialize;

/// The unit a bare number of an option is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scale {
    /// No unit conversion: counts, seconds, tenths of seconds, bytes.
    One,
    /// KiB (`k`).
    Kibi,
    /// 512-byte sectors (`s`).
    Sectors,
}

/// Why a number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    /// Not digits (optionally followed by one unit letter).
    NotANumber,
    /// A suffix that is not `k K m M g G s`.
    BadUnit,
    /// Does not fit in 64 bits after conversion.
    Overflow,
}

impl std::fmt::Display for NumberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NumberError::NotANumber => "not a number",
            NumberError::BadUnit => "not a valid unit (use k, M, G or s)",
            NumberError::Overflow => "number too large",
        })
    }
}

/// Parses `text` (e.g. `10M`) into the unit `scale`.
pub fn parse_scaled(text: &str, scale: Scale) -> Result<u64, NumberError> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(NumberError::NotANumber);
    }
    let (num, rest) = text.split_at(digits);
    let value: u64 = num.parse().map_err(|_| NumberError::Overflow)?;
    let mut shift: i32 = match scale {
        Scale::One => 0,
        Scale::Kibi => -10,
        Scale::Sectors => -9,
    };
    match rest {
        "" => return Ok(value),
        "k" | "K" => shift += 10,
        "m" | "M" => shift += 20,
        "g" | "G" => shift += 30,
        "s" => shift += 9,
        // sscanf("%llu%c%c") matched three items: drbd-utils calls that "not a number".
        _ if rest.chars().count() > 1 => return Err(NumberError::NotANumber),
        _ => return Err(NumberError::BadUnit),
    }
    if shift < 0 {
        let s = shift.unsigned_abs();
        let round = (1u64 << s) - 1;
        Ok(value
            .checked_add(round)
            .map(|v| v >> s)
            .unwrap_or((value >> s) + 1))
    } else {
        let s = shift.unsigned_abs();
        if value > (u64::MAX >> s) {
            return Err(NumberError::Overflow);
        }
        Ok(value << s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_new_strtoll() {
        assert_eq!(parse_scaled("10", Scale::Kibi), Ok(10));
        assert_eq!(parse_scaled("10M", Scale::Kibi), Ok(10 * 1024));
        assert_eq!(parse_scaled("10m", Scale::Kibi), Ok(10 * 1024));
        assert_eq!(parse_scaled("1G", Scale::Sectors), Ok(2 * 1024 * 1024));
        assert_eq!(parse_scaled("512k", Scale::One), Ok(512 * 1024));
        assert_eq!(parse_scaled("1s", Scale::Kibi), Ok(1));
        assert_eq!(parse_scaled("3s", Scale::Kibi), Ok(2));
        assert_eq!(parse_scaled("8s", Scale::Sectors), Ok(8));
        assert_eq!(parse_scaled("5m", Scale::One), Ok(5 << 20));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_scaled("", Scale::One), Err(NumberError::NotANumber));
        assert_eq!(parse_scaled("x1", Scale::One), Err(NumberError::NotANumber));
        assert_eq!(parse_scaled("10x", Scale::One), Err(NumberError::BadUnit));
        assert_eq!(
            parse_scaled("10kk", Scale::One),
            Err(NumberError::NotANumber)
        );
        assert_eq!(
            parse_scaled("99999999999999999999", Scale::One),
            Err(NumberError::Overflow)
        );
        assert_eq!(
            parse_scaled("17179869184G", Scale::One),
            Err(NumberError::Overflow)
        );
        assert_eq!(
            parse_scaled("18446744073709551615s", Scale::Kibi),
            Ok(1 << 63)
        );
    }
}
