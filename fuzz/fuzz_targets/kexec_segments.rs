//! kexec's segment checks (Linux's rules, then this project's inside-RAM
//! rule) on any segment list and memory map: no panic, and whatever they
//! accept is aligned, below the destination limit, inside RAM, disjoint
//! and at most half of RAM.
#![no_main]

use abi::efi::{memory_type, MemoryDescriptor};
use models::kexec::{inside_ram, linux_checks, total_ram_pages, Segment, DESTINATION_LIMIT_4LEVEL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<(u64, u64)>, Vec<(u64, u64)>)| {
    let (ram, segs) = input;
    let ram: Vec<MemoryDescriptor> = ram
        .into_iter()
        .take(8)
        .map(|(start, pages)| MemoryDescriptor {
            memory_type: memory_type::CONVENTIONAL,
            physical_start: start,
            number_of_pages: pages,
            ..MemoryDescriptor::ZERO
        })
        .collect();
    let segs: Vec<Segment> = segs
        .into_iter()
        .take(8)
        .map(|(mem, memsz)| Segment { src: 0, bufsz: memsz, mem, memsz })
        .collect();
    let pages = total_ram_pages(&ram);
    if linux_checks(&segs, pages, DESTINATION_LIMIT_4LEVEL).and_then(|()| inside_ram(&segs, &ram)).is_ok() {
        let mut total = 0u128;
        for (i, s) in segs.iter().enumerate() {
            assert!(s.mem % 4096 == 0 && s.memsz % 4096 == 0);
            let end = s.mem.checked_add(s.memsz).expect("accepted a wrapping segment");
            assert!(end < DESTINATION_LIMIT_4LEVEL);
            for t in &segs[i + 1..] {
                assert!(end <= t.mem || t.mem + t.memsz <= s.mem || s.memsz == 0 || t.memsz == 0);
            }
            if s.memsz > 0 {
                assert!(ram.iter().any(|d| d.physical_start <= s.mem && s.mem < d.end()));
            }
            total += s.memsz as u128;
        }
        assert!(total <= (pages as u128 / 2) * 4096);
    }
});
