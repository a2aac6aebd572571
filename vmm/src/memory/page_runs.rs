//! Runs of accepted pages in the page-state table, found whole chunks at a
//! time where the table allows: the run around a touched page (first-touch
//! mapping), every run in a range (invariant checks), and the accepted
//! GPA ranges a report lists.

use abi::layout::RamLayout;

use crate::memory::page_state::{
    bit, PageState, PageStateTable, MAPPED_2M, PAGES_PER_CHUNK, PENDING, SPLIT_BASE,
};

impl PageStateTable {
    /// The run of accepted pages around accepted `page`, clipped to
    /// `[lo, hi)`: scans outwards, whole chunks at a time where it can.
    pub fn accepted_run_around(&self, page: u64, lo: u64, hi: u64) -> (u64, u64) {
        let whole = |chunk: u64| self.chunks[abi::to_usize(chunk)] == MAPPED_2M;
        let mut s = page;
        while s > lo {
            let p = s - 1;
            if p % PAGES_PER_CHUNK == PAGES_PER_CHUNK - 1 && whole(p / PAGES_PER_CHUNK) {
                s = (p + 1 - PAGES_PER_CHUNK).max(lo);
            } else if self.state(p) == PageState::Accepted {
                s = p;
            } else {
                break;
            }
        }
        let mut e = page + 1;
        while e < hi {
            if e.is_multiple_of(PAGES_PER_CHUNK) && whole(e / PAGES_PER_CHUNK) {
                e = (e + PAGES_PER_CHUNK).min(hi);
            } else if self.state(e) == PageState::Accepted {
                e += 1;
            } else {
                break;
            }
        }
        (s, e)
    }

    /// Calls `f(first_page, page_count)` for each maximal run of accepted
    /// pages inside `[from, to)`, in ascending order.
    pub fn for_each_accepted_run(&self, from: u64, to: u64, mut f: impl FnMut(u64, u64)) {
        let to = to.min(self.pages);
        let mut run_start: Option<u64> = None;
        let mut page = from;
        while page < to {
            let chunk = page / PAGES_PER_CHUNK;
            let chunk_end = ((chunk + 1) * PAGES_PER_CHUNK).min(to);
            let state = self.chunks[chunk as usize];
            if state == PENDING || state == MAPPED_2M {
                // The whole rest of the chunk shares one state.
                match (state == MAPPED_2M, run_start) {
                    (true, None) => run_start = Some(page),
                    (false, Some(start)) => {
                        f(start, page - start);
                        run_start = None;
                    }
                    _ => {}
                }
                page = chunk_end;
                continue;
            }
            let map = &self.bitmaps[(state - SPLIT_BASE) as usize];
            while page < chunk_end {
                match (bit(map, page % PAGES_PER_CHUNK), run_start) {
                    (true, None) => run_start = Some(page),
                    (false, Some(start)) => {
                        f(start, page - start);
                        run_start = None;
                    }
                    _ => {}
                }
                page += 1;
            }
        }
        if let Some(start) = run_start {
            f(start, to - start);
        }
    }

    /// The accepted RAM as coalesced `[start, end)` GPA ranges in ascending
    /// order, a run that spans the MMIO hole split at it; at most `max`
    /// ranges, with the count of those left out.
    pub fn accepted_gpa_ranges(&self, layout: &RamLayout, max: usize) -> (Vec<[u64; 2]>, u64) {
        let mut ranges = Vec::new();
        let mut left_out = 0u64;
        let mut push = |start: u64, end: u64| {
            if ranges.len() < max {
                ranges.push([start, end]);
            } else {
                left_out += 1;
            }
        };
        self.for_each_accepted_run(0, self.pages, |first, count| {
            let (from, to) = (first * abi::PAGE_4K, (first + count) * abi::PAGE_4K);
            for region in layout.regions() {
                let (lo, hi) = (from.max(region.offset), to.min(region.offset + region.size));
                if lo < hi {
                    let gpa = region.gpa + (lo - region.offset);
                    push(gpa, gpa + (hi - lo));
                }
            }
        });
        (ranges, left_out)
    }
}
