//! The one source of truth for every number the VMM and the guests share.
//!
//! `no_std`, no dependencies: the firmware and the kernel link it for
//! `x86_64-unknown-none`, the VMM links it on the host. Nothing outside this
//! crate re-declares a leaf number, a status code, a port, a GUID or a layout.
#![no_std]

pub mod accept_model;
pub mod acpi;
pub mod boot;
pub mod cmdline;
pub mod efi;
pub mod elf;
pub mod guid;
pub mod hob;
pub mod kexec;
pub mod layout;
pub mod memmap;
pub mod named;
pub mod pod;
pub mod report;
pub mod tdcall;
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

/// `v` as an index (lossless: see the assertion above).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn to_usize(v: u64) -> usize {
    v as usize
}
