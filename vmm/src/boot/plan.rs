//! Initial memory: where the firmware, the TD HOB, the GDT, the identity-map
//! page tables, the payload and the firmware's scratch memory go, and the
//! bytes of the GDT and page tables. All of it is accepted by construction,
//! like pages added with `TDH.MEM.PAGE.ADD`. It starts at GPA 0 (the low
//! 1 MiB below the firmware is zeroed, accepted and reserved, as Linux
//! reserves it) and ends on a 2 MiB boundary whatever the page tables'
//! size, so no 2 MiB unit is part initial, part pending.

use crate::memory::layout::RamLayout;
use abi::layout::{selector, FIRMWARE_BASE, FIRMWARE_MAX_SIZE, FOUR_GIB};
use abi::pte::{HUGE, TABLE};
use abi::{GIB, PAGE_4K};
use thiserror::Error;

/// Firmware scratch memory handed over in the PHIT's free range.
pub const FW_SCRATCH_BYTES: u64 = 1 << 20;

/// Why initial memory could not be laid out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BootError {
    #[error("initial memory needs RAM up to {need:#x} but low RAM ends at {have:#x}; give the guest more memory")]
    DoesNotFit { need: u64, have: u64 },
}

/// Where each piece of initial memory lives (GPAs; all 4 KiB aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// `[start, end)` of initial memory.
    pub initial: (u64, u64),
    pub hob: u64,
    pub hob_len: u64,
    pub gdt: u64,
    pub tss: u64,
    pub page_tables: u64,
    pub page_table_pages: u64,
    pub map_leaf: MapLeaf,
    /// Firmware scratch `(gpa, len)`.
    pub scratch: (u64, u64),
    /// Payload `(gpa, len)`, `(0, 0)` without one.
    pub payload: (u64, u64),
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Leaf size of the identity map. 1 GiB leaves (where the CPU offers
/// them, CPUID.80000001H:EDX.Page1GB) need no page directories: 64 TiB
/// takes 129 pages of tables instead of 65,665 (256 MiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapLeaf {
    Gib1,
    Mib2,
}

/// Number of page-table pages for an identity map of `[0, top)`: one PML4,
/// one PDPT per 512 GiB, and with 2 MiB leaves one PD per GiB below
/// 4 GiB. The GiBs above are left for the guest to map when it first
/// needs them (`guest_rt::paging`): a PD per GiB of a 64 TiB TD would be
/// 256 MiB of initial memory, almost all of it for parked memory.
pub fn page_table_pages(layout: &RamLayout, leaf: MapLeaf) -> u64 {
    let gibs = map_top(layout) / GIB;
    1 + gibs.div_ceil(512) + mapped_pds(gibs, leaf)
}

/// PDs the host builds: one per GiB below 4 GiB with 2 MiB leaves.
fn mapped_pds(gibs: u64, leaf: MapLeaf) -> u64 {
    match leaf {
        MapLeaf::Mib2 => gibs.min(FOUR_GIB / GIB),
        MapLeaf::Gib1 => 0,
    }
}

/// Top of the identity map: all RAM and the MMIO hole, rounded up to 1 GiB.
fn map_top(layout: &RamLayout) -> u64 {
    align_up(layout.ram_top().max(abi::layout::FOUR_GIB), GIB)
}

impl BootPlan {
    /// Lays out initial memory after a firmware that occupies
    /// `[fw_start, fw_end)` (checked by the caller to lie in the firmware
    /// window), for a HOB of `hob_len` bytes and a payload of `payload_len`.
    pub fn new(
        layout: &RamLayout,
        fw_start: u64,
        fw_end: u64,
        hob_len: u64,
        payload_len: u64,
        leaf: MapLeaf,
    ) -> Result<Self, BootError> {
        debug_assert!(fw_start >= FIRMWARE_BASE && fw_end <= FIRMWARE_BASE + FIRMWARE_MAX_SIZE);
        // The 2 MiB unit that holds the firmware starts at 0: leaving the
        // 1 MiB below the firmware pending would make the kernel accept it
        // as 256 single 4 KiB pages (what Linux's EFI stub does with a part
        // unit), and nothing there is worth that.
        let start = 0;
        let mut cursor = align_up(fw_end, PAGE_4K);
        let mut take = |len: u64| {
            let at = cursor;
            cursor += align_up(len, PAGE_4K);
            at
        };
        let hob = take(hob_len);
        let gdt = take(PAGE_4K);
        // kvm_pvm runs a ring-3 guest natively only while CR3 has bit 12
        // set (the odd page of a PTI kernel/user pair); with an even PML4
        // every instruction is emulated, ~40,000x slower. Skip a page if
        // needed so the PML4 is on an odd page.
        let pad = take(0);
        if (pad / PAGE_4K).is_multiple_of(2) {
            take(PAGE_4K);
        }
        let pt_pages = page_table_pages(layout, leaf);
        let page_tables = take(pt_pages * PAGE_4K);
        let payload = if payload_len > 0 {
            take(payload_len)
        } else {
            0
        };
        // Initial memory ends on a 2 MiB boundary: no 2 MiB unit is part
        // initial, part pending (the kernel would accept the rest of it
        // page by page, and how much depends on the page tables' size).
        // The firmware's scratch memory, at least 1 MiB, runs to that
        // boundary, so the padding is free memory the firmware hands on,
        // not a reserved hole the kernel replaces with an accept.
        let scratch = cursor;
        let end = align_up(cursor + FW_SCRATCH_BYTES, abi::PAGE_2M);
        if end > layout.low().end() {
            return Err(BootError::DoesNotFit {
                need: end,
                have: layout.low().end(),
            });
        }
        Ok(BootPlan {
            initial: (start, end),
            hob,
            hob_len,
            gdt,
            tss: gdt + PAGE_4K / 2,
            page_tables,
            page_table_pages: pt_pages,
            map_leaf: leaf,
            scratch: (scratch, end - scratch),
            payload: (payload, payload_len),
        })
    }

    /// Bytes of initial memory.
    pub fn initial_len(&self) -> u64 {
        self.initial.1 - self.initial.0
    }
}

/// The GDT: null, ring-0 code64 and data at the standard selectors, ring-3
/// data and code64 at the selectors the pvm-native profile uses.
pub fn gdt_bytes() -> Vec<u8> {
    let mut gdt = [0u64; 8];
    gdt[(selector::CODE64_RING0 >> 3) as usize] = 0x00af_9b00_0000_ffff;
    gdt[(selector::DATA_RING0 >> 3) as usize] = 0x00cf_9300_0000_ffff;
    gdt[(selector::DATA_RING3 >> 3) as usize] = 0x00cf_f300_0000_ffff;
    gdt[(selector::CODE64_RING3 >> 3) as usize] = 0x00af_fb00_0000_ffff;
    gdt.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Page `index` of the identity map of `[0, map_top)` placed at `base`:
/// the PML4 (index 0), then the PDPTs, then (2 MiB leaves) the PDs below
/// 4 GiB. Built
/// one page at a time, so the tables are written straight into guest
/// memory and never held whole on the host.
pub fn page_table_page(layout: &RamLayout, base: u64, leaf: MapLeaf, index: u64) -> [u64; 512] {
    let gibs = map_top(layout) / GIB;
    let pdpts = gibs.div_ceil(512);
    let pdpt_base = base + PAGE_4K;
    let pd_base = pdpt_base + pdpts * PAGE_4K;
    let mut t = [0u64; 512];
    if index == 0 {
        for (i, e) in t.iter_mut().enumerate().take(pdpts as usize) {
            *e = (pdpt_base + i as u64 * PAGE_4K) | TABLE;
        }
    } else if index <= pdpts {
        let first_gib = (index - 1) * 512;
        for (i, e) in t.iter_mut().enumerate() {
            let g = first_gib + i as u64;
            if g >= gibs {
                break;
            }
            *e = match leaf {
                MapLeaf::Gib1 => (g * GIB) | TABLE | HUGE,
                MapLeaf::Mib2 if g < mapped_pds(gibs, leaf) => (pd_base + g * PAGE_4K) | TABLE,
                // Not present: the guest maps it when it needs it.
                MapLeaf::Mib2 => 0,
            };
        }
    } else {
        let g = index - 1 - pdpts;
        for (i, e) in t.iter_mut().enumerate() {
            *e = (g * GIB + ((i as u64) << 21)) | TABLE | HUGE;
        }
    }
    t
}

/// The whole identity map as bytes (for tests and small guests).
// The identity map as one buffer: the unit tests compare it page by page.
#[cfg_attr(not(test), allow(dead_code))]
pub fn page_table_bytes(layout: &RamLayout, base: u64, leaf: MapLeaf) -> Vec<u8> {
    (0..page_table_pages(layout, leaf))
        .flat_map(|i| page_table_page(layout, base, leaf, i))
        .flat_map(u64::to_le_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn gib_leaves_need_no_directories() {
        // 64 TiB of RAM plus the 1 GiB MMIO hole below 4 GiB: 65,537 GiB.
        let layout = crate::memory::layout::checked(64 << 40, 48).unwrap();
        assert_eq!(page_table_pages(&layout, MapLeaf::Gib1), 1 + 129);
        assert_eq!(page_table_pages(&layout, MapLeaf::Mib2), 1 + 129 + 4);
        let layout = crate::memory::layout::checked(600 * GIB, 48).unwrap();
        let base = 0x40_0000;
        let bytes = page_table_bytes(&layout, base, MapLeaf::Gib1);
        for va in [
            0u64,
            0x1234_5000,
            3 * GIB + 0x20_0000,
            513 * GIB + 0x60_0000,
            601 * GIB - 1,
        ] {
            let pml4e = entry(&bytes, ((va >> 39) & 511) as usize);
            assert_eq!(pml4e & 7, 7, "U/S, RW, P at PML4");
            let pdpt = abi::to_usize((pml4e & !0xfff) - base) / 8;
            let pdpte = entry(&bytes, pdpt + ((va >> 30) & 511) as usize);
            assert_eq!(pdpte & 0x87, 0x87, "1 GiB leaf with U/S");
            assert_eq!((pdpte & !(GIB - 1)) | (va & (GIB - 1)), va);
        }
        // Nothing is mapped past the top.
        assert_eq!(entry(&bytes, 512 + 512 + 89), 0);
    }

    #[test]
    fn identity_map_translates_below_4_gib_and_leaves_the_rest_to_the_guest() {
        let layout = crate::memory::layout::checked(600 * GIB, 48).unwrap();
        let base = 0x40_0000;
        let bytes = page_table_bytes(&layout, base, MapLeaf::Mib2);
        assert_eq!(
            bytes.len() as u64,
            page_table_pages(&layout, MapLeaf::Mib2) * PAGE_4K
        );
        let pdpte_of = |va: u64| {
            let pml4e = entry(&bytes, ((va >> 39) & 511) as usize);
            assert_eq!(pml4e & 7, 7, "U/S, RW, P at PML4 for {va:#x}");
            let pdpt = abi::to_usize((pml4e & !0xfff) - base) / 8;
            entry(&bytes, pdpt + ((va >> 30) & 511) as usize)
        };
        for va in [0u64, 0x1234_5000, 3 * GIB + 0x20_0000, 4 * GIB - 1] {
            let pdpte = pdpte_of(va);
            assert_eq!(pdpte & 7, 7);
            let pd = abi::to_usize((pdpte & !0xfff) - base) / 8;
            let pde = entry(&bytes, pd + ((va >> 21) & 511) as usize);
            assert_eq!(pde & 0x87, 0x87, "2 MiB leaf with U/S");
            assert_eq!((pde & !0x1f_ffff) | (va & 0x1f_ffff), va);
        }
        // Above 4 GiB, including past 512 GiB (second PDPT): a PDPT
        // exists, its entry is not present.
        for va in [4 * GIB, 513 * GIB + 0x60_0000, 600 * GIB + GIB - 1] {
            assert_eq!(pdpte_of(va), 0, "{va:#x}");
        }
    }

    #[test]
    fn plan_is_contiguous_and_checked() {
        let layout = crate::memory::layout::checked(4 * GIB, 48).unwrap();
        let p = BootPlan::new(
            &layout,
            FIRMWARE_BASE,
            FIRMWARE_BASE + 0x1_2345,
            0x300,
            0x5000,
            MapLeaf::Mib2,
        )
        .unwrap();
        assert_eq!(
            p.initial.0, 0,
            "the firmware's 2 MiB unit is initial from 0"
        );
        assert_eq!(p.hob, FIRMWARE_BASE + 0x1_3000);
        assert!(p.gdt > p.hob && p.page_tables > p.gdt && p.payload.0 > p.page_tables);
        assert_eq!(
            p.page_tables & PAGE_4K,
            PAGE_4K,
            "PML4 on an odd page (CR3 bit 12)"
        );
        for fw_end in [
            FIRMWARE_BASE + 0x1000,
            FIRMWARE_BASE + 0x2000,
            FIRMWARE_BASE + 0x3000,
        ] {
            let p = BootPlan::new(&layout, FIRMWARE_BASE, fw_end, 0x300, 0, MapLeaf::Gib1).unwrap();
            assert_eq!(p.page_tables & PAGE_4K, PAGE_4K);
        }
        // The firmware's scratch (at least 1 MiB) follows the payload and
        // initial memory ends with it, on a 2 MiB boundary: no 2 MiB unit
        // is part initial, part pending.
        let payload_end = p.payload.0 + 0x5000;
        assert_eq!(p.scratch.0, payload_end);
        assert!(p.scratch.1 >= FW_SCRATCH_BYTES);
        assert_eq!(p.initial.1, p.scratch.0 + p.scratch.1);
        assert_eq!(
            p.initial.1,
            (payload_end + FW_SCRATCH_BYTES).next_multiple_of(abi::PAGE_2M)
        );
        for leaf in [MapLeaf::Mib2, MapLeaf::Gib1] {
            for gib in [1, 4, 64, 1024] {
                let l = crate::memory::layout::checked(gib * GIB, 48).unwrap();
                let q = BootPlan::new(&l, FIRMWARE_BASE, FIRMWARE_BASE + 0x8000, 0x300, 0, leaf)
                    .unwrap();
                assert_eq!(q.initial.1 % abi::PAGE_2M, 0, "{gib} GiB {leaf:?}");
            }
        }
        let small = crate::memory::layout::checked(64 << 20, 48).unwrap();
        assert!(matches!(
            BootPlan::new(
                &small,
                FIRMWARE_BASE,
                FIRMWARE_BASE + 0x1000,
                0x300,
                80 << 20,
                MapLeaf::Mib2
            ),
            Err(BootError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn gdt_has_both_profiles() {
        let g = gdt_bytes();
        assert_eq!(entry(&g, 1), 0x00af_9b00_0000_ffff);
        assert_eq!(entry(&g, 6) >> 45 & 3, 3, "ring-3 code DPL");
    }
}
