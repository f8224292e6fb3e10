//! Result codes carried in error replies: plain errno values, plus vmd's
//! own codes from 1001 up (vmd's `vmd.h`), with the messages vmctl prints.

/// The BIOS image was not found (vmd's `VMD_BIOS_MISSING`).
pub const VMD_BIOS_MISSING: i32 = 1001;
/// A disk image could not be opened, or the VM has no device to boot from
/// (vmd's `VMD_DISK_MISSING`).
pub const VMD_DISK_MISSING: i32 = 1002;
/// Obsolete in vmd, kept so the numbering stays vmd's (`VMD_DISK_INVALID`).
pub const VMD_DISK_INVALID: i32 = 1003;
/// Stop of a VM that is not running (vmd's `VMD_VM_STOP_INVALID`).
pub const VMD_VM_STOP_INVALID: i32 = 1004;
/// The ISO image was not found (vmd's `VMD_CDROM_MISSING`).
pub const VMD_CDROM_MISSING: i32 = 1005;
/// The ISO image is not a regular file (vmd's `VMD_CDROM_INVALID`).
pub const VMD_CDROM_INVALID: i32 = 1006;
/// The template VM of an instance does not exist (vmd's
/// `VMD_PARENT_INVALID`).
pub const VMD_PARENT_INVALID: i32 = 1007;

/// The message vmctl prints for one of vmd's own codes, `None` for an
/// errno value (print it with [`strerror`]).
pub fn vmd_message(code: i32) -> Option<&'static str> {
    Some(match code {
        VMD_BIOS_MISSING => "vmm bios firmware file not found.",
        VMD_DISK_MISSING => "could not open disk image(s)",
        VMD_DISK_INVALID => "specified disk image(s) are not regular files",
        VMD_VM_STOP_INVALID => "cannot stop vm that is not running",
        VMD_CDROM_MISSING => "could not find specified iso image",
        VMD_CDROM_INVALID => "specified iso image is not a regular file",
        VMD_PARENT_INVALID => "invalid template",
        _ => return None,
    })
}

/// The system's text for an errno value (like C's `strerror`).
pub fn strerror(code: i32) -> String {
    std::io::Error::from_raw_os_error(code)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The message for any result code: vmd's own text for its codes, the
/// system's for errno values.
pub fn describe(code: i32) -> String {
    vmd_message(code).map_or_else(|| strerror(code), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmd_codes_have_vmctl_messages() {
        assert_eq!(describe(VMD_PARENT_INVALID), "invalid template");
        assert_eq!(
            describe(VMD_VM_STOP_INVALID),
            "cannot stop vm that is not running"
        );
        assert_eq!(vmd_message(libc::ENOENT), None);
    }

    #[test]
    fn errno_values_use_the_system_text() {
        assert_eq!(describe(libc::ENOENT), "No such file or directory");
        assert_eq!(describe(libc::EPERM), "Operation not permitted");
    }
}
