//! errno values printed the way err(3) prints them: the system's text
//! alone, without Rust's "(os error N)".

/// An errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The errno of an I/O error (EIO when it has none).
    pub fn from_io(err: &std::io::Error) -> Self {
        Errno(err.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&proto::strerror(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_system_text_only() {
        assert_eq!(Errno(libc::ENOENT).to_string(), "No such file or directory");
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Errno::from_io(&io).to_string(), "Permission denied");
        let synthetic = std::io::Error::other("x");
        assert_eq!(Errno::from_io(&synthetic), Errno(libc::EIO));
    }
}
