//! Algorithms and reference models over the contract in `abi`: what the
//! VMM and the guests compute from the shared numbers and layouts, kept
//! apart from the numbers themselves.
//!
//! - `accept`: the reference model of `TDG.MEM.PAGE.ACCEPT` (statuses and
//!   page states of a window of RAM, concurrent accepts, the chaos RNG);
//! - `elf`: the static-PIE ELF reader and relocator, with ELF's constants;
//! - `acpi`: the builder and the bounds-checked parser of the tables whose
//!   layouts are `abi::acpi`;
//! - `unaccepted`: Linux's algorithms over the unaccepted-memory bitmap;
//! - `kexec`: Linux's kexec segment rules, with its errno numbers and limits;
//! - `memmap`: the editable EFI memory map and the next kernel's map;
//! - `shared_memory`: Linux's MapGPA retry rule and the kexec walk over
//!   the page tables that finds shared leaves to convert back;
//! - `tdvf`: the TDVF firmware image's metadata reader and validator, the
//!   TDCALL patch of its boot firmware volume, and its MRTD byte stream.
//!
//! The rule for what goes where: a number, a layout, a GUID, a status, or
//! the check a reader makes before trusting data crossing the host/guest
//! boundary (a HOB list, a table header, an accept operand, a command
//! line) is contract and lives in `abi`; how anything is computed from it
//! (a model, a builder, a parser of a format another spec owns, Linux's
//! algorithms) lives here. Nothing here declares a contract number, and
//! `abi` re-exports nothing from here.
//!
//! `no_std`, no dependency but `abi`: the guests link it for
//! `x86_64-unknown-none`, the VMM and the tests on the host.
#![no_std]

pub mod accept;
pub mod acpi;
pub mod elf;
pub mod kexec;
pub mod memmap;
pub mod shared_memory;
pub mod tdcall_patch;
pub mod tdvf;
pub mod unaccepted;

/// Every target of this project has 64-bit pointers: a `u64` that indexes
/// memory converts to `usize` without loss.
const _: () = assert!(usize::BITS == 64);

/// `v` as an index (lossless: see the assertion above).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn to_usize(v: u64) -> usize {
    v as usize
}
