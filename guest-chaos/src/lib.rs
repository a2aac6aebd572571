//! `selftest=chaos`: a hostile-guest workload both guests can run (this
//! file: the run and its shared state; the accepts in `accepts`, every
//! other call in `calls`)
//! (`fw.selftest=chaos`, `kernel.selftest=chaos`); a test of the host, so
//! not part of the runtime they share. It issues `count` random operations
//! from a seed: accepts inside a window of pending RAM (4 KiB and 2 MiB,
//! aligned or not), malformed accepts (reserved bits, bad levels, the
//! shared bit, bits above GPAW, the MMIO hole, beyond RAM, random words),
//! other TDCALL leaves (known, unknown, with version or reserved RAX bits),
//! GHCI VMCALLs that do not end the TD, and port I/O to unassigned ports,
//! both through GHCI and directly; MapGPA conversions of window ranges to
//! shared and back, and pages the host removes at the guest's request
//! (the `REMOVE_PAGE` hook), later accepted again. Every answer is checked
//! against `models::accept` (which knows shared, removed and re-accepted
//! pages) and the TDX/GHCI rules;
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

mod accepts;
mod calls;
mod conversions;

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
    /// MapGPA conversions of window ranges (to shared or private).
    pub conversions: u64,
    /// Pages the host removed at this run's request.
    pub removals: u64,
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
        conversions: 0,
        removals: 0,
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
        self.conversions += o.conversions;
        self.removals += o.removals;
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
    /// Held by an operation no accept may race (a conversion, a removal,
    /// a read of the chunk's pages).
    exclusive: bool,
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
                exclusive: false,
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
            0..38 => self.accept_in_window(),
            38..55 => self.accept_invalid(),
            55..64 => self.other_leaf(),
            64..73 => self.ghci(),
            73..82 => self.port_io(),
            82..90 => self.check_memory(),
            90..96 => self.convert(),
            _ => self.remove_page(),
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
    println!(
        "chaos: {} MapGPA conversions, {} pages removed by the host, {} removed pages accepted again",
        out.conversions,
        out.removals,
        model.reaccepted_pages()
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
