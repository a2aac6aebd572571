//! `kernel.selftest=chaos seed=S count=N`: the hostile-guest workload of
//! `guest_rt::chaos` run by the kernel, in a window of parked (pending)
//! blocks taken from its allocator. Afterwards the window is accepted in
//! full, its bitmap bits cleared and its blocks freed, so the rest of the
//! boot and the host's bitmap cross-check see a consistent TD.

use crate::stub::MAP;
use crate::{mm, unaccepted};
use abi::accept_model::{Model, RamLayout};
use abi::layout::MMIO_HOLE_START;
use abi::report::Counter;
use guest_mm::buddy::{BLOCK, MAX_ORDER};
use guest_rt::chaos;
use guest_rt::fatal::code;
use guest_rt::{fatal, println, tdcall};

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

/// Runs the chaos workload; returns the number of disagreements.
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
    let Some(mut model) = Model::new(layout(), lo, hi - lo) else {
        fatal!(
            code::PANIC,
            "chaos window {lo:#x}..{hi:#x} does not fit the model"
        );
    };
    let out = chaos::run(&mut model, seed, count);
    if !chaos::finish(&mut model) {
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
    out.disagreements
}
