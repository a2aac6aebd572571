//! Why a vCPU triple-faulted, when the VMM can tell: the one cause it
//! diagnoses by name is a guest whose page tables map 1 GiB pages on a
//! host whose KVM offers no Page1GB (CPUID 0x80000001 EDX bit 26). Such a
//! guest (upstream td-shim maps all memory with 1 GiB leaves and never
//! checks the CPUID bit) faults on its next fetch after loading CR3, and
//! the fault handler's own fetch faults again.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::PrivateMemory;
use abi::pte::{ADDR, HUGE, PRESENT};

const ENTRIES: usize = 512;

/// The GPA of the first present PDPTE that maps a 1 GiB page in the
/// 4-level page tables rooted at `cr3`, reading them through `mem`
/// (accepted memory only: a table the VMM cannot read is skipped).
pub fn first_gib_mapping<B: SlotBackend>(mem: &PrivateMemory<B>, cr3: u64) -> Option<u64> {
    let read_table = |gpa: u64| {
        let mut bytes = [0u8; ENTRIES * 8];
        mem.read_accepted(gpa, &mut bytes).then(|| {
            let mut entries = [0u64; ENTRIES];
            for (e, b) in entries.iter_mut().zip(bytes.chunks_exact(8)) {
                *e = u64::from_le_bytes(b.try_into().unwrap_or_default());
            }
            entries
        })
    };
    let pml4 = read_table(cr3 & ADDR)?;
    pml4.iter().filter(|e| *e & PRESENT != 0).find_map(|e| {
        let pdpt = e & ADDR;
        let entries = read_table(pdpt)?;
        entries
            .iter()
            .position(|pdpte| pdpte & (PRESENT | HUGE) == PRESENT | HUGE)
            .map(|i| pdpt + 8 * i as u64)
    })
}

/// The triple fault's explanation, if it is the 1 GiB-page case: the
/// guest runs with paging (`cr0_pg`) and 4-level tables at `cr3` that map
/// a 1 GiB page, and this host offers none (`gib_pages` false).
pub fn explain<B: SlotBackend>(
    mem: &PrivateMemory<B>,
    cr0_pg: bool,
    cr3: u64,
    gib_pages: bool,
) -> Option<String> {
    if gib_pages || !cr0_pg {
        return None;
    }
    let at = first_gib_mapping(mem, cr3)?;
    Some(format!(
        "the guest maps 1 GiB pages (the page-directory-pointer entry at GPA {at:#x} under CR3 {cr3:#x}) but this host's KVM offers no Page1GB (CPUID 0x80000001 EDX bit 26): run a build of the guest that maps 2 MiB pages, or a host with 1 GiB guest pages"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::guest_ram::Backing;
    use crate::memory::layout::checked;
    use crate::memory::memslots::NoKvm;

    #[test]
    fn a_gib_pdpte_is_found_and_named() {
        let layout = checked(64 << 20, 48).unwrap();
        let mut mem = PrivateMemory::with_backend(NoKvm, layout, Backing::Populate, 64).unwrap();
        mem.add_initial(0x10_0000, 0x3000).unwrap();
        let (pml4, pdpt) = (0x10_0000u64, 0x10_1000u64);
        mem.write("pml4", pml4, &(pdpt | 3).to_le_bytes()).unwrap();
        // PDPTE 2 (the 2nd GiB) maps a 1 GiB page; PDPTE 0 a directory.
        mem.write("pdpt", pdpt, &(0x10_2000u64 | 3).to_le_bytes())
            .unwrap();
        mem.write("pdpt", pdpt + 16, &(0x8000_0000u64 | 0x83).to_le_bytes())
            .unwrap();
        assert_eq!(first_gib_mapping(&mem, pml4 | 0x18), Some(pdpt + 16));
        let why = explain(&mem, true, pml4, false).unwrap();
        assert!(
            why.contains("1 GiB pages") && why.contains("Page1GB"),
            "{why}"
        );
        assert!(why.contains("0x101010"), "{why}");
        // A host with 1 GiB pages, or paging off: not this cause.
        assert_eq!(explain(&mem, true, pml4, true), None);
        assert_eq!(explain(&mem, false, pml4, false), None);
        // Tables without a 1 GiB leaf, or out of reach: no explanation.
        mem.write("pdpt", pdpt + 16, &0u64.to_le_bytes()).unwrap();
        assert_eq!(first_gib_mapping(&mem, pml4), None);
        assert_eq!(first_gib_mapping(&mem, 0x3000_0000), None);
    }
}
