//! Several vCPUs in the firmware: where an AP starts (its stack, the checks
//! of its index), the boot-time mailbox the APs park on while the firmware
//! runs (in firmware memory, `abi::acpi::Mailbox` layout), the firmware's
//! commands on it (ACCEPT_PAGES for the parallel accept, WAKEUP to send the
//! APs to the loop the OS sees, see `aploop`), and the idle wait every
//! loop uses (spin with `pause`, then GHCI Instruction.HLT).
//!
//! Every vCPU enters `_start` at once with RSI = its index; index 0 (the
//! BSP) takes the firmware's path, the others come here.

use crate::accept::{self, Stats};
use abi::acpi::{command, firmware_area as fw, mailbox_offset, APIC_ID_BROADCAST};
use abi::vmcall::{ghci, EXPOSE_R10_R15, GHCI_STANDARD};
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest_rt::fatal::code;
use guest_rt::{fatal, tdcall};

/// Most vCPUs the firmware runs (indices 0..64; the AP stacks are sized for
/// them).
pub const MAX_VCPUS: u32 = abi::tdcall::vp_info::MAX_VCPUS;
/// log2 of each AP's stack size (8 KiB: the AP runs the accept loop and,
/// at worst, formats a fatal message; both need well under 4 KiB).
const AP_STACK_SHIFT: u32 = 13;
/// Polls of a mailbox between two HLT calls.
pub const SPIN_POLLS: u32 = 1024;

// AP entry (from `_start` with RSI != 0). AP i runs on stack slot i; slot
// 0 is the BSP's index and free, so the first AP whose index is beyond the
// slots borrows it to report the error (the rest wait for the TD to stop).
core::arch::global_asm!(
    ".pushsection .text",
    ".global fw_ap_entry",
    "fw_ap_entry:",
    "cmp rsi, {max}",
    "jae 3f",
    "lea rax, [rsi + 1]",
    "shl rax, {shift}",
    "lea rsp, [rip + fw_ap_stacks]",
    "add rsp, rax",
    "2:",
    "mov rdi, rsi",
    "call {ap_main}",
    "ud2",
    "3:",
    "mov eax, 1",
    "xchg eax, dword ptr [rip + {overflow}]",
    "test eax, eax",
    "jnz 4f",
    "lea rsp, [rip + fw_ap_stacks]",
    "add rsp, {slot}",
    "jmp 2b",
    "4:",
    guest_rt::ghci_vmcall_asm!("{hlt}", "0", "0"),
    "jmp 4b",
    ".popsection",
    ".pushsection .bss.ap_stacks, \"aw\", @nobits",
    ".balign 4096",
    "fw_ap_stacks:",
    ".space {stacks}",
    ".popsection",
    max = const MAX_VCPUS,
    shift = const AP_STACK_SHIFT,
    slot = const 1u64 << AP_STACK_SHIFT,
    stacks = const (MAX_VCPUS as u64) << AP_STACK_SHIFT,
    overflow = sym OVERFLOW_SLOT_TAKEN,
    ap_main = sym ap_main,
    expose = const EXPOSE_R10_R15,
    standard = const GHCI_STANDARD,
    hlt = const ghci::INSTRUCTION_HLT,
);

static OVERFLOW_SLOT_TAKEN: AtomicU32 = AtomicU32::new(0);

/// The boot-time mailbox: a page of firmware memory in the ACPI mailbox
/// layout, accessed as naturally aligned 64-bit words (word 0 holds the
/// command in bits 15:0 and the APIC ID in bits 63:32).
#[repr(C, align(4096))]
struct MailboxPage([AtomicU64; 512]);

static BOOT_MAILBOX: MailboxPage = MailboxPage([const { AtomicU64::new(0) }; 512]);

fn boot(offset: usize) -> &'static AtomicU64 {
    &BOOT_MAILBOX.0[offset / 8]
}

/// Set by the BSP once its IDT is built; APs load it only then.
static IDT_READY: AtomicBool = AtomicBool::new(false);
/// vCPUs in the TD (TDG.VP.INFO R8 bits 31:0), set by the BSP.
static VCPUS: AtomicU32 = AtomicU32::new(1);
/// A bit per AP that arrived, at the index it entered with (RSI): the
/// self-test checks it holds exactly 1..NUM_VCPUS-1, each once.
static ARRIVED_INDICES: AtomicU64 = AtomicU64::new(0);
/// An AP found its bit set already (two vCPUs entered with one index).
static DUPLICATE_INDEX: AtomicBool = AtomicBool::new(false);

/// One AP's accept statistics for the current ACCEPT_PAGES command,
/// written by that AP before it counts itself done.
struct ApStats([AtomicU64; 6]);

static AP_STATS: [ApStats; MAX_VCPUS as usize] =
    [const { ApStats([const { AtomicU64::new(0) }; 6]) }; MAX_VCPUS as usize];

impl ApStats {
    fn store(&self, s: &Stats) {
        let v = [s.calls, s.ok_2m, s.ok_4k, s.already, s.mismatch, s.bytes];
        for (slot, v) in self.0.iter().zip(v) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    fn add_to(&self, s: &mut Stats) {
        let v: [u64; 6] = core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed));
        s.calls += v[0];
        s.ok_2m += v[1];
        s.ok_4k += v[2];
        s.already += v[3];
        s.mismatch += v[4];
        s.bytes += v[5];
    }
}

/// Polls `ready` with `pause` between tries; after `SPIN_POLLS` misses asks
/// the host to park this vCPU for a while (GHCI Instruction.HLT), then
/// polls again.
pub fn wait_until(mut ready: impl FnMut() -> bool) {
    loop {
        for _ in 0..SPIN_POLLS {
            if ready() {
                return;
            }
            core::hint::spin_loop();
        }
        tdcall::hlt();
    }
}

extern "C" fn ap_main(index: u64) -> ! {
    if index >= u64::from(MAX_VCPUS) {
        fatal!(
            code::BAD_HOB,
            "vCPU {index} started: the firmware runs at most {MAX_VCPUS} vCPUs (indices 0..{MAX_VCPUS})"
        );
    }
    let info = tdcall::vp_info();
    let vcpus = info.r8 & 0xffff_ffff;
    if info.rax != 0 || info.r9 != index || index >= vcpus {
        fatal!(
            code::BAD_HOB,
            "AP vCPU {index}: TDG.VP.INFO says vCPU {} of {vcpus} (status {:#x})",
            info.r9,
            info.rax
        );
    }
    wait_until(|| IDT_READY.load(Ordering::Acquire));
    guest_rt::idt::init();
    // index < MAX_VCPUS = 64 (checked above).
    let bit = 1u64 << index;
    if ARRIVED_INDICES.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        DUPLICATE_INDEX.store(true, Ordering::Release);
    }
    boot(fw::ARRIVED).fetch_add(1, Ordering::Release);
    // The BSP may be halted waiting for the APs to arrive.
    tdcall::send_ipi(0);
    park(index)
}

/// The AP's loop on the boot mailbox: acts once on each command the BSP
/// publishes (sequence number), if it is addressed to it or to all.
fn park(index: u64) -> ! {
    let mut seen = 0;
    loop {
        let cur = read_command(seen);
        seen = cur.seq;
        let Command {
            cmd, apic_id, args, ..
        } = cur;
        if apic_id != APIC_ID_BROADCAST && u64::from(apic_id) != index {
            continue;
        }
        match cmd {
            command::ACCEPT_PAGES => {
                let [start, end, cpus, flags] = args;
                if index >= cpus {
                    continue;
                }
                let mut stats = Stats::default();
                let use_2m = flags & fw::ACCEPT_4K_ONLY == 0;
                accept::accept_share(index, cpus, start, end, use_2m, &mut stats);
                AP_STATS[abi::to_usize(index)].store(&stats);
                boot(fw::DONE).fetch_add(1, Ordering::Release);
                tdcall::send_ipi(0);
            }
            command::WAKEUP => {
                let vector = cur.wakeup_vector;
                // SAFETY: the BSP set the vector to the parking loop it
                // copied into memory the OS keeps (`aploop`); that loop
                // takes RDI = index, uses no stack and never returns, so
                // leaving this stack and the firmware's code is fine.
                unsafe {
                    core::arch::asm!("jmp {v}", v = in(reg) vector, in("rdi") index, options(noreturn));
                }
            }
            _ => {}
        }
    }
}

/// A firmware command as an AP read it.
#[derive(Clone, Copy)]
struct Command {
    seq: u64,
    cmd: u16,
    apic_id: u32,
    wakeup_vector: u64,
    /// ACCEPT_START, ACCEPT_END, ACCEPT_CPUS, ACCEPT_FLAGS.
    args: [u64; 4],
}

/// Waits for a command newer than `seen` and reads it whole. The sequence
/// number is a seqlock: odd while the BSP writes a command, bumped to the
/// next even value when it is complete, and read again after the fields,
/// so a command the BSP replaced meanwhile is read again rather than mixed
/// with the new one. (The BSP replaces a command only once every AP it
/// concerns is done with it, but an AP it does not concern may still be
/// reading it.)
fn read_command(seen: u64) -> Command {
    loop {
        let mut seq = seen;
        wait_until(|| {
            seq = boot(fw::SEQUENCE).load(Ordering::Acquire);
            seq != seen && seq.is_multiple_of(2)
        });
        let word = boot(mailbox_offset::COMMAND).load(Ordering::Relaxed);
        let command = Command {
            seq,
            cmd: (word & 0xffff) as u16,
            apic_id: (word >> 32) as u32,
            wakeup_vector: boot(mailbox_offset::WAKEUP_VECTOR).load(Ordering::Relaxed),
            args: [
                fw::ACCEPT_START,
                fw::ACCEPT_END,
                fw::ACCEPT_CPUS,
                fw::ACCEPT_FLAGS,
            ]
            .map(|at| boot(at).load(Ordering::Relaxed)),
        };
        fence(Ordering::Acquire);
        if boot(fw::SEQUENCE).load(Ordering::Relaxed) == seq {
            return command;
        }
    }
}

/// Opens a firmware command (sequence number odd); the caller stores its
/// arguments, then `send` completes it.
fn begin_command() {
    boot(fw::SEQUENCE).fetch_add(1, Ordering::Relaxed);
    fence(Ordering::Release);
}

/// Completes the command opened by `begin_command` and publishes it
/// (sequence number even again).
fn send(cmd: u16, apic_id: u32, wakeup_vector: u64) {
    debug_assert!(!boot(fw::SEQUENCE).load(Ordering::Relaxed).is_multiple_of(2));
    boot(mailbox_offset::WAKEUP_VECTOR).store(wakeup_vector, Ordering::Relaxed);
    boot(mailbox_offset::COMMAND).store(
        u64::from(cmd) | (u64::from(apic_id) << 32),
        Ordering::Relaxed,
    );
    boot(fw::DONE).store(0, Ordering::Relaxed);
    boot(fw::SEQUENCE).fetch_add(1, Ordering::Release);
    // The APs halt between polls of the mailbox: end their halt.
    tdcall::send_ipi_all_but_self();
}

/// The BSP's side of the start: records the vCPU count, lets the APs load
/// the IDT (built by the BSP already) and waits until every AP is parked
/// on the boot mailbox.
pub fn start_aps(vcpus: u32) {
    VCPUS.store(vcpus, Ordering::Relaxed);
    IDT_READY.store(true, Ordering::Release);
    if vcpus > 1 {
        tdcall::send_ipi_all_but_self();
    }
    if vcpus > 1 {
        let aps = u64::from(vcpus - 1);
        wait_until(|| boot(fw::ARRIVED).load(Ordering::Acquire) == aps);
    }
}

/// APs that came up and parked on the boot mailbox.
pub fn aps_arrived() -> u64 {
    boot(fw::ARRIVED).load(Ordering::Acquire)
}

/// The indices the APs entered with, a bit each, and whether any index
/// came twice.
pub fn ap_indices() -> (u64, bool) {
    (
        ARRIVED_INDICES.load(Ordering::Acquire),
        DUPLICATE_INDEX.load(Ordering::Acquire),
    )
}

/// vCPUs in the TD.
pub fn vcpus() -> u32 {
    VCPUS.load(Ordering::Relaxed)
}

/// `fw.accept_cpus=N`: vCPUs sharing the accept (default all; 1 is the
/// serial path; more than the TD has is an error).
pub fn accept_cpus(cmdline: &str) -> u64 {
    let n = u64::from(vcpus());
    let k = guest_rt::param::number(cmdline, "fw.accept_cpus", n);
    if k == 0 || k > n {
        fatal!(
            code::BAD_CMDLINE,
            "fw.accept_cpus={k}: expected 1..={n} (the vCPUs of this TD)"
        );
    }
    k
}

/// Accepts `[start, end)` on `cpus` vCPUs, as edk2's
/// `MpAcceptMemoryResourceRange` (OvmfPkg/IntelTdx/TdxHelperLib/
/// SecTdxHelper.c): the BSP accepts the part below the first 2 MiB
/// boundary itself, and a range of at most one chunk; otherwise CPU i
/// accepts the chunks at `i * ACCEPT_CHUNK` with a stride of
/// `cpus * ACCEPT_CHUNK`, the BSP taking share 0, and the BSP waits for
/// the APs and adds their statistics to `stats`. The pages end up in the
/// same states, at the same levels, as with `accept_range_with`. Returns
/// true when the APs took part.
pub fn accept_range(start: u64, end: u64, use_2m: bool, cpus: u64, stats: &mut Stats) -> bool {
    if cpus <= 1 {
        accept::accept_range_with(start, end, use_2m, stats);
        return false;
    }
    let head = start.next_multiple_of(abi::PAGE_2M).min(end);
    accept::accept_range_with(start, head, use_2m, stats);
    if end - head <= accept::ACCEPT_CHUNK {
        accept::accept_range_with(head, end, use_2m, stats);
        return false;
    }
    begin_command();
    boot(fw::ACCEPT_START).store(head, Ordering::Relaxed);
    boot(fw::ACCEPT_END).store(end, Ordering::Relaxed);
    boot(fw::ACCEPT_CPUS).store(cpus, Ordering::Relaxed);
    let flags = if use_2m { 0 } else { fw::ACCEPT_4K_ONLY };
    boot(fw::ACCEPT_FLAGS).store(flags, Ordering::Relaxed);
    send(command::ACCEPT_PAGES, APIC_ID_BROADCAST, 0);
    accept::accept_share(0, cpus, head, end, use_2m, stats);
    wait_until(|| boot(fw::DONE).load(Ordering::Acquire) == cpus - 1);
    for ap in &AP_STATS[1..abi::to_usize(cpus)] {
        ap.add_to(stats);
    }
    true
}

/// Sends every AP to `vector` (the parking loop in OS-reserved memory)
/// with RDI = its index. The caller waits until they arrived there.
pub fn send_aps_to(vector: u64) {
    begin_command();
    send(command::WAKEUP, APIC_ID_BROADCAST, vector);
}
