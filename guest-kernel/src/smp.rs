//! The kernel's other CPUs, as Linux brings up a TDX guest's: the MADT
//! (found through the ACPI 2.0 configuration table) names the CPUs and
//! the Multiprocessor Wakeup mailbox; `acpi_wakeup_cpu` wakes each AP
//! (APIC ID and vector, then `command = WAKEUP`, then spin until the AP
//! clears it). A woken AP runs on its own stack (which also tells every
//! CPU who it is: `this_cpu`) and waits for work; `run_on_all` runs a job
//! on every online CPU at once. Before a kexec, `offline_all` sends the
//! APs to the firmware's reset vector (version 1), where they park on the
//! mailbox again for the next kernel.

use crate::cpu::{online, this_cpu, AP_STACK, AP_STACK_ORDER, ONLINE, STACK_TOPS};
use abi::acpi::{self, Mailbox};
use abi::boot::SystemTable;
use abi::guid::ACPI_20_TABLE;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use guest_rt::fatal::code;
use guest_rt::{fatal, println, tdcall};

core::arch::global_asm!(
    ".pushsection .text.ap_entry, \"ax\"",
    ".global ap_entry",
    "ap_entry:",
    // RDI = APIC ID (the firmware's wakeup contract); the boot CPU stored
    // this CPU's stack top before waking it.
    "lea rax, [rip + {tops}]",
    "mov rsp, [rax + rdi * 8]",
    "call {main}",
    "ud2",
    ".popsection",
    tops = sym crate::cpu::STACK_TOPS,
    main = sym ap_main,
);

extern "C" {
    fn ap_entry();
}

/// What the firmware told us.
struct Topology {
    cpus: u32,
    mailbox: u64,
    reset_vector: Option<u64>,
}

static CPUS: AtomicU32 = AtomicU32::new(1);
static MAILBOX: AtomicU64 = AtomicU64::new(0);
static RESET_VECTOR: AtomicU64 = AtomicU64::new(0);
/// The job `run_on_all` posted: its generation and function.
static JOB_GENERATION: AtomicU64 = AtomicU64::new(0);
static JOB: AtomicU64 = AtomicU64::new(0);
static JOB_DONE: AtomicU32 = AtomicU32::new(0);
/// Set to send the APs to the reset vector.
static OFFLINE: AtomicU32 = AtomicU32::new(0);

fn topology(st: &SystemTable) -> Option<Topology> {
    let rsdp = crate::stub::config_table(st, ACPI_20_TABLE)?;
    let read = |gpa: u64, buf: &mut [u8]| {
        // The tables are in ACPI memory below 4 GiB, accepted by the
        // firmware; refuse anything else rather than touch it.
        if gpa == 0
            || gpa
                .checked_add(buf.len() as u64)
                .is_none_or(|e| e > abi::layout::FOUR_GIB)
        {
            return false;
        }
        // SAFETY: identity-mapped, accepted ACPI memory (bounded above).
        unsafe { core::ptr::copy_nonoverlapping(gpa as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    };
    match models::acpi::parse(rsdp, read) {
        Ok(info) => {
            let w = info.wakeup?;
            Some(Topology {
                // MAX_CPUS (the per-CPU arrays' length), as a u32.
                cpus: info.cpus.clamp(1, abi::tdcall::vp_info::MAX_VCPUS),
                mailbox: w.mailbox,
                reset_vector: w.reset_vector,
            })
        }
        Err(e) => {
            println!("kernel: ACPI tables unusable ({e:?}): one CPU");
            None
        }
    }
}

fn mailbox() -> &'static Mailbox {
    // SAFETY: the firmware's mailbox page (ACPI NVS, accepted, identity
    // mapped), shared with the APs: only touched through atomics below.
    unsafe { &*(MAILBOX.load(Ordering::Relaxed) as *const Mailbox) }
}

fn command(m: &Mailbox) -> &core::sync::atomic::AtomicU16 {
    // SAFETY: `command` is a naturally aligned u16 in the shared mailbox;
    // every access to it, ours and the APs', is atomic.
    unsafe { core::sync::atomic::AtomicU16::from_ptr(core::ptr::addr_of!(m.command) as *mut u16) }
}

/// Linux's `acpi_wakeup_cpu`: wakes `apic_id` at `vector` through the
/// mailbox and waits until it took the command.
fn wakeup_cpu(apic_id: u32, vector: u64) {
    let m = mailbox();
    let cmd = command(m);
    // SAFETY: the mailbox is idle (command 0, checked by our caller's
    // previous wait); the AP reads these only after the release below.
    unsafe {
        core::ptr::addr_of!(m.apic_id)
            .cast_mut()
            .write_volatile(apic_id);
        core::ptr::addr_of!(m.wakeup_vector)
            .cast_mut()
            .write_volatile(vector);
    }
    cmd.store(acpi::command::WAKEUP, Ordering::Release);
    // Our firmware's parked APs halt between polls: an IPI ends the halt
    // (TDVF's spin without halting; Linux sends none here).
    tdcall::send_ipi(apic_id);
    // No timeout, as in Linux: a CPU that never answers hangs the boot.
    while cmd.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
}

/// Brings every CPU the MADT lists online (`maxcpus=N` caps them).
pub fn bring_up(st: &SystemTable, cmdline: &str) {
    let Some(t) = topology(st) else { return };
    // A count beyond u32 is more than the MADT lists: clamped like one.
    let max = guest_rt::param::number(cmdline, "maxcpus", u64::from(t.cpus));
    let max = u32::try_from(max).unwrap_or(u32::MAX).clamp(1, t.cpus);
    CPUS.store(max, Ordering::Relaxed);
    MAILBOX.store(t.mailbox, Ordering::Relaxed);
    RESET_VECTOR.store(t.reset_vector.unwrap_or(0), Ordering::Relaxed);
    OFFLINE.store(0, Ordering::Relaxed);
    for apic_id in 1..max {
        if STACK_TOPS[apic_id as usize].load(Ordering::Relaxed) == 0 {
            let Some(stack) = crate::mm::alloc(AP_STACK_ORDER) else {
                fatal!(code::PANIC, "no memory for the stack of CPU {apic_id}");
            };
            STACK_TOPS[apic_id as usize].store(stack + AP_STACK, Ordering::Release);
        }
        wakeup_cpu(apic_id, ap_entry as *const () as u64);
        // Each AP reports in before the next is woken (Linux waits for
        // cpu_online too).
        while online() <= apic_id {
            core::hint::spin_loop();
        }
    }
    if max > 1 {
        println!(
            "kernel: {max} CPUs online (MADT wakeup mailbox at {:#x})",
            t.mailbox
        );
    }
}

extern "C" fn ap_main(apic_id: u64) -> ! {
    guest_rt::idt::init();
    if this_cpu() as u64 != apic_id {
        fatal!(
            code::PANIC,
            "AP {apic_id} runs on the stack of CPU {}",
            this_cpu()
        );
    }
    let mut seen = JOB_GENERATION.load(Ordering::Acquire);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    loop {
        let mut spins = 0u32;
        loop {
            if OFFLINE.load(Ordering::Acquire) != 0 {
                go_offline();
            }
            let g = JOB_GENERATION.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < 2000 {
                core::hint::spin_loop();
            } else {
                tdcall::hlt();
            }
        }
        let job = JOB.load(Ordering::Acquire);
        // SAFETY: `run_on_all` stored a valid `fn(usize)` before bumping
        // the generation (release), and keeps it until every CPU is done.
        let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(abi::to_usize(job)) };
        f(this_cpu());
        JOB_DONE.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs `job(cpu)` on every online CPU at once (the boot CPU included)
/// and returns when all are done.
pub fn run_on_all(job: fn(usize)) {
    let others = online() - 1;
    JOB_DONE.store(0, Ordering::Release);
    JOB.store(job as usize as u64, Ordering::Release);
    JOB_GENERATION.fetch_add(1, Ordering::AcqRel);
    if others > 0 {
        // smp_call_function's IPI: the waiting APs may be halted.
        tdcall::send_ipi_all_but_self();
    }
    job(0);
    while JOB_DONE.load(Ordering::Acquire) < others {
        core::hint::spin_loop();
    }
}

/// The AP leaves this kernel for the firmware's reset vector.
fn go_offline() -> ! {
    let vector = RESET_VECTOR.load(Ordering::Acquire);
    ONLINE.fetch_sub(1, Ordering::AcqRel);
    // SAFETY: the firmware's reset vector (MADT wakeup, version 1): 64-bit
    // code in NVS memory, entered with our identity paging and no stack.
    unsafe { core::arch::asm!("jmp {}", in(reg) vector, options(noreturn)) }
}

/// Sends every AP to the firmware's reset vector (before a kexec) and
/// waits until they have left. Returns false (and keeps them) when the
/// MADT has no reset vector: the next kernel then runs on one CPU, as a
/// Linux kexec'd without a version-1 wakeup structure does.
pub fn offline_all() -> bool {
    if online() == 1 {
        return true;
    }
    if RESET_VECTOR.load(Ordering::Relaxed) == 0 {
        return false;
    }
    OFFLINE.store(1, Ordering::Release);
    tdcall::send_ipi_all_but_self();
    while online() > 1 {
        core::hint::spin_loop();
    }
    true
}
