//! The unaccepted-memory bitmap code (Linux's `process_unaccepted_memory`
//! and `accept_memory`) on any header that validates and any ranges: no
//! panic, everything it accepts lies in the range asked for (plus
//! `accept_memory`'s guard unit), and bits only ever cover that range.
#![no_main]

use abi::unaccepted::Header;
use models::unaccepted::{accept_range, process_range, Bitmap};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    unit_shift: u8,
    phys_base: u64,
    bitmap_len: u8,
    process: Vec<(u64, u64)>,
    accept: Vec<(u64, u64)>,
}

fuzz_target!(|input: Input| {
    let header = Header {
        version: 1,
        unit_size: 1u32.checked_shl(input.unit_shift as u32 % 32).unwrap_or(0),
        phys_base: input.phys_base,
        size: input.bitmap_len as u64,
    };
    if header.validate().is_err() {
        return;
    }
    let unit = header.unit_size as u64;
    let mut bytes = vec![0u8; abi::to_usize(header.size)];
    let mut bitmap = Bitmap::new(&mut bytes);
    for (start, len) in input.process {
        let end = start.saturating_add(len % (1 << 40));
        let mut calls = Vec::new();
        let r = process_range(&header, &mut bitmap, start, end, |s, e| calls.push((s, e)));
        // Outside a table that does not reach the range, Linux accepts from
        // the table's end (and would then write past the bitmap; we refuse).
        if r.is_ok() {
            for (s, e) in calls {
                assert!(start <= s && s <= e && e <= end, "{s:#x}..{e:#x} outside {start:#x}..{end:#x}");
            }
        }
    }
    for (start, size) in input.accept {
        let end = start.saturating_add(size);
        let _ = accept_range::<()>(&header, &mut bitmap, start, size, |s, e| {
            assert!(s < e);
            assert!(e <= end.saturating_add(2 * unit), "{s:#x}..{e:#x} past {end:#x}");
            assert!(s.saturating_add(unit) > start.min(s), "{s:#x} before {start:#x}");
            Ok(())
        });
    }
});
