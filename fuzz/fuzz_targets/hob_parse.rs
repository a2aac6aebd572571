//! The TD HOB parser the firmware runs on what the VMM hands it: any bytes
//! parse or are refused, and a parsed list's accessors stay in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = 0x80_0000;
    if let Ok(list) = abi::hob::HobList::parse(data, base) {
        assert!(list.len() <= data.len());
        let _ = list.phit();
        for r in list.memory_resources() {
            let _ = r.physical_start.checked_add(r.resource_length);
        }
        for hob in list.iter() {
            let _ = hob;
        }
        if let Some(Ok((payload, cmdline))) = list.payload_info() {
            let _ = (payload.image_base, cmdline.len());
        }
    }
});
