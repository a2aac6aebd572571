//! The guest's page tables as they stand at the end of the run
//! (`host.guest_page_table_bytes`): every table page reachable from a
//! vCPU's CR3, found by walking them in guest memory. The guest's own
//! count is not taken on trust; only accepted pages are read.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::PrivateMemory;
use abi::pte::{ADDR, HUGE, PRESENT};
use std::collections::HashSet;

/// Most table pages walked: a 64 TiB map with 2 MiB leaves has 65,665;
/// a guest's tables beyond this (512 MiB of them) are not all counted,
/// and the walk stays bounded whatever the guest built.
const MAX_TABLES: usize = 1 << 17;

/// Bytes of the 4-level page tables rooted at `root` (a PML4's GPA):
/// table pages counted once each, whatever points at them. Pages that are
/// not accepted RAM are neither read nor counted.
pub fn table_bytes<B: SlotBackend>(memory: &PrivateMemory<B>, root: u64) -> u64 {
    let mut seen = HashSet::new();
    let mut todo = vec![(root & ADDR, 4u32)];
    let mut page = [0u8; 4096];
    while let Some((table, level)) = todo.pop() {
        if seen.len() >= MAX_TABLES || !seen.insert(table) {
            continue;
        }
        if !memory.read_accepted(table, &mut page) {
            seen.remove(&table);
            continue;
        }
        if level == 1 {
            continue;
        }
        for e in page.chunks_exact(8) {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            // A PML4 entry has no page-size bit; below it a set one is a leaf.
            if e & PRESENT != 0 && (level == 4 || e & HUGE == 0) {
                todo.push((e & ADDR, level - 1));
            }
        }
    }
    seen.len() as u64 * 4096
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::plan::{page_table_bytes, page_table_pages, MapLeaf};
    use crate::memory::guest_ram::Backing;
    use crate::memory::layout::checked;
    use crate::memory::memslots::NoKvm;

    #[test]
    fn counts_the_hosts_map_and_what_the_guest_added_once() {
        let layout = checked(8 << 30, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, Backing::Populate, 64).unwrap();
        let layout = *m.layout();
        let base = 0x40_1000;
        let pages = page_table_pages(&layout, MapLeaf::Mib2);
        m.add_initial(0x40_0000, 0x20_0000).unwrap();
        m.write(
            "tables",
            base,
            &page_table_bytes(&layout, base, MapLeaf::Mib2),
        )
        .unwrap();
        assert_eq!(table_bytes(&m, base), pages * 4096);
        // The guest maps GiB 5 with a directory of its own, and points GiB
        // 6 at the same directory: one more page.
        let pd = 0x50_0000u64;
        let mut dir = vec![0u8; 4096];
        for i in 0..512u64 {
            let leaf = ((5u64 << 30) + (i << 21)) | 0x87;
            dir[abi::to_usize(i * 8)..abi::to_usize(i * 8 + 8)]
                .copy_from_slice(&leaf.to_le_bytes());
        }
        m.write("pd", pd, &dir).unwrap();
        let pdpt = base + 4096;
        m.write("pdpte", pdpt + 5 * 8, &(pd | 7).to_le_bytes())
            .unwrap();
        m.write("pdpte", pdpt + 6 * 8, &(pd | 7).to_le_bytes())
            .unwrap();
        assert_eq!(table_bytes(&m, base), (pages + 1) * 4096);
        // A pointer to pending memory or past RAM is not followed.
        m.write("pdpte", pdpt + 7 * 8, &((7u64 << 30) | 7).to_le_bytes())
            .unwrap();
        m.write("pdpte", pdpt + 8 * 8, &((1u64 << 45) | 7).to_le_bytes())
            .unwrap();
        assert_eq!(table_bytes(&m, base), (pages + 1) * 4096);
    }
}
