//! Accepting memory the TDVF way: a head of 4 KiB pages up to a 2 MiB
//! boundary, 2 MiB pages in the middle, a 4 KiB tail; ALREADY_ACCEPTED is
//! counted and skipped, SIZE_MISMATCH retried as 512 4 KiB pages, anything
//! else is fatal. Each newly accepted page is checked to read as zero once
//! the whole range (or the vCPU's share) is accepted: touching a page right
//! after its accept would make the host map every page on its own (a
//! memslot change each) instead of the accepted run at once.
//! With several vCPUs, each accepts its share of a range (`accept_share`,
//! driven by `mp::accept_range`).

use abi::tdcall::{status, PageLevel};
use abi::{PAGE_2M, PAGE_4K};
use guest_rt::fatal::code;
use guest_rt::tdcall::accept_page;

/// Chunk of the parallel accept: edk2's `ACCEPT_CHUNK_SIZE` (`SIZE_32MB`,
/// OvmfPkg/IntelTdx/TdxHelperLib/SecTdxHelper.c; td-shim's
/// `ACCEPT_CHUNK_SIZE` in td-shim/src/bin/td-shim/td/tdx_mailbox.rs is
/// 0x2000000 too). A multiple of 2 MiB, so every chunk but the last is
/// whole 2 MiB pages.
pub const ACCEPT_CHUNK: u64 = 32 << 20;
const _: () = assert!(ACCEPT_CHUNK.is_multiple_of(PAGE_2M));

/// What the firmware's accepts did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub calls: u64,
    pub ok_2m: u64,
    pub ok_4k: u64,
    pub already: u64,
    pub mismatch: u64,
    pub bytes: u64,
}

fn check_zero(gpa: u64, len: u64) {
    for at in [gpa, gpa + len - 8] {
        // SAFETY: the page was just accepted (so it is mapped) and the
        // identity map makes `at` a valid address; a volatile read keeps
        // the check from being optimised away.
        let v = unsafe { core::ptr::read_volatile(at as *const u64) };
        if v != 0 {
            guest_rt::fatal!(
                code::NOT_ZERO,
                "accepted memory at {at:#x} reads {v:#x}, not zero"
            );
        }
    }
}

/// Pages accepted by this call and not yet checked to read zero: runs of
/// pages of one size.
struct Fresh {
    runs: [(u64, u64, u64); 64],
    len: usize,
}

impl Fresh {
    const fn new() -> Self {
        Fresh {
            runs: [(0, 0, 0); 64],
            len: 0,
        }
    }

    /// Records `[gpa, gpa + len)`, accepted in pages of `size`.
    fn push(&mut self, gpa: u64, len: u64, size: u64) {
        if let Some(last) = self.runs[..self.len].last_mut() {
            if last.1 == gpa && last.2 == size {
                last.1 += len;
                return;
            }
        }
        if self.len == self.runs.len() {
            self.check();
        }
        self.runs[self.len] = (gpa, gpa + len, size);
        self.len += 1;
    }

    /// Checks every recorded page (its first and last word) and forgets it.
    fn check(&mut self) {
        for &(start, end, size) in &self.runs[..self.len] {
            for page in (start..end).step_by(abi::to_usize(size)) {
                check_zero(page, size);
            }
        }
        self.len = 0;
    }
}

/// Accepts one page at `level`; a 2 MiB page over split 4 KiB state is
/// retried as 512 4 KiB pages.
fn accept(gpa: u64, level: PageLevel, stats: &mut Stats, fresh: &mut Fresh) {
    stats.calls += 1;
    let st = accept_page(gpa, level);
    answered(gpa, level, st, stats, fresh);
}

/// Accepts `[at, end)` in 4 KiB pages: a lean loop while they succeed (the
/// ring-0 profile emulates every guest instruction, so a step's own code
/// costs as much as its exit), the full path for any other answer. The
/// same calls, statuses and statistics as `accept` page by page.
fn accept_4k_run(mut at: u64, end: u64, stats: &mut Stats, fresh: &mut Fresh) {
    while at < end {
        let start = at;
        let mut st = status::SUCCESS;
        while at < end {
            st = guest_rt::tdcall::accept_lean(abi::tdcall::accept::encode(at, PageLevel::L4K));
            if st != status::SUCCESS {
                break;
            }
            at += PAGE_4K;
        }
        let n = (at - start) / PAGE_4K;
        if n > 0 {
            stats.calls += n;
            stats.ok_4k += n;
            stats.bytes += n * PAGE_4K;
            fresh.push(start, n * PAGE_4K, PAGE_4K);
        }
        if at < end {
            stats.calls += 1;
            let rcx = abi::tdcall::accept::encode(at, PageLevel::L4K);
            let st = guest_rt::tdcall::finish_accept(rcx, st);
            answered(at, PageLevel::L4K, st, stats, fresh);
            at += PAGE_4K;
        }
    }
}

/// What an accept of `gpa` at `level` that answered `st` does.
fn answered(gpa: u64, level: PageLevel, st: u64, stats: &mut Stats, fresh: &mut Fresh) {
    match status::code(st) {
        status::SUCCESS => {
            match level {
                PageLevel::L2M => stats.ok_2m += 1,
                _ => stats.ok_4k += 1,
            }
            stats.bytes += level.size();
            fresh.push(gpa, level.size(), level.size());
        }
        status::PAGE_ALREADY_ACCEPTED => stats.already += 1,
        status::PAGE_SIZE_MISMATCH if level == PageLevel::L2M => {
            stats.mismatch += 1;
            accept_4k_run(gpa, gpa + PAGE_2M, stats, fresh);
        }
        _ => guest_rt::fatal!(
            code::ACCEPT_FAILED,
            "{} accept at {gpa:#x} failed: {st:#x} ({})",
            level.name(),
            status::name(st)
        ),
    }
}

/// Accepts `[start, end)` (4 KiB aligned).
pub fn accept_range(start: u64, end: u64, stats: &mut Stats) {
    accept_range_with(start, end, true, stats)
}

/// Accepts `[start, end)`, in 4 KiB pages only unless `use_2m`.
pub fn accept_range_with(start: u64, end: u64, use_2m: bool, stats: &mut Stats) {
    let mut fresh = Fresh::new();
    accept_pages(start, end, use_2m, stats, &mut fresh);
    fresh.check();
}

fn accept_pages(start: u64, end: u64, use_2m: bool, stats: &mut Stats, fresh: &mut Fresh) {
    if !use_2m {
        return accept_4k_run(start, end, stats, fresh);
    }
    let mut at = start;
    while at < end {
        if at.is_multiple_of(PAGE_2M) && end - at >= PAGE_2M {
            accept(at, PageLevel::L2M, stats, fresh);
            at += PAGE_2M;
        } else {
            // The head or the tail: 4 KiB pages up to the next boundary.
            let next = ((at / PAGE_2M + 1) * PAGE_2M).min(end);
            accept_4k_run(at, next, stats, fresh);
            at = next;
        }
    }
}

/// CPU `index`'s share of `[start, end)` (`start` 2 MiB aligned) when
/// `cpus` vCPUs accept it together: the chunks of `ACCEPT_CHUNK` bytes at
/// `start + (index + k * cpus) * ACCEPT_CHUNK`, each accepted as
/// `accept_range_with` would (so the union of all shares leaves the same
/// page states, at the same levels, as one serial call).
pub fn accept_share(index: u64, cpus: u64, start: u64, end: u64, use_2m: bool, stats: &mut Stats) {
    let stride = cpus * ACCEPT_CHUNK;
    let mut at = start + index * ACCEPT_CHUNK;
    let mut fresh = Fresh::new();
    while at < end {
        accept_pages(at, (at + ACCEPT_CHUNK).min(end), use_2m, stats, &mut fresh);
        at += stride;
    }
    fresh.check();
}
