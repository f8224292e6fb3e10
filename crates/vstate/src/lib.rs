//! vstate
