//! Value parsers used by the grammar: sizes (scan_scaled(3) and parse.y's
//! `parse_size`), prefixes (`host`), MAC addresses (ether_aton(3)), names
//! (vmd.c's `vm_register` rules, priv.c's `priv_validgroup`).

use std::net::{Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::types::{Ipv4Net, Ipv6Net, IF_NAME_MAX, VM_NAME_MAX};

/// Why a value was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// The text is not a number with an optional scale (EINVAL).
    #[error("Invalid argument")]
    SizeSyntax,
    /// The scaled number does not fit (ERANGE).
    #[error("Result too large")]
    SizeRange,
    /// Under one MiB.
    #[error("size must be at least one megabyte")]
    SizeTooSmall,
}

/// Largest configuration file read (16 MiB): a bigger one, or an endless
/// one such as `/dev/zero`, is refused instead of exhausting memory.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Read a whole configuration file of at most [`MAX_FILE_SIZE`] bytes.
pub fn read_config_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(std::io::Error::from_raw_os_error(
            nix::errno::Errno::EFBIG as i32,
        ));
    }
    Ok(data)
}

/// The `strerror` text of an I/O error (without Rust's "(os error N)").
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => e.to_string(),
    }
}

/// scan_scaled(3): an integer or decimal number with an optional unit
/// B, K, M, G, T, P or E (powers of 1024, either case).
pub fn scan_scaled(text: &str) -> Result<i64, ValueError> {
    let syntax = || ValueError::SizeSyntax;
    let range = || ValueError::SizeRange;
    let s = text.trim_start();
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, rest) = s.split_at(int_len);
    let (frac_part, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            r.split_at(n)
        }
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(syntax());
    }
    let shift: u32 = match rest.as_bytes() {
        [] => 0,
        [u] => match u.to_ascii_uppercase() {
            b'B' => 0,
            b'K' => 10,
            b'M' => 20,
            b'G' => 30,
            b'T' => 40,
            b'P' => 50,
            b'E' => 60,
            _ => return Err(syntax()),
        },
        _ => return Err(syntax()),
    };
    let whole: i128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse::<i128>().map_err(|_| range())?
    };
    let scale: i128 = 1i128 << shift;
    let mut value = whole.checked_mul(scale).ok_or_else(range)?;
    if !frac_part.is_empty() && shift > 0 {
        // Only as many fraction digits as can matter; more cannot change
        // the truncated result by more than rounding noise.
        let digits = &frac_part[..frac_part.len().min(18)];
        let num: i128 = digits.parse().map_err(|_| syntax())?;
        let den: i128 = 10i128.pow(digits.len() as u32);
        value += num * scale / den;
    }
    if neg {
        value = -value;
    }
    i64::try_from(value).map_err(|_| range())
}

/// parse.y's `parse_size`: at least 1 MiB; returns whole MiB and whether
/// the value had to be rounded down.
pub fn parse_size_mib(bytes: i64) -> Result<(u64, bool), ValueError> {
    if bytes < 1024 * 1024 {
        return Err(ValueError::SizeTooSmall);
    }
    let mib = (bytes / 1024 / 1024) as u64;
    Ok((mib, (mib as i64) * 1024 * 1024 != bytes))
}

fn split_prefix(text: &str) -> Option<(&str, u8)> {
    let (addr, len) = text.rsplit_once('/')?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return None;
    }
    Some((addr, len.parse().ok()?))
}

/// `local prefix`: an IPv4 network whose length leaves at least 16 bits for
/// VM and interface ids (1..=16). Host bits are cleared.
pub fn parse_prefix4(text: &str) -> Option<Ipv4Net> {
    let (addr, len) = split_prefix(text)?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    if !(1..=16).contains(&len) {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(len));
    Some(Ipv4Net {
        addr: Ipv4Addr::from(u32::from(addr) & mask),
        len,
    })
}

/// `local inet6 prefix`: an IPv6 network of length 1..=64. Host bits are
/// cleared.
pub fn parse_prefix6(text: &str) -> Option<Ipv6Net> {
    let (addr, len) = split_prefix(text)?;
    let addr: Ipv6Addr = addr.parse().ok()?;
    if !(1..=64).contains(&len) {
        return None;
    }
    let mask = u128::MAX << (128 - u32::from(len));
    Some(Ipv6Net {
        addr: Ipv6Addr::from(u128::from(addr) & mask),
        len,
    })
}

/// ether_aton(3): six hex bytes of one or two digits separated by `:`.
pub fn ether_aton(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Format a MAC address as `xx:xx:xx:xx:xx:xx`.
pub fn ether_ntoa(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// vmd.c's VM name rule: non-empty, alphanumerics and `.-_`, not starting
/// with `.`, `-` or `_`. (Length is checked separately.)
pub fn valid_vm_name(name: &str) -> bool {
    let Some(first) = name.bytes().next() else {
        return false;
    };
    !matches!(first, b'.' | b'-' | b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A name fits vmd's `VM_NAME_MAX` buffer (with its NUL).
pub fn name_fits(name: &str) -> bool {
    name.len() < VM_NAME_MAX
}

/// priv.c's `priv_validgroup`: shorter than IFNAMSIZ and not ending in a
/// digit.
pub fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IF_NAME_MAX
        && !name.as_bytes()[name.len() - 1].is_ascii_digit()
}

/// Linux `dev_valid_name`: 1..=15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IF_NAME_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_scaled_units_and_fractions() {
        assert_eq!(scan_scaled("512"), Ok(512));
        assert_eq!(scan_scaled("512M"), Ok(512 << 20));
        assert_eq!(scan_scaled("1g"), Ok(1 << 30));
        assert_eq!(scan_scaled("1.5G"), Ok(3 << 29));
        assert_eq!(scan_scaled("2T"), Ok(2 << 40));
        assert_eq!(scan_scaled("7B"), Ok(7));
        assert_eq!(scan_scaled("-1K"), Ok(-1024));
        assert!(matches!(scan_scaled("12X"), Err(ValueError::SizeSyntax)));
        assert!(matches!(scan_scaled("M"), Err(ValueError::SizeSyntax)));
        assert!(matches!(scan_scaled("1MB"), Err(ValueError::SizeSyntax)));
        assert!(matches!(scan_scaled("9E"), Err(ValueError::SizeRange)));
        assert!(matches!(
            scan_scaled("99999999999999999999999999999999999999999"),
            Err(ValueError::SizeRange)
        ));
    }

    #[test]
    fn sizes_round_down_to_megabytes() {
        assert_eq!(parse_size_mib(1 << 20), Ok((1, false)));
        assert_eq!(parse_size_mib((1 << 20) + 1), Ok((1, true)));
        assert_eq!(parse_size_mib(1_500_000_000), Ok((1430, true)));
        assert_eq!(parse_size_mib(1023 * 1024), Err(ValueError::SizeTooSmall));
        assert_eq!(parse_size_mib(-5), Err(ValueError::SizeTooSmall));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix4("100.64.0.0/10").map(|p| p.to_string()),
            Some("100.64.0.0/10".into())
        );
        assert_eq!(
            parse_prefix4("10.1.2.3/8").map(|p| p.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(parse_prefix4("10.0.0.0/24"), None);
        assert_eq!(parse_prefix4("10.0.0.0/0"), None);
        assert_eq!(parse_prefix4("10.0.0.0"), None);
        assert_eq!(parse_prefix4("fd00::/8"), None);
        assert_eq!(
            parse_prefix6("fd00:1:2:3::/64").map(|p| p.to_string()),
            Some("fd00:1:2:3::/64".into())
        );
        assert_eq!(parse_prefix6("fd00::/65"), None);
        assert_eq!(parse_prefix6("10.0.0.0/8"), None);
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            ether_aton("fe:e1:ba:d0:0:1"),
            Some([0xfe, 0xe1, 0xba, 0xd0, 0, 1])
        );
        assert_eq!(ether_aton("fe:e1:ba:d0:00"), None);
        assert_eq!(ether_aton("fe:e1:ba:d0:00:01:02"), None);
        assert_eq!(ether_aton("fe:e1:ba:d0:00:1g"), None);
        assert_eq!(ether_aton("fe:e1:ba:d0:00:100"), None);
        assert_eq!(
            ether_ntoa(&[0xfe, 0xe1, 0xba, 0xd0, 0, 1]),
            "fe:e1:ba:d0:00:01"
        );
    }

    #[test]
    fn names() {
        assert!(valid_vm_name("web-1.example_x"));
        assert!(valid_vm_name("1st"));
        assert!(!valid_vm_name("-x"));
        assert!(!valid_vm_name(".x"));
        assert!(!valid_vm_name("_x"));
        assert!(!valid_vm_name("a b"));
        assert!(!valid_vm_name(""));
        assert!(name_fits(&"a".repeat(63)));
        assert!(!name_fits(&"a".repeat(64)));
        assert!(valid_group("vms"));
        assert!(!valid_group("vms0"));
        assert!(!valid_group("abcdefghijklmnop"));
        assert!(valid_ifname("br-lan0"));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("abcdefghijklmnop"));
        assert!(!valid_ifname(".."));
    }
}
