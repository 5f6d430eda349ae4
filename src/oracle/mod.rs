//! The kernel oracle.
