//! vmconf
