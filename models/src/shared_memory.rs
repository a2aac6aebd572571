//! Shared memory in a TD, as Linux converts it: MapGPA's retry rule
//! (`arch/x86/coco/tdx/tdx.c`, `tdx_map_gpa`) and the kexec walk that finds
//! every shared leaf of the kernel's page tables to convert it back
//! (`tdx_kexec_finish`). The guest kernel runs these; the tests hold Linux's
//! functions transcribed and compare on random cases.
//!
//! The walk differs from Linux's in form, not in result: Linux steps an
//! address from the start of the direct map to its end, one
//! `lookup_address` and one leaf at a time; this walks the 4-level tree and
//! skips absent subtrees whole, so a 64 TiB map costs its present entries,
//! not its address span.

use abi::vmcall::vmcall_status;

/// Retries without progress Linux allows (`max_retries_per_page`).
pub const MAP_GPA_RETRIES: u32 = 3;

/// Linux's `tdx_map_gpa`: converts `[start, end)` (GPAs without the shared
/// bit) to shared (`shared_bit` given) or private (`None`) with MapGPA,
/// `call(gpa, len)` being the TDVMCALL that answers `(status, r11)`. A
/// RETRY must name a GPA inside what is left (R11 comes from the untrusted
/// host), and is allowed `MAP_GPA_RETRIES` times without progress.
pub fn map_gpa(
    start: u64,
    end: u64,
    shared_bit: Option<u64>,
    mut call: impl FnMut(u64, u64) -> (u64, u64),
) -> bool {
    let bit = shared_bit.unwrap_or(0);
    let (mut start, end) = (start | bit, end | bit);
    let mut retries = 0;
    while retries < MAP_GPA_RETRIES {
        let (status, resume) = call(start, end - start);
        if status != vmcall_status::RETRY {
            return status == vmcall_status::SUCCESS;
        }
        if resume < start || resume >= end {
            return false;
        }
        if resume == start {
            retries += 1;
        } else {
            start = resume;
            retries = 0;
        }
    }
    false
}

/// Page-table entry bits the walk reads.
pub use abi::pte;

/// A present leaf of the page tables: where it maps, how much, and the
/// physical address of the entry (to rewrite it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub va: u64,
    pub size: u64,
    pub entry_at: u64,
    pub entry: u64,
}

/// The bytes a leaf maps at each level: PML4 entries map 512 GiB (never a
/// leaf), PDPT entries 1 GiB, PD entries 2 MiB, PT entries 4 KiB.
const LEVEL_SIZE: [u64; 4] = [1 << 39, 1 << 30, 1 << 21, 1 << 12];

/// Calls `visit` for every present leaf mapping `[0, end)` under the
/// 4-level table at `root`, in address order; `read(table, index)` reads
/// entry `index` of the table at physical address `table`. Absent entries
/// and the subtrees under them cost nothing more.
pub fn walk_leaves(
    root: u64,
    end: u64,
    read: &mut impl FnMut(u64, u64) -> u64,
    visit: &mut impl FnMut(Leaf),
) {
    walk(root, 0, 0, end, read, visit);
}

fn walk(
    table: u64,
    level: usize,
    base: u64,
    end: u64,
    read: &mut impl FnMut(u64, u64) -> u64,
    visit: &mut impl FnMut(Leaf),
) {
    let size = LEVEL_SIZE[level];
    for index in 0..512u64 {
        let va = base + index * size;
        if va >= end {
            return;
        }
        let entry = read(table, index);
        if entry & pte::PRESENT == 0 {
            continue;
        }
        let leaf = level == 3 || (level > 0 && entry & pte::HUGE != 0);
        if leaf {
            visit(Leaf {
                va,
                size,
                entry_at: table + index * 8,
                entry,
            });
        } else {
            walk(entry & pte::ADDR, level + 1, va, end, read, visit);
        }
    }
}

/// True when the leaf maps its memory shared (the shared bit set in its
/// address: Linux's `pte_decrypted`).
pub fn is_shared(entry: u64, shared_bit: u64) -> bool {
    entry & shared_bit != 0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Linux v6.12, arch/x86/coco/tdx/tdx.c, `tdx_map_gpa`, transcribed:
    /// the reference for `map_gpa`.
    fn linux_tdx_map_gpa(
        mut start: u64,
        mut end: u64,
        enc: bool,
        cc_mask: u64,
        hypercall: &mut impl FnMut(u64, u64) -> (u64, u64),
    ) -> bool {
        // Retrying the hypercall a second time should succeed; use 3 just in case
        let max_retries_per_page = 3;
        let mut retry_count = 0;
        if !enc {
            // Set the shared (decrypted) bits:
            start |= cc_mask;
            end |= cc_mask;
        }
        while retry_count < max_retries_per_page {
            let (ret, r11) = hypercall(start, end - start);
            if ret != vmcall_status::RETRY {
                return ret == 0;
            }
            // R11 comes from the untrusted VMM. Sanity check it.
            let map_fail_paddr = r11;
            if map_fail_paddr < start || map_fail_paddr >= end {
                return false;
            }
            // "Consume" a retry without forward progress
            if map_fail_paddr == start {
                retry_count += 1;
                continue;
            }
            start = map_fail_paddr;
            retry_count = 0;
        }
        false
    }

    /// A host's answers, replayed: each call takes the next one; a RETRY's
    /// R11 is an offset into what is left, or (as a hostile host) outside.
    #[derive(Clone, Debug)]
    enum Answer {
        Success,
        Error(u64),
        RetryAt(u64),
        RetryOutside(u64),
    }

    fn answers() -> impl Strategy<Value = Vec<Answer>> {
        prop::collection::vec(
            prop_oneof![
                Just(Answer::Success),
                (2u64..5).prop_map(Answer::Error),
                (0u64..64).prop_map(Answer::RetryAt),
                any::<u64>().prop_map(Answer::RetryOutside),
            ],
            1..24,
        )
    }

    /// The closure that answers from `script`, logging each call.
    fn host<'a>(
        script: &'a [Answer],
        log: &'a mut Vec<(u64, u64)>,
    ) -> impl FnMut(u64, u64) -> (u64, u64) + 'a {
        let mut i = 0;
        move |gpa, len| {
            log.push((gpa, len));
            let a = script.get(i).cloned().unwrap_or(Answer::Success);
            i += 1;
            match a {
                Answer::Success => (0, 0),
                Answer::Error(s) => (s, 0),
                Answer::RetryAt(pages) => (vmcall_status::RETRY, gpa + (pages * 4096) % len.max(1)),
                Answer::RetryOutside(r) => (vmcall_status::RETRY, r),
            }
        }
    }

    proptest! {
        #[test]
        fn map_gpa_follows_linux_on_any_host_answers(
            start_page in 0u64..(1 << 20),
            pages in 1u64..4096,
            shared in any::<bool>(),
            script in answers(),
        ) {
            let cc_mask = 1u64 << 47;
            let (start, end) = (start_page << 12, (start_page + pages) << 12);
            let mut ours_log = Vec::new();
            let ours = map_gpa(start, end, shared.then_some(cc_mask), host(&script, &mut ours_log));
            let mut linux_log = Vec::new();
            let linux = linux_tdx_map_gpa(start, end, !shared, cc_mask, &mut host(&script, &mut linux_log));
            prop_assert_eq!(ours, linux);
            prop_assert_eq!(ours_log, linux_log);
        }
    }

    /// A page-table tree in a map of table address -> 512 entries.
    #[derive(Clone)]
    struct Tables(BTreeMap<u64, [u64; 512]>);

    impl core::fmt::Debug for Tables {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "{} tables", self.0.len())
        }
    }

    impl Tables {
        fn read(&self, table: u64, index: u64) -> u64 {
            self.0[&table][usize::try_from(index).unwrap()]
        }

        /// Linux's `lookup_address` on this tree: the leaf entry mapping
        /// `va` and its level size, or the size of the absent entry.
        fn lookup_address(&self, root: u64, va: u64) -> (Option<u64>, u64) {
            let mut table = root;
            for (level, size) in LEVEL_SIZE.iter().enumerate() {
                let entry = self.read(table, (va / size) % 512);
                if entry & pte::PRESENT == 0 {
                    // Linux: a none entry at a level reports that level.
                    return (None, *size);
                }
                if level == 3 || (level > 0 && entry & pte::HUGE != 0) {
                    return (Some(entry), *size);
                }
                table = entry & pte::ADDR;
            }
            unreachable!()
        }
    }

    /// Linux v6.12, arch/x86/coco/tdx/tdx.c, `tdx_kexec_finish`,
    /// transcribed over `Tables` (the direct map starts at VA 0 here): the
    /// (address, pages) it converts back, and `found`.
    fn linux_tdx_kexec_finish(
        t: &Tables,
        root: u64,
        max_mapped: u64,
        cc_mask: u64,
    ) -> (Vec<(u64, u64)>, u64) {
        let mut converted = Vec::new();
        let mut found = 0;
        let (mut addr, end) = (0u64, max_mapped);
        while addr < end {
            let (pte, size) = t.lookup_address(root, addr);
            // pte_decrypted(): cc_mkdec(pte) == pte, i.e. the shared bit set.
            if let Some(pte) = pte.filter(|p| *p | cc_mask == *p) {
                let pages = size / 4096;
                // set_pte(pte, 0); tdx_enc_status_changed(addr, pages, true)
                let _ = pte;
                converted.push((addr, pages));
                found += pages;
            }
            addr += size;
        }
        (converted, found)
    }

    /// Random trees: 1 GiB leaves, PDs of 2 MiB leaves, PTs of 4 KiB
    /// leaves, absent entries; some leaves shared.
    fn tree() -> impl Strategy<Value = (Tables, u64)> {
        // Per 1 GiB of a 16 GiB map: absent, a 1 GiB leaf (shared?), or a
        // PD whose 512 entries are absent / 2 MiB leaf / PT, some shared.
        let gib = prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(3u8),];
        (prop::collection::vec((gib, any::<u64>()), 16), any::<u64>()).prop_map(|(gibs, seed)| {
            let cc = 1u64 << 47;
            let mut rng = crate::accept::Rng::new(seed);
            let mut next_table = 0x10_0000u64;
            let mut alloc = |t: &mut BTreeMap<u64, [u64; 512]>| {
                let at = next_table;
                next_table += 4096;
                t.insert(at, [0; 512]);
                at
            };
            let mut t = BTreeMap::new();
            let root = alloc(&mut t);
            let pdpt = alloc(&mut t);
            t.get_mut(&root).unwrap()[0] = pdpt | pte::PRESENT;
            for (i, (kind, bits)) in gibs.iter().enumerate() {
                let va = (i as u64) << 30;
                let shared = if bits & 1 != 0 { cc } else { 0 };
                let e = match kind {
                    0 => 0,
                    1 | 2 => va | shared | pte::PRESENT | pte::HUGE,
                    _ => {
                        let pd = alloc(&mut t);
                        for j in 0..512u64 {
                            let va2 = va + (j << 21);
                            let r = rng.next_u64();
                            let sh = if r & 8 != 0 { cc } else { 0 };
                            let e2 = match r % 4 {
                                0 => 0,
                                1 | 2 => va2 | sh | pte::PRESENT | pte::HUGE,
                                _ if j % 64 == 0 => {
                                    let ptab = alloc(&mut t);
                                    for k in 0..512u64 {
                                        let r3 = rng.next_u64();
                                        let sh3 = if r3 & 16 != 0 { cc } else { 0 };
                                        t.get_mut(&ptab).unwrap()[usize::try_from(k).unwrap()] =
                                            if r3.is_multiple_of(3) {
                                                0
                                            } else {
                                                (va2 + (k << 12)) | sh3 | pte::PRESENT
                                            };
                                    }
                                    ptab | pte::PRESENT
                                }
                                _ => 0,
                            };
                            t.get_mut(&pd).unwrap()[usize::try_from(j).unwrap()] = e2;
                        }
                        pd | pte::PRESENT
                    }
                };
                t.get_mut(&pdpt).unwrap()[i] = e;
            }
            (Tables(t), root)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_tree_walk_finds_what_linux_kexec_finish_finds((t, root) in tree(), top_gib in 1u64..17) {
            let cc = 1u64 << 47;
            let max_mapped = top_gib << 30;
            let (linux, linux_found) = linux_tdx_kexec_finish(&t, root, max_mapped, cc);
            let mut ours = Vec::new();
            walk_leaves(root, max_mapped, &mut |table, i| t.read(table, i), &mut |leaf: Leaf| {
                if is_shared(leaf.entry, cc) {
                    ours.push((leaf.va, leaf.size / 4096));
                }
            });
            let found: u64 = ours.iter().map(|(_, p)| p).sum();
            prop_assert_eq!(&ours, &linux);
            prop_assert_eq!(found, linux_found);
        }
    }

    #[test]
    fn a_hostile_retry_gpa_fails_the_conversion() {
        // R11 below the range, at its end, beyond it: refused at once.
        for r11 in [0, 0x2000 - 1, 0x3000, u64::MAX] {
            let mut calls = 0;
            let ok = map_gpa(0x2000, 0x3000, None, |_, _| {
                calls += 1;
                (vmcall_status::RETRY, r11)
            });
            assert!(!ok);
            assert_eq!(calls, 1, "{r11:#x}");
        }
        // Three RETRYs without progress, then refused.
        let mut calls = 0;
        assert!(!map_gpa(0x2000, 0x4000, Some(1 << 47), |gpa, _| {
            calls += 1;
            (vmcall_status::RETRY, gpa)
        }));
        assert_eq!(calls, 3);
    }
}
