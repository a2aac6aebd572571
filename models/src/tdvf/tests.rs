//! Hand-built TDVF images: a good one, each defect on its own, the TDCALL
//! patch and the MRTD stream.
#![allow(clippy::cast_possible_truncation)] // small test values

extern crate std;
use std::vec::Vec;
use std::{format, string::ToString};

use super::*;
use abi::tdcall::TDCALL_INSN;
use abi::tdvf::TDX_METADATA_OFFSET_ENTRY_LEN;

const LEN: u64 = 0x10000;
const BASE: u64 = IMAGE_END - LEN;
const DESC: u64 = 0x3010;

fn entry(kind: u32, offset: u32, raw: u32, gpa: u64, size: u64, attrs: u32) -> TdvfSectionEntry {
    TdvfSectionEntry {
        data_offset: offset,
        raw_data_size: raw,
        memory_address: gpa,
        memory_data_size: size,
        section_type: kind,
        attributes: attrs,
    }
}

/// CFV at file 0 (one page), TempMem one page after it, BFV from file
/// 0x2000 to the end (reset vector included), TD_HOB at 8 MiB.
fn good_sections() -> Vec<TdvfSectionEntry> {
    std::vec![
        entry(0, 0x2000, 0xe000, BASE + 0x2000, 0xe000, ATTR_MR_EXTEND),
        entry(1, 0, 0x1000, BASE, 0x1000, 0),
        entry(3, 0, 0, BASE + 0x1000, 0x1000, 0),
        entry(2, 0, 0, 0x80_0000, 0x2000, 0),
    ]
}

struct Build {
    sections: Vec<TdvfSectionEntry>,
    guided: bool,
    pointer: bool,
    /// Where the GUIDed table says the descriptor is (distance from end).
    guided_from_end: u32,
}

impl Build {
    fn new(sections: Vec<TdvfSectionEntry>) -> Self {
        Build {
            sections,
            guided: true,
            pointer: true,
            guided_from_end: (LEN - DESC) as u32,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut img = std::vec![0u8; LEN as usize];
        let put = |img: &mut Vec<u8>, at: u64, b: &[u8]| {
            img[at as usize..at as usize + b.len()].copy_from_slice(b)
        };
        put(&mut img, DESC - 16, TDX_METADATA_GUID.as_bytes());
        let n = self.sections.len() as u32;
        let d = TdvfDescriptor {
            signature: TDVF_SIGNATURE,
            length: 16 + 32 * n,
            version: 1,
            section_count: n,
        };
        put(&mut img, DESC, d.as_bytes());
        for (i, s) in self.sections.iter().enumerate() {
            put(&mut img, DESC + 16 + 32 * i as u64, s.as_bytes());
        }
        if self.pointer {
            put(&mut img, LEN - 0x20, &(DESC as u32).to_le_bytes());
        }
        if self.guided {
            // Footer, then the offset entry, then an unrelated 20-byte
            // entry, walking backwards.
            let footer = LEN - 0x30;
            put(&mut img, footer, GUIDED_TABLE_FOOTER_GUID.as_bytes());
            put(&mut img, footer - 2, &(18u16 + 22 + 20).to_le_bytes());
            let e = footer - 2;
            put(&mut img, e - 16, TDX_METADATA_OFFSET_GUID.as_bytes());
            put(&mut img, e - 18, &22u16.to_le_bytes());
            put(&mut img, e - 22, &self.guided_from_end.to_le_bytes());
            let e = e - 22;
            put(&mut img, e - 16, abi::guid::PAYLOAD_INFO.as_bytes());
            put(&mut img, e - 18, &20u16.to_le_bytes());
        }
        // Reset vector stand-in.
        put(&mut img, LEN - 16, &[0x90, 0x90, 0xe9, 0, 0]);
        img
    }
}

fn good() -> Vec<u8> {
    Build::new(good_sections()).bytes()
}

fn with_section(i: usize, e: TdvfSectionEntry) -> Vec<u8> {
    let mut s = good_sections();
    if i == s.len() {
        s.push(e);
    } else {
        s[i] = e;
    }
    Build::new(s).bytes()
}

fn section_err(img: &[u8]) -> (usize, SectionDefect) {
    match TdvfImage::parse(img) {
        Err(TdvfError::Section { index, defect }) => (index, defect),
        other => panic!("expected a section error, got {other:?}"),
    }
}

#[test]
fn good_image_parses_with_both_locators() {
    let img = good();
    let t = TdvfImage::parse(&img).unwrap();
    assert_eq!(t.sections().len(), 4);
    assert_eq!(t.base_gpa(), BASE);
    assert_eq!(t.descriptor_offset(), DESC);
    assert_eq!(
        t.located(),
        Located {
            guided_table: true,
            tdshim_pointer: true
        }
    );
    let bfv = t.of_kind(TdvfSectionType::Bfv).next().unwrap();
    assert_eq!(bfv.file_range(), 0x2000..0x10000);
    assert_eq!(bfv.memory_range(), BASE + 0x2000..IMAGE_END);
    assert!(bfv.mr_extend() && !bfv.page_aug());
    assert_eq!(t.td_hob().unwrap().memory_range(), 0x80_0000..0x80_2000);
}

#[test]
fn either_locator_alone_is_enough() {
    let mut b = Build::new(good_sections());
    b.guided = false;
    let t = TdvfImage::parse(&b.bytes()).unwrap();
    assert!(!t.located().guided_table && t.located().tdshim_pointer);
    let mut b = Build::new(good_sections());
    b.pointer = false;
    let t = TdvfImage::parse(&b.bytes()).unwrap();
    assert!(t.located().guided_table && !t.located().tdshim_pointer);
    assert_eq!(t.descriptor_offset(), DESC);
}

#[test]
fn locators_must_agree_and_find_something() {
    // Another valid-looking descriptor GUID for the table to point at.
    let mut b = Build::new(good_sections());
    b.guided_from_end = (LEN - 0x1010) as u32;
    let mut img = b.bytes();
    img[0x1000..0x1010].copy_from_slice(TDX_METADATA_GUID.as_bytes());
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::LocatorsDisagree {
            guided_table: 0x1010,
            tdshim_pointer: DESC
        })
    );
    let mut b = Build::new(good_sections());
    b.guided = false;
    b.pointer = false;
    assert_eq!(
        TdvfImage::parse(&b.bytes()),
        Err(TdvfError::NoMetadata { pointer: 0 })
    );
    // The table pointing where no metadata GUID is.
    let mut b = Build::new(good_sections());
    b.guided_from_end = 0x8000;
    let e = TdvfImage::parse(&b.bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            TdvfError::MetadataGuid {
                descriptor: 0x8000,
                ..
            }
        ),
        "{e:?}"
    );
    b.guided_from_end = (LEN + 1) as u32;
    assert!(matches!(
        TdvfImage::parse(&b.bytes()),
        Err(TdvfError::MetadataOffset { .. })
    ));
}

#[test]
fn malformed_guided_tables_are_refused() {
    let mut img = good();
    // Table length shorter than the footer.
    img[(LEN - 0x32) as usize..(LEN - 0x30) as usize].copy_from_slice(&10u16.to_le_bytes());
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::GuidedTable(GuidedTableDefect::TableLength {
            len: 10
        }))
    );
    // An entry longer than the table.
    let mut img = good();
    let e = (LEN - 0x32) as usize;
    img[e - 18..e - 16].copy_from_slice(&200u16.to_le_bytes());
    assert!(matches!(
        TdvfImage::parse(&img),
        Err(TdvfError::GuidedTable(GuidedTableDefect::EntryLength {
            len: 200,
            ..
        }))
    ));
    // A zero-length entry would loop forever: refused.
    img[e - 18..e - 16].copy_from_slice(&0u16.to_le_bytes());
    assert!(TdvfImage::parse(&img).is_err());
    // The offset entry with a wrong length.
    let mut img = good();
    img[e - 18..e - 16].copy_from_slice(&24u16.to_le_bytes());
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::GuidedTable(
            GuidedTableDefect::OffsetEntryLength { len: 24 }
        ))
    );
    assert_eq!(TDX_METADATA_OFFSET_ENTRY_LEN, 22);
}

#[test]
fn descriptor_defects_are_named() {
    let desc = |f: &dyn Fn(&mut TdvfDescriptor)| {
        let mut img = good();
        let at = DESC as usize;
        let mut d = TdvfDescriptor::read_from_prefix(&img[at..]).unwrap();
        f(&mut d);
        img[at..at + 16].copy_from_slice(d.as_bytes());
        match TdvfImage::parse(&img) {
            Err(TdvfError::Descriptor { offset, defect }) => {
                assert_eq!(offset, DESC);
                defect
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        desc(&|d| d.signature = 0x1234),
        DescriptorDefect::Signature(0x1234)
    );
    assert_eq!(desc(&|d| d.version = 2), DescriptorDefect::Version(2));
    assert_eq!(
        desc(&|d| {
            d.section_count = 0;
            d.length = 16
        }),
        DescriptorDefect::NoSections
    );
    assert_eq!(
        desc(&|d| d.length = 16 + 32 * 3),
        DescriptorDefect::Length {
            length: 112,
            sections: 4
        }
    );
    assert_eq!(
        desc(&|d| d.section_count = 1000),
        DescriptorDefect::TooManySections(1000)
    );
    // Sections past the end of the file: a 64-byte image whose pointer
    // names a two-section descriptor at 0x10.
    let mut img = std::vec![0u8; 0x40];
    img[..16].copy_from_slice(TDX_METADATA_GUID.as_bytes());
    let d = TdvfDescriptor {
        signature: TDVF_SIGNATURE,
        length: 80,
        version: 1,
        section_count: 2,
    };
    img[0x10..0x20].copy_from_slice(d.as_bytes());
    img[0x20..0x24].copy_from_slice(&0x10u32.to_le_bytes());
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::Descriptor {
            offset: 0x10,
            defect: DescriptorDefect::Truncated {
                need: 0x60,
                len: 0x40
            }
        })
    );
}

#[test]
fn td_shim_section_rules() {
    let bfv = |raw, attrs| entry(0, 0x2000, raw, BASE + 0x2000, 0xe000, attrs);
    assert_eq!(
        section_err(&with_section(0, bfv(0, 1))),
        (
            0,
            SectionDefect::NoRawData {
                kind: TdvfSectionType::Bfv
            }
        )
    );
    let (i, d) = section_err(&with_section(0, bfv(0xe000, 0)));
    assert!(matches!(d, SectionDefect::Attributes { attributes: 0, .. }) && i == 0);
    let (_, d) = section_err(&with_section(1, entry(1, 0, 0x1000, BASE, 0x1000, 1)));
    assert!(matches!(d, SectionDefect::Attributes { attributes: 1, .. }));
    let (_, d) = section_err(&with_section(1, entry(1, 0, 0, BASE, 0x1000, 0)));
    assert!(matches!(d, SectionDefect::NoRawData { .. }));
    // Memory-only types.
    let (_, d) = section_err(&with_section(3, entry(2, 0, 0x10, 0x80_0000, 0x2000, 0)));
    assert!(matches!(d, SectionDefect::RawData { size: 0x10, .. }));
    let (_, d) = section_err(&with_section(3, entry(2, 0x100, 0, 0x80_0000, 0x2000, 0)));
    assert!(matches!(d, SectionDefect::RawData { offset: 0x100, .. }));
    let (_, d) = section_err(&with_section(3, entry(2, 0, 0, 0x80_0000, 0x2000, 2)));
    assert!(matches!(d, SectionDefect::Attributes { .. }));
    let (_, d) = section_err(&with_section(2, entry(3, 0, 0, BASE + 0x1000, 0x1000, 1)));
    assert!(matches!(d, SectionDefect::Attributes { .. }));
    assert_eq!(
        section_err(&with_section(4, entry(2, 0, 0, 0x90_0000, 0x1000, 0))),
        (
            4,
            SectionDefect::Duplicate {
                kind: TdvfSectionType::TdHob
            }
        )
    );
    let (_, d) = section_err(&with_section(4, entry(4, 0, 0, 0x90_0000, 0x1000, 0)));
    assert!(matches!(
        d,
        SectionDefect::Attributes {
            expected: "PAGE.AUG (0x2)",
            ..
        }
    ));
    assert_eq!(
        section_err(&with_section(4, entry(9, 0, 0, 0x90_0000, 0x1000, 0))),
        (4, SectionDefect::UnknownType(9))
    );
    let (_, d) = section_err(&with_section(4, entry(5, 0, 0, 0x90_0000, 0x1000, 2)));
    assert!(matches!(d, SectionDefect::Attributes { .. }));
}

#[test]
fn hob_may_be_replaced_by_perm_mem_but_not_dropped() {
    let img = with_section(3, entry(4, 0, 0, 0x80_0000, 0x2000, ATTR_PAGE_AUG));
    let t = TdvfImage::parse(&img).unwrap();
    assert!(t.td_hob().is_none());
    let mut s = good_sections();
    s.pop();
    assert_eq!(
        TdvfImage::parse(&Build::new(s).bytes()),
        Err(TdvfError::NoHobNorPermMem)
    );
    let mut s = good_sections();
    s.remove(0);
    assert_eq!(
        TdvfImage::parse(&Build::new(s).bytes()),
        Err(TdvfError::NoBfv)
    );
}

#[test]
fn payload_param_needs_payload_and_td_info_lives_in_the_bfv() {
    let img = with_section(4, entry(6, 0, 0, 0x90_0000, 0x1000, 0));
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::PayloadParamWithoutPayload)
    );
    let mut s = good_sections();
    s.push(entry(5, 0, 0, 0xa0_0000, 0x1000, ATTR_MR_EXTEND));
    s.push(entry(6, 0, 0, 0x90_0000, 0x1000, 0));
    s.push(entry(7, 0x4000, 0x100, 0, 0, 0));
    TdvfImage::parse(&Build::new(s.clone()).bytes()).unwrap();
    s[6] = entry(7, 0x800, 0x100, 0, 0, 0);
    let (i, d) = section_err(&Build::new(s.clone()).bytes());
    assert_eq!(
        (i, d),
        (
            6,
            SectionDefect::NotInsideBfv {
                kind: TdvfSectionType::TdInfo
            }
        )
    );
    s[6] = entry(8, 0x4000, 0x100, 0x1000, 0, 0);
    let (_, d) = section_err(&Build::new(s).bytes());
    assert!(matches!(d, SectionDefect::Memory { gpa: 0x1000, .. }));
}

#[test]
fn field_bounds() {
    let cfv = |offset, raw, gpa, size| entry(1, offset, raw, gpa, size, 0);
    assert_eq!(
        section_err(&with_section(1, cfv(0xf800, 0x1000, BASE, 0x1000))).1,
        SectionDefect::DataOutsideFile {
            offset: 0xf800,
            size: 0x1000,
            len: LEN
        }
    );
    assert_eq!(
        section_err(&with_section(1, cfv(0, 0x2000, BASE, 0x1000))).1,
        SectionDefect::RawLargerThanMemory {
            raw: 0x2000,
            memory: 0x1000
        }
    );
    assert_eq!(
        section_err(&with_section(1, cfv(0, 0x1000, BASE + 0x10, 0x1000))).1,
        SectionDefect::MisalignedAddress(BASE + 0x10)
    );
    assert_eq!(
        section_err(&with_section(1, cfv(0, 0x1000, BASE, 0x1800))).1,
        SectionDefect::MisalignedSize(0x1800)
    );
    assert_eq!(
        section_err(&with_section(2, entry(3, 0, 0, BASE + 0x1000, 0, 0))).1,
        SectionDefect::NoMemory {
            kind: TdvfSectionType::TempMem
        }
    );
    assert_eq!(
        section_err(&with_section(
            2,
            entry(3, 0, 0, u64::MAX - 0xfff, 0x2000, 0)
        ))
        .1,
        SectionDefect::Wraps {
            gpa: u64::MAX - 0xfff,
            size: 0x2000
        }
    );
}

#[test]
fn overlaps_and_the_reset_vector() {
    // TempMem over the CFV.
    let img = with_section(2, entry(3, 0, 0, BASE, 0x1000, 0));
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::Overlap { a: 1, b: 2 })
    );
    // TD_HOB over the end of the BFV.
    let img = with_section(3, entry(2, 0, 0, IMAGE_END - 0x1000, 0x2000, 0));
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::Overlap { a: 0, b: 3 })
    );
    // A BFV that stops before the reset vector.
    let img = with_section(0, entry(0, 0x2000, 0xd000, BASE + 0x2000, 0xd000, 1));
    assert_eq!(
        TdvfImage::parse(&img),
        Err(TdvfError::ResetVectorOutsideBfv {
            gpa: IMAGE_END - 16
        })
    );
}

#[test]
fn sizes_are_checked_first() {
    assert_eq!(
        TdvfImage::parse(&[0u8; 0x2f]),
        Err(TdvfError::TooSmall { len: 0x2f })
    );
    assert_eq!(
        TdvfImage::parse(&[0u8; 0x30]),
        Err(TdvfError::NoMetadata { pointer: 0 })
    );
}

#[test]
fn messages_say_what_and_which_value() {
    let m = |e: TdvfError| e.to_string();
    assert_eq!(
        m(TdvfError::Section {
            index: 2,
            defect: SectionDefect::MisalignedAddress(0x1234)
        }),
        "TDVF section 2: memory address 0x1234 is not 4 KiB aligned"
    );
    assert!(m(TdvfError::Descriptor {
        offset: 0x10,
        defect: DescriptorDefect::Signature(1)
    })
    .contains("0x00000001 is not 'TDVF'"));
    assert!(
        m(TdvfError::NoMetadata { pointer: 7 }).contains("e47a6535-984a-4798-865e-4685a7bf8ec2")
    );
    let e = SectionDefect::Attributes {
        kind: TdvfSectionType::PermMem,
        attributes: 0,
        expected: "PAGE.AUG (0x2)",
    };
    assert_eq!(
        format!("{e}"),
        "PermMem has attributes 0x0, expected PAGE.AUG (0x2)"
    );
}

#[test]
fn patches_only_whole_tdcalls_inside_the_bfv() {
    let mut img = good();
    let put = |img: &mut Vec<u8>, at: usize| img[at..at + 4].copy_from_slice(&TDCALL_INSN);
    put(&mut img, 0x100); // CFV: data, never patched
    put(&mut img, 0x1ffe); // straddles the BFV's start
    put(&mut img, 0x4000);
    put(&mut img, 0x4004); // back to back
    put(&mut img, 0x9ffd);
    let t = TdvfImage::parse(&img).unwrap();
    let mut found = Vec::new();
    assert_eq!(find_tdcalls(&t, &img, |s| found.push(s)), Ok(3));
    assert_eq!(
        found,
        [
            TdcallSite {
                offset: 0x4000,
                addr: BASE + 0x4000
            },
            TdcallSite {
                offset: 0x4004,
                addr: BASE + 0x4004
            },
            TdcallSite {
                offset: 0x9ffd,
                addr: BASE + 0x9ffd
            },
        ]
    );
    let before = img.clone();
    let mut patched = Vec::new();
    assert_eq!(patch_tdcalls(&t, &mut img, |s| patched.push(s)), Ok(3));
    assert_eq!(patched, found);
    for s in &found {
        let at = s.offset as usize;
        assert_eq!(
            img[at..at + 4],
            [0xe6, abi::tdcall::DOORBELL_PORT, 0x66, 0x90]
        );
    }
    let changed: Vec<usize> = (0..img.len()).filter(|&i| img[i] != before[i]).collect();
    assert_eq!(changed.len(), 3 * 4, "{changed:x?}");
    assert_eq!(img[0x100..0x104], TDCALL_INSN);
    assert_eq!(img[0x1ffe..0x2002], TDCALL_INSN);
    assert_eq!(find_tdcalls(&t, &img, |_| {}), Ok(0));
    assert_eq!(
        patch_tdcalls(&t, &mut img[1..], |_| {}),
        Err(TdvfError::ImageLength {
            parsed: LEN,
            given: LEN - 1
        })
    );
}

#[test]
fn mrtd_stream_adds_every_page_and_extends_the_bfv() {
    let mut img = good();
    img[0x2000] = 0xaa;
    let t = TdvfImage::parse(&img).unwrap();
    let mut bytes = 0usize;
    let mut first = Vec::new();
    let calls = mrtd_stream(&t, &img, |b| {
        if first.len() < 3 {
            first.push(b.to_vec());
        }
        bytes += b.len();
    })
    .unwrap();
    // 0xe + 1 + 1 + 2 pages; the BFV's 14 pages × 16 chunks.
    assert_eq!(
        calls,
        MrtdCalls {
            page_adds: 18,
            extends: 14 * 16
        }
    );
    assert_eq!(bytes, 18 * 128 + 14 * 16 * (128 + 256));
    let mut add = std::vec![0u8; 128];
    add[..12].copy_from_slice(b"MEM.PAGE.ADD");
    add[16..24].copy_from_slice(&(BASE + 0x2000).to_le_bytes());
    assert_eq!(first[0], add);
    let mut ext = std::vec![0u8; 128];
    ext[..9].copy_from_slice(b"MR.EXTEND");
    ext[16..24].copy_from_slice(&(BASE + 0x2000).to_le_bytes());
    assert_eq!(first[1], ext);
    assert_eq!(first[2].len(), 256);
    assert_eq!(first[2][0], 0xaa);
    // PAGE.AUG sections are not added.
    let img = with_section(3, entry(4, 0, 0, 0x80_0000, 0x2000, ATTR_PAGE_AUG));
    let t = TdvfImage::parse(&img).unwrap();
    assert_eq!(mrtd_stream(&t, &img, |_| {}).unwrap().page_adds, 16);
}

#[test]
fn hostile_bytes_never_panic() {
    let base = good();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..2000 {
        let mut img = base.clone();
        for _ in 0..(round % 8 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Aim at the metadata and the tail, where the parser reads.
            let region = if seed & 1 == 0 { DESC - 16 } else { LEN - 0x50 };
            let at = (region + (seed >> 8) % 0x50) as usize % img.len();
            img[at] = (seed >> 40) as u8;
        }
        if let Ok(t) = TdvfImage::parse(&img) {
            // The stream is linear in memory size: the VMM bounds the
            // sections by RAM first; here, by 1 MiB.
            if t.sections().iter().map(|s| s.mem_size).sum::<u64>() <= 1 << 20 {
                let _ = mrtd_stream(&t, &img, |_| {});
            }
            let _ = patch_tdcalls(&t, &mut img, |_| {});
        }
    }
}
