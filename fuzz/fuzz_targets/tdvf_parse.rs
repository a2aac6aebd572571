//! The TDVF image reader (`models::tdvf`), which the VMM runs on the
//! firmware file: any bytes are refused with an error or give sections
//! inside the file, and the TDCALL patch changes only BFV bytes.
#![no_main]

use abi::tdvf::TdvfSectionType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tdvf) = models::tdvf::TdvfImage::parse(data) else {
        return;
    };
    let len = data.len() as u64;
    for s in tdvf.sections() {
        assert!(s.file_range().end <= len);
        assert!(s.gpa % abi::PAGE_4K == 0 && s.mem_size % abi::PAGE_4K == 0);
    }
    let mut image = data.to_vec();
    let mut sites = 0;
    models::tdvf::patch_tdcalls(&tdvf, &mut image, |site| {
        assert!(tdvf
            .of_kind(TdvfSectionType::Bfv)
            .any(|b| b.file_range().contains(&site.offset)));
        sites += 1;
    })
    .unwrap();
    let changed = image.iter().zip(data).filter(|(a, b)| a != b).count();
    assert!(changed <= sites * 4);
    // The measurement is linear in memory size: only for small sections.
    if tdvf.sections().iter().map(|s| s.mem_size).sum::<u64>() <= 1 << 20 {
        models::tdvf::mrtd_stream(&tdvf, data, |_| {}).unwrap();
    }
});
