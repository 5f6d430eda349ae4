//! anonmm's lowest layer: what every other layer shares. The Linux x86_64 system-call ABI as
//! strace spells it ([`abi`]: `PROT_*`, `MAP_*`, `MADV_*`, `MREMAP_*` ...), the errno and
//! signal values ([`errno`]), the address and process newtypes and architecture constants
//! ([`types`]).
//!
//! It depends on nothing, so the scenario language and the model can both use it without
//! seeing each other (ARCHITECTURE.md).

#![warn(missing_docs)]

pub mod abi;
pub mod errno;
pub mod types;
