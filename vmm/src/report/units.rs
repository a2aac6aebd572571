//! The 2 MiB unit accounting of initial memory (`pages.units`): which of
//! RAM's 2 MiB units the TD starts with wholly initial, wholly pending, or
//! partly pending, and why each partly pending one is there.

use crate::report::schema::{PartialUnit, UnitAccounting};
use abi::layout::RamLayout;
use abi::PAGE_2M;
use std::collections::BTreeSet;

/// Bytes of `[a, b)` inside `[c, d)`.
fn overlap(a: u64, b: u64, c: u64, d: u64) -> u64 {
    b.min(d).saturating_sub(a.max(c))
}

/// Accounts RAM's 2 MiB units for initial memory `initial` (`(gpa, len)`
/// ranges inside RAM, disjoint; ranges outside RAM are ignored, as they
/// are no RAM unit's business). Works from the ranges' and regions' edges,
/// so it costs nothing per unit at 64 TiB.
pub fn account(layout: &RamLayout, initial: &[(u64, u64)]) -> UnitAccounting {
    let initial: Vec<(u64, u64)> = initial
        .iter()
        .filter(|(gpa, len)| *len > 0 && layout.is_ram(*gpa, *len))
        .map(|&(gpa, len)| (gpa, gpa + len))
        .collect();
    let unit_of = |gpa: u64| gpa & !(PAGE_2M - 1);
    // Units holding an edge that is not 2 MiB aligned are the only ones
    // that can be partly anything.
    let mut edges = BTreeSet::new();
    let regions: Vec<(u64, u64)> = layout.regions().map(|r| (r.gpa, r.end())).collect();
    for &(s, e) in initial.iter().chain(&regions) {
        if !s.is_multiple_of(PAGE_2M) {
            edges.insert(unit_of(s));
        }
        if !e.is_multiple_of(PAGE_2M) {
            edges.insert(unit_of(e - 1));
        }
    }
    let total: u64 = regions
        .iter()
        .map(|&(s, e)| e.div_ceil(PAGE_2M) - s / PAGE_2M)
        .sum();
    let mut out = UnitAccounting::default();
    for &(s, e) in &initial {
        out.initial_units += (e / PAGE_2M).saturating_sub(s.div_ceil(PAGE_2M));
    }
    for unit in edges {
        let end = unit + PAGE_2M;
        let ram: u64 = regions.iter().map(|&(s, e)| overlap(unit, end, s, e)).sum();
        let init: u64 = initial.iter().map(|&(s, e)| overlap(unit, end, s, e)).sum();
        if ram == init {
            out.initial_units += 1;
            continue;
        }
        let why = match (init > 0, ram < PAGE_2M) {
            (_, false) => format!(
                "initial memory holds {init:#x} bytes of it; the other {:#x} are pending",
                ram - init
            ),
            (false, true) => format!("RAM holds only {ram:#x} bytes of it"),
            (true, true) => {
                format!("RAM holds only {ram:#x} bytes of it, initial memory {init:#x} of those")
            }
        };
        out.partial.push(PartialUnit {
            gpa: unit,
            ram_bytes: ram,
            initial_bytes: init,
            why,
        });
    }
    out.pending_units = total - out.initial_units - out.partial.len() as u64;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::GIB;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_initial_range_from_zero_to_a_2_mib_boundary_leaves_no_partial_unit() {
        let layout = RamLayout::for_mem(64 * GIB, 48);
        let a = account(&layout, &[(0, 4 * MIB)]);
        assert_eq!(a.initial_units, 2);
        assert!(a.partial.is_empty(), "{a:?}");
        assert_eq!(a.pending_units, 64 * 512 - 2);
    }

    #[test]
    fn firmware_at_one_mib_leaves_the_low_unit_partial() {
        // The layout before initial memory started at 0: firmware at 1 MiB.
        let layout = RamLayout::for_mem(GIB, 48);
        let a = account(&layout, &[(MIB, 0x31_7000)]);
        assert_eq!(a.partial.len(), 2, "{a:?}");
        assert_eq!((a.partial[0].gpa, a.partial[0].initial_bytes), (0, MIB));
        assert_eq!(a.partial[1].gpa, 4 * MIB);
        assert_eq!(a.partial[1].initial_bytes, 0x41_7000 - 4 * MIB);
        assert_eq!(a.initial_units, 1);
        assert_eq!(a.pending_units, 512 - 3);
        assert!(
            a.partial[0].why.contains("0x100000 bytes"),
            "{}",
            a.partial[0].why
        );
    }

    #[test]
    fn ram_that_ends_inside_a_unit_is_named() {
        let layout = RamLayout::for_mem(65 * MIB, 48);
        let a = account(&layout, &[(0, 4 * MIB)]);
        assert_eq!(a.partial.len(), 1);
        assert_eq!(a.partial[0].gpa, 64 * MIB);
        assert_eq!(a.partial[0].ram_bytes, MIB);
        assert!(a.partial[0].why.starts_with("RAM holds only"));
        assert_eq!(a.pending_units, 30);
    }

    proptest! {
        /// Against a unit-by-unit count on small layouts.
        #[test]
        fn matches_counting_every_unit(
            mem_mib in 4u64..5000,
            ranges in proptest::collection::vec((0u64..3000, 1u64..40), 0..4),
        ) {
            let layout = RamLayout::for_mem(mem_mib * MIB, 48);
            // Disjoint ranges, in 64 KiB steps, inside RAM.
            let mut initial: Vec<(u64, u64)> = Vec::new();
            for (at, len) in ranges {
                let (s, l) = (at * 0x1_0000 * 16, len * 0x1_0000);
                if layout.is_ram(s, l) && initial.iter().all(|&(a, b)| s + l <= a || a + b <= s) {
                    initial.push((s, l));
                }
            }
            let got = account(&layout, &initial);
            let (mut init_units, mut pending_units, mut partial) = (0, 0, Vec::new());
            let top = layout.ram_top();
            for unit in (0..top).step_by(abi::to_usize(PAGE_2M)) {
                let page_in = |p: u64, set: &[(u64, u64)]| set.iter().any(|&(s, l)| p >= s && p < s + l);
                let ram_set: Vec<(u64, u64)> = layout.regions().map(|r| (r.gpa, r.size)).collect();
                let pages: Vec<u64> = (unit..unit + PAGE_2M).step_by(4096).filter(|p| page_in(*p, &ram_set)).collect();
                if pages.is_empty() { continue; }
                let init = pages.iter().filter(|p| page_in(**p, &initial)).count();
                if init == pages.len() { init_units += 1; }
                else if init == 0 && pages.len() == 512 { pending_units += 1; }
                else { partial.push((unit, pages.len() as u64 * 4096, init as u64 * 4096)); }
            }
            prop_assert_eq!(got.initial_units, init_units);
            prop_assert_eq!(got.pending_units, pending_units);
            let got_partial: Vec<_> = got.partial.iter().map(|p| (p.gpa, p.ram_bytes, p.initial_bytes)).collect();
            prop_assert_eq!(got_partial, partial);
        }
    }
}
