//! `selftest=chaos`: a hostile-guest workload both guests can run
//! (`fw.selftest=chaos`, `kernel.selftest=chaos`); a test of the host, so
//! not part of the runtime they share. It issues `count` random operations
//! from a seed: accepts inside a window of pending RAM (4 KiB and 2 MiB,
//! aligned or not), malformed accepts (reserved bits, bad levels, the
//! shared bit, bits above GPAW, the MMIO hole, beyond RAM, random words),
//! other TDCALL leaves (known, unknown, with version or reserved RAX bits),
//! GHCI VMCALLs that do not end the TD, and port I/O to unassigned ports,
//! both through GHCI and directly. Every answer is checked against
//! `models::accept` and the TDX/GHCI rules;
//! accepted pages must read zero, and pages accepted twice must keep their
//! contents. Disagreements are counted and the first few printed.
//!
//! Several CPUs can run it at once on one window (`Chaos::run` on each):
//! they share the model under a lock. An accept in the window claims its
//! 2 MiB entry first: as its holder, or as the one rogue racing the holder
//! (a third CPU picks another operation). The holder's status is checked
//! exactly, or, when a rogue raced it, the pair is checked against every
//! order the TDX module's entry lock allows, BUSY included
//! (`Model::accept_concurrent`). Nothing is retried on several CPUs: a
//! BUSY the model cannot explain is a disagreement.
#![no_std]

use abi::layout::RamLayout;
use abi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use abi::tdcall::accept::decode;
use abi::tdcall::{accept, leaf, status, PageLevel, DOORBELL_PORT};
use abi::vmcall::{
    ghci, vmcall_status, CMOS_DATA_PORT, CMOS_INDEX_PORT, COM1_BASE, COM1_LEN, GHCI_STANDARD,
    VENDOR_EMU,
};
use abi::{PAGE_2M, PAGE_4K};
use core::arch::asm;
use guest_rt::println;
use guest_rt::spin::SpinLock;
use guest_rt::tdcall::{accept_raw, tdcall, vmcall, Regs};
use models::accept::{Expect, Model, Rng, INVALID, MAX_CHUNKS};

/// What a chaos run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub ops: u64,
    pub disagreements: u64,
    /// Port accesses the host should have counted as unassigned.
    pub unassigned_io: u64,
    pub accepts_ok: u64,
    pub accepts_invalid: u64,
    /// Accepts repeated after TDX_OPERAND_BUSY (`--inject busy=P`).
    pub busy_retries: u64,
    /// Accepts that raced another CPU's on one entry (several CPUs).
    pub raced: u64,
    /// TDX_OPERAND_BUSY answers the model explained (several CPUs).
    pub busy_seen: u64,
}

impl Outcome {
    /// Nothing done yet (for statics, where `Default` cannot be used).
    pub const ZERO: Outcome = Outcome {
        ops: 0,
        disagreements: 0,
        unassigned_io: 0,
        accepts_ok: 0,
        accepts_invalid: 0,
        busy_retries: 0,
        raced: 0,
        busy_seen: 0,
    };

    /// Adds another CPU's outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.ops += o.ops;
        self.disagreements += o.disagreements;
        self.unassigned_io += o.unassigned_io;
        self.accepts_ok += o.accepts_ok;
        self.accepts_invalid += o.accepts_invalid;
        self.busy_retries += o.busy_retries;
        self.raced += o.raced;
        self.busy_seen += o.busy_seen;
    }
}

/// Who is accepting in one 2 MiB entry of the window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rogue {
    Idle,
    Running,
    Done { rcx: u64, got: u64 },
}

#[derive(Clone, Copy)]
struct Entry {
    held: bool,
    rogue: Rogue,
}

/// What the CPUs of one run share.
struct Shared {
    model: Model,
    entries: [Entry; MAX_CHUNKS],
    /// TDG.VP.INFO's vCPU count (R8 bits 31:0), as the first CPU read it.
    vcpus: u64,
    /// CPUs running the workload: one retries BUSY (fault injection),
    /// several do not.
    runners: u32,
}

/// A chaos run over one window, shareable by several CPUs.
pub struct Chaos(SpinLock<Option<Shared>>);

impl Default for Chaos {
    fn default() -> Self {
        Self::new()
    }
}

impl Chaos {
    pub const fn new() -> Self {
        Chaos(SpinLock::new(None))
    }

    /// Starts a run of `runners` CPUs on `model`'s window (pending RAM
    /// owned by the caller).
    pub fn start(&self, model: Model, runners: u32) {
        let vcpus = tdcall(Regs {
            rax: leaf::VP_INFO as u64,
            ..Default::default()
        })
        .r8 & 0xffff_ffff;
        *self.0.lock() = Some(Shared {
            model,
            entries: [Entry {
                held: false,
                rogue: Rogue::Idle,
            }; MAX_CHUNKS],
            vcpus,
            runners: runners.max(1),
        });
    }

    /// Ends the run and gives the model back (None before `start`).
    pub fn end(&self) -> Option<Model> {
        self.0.lock().take().map(|s| s.model)
    }

    /// This CPU's share: `count` operations from `seed`. The first CPU
    /// prints the window.
    pub fn run(&self, cpu: usize, seed: u64, count: u64) -> Outcome {
        let Some((layout, range, retry_busy)) = self.0.with(|s| {
            s.as_ref()
                .map(|s| (*s.model.layout(), s.model.range(), s.runners == 1))
        }) else {
            return Outcome::default();
        };
        if cpu == 0 {
            println!(
                "chaos: seed {seed}, {count} operations, window {:#x}..{:#x}",
                range.0, range.1
            );
        }
        let mut run = Run {
            shared: &self.0,
            layout,
            range,
            retry_busy,
            rng: Rng::new(seed),
            out: Outcome::default(),
        };
        for _ in 0..count {
            run.one();
            run.out.ops += 1;
        }
        run.out
    }
}

/// How an accept in the window holds its entry.
enum Claim {
    Holder(usize),
    Rogue(usize),
}

/// Most retries of one busy accept before its status is taken as final.
const BUSY_RETRIES: u64 = 10_000;

/// An accept, repeated while the host answers TDX_OPERAND_BUSY.
fn accept_through_busy(rcx: u64, retries: &mut u64) -> u64 {
    let mut st = accept_raw(rcx);
    let mut n = 0;
    while status::code(st) == status::OPERAND_BUSY && n < BUSY_RETRIES {
        n += 1;
        st = accept_raw(rcx);
    }
    *retries += n;
    st
}

const SHOWN: u64 = 10;
const PATTERN: u64 = 0x5eed_c0de_0000_0000;

fn pattern(gpa: u64) -> u64 {
    PATTERN ^ gpa
}

fn read(gpa: u64) -> u64 {
    // SAFETY: only called on pages of the window the model says are
    // accepted; the window is identity-mapped and owned by this test.
    unsafe { core::ptr::read_volatile(gpa as *const u64) }
}

fn write(gpa: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(gpa as *mut u64, v) }
}

struct Run<'a> {
    shared: &'a SpinLock<Option<Shared>>,
    layout: RamLayout,
    range: (u64, u64),
    retry_busy: bool,
    rng: Rng,
    out: Outcome,
}

impl Run<'_> {
    fn disagree(&mut self, what: core::fmt::Arguments<'_>) {
        self.out.disagreements += 1;
        if self.out.disagreements <= SHOWN {
            println!("chaos: op {}: {what}", self.out.ops);
        }
    }

    /// Runs `f` on the shared state (present for the whole run).
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        self.shared.with(|s| match s.as_mut() {
            Some(s) => f(s),
            None => guest_rt::fatal!(guest_rt::fatal::code::PANIC, "chaos state gone mid-run"),
        })
    }

    fn one(&mut self) {
        match self.rng.below(100) {
            0..40 => self.accept_in_window(),
            40..60 => self.accept_invalid(),
            60..70 => self.other_leaf(),
            70..80 => self.ghci(),
            80..90 => self.port_io(),
            _ => self.check_memory(),
        }
    }

    fn window_gpa(&mut self) -> u64 {
        let (lo, hi) = self.range;
        lo + self.rng.below((hi - lo) / PAGE_4K) * PAGE_4K
    }

    /// One accept whose status the model predicts (alone on its entry),
    /// or explains together with the one that raced it.
    fn accept(&mut self, rcx: u64) {
        let (lo, hi) = self.range;
        let claim = match decode(&self.layout, rcx) {
            // Invalid operands touch no entry: their status is exact.
            Err(_) => None,
            Ok((gpa, _)) if gpa >= lo && gpa < hi => {
                let c = ((gpa - lo) / PAGE_2M) as usize;
                match self.claim(c) {
                    Some(claim) => Some(claim),
                    // Two CPUs are on this entry already: do something else.
                    None => return,
                }
            }
            // Never issued: the generators stay off RAM outside the window.
            Ok(_) => return,
        };
        let got = if self.retry_busy {
            accept_through_busy(rcx, &mut self.out.busy_retries)
        } else {
            accept_raw(rcx)
        };
        match got {
            status::SUCCESS => self.check_fresh(rcx),
            INVALID => self.out.accepts_invalid += 1,
            models::accept::BUSY => self.out.busy_seen += 1,
            _ => {}
        }
        match claim {
            Some(Claim::Rogue(c)) => {
                self.with(|s| s.entries[c].rogue = Rogue::Done { rcx, got });
            }
            Some(Claim::Holder(c)) => self.settle(c, rcx, got),
            None => {
                let want = self.with(|s| s.model.expect(rcx));
                if want != Expect::Status(got) {
                    self.disagree(format_args!(
                        "accept {rcx:#x}: status {got:#x} ({}), model {want:x?}",
                        status::name(got)
                    ));
                }
            }
        }
    }

    /// Claims entry `c`: its holder if free, else the rogue racing the
    /// holder if there is none yet.
    fn claim(&self, c: usize) -> Option<Claim> {
        self.with(|s| {
            let e = &mut s.entries[c];
            if !e.held {
                e.held = true;
                Some(Claim::Holder(c))
            } else if e.rogue == Rogue::Idle {
                e.rogue = Rogue::Running;
                Some(Claim::Rogue(c))
            } else {
                None
            }
        })
    }

    /// The holder of entry `c` got `got` for `rcx`: waits for a rogue that
    /// raced it, checks the status (or the pair) against the model, which
    /// takes the change only when the host's answers are explained, and
    /// releases the entry.
    fn settle(&mut self, c: usize, rcx: u64, got: u64) {
        // Waiting for the rogue, checking and releasing the entry happen in
        // one critical section: a rogue can no longer join once the holder
        // has seen the entry without one.
        let (rival, explained, want) = loop {
            let r = self.with(|s| {
                let rival = match s.entries[c].rogue {
                    Rogue::Running => return None,
                    Rogue::Idle => None,
                    Rogue::Done { rcx, got } => Some((rcx, got)),
                };
                let (ok, want) = match rival {
                    None => {
                        let want = s.model.expect(rcx);
                        let ok = want == Expect::Status(got);
                        if ok {
                            s.model.accept(rcx);
                        }
                        (ok, Some(want))
                    }
                    Some(r) => (s.model.accept_concurrent((rcx, got), r), None),
                };
                s.entries[c] = Entry {
                    held: false,
                    rogue: Rogue::Idle,
                };
                Some((rival, ok, want))
            });
            match r {
                Some(r) => break r,
                None => core::hint::spin_loop(),
            }
        };
        if rival.is_some() {
            self.out.raced += 1;
        }
        if !explained {
            match (rival, want) {
                (Some((r_rcx, r_got)), _) => self.disagree(format_args!(
                    "racing accepts {rcx:#x} -> {got:#x} ({}) and {r_rcx:#x} -> {r_got:#x} ({}): no order explains them",
                    status::name(got),
                    status::name(r_got)
                )),
                (None, want) => self.disagree(format_args!(
                    "accept {rcx:#x}: status {got:#x} ({}), model {want:x?}",
                    status::name(got)
                )),
            }
            return;
        }
        // Pages already accepted keep what their accepter wrote (it wrote
        // before its status reached the model).
        for (rcx, got) in [Some((rcx, got)), rival].into_iter().flatten() {
            let gpa = rcx & !(PAGE_4K - 1);
            if status::code(got) == status::PAGE_ALREADY_ACCEPTED && read(gpa) != pattern(gpa) {
                self.disagree(format_args!(
                    "accept {rcx:#x}: already accepted, but the page changed ({:#x})",
                    read(gpa)
                ));
            }
        }
    }

    /// A successful accept: its pages read zero; each gets its pattern.
    fn check_fresh(&mut self, rcx: u64) {
        self.out.accepts_ok += 1;
        let gpa = rcx & !(PAGE_4K - 1);
        let level = rcx & accept::LEVEL_MASK;
        let pages = if level == PageLevel::L2M as u64 {
            512
        } else {
            1
        };
        for i in 0..pages {
            let page = gpa + i * PAGE_4K;
            // Zeroed: check both ends of a 4 KiB page, and a sample of
            // a 2 MiB one (first, last and one random page in full).
            let full = pages == 1 || i == 0 || i == pages - 1;
            let zero = if full {
                read(page) == 0 && read(page + PAGE_4K - 8) == 0
            } else {
                read(page) == 0
            };
            if !zero {
                self.disagree(format_args!(
                    "accept {rcx:#x}: page {page:#x} not zero after accept"
                ));
            }
            write(page, pattern(page));
        }
    }

    fn accept_in_window(&mut self) {
        let gpa = self.window_gpa();
        let rcx = if self.rng.percent(30) {
            // 2 MiB, misaligned one time in ten.
            let base = if self.rng.percent(10) {
                gpa | PAGE_4K
            } else {
                gpa & !(PAGE_2M - 1)
            };
            accept::encode(base, PageLevel::L2M)
        } else {
            accept::encode(gpa, PageLevel::L4K)
        };
        self.accept(rcx);
    }

    fn accept_invalid(&mut self) {
        let layout = self.layout;
        let gpa = self.window_gpa();
        let rcx = match self.rng.below(8) {
            0 => gpa | (1 + self.rng.below(511)) << 3,
            1 => gpa | [2, 3, 4, 5, 6, 7][abi::to_usize(self.rng.below(6))],
            2 => {
                MMIO_HOLE_START
                    + self.rng.below((MMIO_HOLE_END - MMIO_HOLE_START) / PAGE_4K) * PAGE_4K
            }
            3 => {
                let top = layout.ram_top().next_multiple_of(PAGE_4K);
                top + self.rng.below((layout.shared_bit() - top) / PAGE_4K) * PAGE_4K
            }
            4 => gpa | layout.shared_bit(),
            5 => gpa | 1 << (u64::from(layout.gpaw) + self.rng.below(64 - u64::from(layout.gpaw))),
            6 => accept::encode(gpa & !(PAGE_2M - 1), PageLevel::L1G),
            _ => self.rng.next_u64(),
        };
        // A random word could name RAM outside the window: never accept that.
        if let Ok((g, _)) = decode(&layout, rcx) {
            let (lo, hi) = self.range;
            if g < lo || g >= hi {
                return;
            }
        }
        self.accept(rcx);
    }

    fn check_rax(&mut self, what: &str, rax: u64, got: u64, want: u64) {
        if got != want {
            self.disagree(format_args!(
                "{what} (RAX {rax:#x}): status {got:#x} ({}), expected {want:#x} ({})",
                status::name(got),
                status::name(want)
            ));
        }
    }

    fn other_leaf(&mut self) {
        let invalid_rax = status::OPERAND_INVALID | status::OPERAND_RAX;
        match self.rng.below(5) {
            0 => {
                let r = tdcall(Regs {
                    rax: leaf::VP_INFO as u64,
                    ..Default::default()
                });
                let gpaw = self.layout.gpaw as u64;
                let vcpus = self.with(|s| s.vcpus);
                if r.rax != 0
                    || r.rcx & abi::tdcall::vp_info::GPAW_MASK != gpaw
                    || r.r8 & 0xffff_ffff != vcpus
                    || vcpus == 0
                {
                    self.disagree(format_args!(
                        "TDG.VP.INFO: RAX {:#x} RCX {:#x} R8 {:#x}",
                        r.rax, r.rcx, r.r8
                    ));
                }
            }
            1 => {
                let rax = leaf::VP_VEINFO_GET as u64;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("TDG.VP.VEINFO.GET", rax, got, status::NO_VALID_VE_INFO);
            }
            2 => {
                // Any leaf the emulator does not provide.
                let l = loop {
                    let l = self.random_u16();
                    if !matches!(
                        l,
                        leaf::VP_VMCALL
                            | leaf::VP_INFO
                            | leaf::VP_VEINFO_GET
                            | leaf::MEM_PAGE_ACCEPT
                            | leaf::MR_RTMR_EXTEND
                            | leaf::MR_REPORT
                            | leaf::MR_VERIFYREPORT
                    ) {
                        break l;
                    }
                };
                let got = tdcall(Regs {
                    rax: l as u64,
                    rcx: self.rng.next_u64(),
                    ..Default::default()
                })
                .rax;
                self.check_rax("unknown leaf", l as u64, got, invalid_rax);
            }
            3 => {
                let known = [leaf::VP_INFO, leaf::MEM_PAGE_ACCEPT, leaf::VP_VMCALL]
                    [abi::to_usize(self.rng.below(3))];
                let rax = known as u64 | (1 + self.rng.below(255)) << 16;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("leaf with a version", rax, got, invalid_rax);
            }
            _ => {
                let rax = leaf::VP_INFO as u64 | (1 + self.rng.below(u64::MAX >> 24)) << 24;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("reserved RAX bits", rax, got, invalid_rax);
            }
        }
    }

    /// A uniformly random 16-bit number (a TDCALL leaf, a port).
    fn random_u16(&mut self) -> u16 {
        #[allow(clippy::cast_possible_truncation)] // below(0x1_0000) < 2^16
        let v = self.rng.below(0x1_0000) as u16;
        v
    }

    fn unassigned_port(&mut self) -> u16 {
        loop {
            let p = self.random_u16();
            // Nor a port from which a 4-byte access reaches the CMOS.
            let cmos = CMOS_INDEX_PORT - 3..=CMOS_DATA_PORT;
            if p != DOORBELL_PORT as u16
                && !(COM1_BASE..COM1_BASE + COM1_LEN).contains(&p)
                && !cmos.contains(&p)
            {
                return p;
            }
        }
    }

    fn ghci(&mut self) {
        let r = |rng: &mut Rng| rng.next_u64();
        match self.rng.below(6) {
            0 => {
                // A GHCI sub-function the host does not provide.
                let sub = loop {
                    let s = self.rng.next_u64() & 0x1_ffff;
                    if !matches!(
                        s,
                        ghci::INSTRUCTION_IO
                            | ghci::REPORT_FATAL_ERROR
                            | ghci::GET_TD_VM_CALL_INFO
                            | ghci::INSTRUCTION_HLT
                            | ghci::INSTRUCTION_WRMSR
                            | ghci::INSTRUCTION_RDMSR
                            | ghci::INSTRUCTION_CPUID
                            | ghci::SETUP_EVENT_NOTIFY_INTERRUPT
                            | ghci::GET_QUOTE
                    ) {
                        break s;
                    }
                };
                let o = vmcall(GHCI_STANDARD, sub, r(&mut self.rng), r(&mut self.rng), 0, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "GHCI sub-function {sub:#x}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            1 => {
                let o = vmcall(GHCI_STANDARD, ghci::GET_TD_VM_CALL_INFO, 0, 0, 0, 0);
                if o.rax != 0 || o.r10 != 0 || o.r11 != 0 {
                    self.disagree(format_args!(
                        "GetTdVmCallInfo: RAX {:#x} R10 {:#x} R11 {:#x}",
                        o.rax, o.r10, o.r11
                    ));
                }
            }
            2 => {
                let size = [1u64, 2, 4][abi::to_usize(self.rng.below(3))];
                let port = self.unassigned_port() as u64;
                let write = self.rng.percent(50);
                let dir = if write {
                    ghci::IO_DIRECTION_WRITE
                } else {
                    ghci::IO_DIRECTION_READ
                };
                let o = vmcall(
                    GHCI_STANDARD,
                    ghci::INSTRUCTION_IO,
                    size,
                    dir,
                    port,
                    r(&mut self.rng),
                );
                self.out.unassigned_io += 1;
                let ones = if size == 4 {
                    u32::MAX as u64
                } else {
                    (1 << (size * 8)) - 1
                };
                if o.rax != 0 || o.r10 != 0 || (!write && o.r11 != ones) {
                    self.disagree(format_args!(
                        "Instruction.IO {} port {port:#x} size {size}: RAX {:#x} R10 {:#x} R11 {:#x}",
                        if write { "write" } else { "read" },
                        o.rax, o.r10, o.r11
                    ));
                }
            }
            3 => {
                let size = [0u64, 3, 5, 8, u64::MAX][abi::to_usize(self.rng.below(5))];
                let o = vmcall(GHCI_STANDARD, ghci::INSTRUCTION_IO, size, 0, 0x80, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "Instruction.IO size {size}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            4 => {
                let r10 = loop {
                    let v = self.rng.next_u64();
                    if v != GHCI_STANDARD && v != VENDOR_EMU {
                        break v;
                    }
                };
                let o = vmcall(r10, r(&mut self.rng), 0, 0, 0, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "VMCALL R10 {r10:#x}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            _ => {
                // RCX exposing registers the GHCI forbids (RSP, RAX, RCX...).
                let bad =
                    [1u64 << 0, 1 << 1, 1 << 4, 1 << 16, 1 << 63][abi::to_usize(self.rng.below(5))];
                let o = tdcall(Regs {
                    rax: leaf::VP_VMCALL as u64,
                    rcx: abi::vmcall::EXPOSE_R10_R15 | bad,
                    ..Default::default()
                });
                self.check_rax("VMCALL with a forbidden RCX bit", 0, o.rax, INVALID);
            }
        }
    }

    fn port_io(&mut self) {
        let port = self.unassigned_port();
        self.out.unassigned_io += 1;
        let size = self.rng.below(3);
        if self.rng.percent(50) {
            let v = self.rng.next_u64();
            // SAFETY: port writes to ports with no device: the host drops
            // them; no memory is touched.
            unsafe {
                match size {
                    0 => {
                        asm!("out dx, al", in("dx") port, in("al") v.to_le_bytes()[0], options(nomem, nostack, preserves_flags))
                    }
                    1 => {
                        asm!("out dx, ax", in("dx") port, in("ax") (v & 0xffff) as u16, options(nomem, nostack, preserves_flags))
                    }
                    _ => {
                        asm!("out dx, eax", in("dx") port, in("eax") (v & 0xffff_ffff) as u32, options(nomem, nostack, preserves_flags))
                    }
                }
            }
        } else {
            let (got, ones): (u64, u64) = match size {
                0 => {
                    let v: u8;
                    // SAFETY: a read from a port with no device: the host
                    // returns all-ones; no memory is touched.
                    unsafe {
                        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xff)
                }
                1 => {
                    let v: u16;
                    // SAFETY: as above.
                    unsafe {
                        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xffff)
                }
                _ => {
                    let v: u32;
                    // SAFETY: as above.
                    unsafe {
                        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xffff_ffff)
                }
            };
            if got != ones {
                self.disagree(format_args!(
                    "in from port {port:#x}: {got:#x}, expected all-ones"
                ));
            }
        }
    }

    fn check_memory(&mut self) {
        let gpa = self.window_gpa();
        if self.with(|s| s.model.is_accepted(gpa)) && read(gpa) != pattern(gpa) {
            self.disagree(format_args!(
                "accepted page {gpa:#x} holds {:#x}",
                read(gpa)
            ));
        }
    }
}

/// `seed=S count=N` from the command line (defaults 1 and 10,000).
pub fn params(cmdline: &str) -> (u64, u64) {
    (
        guest_rt::param::number(cmdline, "seed", 1),
        guest_rt::param::number(cmdline, "count", 10_000),
    )
}

/// Prints what a run (all its CPUs) did.
pub fn summary(out: &Outcome, model: &Model) {
    println!(
        "chaos: {} operations, {} disagreement(s), {} accepted, {} invalid accepts, {} unassigned port accesses, {} busy retries, {} raced, {} busy answers, {} window pages accepted",
        out.ops,
        out.disagreements,
        out.accepts_ok,
        out.accepts_invalid,
        out.unassigned_io,
        out.busy_retries,
        out.raced,
        out.busy_seen,
        model.accepted_pages()
    );
}

/// Accepts what the chaos run left pending in the window, so the caller can
/// treat the whole window as accepted memory. Returns false (after printing
/// why) when an accept fails.
pub fn finish(model: &mut Model) -> bool {
    let (lo, hi) = model.range();
    let mut chunk = lo;
    while chunk < hi {
        let mut retries = 0;
        let whole_pending = (0..512).all(|i| !model.is_accepted(chunk + i * PAGE_4K));
        let large = accept::encode(chunk, PageLevel::L2M);
        // Over 4 KiB leaves (`--sept-level 4k`) a pending chunk answers a
        // size mismatch, as the model predicts: accept it page by page.
        let small_only = model.expect(large)
            == Expect::Status(status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64);
        let ok = if whole_pending && !small_only {
            model.accept(large);
            accept_through_busy(large, &mut retries) == 0
        } else {
            let mut ok = true;
            for p in (0..512).map(|i| chunk + i * PAGE_4K) {
                if ok && !model.is_accepted(p) {
                    let rcx = accept::encode(p, PageLevel::L4K);
                    model.accept(rcx);
                    ok = accept_through_busy(rcx, &mut retries) == 0;
                }
            }
            ok
        };
        if !ok {
            println!("chaos: finishing the window failed in chunk {chunk:#x}");
            return false;
        }
        chunk += PAGE_2M;
    }
    true
}
