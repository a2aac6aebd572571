//! The one source of truth for every number the VMM and the guests share:
//! the contract between them, and nothing else.
//!
//! `abi` owns the TDCALL leaves, statuses, page levels and the accept
//! operand (`tdcall`), the TDREPORT layout and the measurement leaves'
//! operands (`tdreport`), the GHCI calls (`vmcall`), the guest-physical layout
//! (`layout`), the HOB list and its parser (`hob`), the boot handoff
//! (`boot`), the EFI structures (`efi`), the ACPI layouts and AP mailbox
//! (`acpi`), the unaccepted-memory table header (`unaccepted`), the TDVF
//! firmware image's metadata and MRTD buffers (`tdvf`), the GUIDs
//! (`guid`), the command line (`cmdline`), the report numbers (`report`)
//! and the macro that names their enums once (`named`).
//!
//! The rule for what goes where: a number, a layout, a GUID, a status, or
//! the check a reader makes before trusting data crossing the host/guest
//! boundary is contract and lives here; how anything is computed from it
//! (reference models, builders, parsers of formats another spec owns,
//! Linux's algorithms) lives in the `models` crate, which depends on this
//! one. This crate re-exports nothing from `models`.
//!
//! `no_std`, no dependencies: the firmware and the kernel link it for
//! `x86_64-unknown-none`, the VMM links it on the host (with the optional
//! `serde` feature, its only dependency, so that named enums serialise as
//! their names in the run report). Nothing outside this
//! crate re-declares a leaf number, a status code, a port, a GUID or a layout.
#![no_std]

pub mod acpi;
pub mod boot;
pub mod cmdline;
pub mod efi;
pub mod guid;
pub mod hob;
pub mod layout;
pub mod named;
pub mod pod;
pub mod pte;
pub mod report;
pub mod tdcall;
pub mod tdreport;
pub mod tdvf;
pub mod unaccepted;
pub mod vmcall;

/// Size of a 4 KiB page.
pub const PAGE_4K: u64 = 4096;
/// Size of a 2 MiB page.
pub const PAGE_2M: u64 = 2 << 20;
/// Size of a 1 GiB page.
pub const PAGE_1G: u64 = 1 << 30;
/// One GiB, for address arithmetic that is not about page sizes.
pub const GIB: u64 = 1 << 30;
/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Every target of this project has 64-bit pointers: a `u64` that indexes
/// memory converts to `usize` without loss.
const _: () = assert!(usize::BITS == 64);

/// `v` as an index or a length in memory (lossless: see the assertion
/// above). Every host and guest crate converts through it.
#[allow(clippy::cast_possible_truncation)]
pub const fn to_usize(v: u64) -> usize {
    v as usize
}
