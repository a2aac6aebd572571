//! ACPI as the firmware publishes it for several vCPUs: the RSDP (2.0), the
//! XSDT and a MADT with one Processor Local x2APIC entry per vCPU and a
//! Multiprocessor Wakeup structure (version 1), plus the wakeup mailbox the
//! APs park on: their layouts and the AP contract. The builder that writes
//! the three tables and the bounds-checked parser that reads them are
//! `models::acpi`.
//!
//! Layouts: ACPI 6.5 sections 5.2.5 (RSDP), 5.2.6 (SDT header), 5.2.8
//! (XSDT), 5.2.12 (MADT), 5.2.12.12 (Processor Local x2APIC) and 5.2.12.19
//! (Multiprocessor Wakeup, with the version-1 reset vector Linux reads as
//! `acpi_madt_multiproc_wakeup`, `include/acpi/actbl2.h`).
//!
//! # The AP contract (what an OS may rely on)
//!
//! The firmware publishes one mailbox page ([`Mailbox`], in `EfiACPIMemoryNVS`
//! memory) and a reset vector in the page right after it (same memory type).
//! Every AP (vCPU index != 0) spins on the mailbox with interrupts off,
//! pausing and issuing GHCI Instruction.HLT between polls.
//!
//! - **Wakeup** (the OS's `acpi_wakeup_cpu`): the OS writes `apic_id` and
//!   `wakeup_vector`, then store-releases `command = WAKEUP`. The AP whose
//!   APIC ID (= its vCPU index) equals `apic_id` reads `wakeup_vector`, then
//!   store-releases `command = NOOP` (the OS may reuse the mailbox as soon as
//!   it reads 0) and jumps to the vector with: 64-bit mode, the firmware's CS
//!   and GDT, the firmware's page tables (the VMM's identity map of all guest
//!   memory), interrupts off, **RDI = its APIC ID**; every other register,
//!   RSP included, is undefined (the OS sets its own stack, IDT and CR3).
//! - **Test**: `command = TEST` with a matching `apic_id` is acknowledged by
//!   clearing `command`; the AP stays parked.
//! - Any other command, or a command for another APIC ID, is ignored. The
//!   broadcast APIC ID is not honoured on this mailbox.
//! - **Reset vector** (version 1): an OS that offlines a CPU (or a kernel
//!   about to kexec) jumps the CPU to `reset_vector` in 64-bit mode with
//!   paging that maps the mailbox page and the reset-vector page at their
//!   physical addresses (identity), interrupts off, any RSP and any other
//!   register contents. The AP learns its index again with TDG.VP.INFO (R9)
//!   and parks on the same mailbox, so a later kernel can wake it. It uses
//!   no stack and no memory but the mailbox.
//!
//! The firmware area of the mailbox ([`firmware_area`]) is the firmware's:
//! the OS must not write it.
//!
//! This module owns the contract (`tables.rs`: the layouts, constants,
//! mailbox commands and offsets, and the checksum); every public item is
//! re-exported here, so users name them `abi::acpi::X`. The builder and the
//! bounds-checked parser are algorithms over it and live in `models::acpi`.

mod tables;

pub use tables::*;
