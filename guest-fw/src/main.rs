//! guest-fw: the TDVF role. Every vCPU enters in 64-bit mode with RCX = TD
//! HOB, RBX = GPAW, RSI = vCPU index. The BSP (index 0) validates the HOB,
//! accepts pending RAM below 4 GiB per `fw.accept=all|none|SIZE` (with the
//! APs' help, `mp`), checks it reads as zero, reports, publishes ACPI for
//! the APs (`acpi`) and starts the kernel through an EFI-style hand-off;
//! the APs park on a mailbox (`mp`, then `aploop`).
#![no_std]
#![no_main]

mod accept;
mod acpi;
mod aploop;
mod efi;
mod handoff;
mod memory;
mod mp;
mod selftest;

use guest_rt::{fatal, idt, println, tdcall};

use abi::cmdline;
use abi::efi::memory_type as efi_type;
use abi::hob::{resource_type, HandoffInfoTable, HobList, MAX_HOB_LIST_BYTES};
use abi::layout::FOUR_GIB;
use abi::pod::Pod;
use abi::report::Mark;
use abi::tdcall::vp_info;
use guest_rt::fatal::code;

core::arch::global_asm!(
    ".pushsection .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "test rsi, rsi",
    "jnz fw_ap_entry",
    // RCX, RBX and RSI carry the boot arguments: the paint clobbers only
    // R8-R10.
    guest_rt::paint_stack!("fw_stack_guard", "fw_stack_top"),
    "lea rsp, [rip + fw_stack_top]",
    "mov rdx, rsi",
    "mov rsi, rbx",
    "mov rdi, rcx",
    "call {main}",
    "ud2",
    ".popsection",
    ".pushsection .bss.stack, \"aw\", @nobits",
    ".balign 4096",
    "fw_stack_guard:",
    ".space {guard}",
    ".space {stack}",
    "fw_stack_top:",
    ".popsection",
    main = sym fw_main,
    paint = const guest_rt::stack::PAINT,
    guard = const STACK_GUARD_BYTES,
    stack = const STACK_BYTES,
);

/// The boot vCPU's stack, and the painted guard below it.
const STACK_BYTES: u64 = 64 * 1024;
const STACK_GUARD_BYTES: u64 = 4096;

extern "C" {
    static fw_stack_guard: u64;
}

/// Stops the firmware if its stack ran into the guard (checked before it
/// hands over or shuts down).
fn check_stack(at: &str) {
    // SAFETY: the guard and the stack are one static region painted at
    // entry and used only as the boot vCPU's stack.
    unsafe {
        guest_rt::stack::check(
            "firmware",
            at,
            core::ptr::addr_of!(fw_stack_guard),
            STACK_GUARD_BYTES,
            STACK_BYTES,
        )
    }
}

/// How much pending RAM below 4 GiB to accept.
#[derive(Clone, Copy, Debug)]
enum Policy {
    All,
    None,
    Bytes(u64),
}

fn policy(cmdline: &str) -> Policy {
    match cmdline::get(cmdline, "fw.accept") {
        None | Some("all") => Policy::All,
        Some("none") => Policy::None,
        Some(v) => match cmdline::parse_size(v) {
            Ok(n) => Policy::Bytes(n),
            Err(_) => fatal!(
                code::BAD_CMDLINE,
                "fw.accept={v}: expected all, none or a size"
            ),
        },
    }
}

fn hob_list(hob: u64) -> HobList<'static> {
    // SAFETY: the HOB is in initial memory, which the host accepted and
    // mapped; the PHIT's 56 bytes are read first to learn the list length.
    let head = unsafe { core::slice::from_raw_parts(hob as *const u8, 56) };
    let Some(phit) = HandoffInfoTable::read_from_prefix(head) else {
        fatal!(code::BAD_HOB, "no PHIT at {hob:#x}");
    };
    let len = phit.efi_end_of_hob_list.wrapping_sub(hob).wrapping_add(8);
    if !(64..=MAX_HOB_LIST_BYTES).contains(&len) {
        fatal!(code::BAD_HOB, "HOB list at {hob:#x} claims {len} bytes");
    }
    // SAFETY: the length was bounded above; the whole list is in initial memory.
    let bytes = unsafe { core::slice::from_raw_parts(hob as *const u8, abi::to_usize(len)) };
    match HobList::parse(bytes, hob) {
        Ok(list) => list,
        Err(e) => fatal!(code::BAD_HOB, "invalid TD HOB at {hob:#x}: {e}"),
    }
}

extern "C" {
    static __fw_start: u8;
    static __fw_end: u8;
}

extern "C" fn fw_main(hob: u64, gpaw: u64, vcpu: u64) -> ! {
    tdcall::mark(Mark::FwStart, 0);
    idt::init();
    guest_rt::abi_check::check("fw");
    let info = tdcall::vp_info();
    if info.rax != 0 || info.rcx & vp_info::GPAW_MASK != gpaw || info.r9 != vcpu {
        fatal!(
            code::BAD_HOB,
            "TDG.VP.INFO disagrees with the entry registers: status {:#x}, GPAW {} vs {gpaw}, vCPU {} vs {vcpu}",
            info.rax,
            info.rcx & vp_info::GPAW_MASK,
            info.r9
        );
    }
    let vcpus = info.r8 & 0xffff_ffff;
    if vcpus == 0 || vcpus > u64::from(mp::MAX_VCPUS) {
        fatal!(
            code::BAD_HOB,
            "TDG.VP.INFO reports {vcpus} vCPUs: the firmware runs 1 to {}",
            mp::MAX_VCPUS
        );
    }
    // As Linux (arch/x86/coco/tdx/tdx.c, `tdx_parse_tdinfo`): a TD must
    // disable #VE on pending private memory, except a DEBUG TD, which is
    // warned and goes on (an access to such memory is then a #VE).
    if info.rdx & vp_info::ATTR_SEPT_VE_DISABLE == 0 {
        if info.rdx & vp_info::ATTR_DEBUG == 0 {
            fatal!(
                code::BAD_HOB,
                "TD attributes {:#x} lack SEPT_VE_DISABLE: TD misconfiguration: SEPT_VE_DISABLE attribute must be set",
                info.rdx
            );
        }
        println!(
            "fw: TD attributes {:#x}: SEPT_VE_DISABLE clear in a DEBUG TD: pending private memory raises #VE",
            info.rdx
        );
    }
    let hobs = hob_list(hob);
    let (payload, cmdline_bytes) = match hobs.payload_info() {
        Some(Ok(p)) => p,
        _ => fatal!(code::BAD_HOB, "TD HOB has no payload GUID HOB"),
    };
    let Ok(cmdline) = core::str::from_utf8(cmdline_bytes) else {
        fatal!(code::BAD_CMDLINE, "command line is not UTF-8");
    };
    println!(
        "fw: TD HOB at {hob:#x} ({} bytes), GPAW {gpaw}, vCPU {vcpu}",
        hobs.len()
    );
    println!("fw: command line \"{cmdline}\"");
    mp::start_aps(vcpus as u32);
    if vcpus == 1 {
        println!("fw: 1 vCPU");
    } else {
        println!("fw: {vcpus} vCPUs, APs parked");
    }
    // `fw.accept_retry=N`: retries of a busy accept (default 5, as td-shim).
    tdcall::set_accept_retry(guest_rt::param::number(cmdline, "fw.accept_retry", 5));
    let mut ram_top = 0;
    let mut pending_high = 0;
    for r in hobs.memory_resources() {
        let kind = if r.resource_type == resource_type::MEMORY_UNACCEPTED {
            "unaccepted"
        } else {
            "system"
        };
        let end = r.physical_start + r.resource_length;
        println!("fw: ram {:#014x}..{end:#014x} {kind}", r.physical_start);
        ram_top = ram_top.max(end);
        if r.resource_type == resource_type::MEMORY_UNACCEPTED {
            pending_high += end.saturating_sub(r.physical_start.max(FOUR_GIB));
        }
    }

    let selftest = cmdline::get(cmdline, "fw.selftest");
    let mut failures = 0;
    let mut tested = None;
    if selftest == Some("1") {
        let (f, range) = selftest::run(&hobs, gpaw, ram_top);
        failures += f;
        tested = range;
    }
    if selftest == Some("chaos") {
        let (seed, count) = guest_chaos::params(cmdline);
        let (f, range) = selftest::chaos(&hobs, gpaw, seed, count);
        failures += f;
        tested = Some(range);
    }

    let policy = policy(cmdline);
    // `fw.accept_page=4k` accepts in 4 KiB pages only (for measurements).
    let use_2m = match cmdline::get(cmdline, "fw.accept_page") {
        None | Some("2m") => true,
        Some("4k") => false,
        Some(other) => fatal!(
            code::BAD_CMDLINE,
            "fw.accept_page={other}: expected 2m or 4k"
        ),
    };
    // `fw.accept_cpus=N`: vCPUs sharing the accept (default all).
    let accept_cpus = mp::accept_cpus(cmdline);
    let mut parallel = false;
    let mut stats = accept::Stats::default();
    let mut accepted = [(0u64, 0u64); 16];
    let mut n_accepted = 0;
    let mut budget = match policy {
        Policy::All => u64::MAX,
        Policy::None => 0,
        Policy::Bytes(n) => n,
    };
    for r in hobs.memory_resources() {
        if r.resource_type != resource_type::MEMORY_UNACCEPTED
            || r.physical_start >= FOUR_GIB
            || budget == 0
        {
            continue;
        }
        let end = (r.physical_start + r.resource_length).min(FOUR_GIB);
        let take = (end - r.physical_start).min(budget) & !(abi::PAGE_4K - 1);
        parallel |= mp::accept_range(
            r.physical_start,
            r.physical_start + take,
            use_2m,
            accept_cpus,
            &mut stats,
        );
        budget -= take;
        if n_accepted < accepted.len() {
            accepted[n_accepted] = (r.physical_start, r.physical_start + take);
            n_accepted += 1;
        } else {
            fatal!(
                code::BAD_HOB,
                "more than {} unaccepted resources",
                accepted.len()
            );
        }
    }
    if let Some((start, end)) = tested {
        // The self-test accepted parts of these chunks: finish them so the
        // memory map can call them conventional (a no-op after `all`).
        if !matches!(policy, Policy::All) {
            accept::accept_range(start, end, &mut stats);
        }
        accepted[n_accepted.min(accepted.len() - 1)] = (start, end);
        n_accepted = (n_accepted + 1).min(accepted.len());
    }
    tdcall::mark(Mark::FwAcceptDone, stats.bytes);
    println!(
        "fw: accept policy {policy:?}: {} bytes accepted below 4 GiB in {} calls ({} x 2M, {} x 4K, {} already accepted, {} size mismatches)",
        stats.bytes, stats.calls, stats.ok_2m, stats.ok_4k, stats.already, stats.mismatch
    );
    if parallel {
        println!("fw: accepted in parallel on {accept_cpus} vCPUs");
    }
    println!("fw: {pending_high} bytes above 4 GiB left unaccepted for the OS");

    if cmdline::get(cmdline, "fw.bench").is_some() {
        let n = guest_rt::param::number(cmdline, "fw.bench", 0);
        tdcall::mark(Mark::BenchStart, n);
        for _ in 0..n {
            tdcall::vp_info();
        }
        tdcall::mark(Mark::BenchEnd, n);
        println!("fw: doorbell benchmark: {n} TDG.VP.INFO round trips");
    }
    if cmdline::get(cmdline, "fw.bench_accept").is_some() {
        let n = guest_rt::param::number(cmdline, "fw.bench_accept", 0);
        selftest::bench_accept(&hobs, n);
    }
    match selftest {
        Some("touch-pending") => failures += selftest::touch_pending(&hobs),
        Some("touch-poisoned") => failures += selftest::touch_poisoned(&hobs),
        Some("touch-hole") => failures += selftest::touch_hole(),
        Some("triple-fault") => failures += selftest::triple_fault(),
        Some("ud2") => failures += selftest::invalid_opcode(),
        Some("panic") => panic!("self-test panic requested"),
        Some("hang") => selftest::hang(),
        Some("accept-twice") => failures += selftest::accept_twice(&hobs),
        None | Some("1") | Some("chaos") => {}
        Some(other) => fatal!(code::BAD_CMDLINE, "unknown fw.selftest={other}"),
    }
    if failures > 0 || payload.image_size == 0 {
        tdcall::counter(
            abi::report::Counter::FwAcceptRetries,
            tdcall::accept_retries(),
        );
        tdcall::mark(Mark::FwDone, 0);
        println!("fw: done, {failures} self-test failure(s); no kernel started");
        check_stack("shutdown");
        tdcall::shutdown(u32::from(failures > 0));
    }
    let phit = hobs.phit();
    let page = |v: u64| v & !(abi::PAGE_4K - 1);
    let page_up = |v: u64| v.next_multiple_of(abi::PAGE_4K);
    // SAFETY: linker-script symbols; only their addresses are used.
    let (fw_start, fw_end) = unsafe {
        (
            &__fw_start as *const u8 as u64,
            &__fw_end as *const u8 as u64,
        )
    };
    let pieces = [
        // Initial memory not listed here (GDT, page tables) stays reserved.
        (fw_start, fw_end, efi_type::BOOT_SERVICES_CODE),
        (
            page(hob),
            page_up(hob + hobs.len() as u64),
            efi_type::BOOT_SERVICES_DATA,
        ),
        (
            phit.efi_free_memory_bottom,
            phit.efi_free_memory_top,
            efi_type::CONVENTIONAL,
        ),
        (
            payload.image_base,
            page_up(payload.image_base + payload.image_size),
            efi_type::LOADER_DATA,
        ),
    ];
    memory::build(&hobs, &pieces, &accepted[..n_accepted]);
    let system_table = efi::init();
    acpi::hand_off(cmdline);
    check_stack("the kernel hand-off");
    handoff::start_kernel(
        payload.image_base,
        payload.image_size,
        cmdline,
        system_table,
    )
}
