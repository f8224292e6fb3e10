//! Readers for single command-line values (the `parse_*` helpers of
//! vmctl's `main.c`): VM ids and names, memory sizes, counts, disk image
//! formats.

use std::io::Read;
use std::path::Path;

use proto::VmTarget;
use vmconf::{DiskFormat, VM_NAME_MAX};

use crate::scaled::{scan_scaled, ScaledError};

/// The first bytes of a qcow2 image.
pub const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Why a value was refused. vmctl prints this line first, then a line
/// naming the option (`invalid memory size: 100`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// A VM name of 64 bytes or more
    #[error("name too long")]
    NameTooLong,
    /// An id that starts with `-` (an option where an id was expected)
    #[error("an option is not an id")]
    LooksLikeOption,
    /// A template name of 64 bytes or more
    #[error("instance vm name too long")]
    InstanceNameTooLong,
    /// A size that is not a number with a unit
    #[error("invalid size: {0}: {1}")]
    Size(String, ScaledError),
    /// A memory size below 1 MiB
    #[error("size must be at least one megabyte")]
    SizeTooSmall,
    /// A count that is not a number in range (strtonum's words)
    #[error("invalid count \"{word}\": {reason}")]
    Count {
        /// The text given.
        word: String,
        /// `invalid`, `too small` or `too large`.
        reason: &'static str,
    },
}

impl ArgError {
    /// Whether vmctl prints a line for this error before its own (the
    /// `-` case is silent so that options are not reported twice).
    pub fn is_silent(&self) -> bool {
        matches!(self, ArgError::LooksLikeOption)
    }
}

/// Reads a VM id (a number) or name, like vmctl's `parse_vmid`: numbers
/// name ids, anything else a name shorter than 64 bytes.
pub fn parse_vmid(word: &str) -> Result<VmTarget, ArgError> {
    if word.starts_with('-') {
        return Err(ArgError::LooksLikeOption);
    }
    if let Ok(id) = strtonum(word, 0, i64::from(u32::MAX)) {
        // `id` is within u32 by the bounds above.
        return Ok(VmTarget::Id(u32::try_from(id).unwrap_or_default()));
    }
    if word.len() >= VM_NAME_MAX {
        return Err(ArgError::NameTooLong);
    }
    Ok(VmTarget::Name(word.to_string()))
}

/// Reads a template name for `start -t`.
pub fn parse_instance(word: &str) -> Result<String, ArgError> {
    if word.len() >= VM_NAME_MAX {
        return Err(ArgError::InstanceNameTooLong);
    }
    Ok(word.to_string())
}

/// The result of reading a memory size: whole MiB, and whether the value
/// had to be rounded down (vmctl warns "size rounded to N megabytes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Megabytes {
    /// Size in MiB, at least 1.
    pub mib: u64,
    /// The given size was not a whole number of MiB.
    pub rounded: bool,
}

/// Reads a memory size like vmctl's `parse_size`: a scaled number
/// (`512M`, `1.5G`; no unit means bytes) of at least 1 MiB, rounded down
/// to whole MiB.
pub fn parse_size(word: &str) -> Result<Megabytes, ArgError> {
    let bytes = scan_scaled(word).map_err(|e| ArgError::Size(word.to_string(), e))?;
    if bytes < 1024 * 1024 {
        return Err(ArgError::SizeTooSmall);
    }
    let mib = u64::try_from(bytes / (1024 * 1024)).map_err(|_| ArgError::SizeTooSmall)?;
    Ok(Megabytes {
        mib,
        rounded: bytes % (1024 * 1024) != 0,
    })
}

/// OpenBSD's `strtonum`: a decimal integer between `min` and `max`, with
/// its error words.
pub fn strtonum(word: &str, min: i64, max: i64) -> Result<i64, ArgError> {
    let count_err = |reason| ArgError::Count {
        word: word.to_string(),
        reason,
    };
    let trimmed = word.trim_start();
    let digits = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(count_err("invalid"));
    }
    match trimmed.parse::<i64>() {
        Ok(v) if v < min => Err(count_err("too small")),
        Ok(v) if v > max => Err(count_err("too large")),
        Ok(v) => Ok(v),
        Err(_) if trimmed.starts_with('-') => Err(count_err("too small")),
        Err(_) => Err(count_err("too large")),
    }
}

/// Decides a disk image's format like vmctl's `parse_disktype`: an
/// explicit `raw:` or `qcow2:` prefix first (and it is stripped from the
/// path), then the qcow2 magic in the file, then a `.raw`/`.qcow2`
/// extension, else raw. Returns the format and the path without prefix.
pub fn parse_disktype(spec: &str) -> (DiskFormat, &str) {
    if let Some(path) = spec.strip_prefix("raw:") {
        return (DiskFormat::Raw, path);
    }
    if let Some(path) = spec.strip_prefix("qcow2:") {
        return (DiskFormat::Qcow2, path);
    }
    if has_qcow2_magic(Path::new(spec)) {
        return (DiskFormat::Qcow2, spec);
    }
    if let Some((_, ext)) = spec.rsplit_once('.') {
        if ext.eq_ignore_ascii_case("qcow2") {
            return (DiskFormat::Qcow2, spec);
        }
    }
    (DiskFormat::Raw, spec)
}

/// Whether the file starts with the qcow2 magic (false if unreadable).
fn has_qcow2_magic(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *QCOW2_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn numbers_are_ids_and_words_are_names() {
        assert_eq!(parse_vmid("3"), Ok(VmTarget::Id(3)));
        assert_eq!(parse_vmid("4294967295"), Ok(VmTarget::Id(u32::MAX)));
        assert_eq!(parse_vmid("web"), Ok(VmTarget::Name("web".into())));
        assert_eq!(parse_vmid("1web"), Ok(VmTarget::Name("1web".into())));
        // Past u32: not an id, so a name (as strtonum fails in vmctl).
        assert_eq!(
            parse_vmid("4294967296"),
            Ok(VmTarget::Name("4294967296".into()))
        );
    }

    #[test]
    fn names_must_be_shorter_than_64_bytes() {
        assert!(parse_vmid(&"a".repeat(63)).is_ok());
        assert_eq!(parse_vmid(&"a".repeat(64)), Err(ArgError::NameTooLong));
        assert_eq!(ArgError::NameTooLong.to_string(), "name too long");
    }

    #[test]
    fn options_are_not_ids_and_say_nothing() {
        let err = parse_vmid("-a").unwrap_err();
        assert!(err.is_silent());
        assert!(!ArgError::NameTooLong.is_silent());
    }

    #[test]
    fn instance_names() {
        assert_eq!(parse_instance("tmpl"), Ok("tmpl".into()));
        assert_eq!(
            parse_instance(&"t".repeat(64)).unwrap_err().to_string(),
            "instance vm name too long"
        );
    }

    #[test]
    fn sizes_round_down_to_megabytes() {
        assert_eq!(
            parse_size("512M"),
            Ok(Megabytes {
                mib: 512,
                rounded: false
            })
        );
        assert_eq!(
            parse_size("1.5G"),
            Ok(Megabytes {
                mib: 1536,
                rounded: false
            })
        );
        assert_eq!(
            parse_size("1500K"),
            Ok(Megabytes {
                mib: 1,
                rounded: true
            })
        );
    }

    #[test]
    fn sizes_below_a_megabyte_are_refused() {
        // No unit means bytes, as in vmctl: "-m 512" is 512 bytes.
        assert_eq!(parse_size("512"), Err(ArgError::SizeTooSmall));
        assert_eq!(parse_size("1023K"), Err(ArgError::SizeTooSmall));
        assert_eq!(parse_size("-1G"), Err(ArgError::SizeTooSmall));
        assert_eq!(
            ArgError::SizeTooSmall.to_string(),
            "size must be at least one megabyte"
        );
    }

    #[test]
    fn unreadable_sizes_name_the_errno() {
        assert_eq!(
            parse_size("12Q").unwrap_err().to_string(),
            "invalid size: 12Q: Invalid argument"
        );
    }

    #[test]
    fn strtonum_words() {
        assert_eq!(strtonum("4", 0, 10), Ok(4));
        assert_eq!(strtonum("+4", 0, 10), Ok(4));
        let msg = |w: &str| strtonum(w, 0, 10).unwrap_err().to_string();
        assert_eq!(msg("x"), "invalid count \"x\": invalid");
        assert_eq!(msg(""), "invalid count \"\": invalid");
        assert_eq!(msg("4x"), "invalid count \"4x\": invalid");
        assert_eq!(msg("11"), "invalid count \"11\": too large");
        assert_eq!(msg("-1"), "invalid count \"-1\": too small");
        assert_eq!(
            msg("99999999999999999999"),
            "invalid count \"99999999999999999999\": too large"
        );
    }

    #[test]
    fn explicit_prefix_wins_and_is_stripped() {
        assert_eq!(
            parse_disktype("raw:/x.qcow2"),
            (DiskFormat::Raw, "/x.qcow2")
        );
        assert_eq!(
            parse_disktype("qcow2:/x.img"),
            (DiskFormat::Qcow2, "/x.img")
        );
    }

    #[test]
    fn magic_beats_extension() {
        let dir = tempfile::tempdir().unwrap();
        let qcow = dir.path().join("disk.img");
        std::fs::File::create(&qcow)
            .unwrap()
            .write_all(b"QFI\xfb\0\0\0\x03rest")
            .unwrap();
        let path = qcow.to_str().unwrap();
        assert_eq!(parse_disktype(path), (DiskFormat::Qcow2, path));

        // A raw file named .qcow2 with other content: the extension decides
        // only when the magic is absent.
        let named = dir.path().join("fake.qcow2");
        std::fs::write(&named, b"not a qcow2 image").unwrap();
        let path = named.to_str().unwrap();
        assert_eq!(parse_disktype(path), (DiskFormat::Qcow2, path));
    }

    #[test]
    fn extension_decides_for_missing_files_and_raw_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new.QCOW2");
        let path = missing.to_str().unwrap();
        assert_eq!(parse_disktype(path), (DiskFormat::Qcow2, path));

        let raw = dir.path().join("disk.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        let path = raw.to_str().unwrap();
        assert_eq!(parse_disktype(path), (DiskFormat::Raw, path));

        let short = dir.path().join("short");
        std::fs::write(&short, b"QF").unwrap();
        let path = short.to_str().unwrap();
        assert_eq!(parse_disktype(path), (DiskFormat::Raw, path));
    }
}
