//! Both ELF readers: the guests' static-PIE loader (`models::elf`, which the
//! firmware and kexec run on a payload) and the VMM's validation of the
//! firmware and kernel files. Any bytes are refused with an error or load
//! inside their destination.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = models::elf::Image::parse(data) {
        if image.span <= 16 << 20 {
            let mut dest = vec![0u8; abi::to_usize(image.span)];
            let base = 0x40_0000;
            if let Ok(entry) = image.load(&mut dest, base) {
                assert!(entry >= base && entry < base + image.span.max(1));
            }
        }
        for s in image.segments() {
            let _ = s;
        }
    }
    let path = std::path::Path::new("fuzz.elf");
    if let Ok(image) = vmm::internals::ElfImage::parse(path, data.to_vec()) {
        assert!(image.start() <= image.end());
        let _ = image.check_window(0x10_0000, 0x110_0000);
    }
});
