//! `kernel.selftest=chaos seed=S count=N`: the hostile-guest workload of
//! `guest_chaos` run by the kernel, in a window of parked (pending)
//! blocks taken from its allocator. Afterwards the window is accepted in
//! full, its bitmap bits cleared and its blocks freed, so the rest of the
//! boot and the host's bitmap cross-check see a consistent TD. With
//! several CPUs online all of them fire into the one window at once.

use crate::stub::MAP;
use crate::{cpu, mm, smp, unaccepted};
use abi::layout::RamLayout;
use abi::layout::MMIO_HOLE_START;
use abi::report::Counter;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_mm::buddy::{BLOCK, MAX_ORDER};
use guest_rt::fatal::code;
use guest_rt::spin::SpinLock;
use guest_rt::{fatal, println, tdcall};
use models::accept::Model;

/// Blocks (4 MiB each) the window takes at most.
const WINDOW_BLOCKS: u64 = 8;

/// The RAM layout from the memory map and TDG.VP.INFO.
fn layout() -> RamLayout {
    let gpaw = (tdcall::vp_info().rcx & abi::tdcall::vp_info::GPAW_MASK) as u32;
    let (mut low_end, mut high_end) = (0, 0);
    MAP.with(|m| {
        for d in &m.descs[..m.len] {
            if d.end() <= MMIO_HOLE_START {
                low_end = low_end.max(d.end());
            } else {
                high_end = high_end.max(d.end());
            }
        }
    });
    RamLayout {
        low_end,
        high_end,
        gpaw,
    }
}

static CHAOS: guest_chaos::Chaos = guest_chaos::Chaos::new();
static SEED: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);
static TOTAL: SpinLock<guest_chaos::Outcome> = SpinLock::new(guest_chaos::Outcome::ZERO);

/// Runs the chaos workload on every online CPU; returns the number of
/// disagreements.
pub fn run(seed: u64, count: u64) -> u64 {
    // A contiguous run of parked blocks whose memory is entirely pending,
    // from the top. (A parked block may hold accepted units too: those are
    // skipped and parked again.)
    let fully_pending = |b: u64| unaccepted::unaccepted_prefix(b, b + BLOCK) == b + BLOCK;
    let mut skipped = [0u64; 16];
    let mut n_skipped = 0;
    let mut window: Option<(u64, u64)> = None;
    while let Some(b) = mm::take_parked_top() {
        match window {
            Some((lo, top)) if b + BLOCK == lo && fully_pending(b) => {
                window = Some((b, top));
                if top + BLOCK - b >= WINDOW_BLOCKS * BLOCK {
                    break;
                }
            }
            Some(_) => {
                mm::park(b);
                break;
            }
            None if fully_pending(b) => window = Some((b, b)),
            None if n_skipped < skipped.len() => {
                skipped[n_skipped] = b;
                n_skipped += 1;
            }
            None => {
                mm::park(b);
                break;
            }
        }
    }
    for &b in &skipped[..n_skipped] {
        mm::park(b);
    }
    let Some((lo, top)) = window else {
        fatal!(
            code::BAD_CMDLINE,
            "kernel.selftest=chaos needs a parked block of pending memory: use accept_memory=lazy and more RAM"
        );
    };
    let hi = top + BLOCK;
    let Some(model) = Model::with_sept_level(layout(), lo, hi - lo, tdcall::sept_level()) else {
        fatal!(
            code::PANIC,
            "chaos window {lo:#x}..{hi:#x} does not fit the model"
        );
    };
    // Every online CPU fires into the one window; CPU 0 keeps the seed
    // (a one-CPU run is the same as before), the others derive theirs.
    let cpus = cpu::online();
    CHAOS.start(model, cpus);
    SEED.store(seed, Ordering::Relaxed);
    COUNT.store(count, Ordering::Relaxed);
    smp::run_on_all(|cpu| {
        let n = cpu::online() as u64;
        let count = COUNT.load(Ordering::Relaxed);
        let mine = count / n + u64::from(cpu == 0) * (count % n);
        let seed = SEED.load(Ordering::Relaxed) ^ (cpu as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let out = CHAOS.run(cpu, seed, mine);
        TOTAL.with(|t| t.add(&out));
    });
    let out = TOTAL.with(core::mem::take);
    let Some(mut model) = CHAOS.end() else {
        fatal!(code::PANIC, "chaos: the run lost its model");
    };
    guest_chaos::summary(&out, &model);
    if cpus > 1 {
        println!(
            "kernel: chaos on {cpus} CPUs: {} accepts raced another CPU's, {} BUSY answers",
            out.raced, out.busy_seen
        );
    }
    if !guest_chaos::finish(&mut model) {
        fatal!(
            code::ACCEPT_FAILED,
            "chaos: could not accept the rest of the window"
        );
    }
    unaccepted::mark_accepted(lo, hi - lo);
    let mut b = lo;
    while b < hi {
        mm::free(b, MAX_ORDER);
        b += BLOCK;
    }
    println!("kernel: chaos window {lo:#x}..{hi:#x} accepted and returned to the allocator");
    tdcall::counter(Counter::ChaosOps, out.ops);
    tdcall::counter(Counter::ChaosDisagreements, out.disagreements);
    tdcall::counter(Counter::ChaosUnassignedIo, out.unassigned_io);
    tdcall::counter(Counter::ChaosRaced, out.raced);
    tdcall::counter(Counter::ChaosBusy, out.busy_seen);
    tdcall::counter(Counter::ChaosConversions, out.conversions);
    tdcall::counter(Counter::ChaosRemovals, out.removals);
    tdcall::counter(Counter::ChaosReaccepted, model.reaccepted_pages());
    out.disagreements
}
