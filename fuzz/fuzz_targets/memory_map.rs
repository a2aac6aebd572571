//! The firmware's editable EFI memory map: any sequence of `set` calls
//! keeps the map sorted, disjoint and non-empty per entry, and a type set
//! last over a range is what the map says there.
#![no_main]

use abi::efi::MemoryDescriptor;
use models::memmap::MemoryMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<(u16, u16, u8)>| {
    let mut storage = [MemoryDescriptor::ZERO; 32];
    let mut map = MemoryMap::new(&mut storage);
    let page = 4096u64;
    for (a, len, ty) in ops {
        let start = a as u64 * page;
        let end = start + (len as u64 % 64) * page;
        let ty = ty as u32 % 16;
        if map.set(start, end, ty).is_ok() && start < end {
            let covers = map
                .entries()
                .iter()
                .any(|d| d.physical_start <= start && end <= d.end() && d.memory_type == ty);
            assert!(covers, "{start:#x}..{end:#x} type {ty} not in the map");
        }
        let e = map.entries();
        for w in e.windows(2) {
            assert!(w[0].end() <= w[1].physical_start, "{:?}", w);
        }
        assert!(e.iter().all(|d| d.number_of_pages > 0));
    }
});
