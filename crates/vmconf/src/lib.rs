//! vm.conf(5) parser: lexer, grammar and validation (vmd's parse.y).

pub mod types;

pub use types::*;

/// Guess a disk image's format from its first bytes: qcow2 if it starts
/// with the `QFI\xfb` magic, raw otherwise (also when it cannot be read).
pub fn sniff_disk_format(path: &std::path::Path) -> DiskFormat {
    use std::io::Read;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if magic == *b"QFI\xfb" => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}
