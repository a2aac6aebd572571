//! The hand-off of the APs to the OS: before the kernel starts, the BSP
//! takes two pages of ACPI NVS memory (the wakeup mailbox and the AP loop,
//! `aploop`), publishes RSDP -> XSDT -> MADT (one x2APIC entry per vCPU and
//! a version-1 Multiprocessor Wakeup structure, built by `models::acpi`) in
//! ACPI reclaim memory, installs the RSDP under the ACPI 2.0 GUID, and
//! moves the APs from the firmware's boot mailbox into that loop, so that
//! nothing of the firmware's boot-services memory is in use once the
//! kernel runs.
//!
//! `fw.acpi=auto` (default) publishes the tables when the TD has more
//! than one vCPU (a 1-vCPU boot stays as it was), `on` always, `off`
//! never (the APs are still moved, and stay parked for good).

use crate::memory::MEMORY;
use crate::{aploop, efi, mp};
use abi::acpi::firmware_area as fw;
use abi::efi::{memory_type, EFI_PAGE_SIZE};
use abi::{boot, cmdline, guid};
use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::fatal::code;
use guest_rt::{fatal, println};
use models::acpi::{build_tables, tables_len};

fn allocate(ty: u32, bytes: u64, what: &str) -> u64 {
    match MEMORY.with(|m| m.allocate(ty, bytes.div_ceil(EFI_PAGE_SIZE))) {
        Ok(at) => at,
        Err(e) => fatal!(code::PANIC, "no memory for {what} ({bytes} bytes): {e:?}"),
    }
}

/// Publishes the tables and parks the APs where the OS can wake them
/// (see the module comment). Call after `efi::init`, before the kernel.
pub fn hand_off(cmdline: &str) {
    let vcpus = mp::vcpus();
    let publish = match cmdline::get(cmdline, "fw.acpi") {
        None | Some("auto") => vcpus > 1,
        Some("on") => true,
        Some("off") => false,
        Some(other) => fatal!(
            code::BAD_CMDLINE,
            "fw.acpi={other}: expected auto, on or off"
        ),
    };
    if vcpus == 1 && !publish {
        return;
    }
    let pages = allocate(
        memory_type::ACPI_NVS,
        2 * EFI_PAGE_SIZE,
        "the wakeup mailbox",
    );
    let ap_loop = aploop::install(pages);
    if publish {
        let len = tables_len(vcpus);
        let at = allocate(memory_type::ACPI_RECLAIM, len as u64, "the ACPI tables");
        // SAFETY: `at` is a fresh allocation of at least `len` bytes of
        // accepted, identity-mapped memory that nothing else uses.
        let buf = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len) };
        let tables = match build_tables(buf, at, vcpus, ap_loop.mailbox, ap_loop.reset_vector) {
            Ok(t) => t,
            Err(e) => fatal!(code::PANIC, "building the ACPI tables: {e}"),
        };
        let st = efi::install_table(&guid::ACPI_20_TABLE, tables.rsdp);
        if st != boot::status::SUCCESS {
            fatal!(code::PANIC, "installing the RSDP failed: {st:#x}");
        }
        println!(
            "fw: ACPI RSDP at {:#x}, MADT at {:#x}: {vcpus} x2APIC, wakeup mailbox {:#x}, reset vector {:#x}",
            tables.rsdp, tables.madt, ap_loop.mailbox, ap_loop.reset_vector
        );
    }
    if vcpus > 1 {
        // SAFETY: the mailbox page was just allocated and zeroed; the word
        // is 8-byte aligned and only ever accessed atomically (the AP loop
        // uses `lock inc`).
        let arrived =
            unsafe { AtomicU64::from_ptr((ap_loop.mailbox + fw::ARRIVED as u64) as *mut u64) };
        mp::send_aps_to(ap_loop.park);
        let aps = u64::from(vcpus - 1);
        mp::wait_until(|| arrived.load(Ordering::Acquire) == aps);
        println!(
            "fw: {aps} APs parked on the wakeup mailbox at {:#x}",
            ap_loop.mailbox
        );
    }
}
