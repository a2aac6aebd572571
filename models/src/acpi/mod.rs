//! Writing and reading the ACPI tables whose layouts are `abi::acpi`: a
//! builder that writes RSDP -> XSDT -> MADT into a caller's buffer (the
//! firmware publishes them), and a bounds-checked parser (for the kernel,
//! on guest memory through a read closure, and the VMM) that never panics
//! on hostile tables.
//!
//! Files: `build.rs` (the builder), `parse.rs` (the parser); every public
//! item is re-exported here, so users name them `models::acpi::X`.

mod build;
mod parse;

pub use build::*;
pub use parse::*;

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests;
