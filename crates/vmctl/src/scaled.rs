//! Human-readable sizes the way OpenBSD's libutil does them: parsing
//! (`scan_scaled`: `512M`, `1.5G`, plain bytes) and printing (`fmt_scaled`:
//! `512M`, `1.0G`, `100K`), used by vmctl's `-m` and its status columns.

/// Unit letters, from bytes up to exbibytes.
const UNITS: [char; 7] = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];

/// Most digits scanned before giving up (libutil's limit: 3 per unit).
const MAX_DIGITS: usize = UNITS.len() * 3;

/// 1024 raised to the power of a unit's index.
fn factor(unit: usize) -> i64 {
    1i64 << (10 * unit)
}

/// Why a size could not be read; the texts are `strerror` of the errno
/// libutil sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScaledError {
    /// Not a number with an optional unit (EINVAL)
    #[error("Invalid argument")]
    Invalid,
    /// Too large for a 64-bit count of bytes (ERANGE)
    #[error("Result too large")]
    Range,
}

/// Parses a size: optional blanks, an optional sign, digits with an
/// optional fraction, then an optional unit `B K M G T P E` (either case)
/// that must not be followed by a letter or digit. Without a unit the
/// number is bytes and any fraction is dropped.
pub fn scan_scaled(text: &str) -> Result<i64, ScaledError> {
    let bytes = text.as_bytes();
    let mut p = 0;
    while p < bytes.len() && bytes[p].is_ascii_whitespace() {
        p += 1;
    }
    let mut sign = 0i64;
    while p < bytes.len() && (bytes[p] == b'-' || bytes[p] == b'+') {
        if sign != 0 {
            return Err(ScaledError::Invalid);
        }
        sign = if bytes[p] == b'-' { -1 } else { 1 };
        p += 1;
    }

    let mut whole: i64 = 0;
    let mut fpart: i64 = 0;
    let mut ndigits = 0usize;
    // 0: no '.', else 1 + digits kept after the '.'.
    let mut fract_digits = 0usize;
    while p < bytes.len() && (bytes[p].is_ascii_digit() || bytes[p] == b'.') {
        let c = bytes[p];
        p += 1;
        if c == b'.' {
            if fract_digits > 0 {
                return Err(ScaledError::Invalid);
            }
            fract_digits = 1;
            continue;
        }
        let digit = i64::from(c - b'0');
        if fract_digits > 0 {
            if fract_digits >= MAX_DIGITS - 1 {
                continue;
            }
            fract_digits += 1;
            fpart = fpart
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit))
                .ok_or(ScaledError::Range)?;
        } else {
            ndigits += 1;
            if ndigits >= MAX_DIGITS {
                return Err(ScaledError::Range);
            }
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(digit))
                .ok_or(ScaledError::Range)?;
        }
    }
    if sign != 0 {
        whole *= sign;
    }
    let Some(&unit_char) = bytes.get(p) else {
        return Ok(whole);
    };
    let unit = UNITS
        .iter()
        .position(|u| u.eq_ignore_ascii_case(&char::from(unit_char)))
        .ok_or(ScaledError::Invalid)?;
    if bytes.get(p + 1).is_some_and(u8::is_ascii_alphanumeric) {
        return Err(ScaledError::Invalid);
    }
    let scale = factor(unit);
    whole = whole.checked_mul(scale).ok_or(ScaledError::Range)?;
    // Drop fraction digits until scaling cannot overflow, then scale.
    while fpart >= i64::MAX / scale {
        fpart /= 10;
        fract_digits -= 1;
    }
    fpart *= scale;
    for _ in 1..fract_digits {
        fpart /= 10;
    }
    let total = if sign == -1 {
        whole.checked_sub(fpart)
    } else {
        whole.checked_add(fpart)
    };
    total.ok_or(ScaledError::Range)
}

/// Formats a byte count in at most four characters plus unit: one decimal
/// below 100 units (`1.0G`, `12.5M`), whole numbers above (`512M`), bytes
/// as `123B`, zero as `0B`. Returns `None` for values too large to format
/// (libutil's ERANGE).
pub fn fmt_scaled(number: i64) -> Option<String> {
    if number == i64::MIN {
        return None;
    }
    let abval = number.abs();
    if abval / 1024 >= factor(UNITS.len() - 1) {
        return None;
    }
    let unit = (0..UNITS.len()).find(|&i| abval / 1024 < factor(i))?;
    let mut value = number / factor(unit);
    let mut fract = if unit == 0 {
        0
    } else {
        (abval % factor(unit)) / factor(unit - 1)
    };
    fract = (10 * fract + 512) / 1024;
    if fract >= 10 {
        value += if value >= 0 { 1 } else { -1 };
        fract = 0;
    }
    let letter = UNITS[unit];
    if value == 0 {
        Some("0B".to_string())
    } else if unit == 0 || !(-99..=99).contains(&value) {
        if fract >= 5 {
            value += if value >= 0 { 1 } else { -1 };
        }
        Some(format!("{value}{letter}"))
    } else {
        Some(format!("{value}.{fract}{letter}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 1024 * 1024;

    #[test]
    fn scans_units_in_either_case() {
        assert_eq!(scan_scaled("512M"), Ok(512 * M));
        assert_eq!(scan_scaled("512m"), Ok(512 * M));
        assert_eq!(scan_scaled("1G"), Ok(1024 * M));
        assert_eq!(scan_scaled("64k"), Ok(64 * 1024));
        assert_eq!(scan_scaled("2T"), Ok(2 * 1024 * 1024 * M));
        assert_eq!(scan_scaled("7B"), Ok(7));
    }

    #[test]
    fn plain_numbers_are_bytes_and_lose_their_fraction() {
        assert_eq!(scan_scaled("512"), Ok(512));
        assert_eq!(scan_scaled("1.9"), Ok(1));
        assert_eq!(scan_scaled(""), Ok(0));
        assert_eq!(scan_scaled("  42"), Ok(42));
    }

    #[test]
    fn fractions_scale_with_the_unit() {
        assert_eq!(scan_scaled("1.5G"), Ok(1536 * M));
        assert_eq!(scan_scaled("0.5M"), Ok(512 * 1024));
        assert_eq!(scan_scaled("1.25K"), Ok(1280));
    }

    #[test]
    fn signs() {
        assert_eq!(scan_scaled("+1M"), Ok(M));
        assert_eq!(scan_scaled("-1M"), Ok(-M));
        assert_eq!(scan_scaled("-+1M"), Err(ScaledError::Invalid));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(scan_scaled("1X"), Err(ScaledError::Invalid));
        assert_eq!(scan_scaled("1MB"), Err(ScaledError::Invalid));
        assert_eq!(scan_scaled("1M2"), Err(ScaledError::Invalid));
        assert_eq!(scan_scaled("1.2.3M"), Err(ScaledError::Invalid));
        assert_eq!(scan_scaled("abc"), Err(ScaledError::Invalid));
        assert_eq!(
            ScaledError::Invalid.to_string(),
            "Invalid argument",
            "printed after \"invalid size: X: \" like warn(3)"
        );
    }

    #[test]
    fn unit_may_be_followed_by_punctuation() {
        assert_eq!(scan_scaled("1M."), Ok(M));
    }

    #[test]
    fn overflow_is_a_range_error() {
        assert_eq!(scan_scaled("9000000E"), Err(ScaledError::Range));
        assert_eq!(
            scan_scaled("99999999999999999999999"),
            Err(ScaledError::Range)
        );
    }

    #[test]
    fn formats_like_libutil() {
        assert_eq!(fmt_scaled(0).as_deref(), Some("0B"));
        assert_eq!(fmt_scaled(123).as_deref(), Some("123B"));
        assert_eq!(fmt_scaled(1023).as_deref(), Some("1023B"));
        assert_eq!(fmt_scaled(1024).as_deref(), Some("1.0K"));
        assert_eq!(fmt_scaled(512 * M).as_deref(), Some("512M"));
        assert_eq!(fmt_scaled(100 * M).as_deref(), Some("100M"));
        assert_eq!(fmt_scaled(99 * M).as_deref(), Some("99.0M"));
        assert_eq!(fmt_scaled(1024 * M).as_deref(), Some("1.0G"));
        assert_eq!(fmt_scaled(1536 * M).as_deref(), Some("1.5G"));
        assert_eq!(fmt_scaled(2048 * M).as_deref(), Some("2.0G"));
        assert_eq!(fmt_scaled(16 * 1024 * M).as_deref(), Some("16.0G"));
        assert_eq!(fmt_scaled(-2 * M).as_deref(), Some("-2.0M"));
    }

    #[test]
    fn rounding_carries_into_the_whole_part() {
        // 1.99G rounds its fraction up to 10 tenths → 2.0G.
        assert_eq!(fmt_scaled(2 * 1024 * M - M).as_deref(), Some("2.0G"));
        // Above 99 units the tenths round the whole number.
        assert_eq!(fmt_scaled(150 * M + 600 * 1024).as_deref(), Some("151M"));
    }

    #[test]
    fn extremes() {
        assert_eq!(fmt_scaled(i64::MIN), None);
        assert_eq!(fmt_scaled(i64::MAX).as_deref(), Some("8.0E"));
    }

    #[test]
    fn scan_and_format_agree_on_common_sizes() {
        for text in ["1.0G", "512M", "2.0G", "64.0M", "256M"] {
            let bytes = scan_scaled(text).unwrap();
            assert_eq!(fmt_scaled(bytes).as_deref(), Some(text));
        }
    }
}
