//! Reading a TDVF firmware image (td-shim's, OVMF's TDX build): locating
//! its TDX metadata both ways the image offers it, validating the
//! descriptor and every section (the image is hostile input), the typed
//! view of the sections, the patch that turns each TDCALL in the boot
//! firmware volume into this project's doorbell, and the byte stream the
//! TDX module hashes into MRTD as the VMM adds the initial pages (the
//! VMM feeds it to SHA-384). The numbers and layouts are `abi::tdvf`.

use abi::guid::Guid;
use abi::pod::Pod;
use abi::tdvf::{
    TdvfDescriptor, TdvfSectionEntry, TdvfSectionType, ATTR_MR_EXTEND, ATTR_PAGE_AUG,
    DESCRIPTOR_LEN, GUIDED_ENTRY_TRAILER, GUIDED_TABLE_FOOTER_FROM_END, GUIDED_TABLE_FOOTER_GUID,
    IMAGE_END, MRTD_BUFFER_LEN, MRTD_GPA_OFFSET, MRTD_TAG_MR_EXTEND, MRTD_TAG_PAGE_ADD,
    MR_EXTEND_CHUNK, SECTION_ENTRY_LEN, TDSHIM_METADATA_PTR_FROM_END, TDVF_SIGNATURE, TDVF_VERSION,
    TDX_METADATA_GUID, TDX_METADATA_OFFSET_ENTRY_LEN, TDX_METADATA_OFFSET_GUID,
};
use abi::PAGE_4K;

use crate::to_usize;

/// Most sections an image may declare (td-shim's have 6, OVMF's about 10).
pub const MAX_SECTIONS: usize = 32;

/// Why a TDVF image cannot be used. The messages are the ones users see
/// (the VMM prefixes the file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdvfError {
    /// Shorter than the tail both locators read.
    TooSmall { len: u64 },
    /// Longer than 4 GiB: it cannot end at 4 GiB.
    TooLarge { len: u64 },
    /// The GUIDed table's footer is there but the table is malformed.
    GuidedTable(GuidedTableDefect),
    /// Neither locator finds the metadata: no GUIDed table entry, and the
    /// `u32` at end − 0x20 (`pointer`) does not lead to the metadata GUID.
    NoMetadata { pointer: u32 },
    /// The GUIDed table's offset entry points outside the image.
    MetadataOffset { from_end: u32, len: u64 },
    /// The 16 bytes before the descriptor the GUIDed table names are not
    /// the TDX metadata GUID.
    MetadataGuid { descriptor: u64, found: Guid },
    /// The GUIDed table and td-shim's pointer name different descriptors.
    LocatorsDisagree {
        guided_table: u64,
        tdshim_pointer: u64,
    },
    /// The descriptor at `offset` is malformed.
    Descriptor {
        offset: u64,
        defect: DescriptorDefect,
    },
    /// Section `index` (in metadata order) is malformed.
    Section { index: usize, defect: SectionDefect },
    /// No BFV section.
    NoBfv,
    /// Neither a TD_HOB nor a PermMem section: the TD would get no memory.
    NoHobNorPermMem,
    /// A PayloadParam section without a Payload section.
    PayloadParamWithoutPayload,
    /// The memory ranges of sections `a` and `b` overlap.
    Overlap { a: usize, b: usize },
    /// The reset vector (at `gpa`) is not inside a BFV section's memory.
    ResetVectorOutsideBfv { gpa: u64 },
    /// The bytes given are not the image this metadata was parsed from.
    ImageLength { parsed: u64, given: u64 },
}

/// What is wrong with the GUIDed table at the end of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuidedTableDefect {
    /// The footer's length is shorter than its own trailer or longer than
    /// the image.
    TableLength { len: u16 },
    /// The entry ending at file offset `end` has a length shorter than its
    /// trailer or longer than what is left of the table.
    EntryLength { end: u64, len: u16 },
    /// The metadata-offset entry is not 22 bytes (its `u32`, length, GUID).
    OffsetEntryLength { len: u16 },
}

/// What is wrong with the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorDefect {
    /// It (or its sections) passes the end of the image.
    Truncated {
        need: u64,
        len: u64,
    },
    Signature(u32),
    Version(u32),
    NoSections,
    TooManySections(u32),
    /// `length` is not 16 + 32 × the section count.
    Length {
        length: u32,
        sections: u32,
    },
}

/// What is wrong with one section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionDefect {
    UnknownType(u32),
    /// The attributes are not what the type requires (td-shim
    /// `validate_sections`).
    Attributes {
        kind: TdvfSectionType,
        attributes: u32,
        expected: &'static str,
    },
    /// This type needs raw data in the file (BFV, CFV, TdInfo, TdParams).
    NoRawData {
        kind: TdvfSectionType,
    },
    /// This type is memory only: raw size and data offset must be 0.
    RawData {
        kind: TdvfSectionType,
        offset: u32,
        size: u32,
    },
    /// A second section of a type that may appear once.
    Duplicate {
        kind: TdvfSectionType,
    },
    /// Raw size 0 with a non-zero data offset.
    OffsetWithoutData {
        offset: u32,
    },
    /// The raw data passes the end of the file.
    DataOutsideFile {
        offset: u32,
        size: u32,
        len: u64,
    },
    /// More raw data than memory to hold it.
    RawLargerThanMemory {
        raw: u32,
        memory: u64,
    },
    /// The GPA is not 4 KiB aligned.
    MisalignedAddress(u64),
    /// The memory size is not a multiple of 4 KiB.
    MisalignedSize(u64),
    /// No memory (every type but TdInfo and TdParams needs some).
    NoMemory {
        kind: TdvfSectionType,
    },
    /// TdInfo and TdParams live inside the BFV and have no memory of their
    /// own.
    Memory {
        kind: TdvfSectionType,
        gpa: u64,
        size: u64,
    },
    /// The memory range passes 2^64.
    Wraps {
        gpa: u64,
        size: u64,
    },
    /// A TdInfo or TdParams whose raw data is not inside a BFV's.
    NotInsideBfv {
        kind: TdvfSectionType,
    },
}

impl core::fmt::Display for GuidedTableDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GuidedTableDefect::TableLength { len } => {
                write!(f, "table length {len} does not fit the image")
            }
            GuidedTableDefect::EntryLength { end, len } => write!(
                f,
                "entry ending at {end:#x} has length {len}, which does not fit the table"
            ),
            GuidedTableDefect::OffsetEntryLength { len } => write!(
                f,
                "TDX metadata offset entry has length {len}, not {TDX_METADATA_OFFSET_ENTRY_LEN}"
            ),
        }
    }
}

impl core::fmt::Display for DescriptorDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DescriptorDefect::Truncated { need, len } => {
                write!(
                    f,
                    "needs the file up to {need:#x}, which has {len:#x} bytes"
                )
            }
            DescriptorDefect::Signature(s) => {
                write!(
                    f,
                    "signature {s:#010x} is not 'TDVF' ({TDVF_SIGNATURE:#010x})"
                )
            }
            DescriptorDefect::Version(v) => write!(f, "version {v} is not {TDVF_VERSION}"),
            DescriptorDefect::NoSections => write!(f, "no sections"),
            DescriptorDefect::TooManySections(n) => {
                write!(f, "{n} sections, more than the {MAX_SECTIONS} accepted")
            }
            DescriptorDefect::Length { length, sections } => {
                write!(f, "length {length} is not 16 + 32 x {sections} sections")
            }
        }
    }
}

impl core::fmt::Display for SectionDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SectionDefect::UnknownType(t) => write!(f, "unknown type {t}"),
            SectionDefect::Attributes {
                kind,
                attributes,
                expected,
            } => write!(
                f,
                "{kind} has attributes {attributes:#x}, expected {expected}"
            ),
            SectionDefect::NoRawData { kind } => write!(f, "{kind} has no raw data"),
            SectionDefect::RawData { kind, offset, size } => write!(
                f,
                "{kind} is memory only but has raw data (offset {offset:#x}, size {size:#x})"
            ),
            SectionDefect::Duplicate { kind } => write!(f, "a second {kind} section"),
            SectionDefect::OffsetWithoutData { offset } => {
                write!(f, "data offset {offset:#x} with raw size 0")
            }
            SectionDefect::DataOutsideFile { offset, size, len } => write!(
                f,
                "raw data [{offset:#x}, +{size:#x}) passes the end of the {len:#x}-byte file"
            ),
            SectionDefect::RawLargerThanMemory { raw, memory } => {
                write!(f, "raw size {raw:#x} > memory size {memory:#x}")
            }
            SectionDefect::MisalignedAddress(gpa) => {
                write!(f, "memory address {gpa:#x} is not 4 KiB aligned")
            }
            SectionDefect::MisalignedSize(size) => {
                write!(f, "memory size {size:#x} is not a multiple of 4 KiB")
            }
            SectionDefect::NoMemory { kind } => write!(f, "{kind} has memory size 0"),
            SectionDefect::Memory { kind, gpa, size } => write!(
                f,
                "{kind} must have no memory, has address {gpa:#x} size {size:#x}"
            ),
            SectionDefect::Wraps { gpa, size } => {
                write!(f, "memory [{gpa:#x}, +{size:#x}) passes 2^64")
            }
            SectionDefect::NotInsideBfv { kind } => {
                write!(f, "{kind} raw data is not inside a BFV's")
            }
        }
    }
}

impl core::fmt::Display for TdvfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TdvfError::TooSmall { len } => {
                write!(f, "{len}-byte file is too small for a TDVF image")
            }
            TdvfError::TooLarge { len } => {
                write!(f, "{len:#x}-byte file is larger than 4 GiB, the image must end there")
            }
            TdvfError::GuidedTable(d) => write!(f, "GUIDed table at the end of the image: {d}"),
            TdvfError::NoMetadata { pointer } => write!(
                f,
                "no TDX metadata: no GUIDed table entry {TDX_METADATA_OFFSET_GUID}, and the offset \
                 {pointer:#x} at end - 0x20 is not preceded by GUID {TDX_METADATA_GUID}"
            ),
            TdvfError::MetadataOffset { from_end, len } => write!(
                f,
                "TDX metadata offset {from_end:#x} from the end is outside the {len:#x}-byte image"
            ),
            TdvfError::MetadataGuid { descriptor, found } => write!(
                f,
                "GUID before the TDX metadata at {descriptor:#x} is {found}, not {TDX_METADATA_GUID}"
            ),
            TdvfError::LocatorsDisagree {
                guided_table,
                tdshim_pointer,
            } => write!(
                f,
                "the GUIDed table puts the TDX metadata at {guided_table:#x}, the offset at \
                 end - 0x20 at {tdshim_pointer:#x}"
            ),
            TdvfError::Descriptor { offset, defect } => {
                write!(f, "TDVF descriptor at {offset:#x}: {defect}")
            }
            TdvfError::Section { index, defect } => {
                write!(f, "TDVF section {index}: {defect}")
            }
            TdvfError::NoBfv => write!(f, "no BFV section"),
            TdvfError::NoHobNorPermMem => write!(f, "neither a TD_HOB nor a PermMem section"),
            TdvfError::PayloadParamWithoutPayload => {
                write!(f, "a PayloadParam section without a Payload section")
            }
            TdvfError::Overlap { a, b } => {
                write!(f, "the memory of sections {a} and {b} overlaps")
            }
            TdvfError::ResetVectorOutsideBfv { gpa } => {
                write!(f, "the reset vector at {gpa:#x} is not inside a BFV section")
            }
            TdvfError::ImageLength { parsed, given } => write!(
                f,
                "metadata parsed from a {parsed:#x}-byte image, given {given:#x} bytes"
            ),
        }
    }
}

impl core::error::Error for TdvfError {}

/// One validated section, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: TdvfSectionType,
    /// File offset of the raw data (0 without raw data).
    pub data_offset: u64,
    /// Bytes of raw data in the file.
    pub raw_size: u64,
    /// GPA of the section's memory (4 KiB aligned).
    pub gpa: u64,
    /// Bytes of memory (a multiple of 4 KiB; 0 only for TdInfo, TdParams).
    pub mem_size: u64,
    pub attributes: u32,
}

impl Section {
    const EMPTY: Section = Section {
        kind: TdvfSectionType::Bfv,
        data_offset: 0,
        raw_size: 0,
        gpa: 0,
        mem_size: 0,
        attributes: 0,
    };

    /// The raw data's file range.
    pub fn file_range(&self) -> core::ops::Range<u64> {
        self.data_offset..self.data_offset + self.raw_size
    }

    /// The guest-physical range the section covers (raw data, then zeros).
    pub fn memory_range(&self) -> core::ops::Range<u64> {
        self.gpa..self.gpa + self.mem_size
    }

    /// The VMM extends MRTD with the contents (TDH.MR.EXTEND).
    pub fn mr_extend(&self) -> bool {
        self.attributes & ATTR_MR_EXTEND != 0
    }

    /// The VMM adds the pages with TDH.MEM.PAGE.AUG, unmeasured.
    pub fn page_aug(&self) -> bool {
        self.attributes & ATTR_PAGE_AUG != 0
    }
}

/// How the metadata was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    /// Through the OVMF GUIDed table (QEMU's and cloud-hypervisor's way).
    pub guided_table: bool,
    /// Through the `u32` at end − 0x20 (td-shim's own way).
    pub tdshim_pointer: bool,
}

/// A TDVF image's validated metadata. It does not borrow the image: the
/// VMM patches the image's bytes after parsing, and passes them back to
/// [`patch_tdcalls`] and [`mrtd_stream`], which check their length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdvfImage {
    image_len: u64,
    descriptor: u64,
    located: Located,
    sections: [Section; MAX_SECTIONS],
    count: usize,
}

fn read<T: Pod>(image: &[u8], offset: u64) -> Option<T> {
    T::read_from_prefix(image.get(to_usize(offset)..)?)
}

/// The descriptor's file offset through the GUIDed table: `None` without
/// a footer or without a metadata-offset entry.
fn locate_by_guided_table(image: &[u8]) -> Result<Option<u64>, TdvfError> {
    let len = image.len() as u64;
    let footer = len - GUIDED_TABLE_FOOTER_FROM_END;
    if read::<Guid>(image, footer) != Some(GUIDED_TABLE_FOOTER_GUID) {
        return Ok(None);
    }
    // The footer is an entry like the others: its length (the table's,
    // footer included) just before its GUID.
    let table_end = footer + 16;
    let table_len = read::<u16>(image, footer - 2).unwrap_or(0);
    let table_start = table_end
        .checked_sub(u64::from(table_len))
        .filter(|_| u64::from(table_len) >= GUIDED_ENTRY_TRAILER)
        .ok_or(TdvfError::GuidedTable(GuidedTableDefect::TableLength {
            len: table_len,
        }))?;
    // Walk the entries backwards from the one before the footer; each
    // ends with its length and its GUID.
    let mut end = table_end - GUIDED_ENTRY_TRAILER;
    while end > table_start {
        let bad = TdvfError::GuidedTable(GuidedTableDefect::EntryLength { end, len: 0 });
        if end - table_start < GUIDED_ENTRY_TRAILER {
            return Err(bad);
        }
        let guid = read::<Guid>(image, end - 16).ok_or(bad)?;
        let entry_len = read::<u16>(image, end - GUIDED_ENTRY_TRAILER).ok_or(bad)?;
        if u64::from(entry_len) < GUIDED_ENTRY_TRAILER || u64::from(entry_len) > end - table_start {
            return Err(TdvfError::GuidedTable(GuidedTableDefect::EntryLength {
                end,
                len: entry_len,
            }));
        }
        if guid == TDX_METADATA_OFFSET_GUID {
            if u64::from(entry_len) != TDX_METADATA_OFFSET_ENTRY_LEN {
                return Err(TdvfError::GuidedTable(
                    GuidedTableDefect::OffsetEntryLength { len: entry_len },
                ));
            }
            let from_end = read::<u32>(image, end - TDX_METADATA_OFFSET_ENTRY_LEN).ok_or(bad)?;
            let descriptor = len
                .checked_sub(u64::from(from_end))
                .filter(|&d| d >= 16)
                .ok_or(TdvfError::MetadataOffset { from_end, len })?;
            let found = read::<Guid>(image, descriptor - 16)
                .ok_or(TdvfError::MetadataOffset { from_end, len })?;
            if found != TDX_METADATA_GUID {
                return Err(TdvfError::MetadataGuid { descriptor, found });
            }
            return Ok(Some(descriptor));
        }
        end -= u64::from(entry_len);
    }
    Ok(None)
}

/// td-shim's own locator: the descriptor's file offset at end − 0x20, if
/// the metadata GUID precedes it; otherwise `Err(pointer)`.
fn locate_by_tdshim_pointer(image: &[u8]) -> Result<u64, u32> {
    let len = image.len() as u64;
    let pointer = read::<u32>(image, len - TDSHIM_METADATA_PTR_FROM_END).unwrap_or(0);
    let descriptor = u64::from(pointer);
    if descriptor >= 16 && read::<Guid>(image, descriptor - 16) == Some(TDX_METADATA_GUID) {
        Ok(descriptor)
    } else {
        Err(pointer)
    }
}

/// What one section's type requires of its fields (td-shim
/// `td-shim-interface/src/metadata.rs` `validate_sections`, lines 207-487,
/// and `check_data_memory_fields` in it; the size alignment, the non-empty
/// memory and the file and wrap bounds are this loader's additions).
fn check_section(e: &TdvfSectionEntry, len: u64) -> Result<Section, SectionDefect> {
    use TdvfSectionType as T;
    let kind = T::from_id(e.section_type).ok_or(SectionDefect::UnknownType(e.section_type))?;
    let attrs = |ok: bool, expected: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(SectionDefect::Attributes {
                kind,
                attributes: e.attributes,
                expected,
            })
        }
    };
    let raw_required = || {
        if e.raw_data_size == 0 {
            Err(SectionDefect::NoRawData { kind })
        } else {
            Ok(())
        }
    };
    let memory_only = || {
        if e.raw_data_size != 0 || e.data_offset != 0 {
            Err(SectionDefect::RawData {
                kind,
                offset: e.data_offset,
                size: e.raw_data_size,
            })
        } else {
            Ok(())
        }
    };
    let a = e.attributes;
    match kind {
        T::Bfv => {
            raw_required()?;
            attrs(a == ATTR_MR_EXTEND, "MR.EXTEND (0x1)")?;
        }
        T::Cfv => {
            raw_required()?;
            attrs(a == 0, "0")?;
        }
        T::TdHob | T::TempMem => {
            memory_only()?;
            attrs(a == 0, "0")?;
        }
        T::PermMem => {
            memory_only()?;
            attrs(a == ATTR_PAGE_AUG, "PAGE.AUG (0x2)")?;
        }
        T::Payload => attrs(a & !ATTR_MR_EXTEND == 0, "0 or MR.EXTEND (0x1)")?,
        T::PayloadParam => attrs(a == 0, "0")?,
        T::TdInfo | T::TdParams => {
            raw_required()?;
            attrs(a == 0, "0")?;
            if e.memory_address != 0 || e.memory_data_size != 0 {
                return Err(SectionDefect::Memory {
                    kind,
                    gpa: e.memory_address,
                    size: e.memory_data_size,
                });
            }
        }
    }
    let (offset, raw) = (u64::from(e.data_offset), u64::from(e.raw_data_size));
    if raw == 0 && offset != 0 {
        return Err(SectionDefect::OffsetWithoutData {
            offset: e.data_offset,
        });
    }
    if offset + raw > len {
        return Err(SectionDefect::DataOutsideFile {
            offset: e.data_offset,
            size: e.raw_data_size,
            len,
        });
    }
    let (gpa, size) = (e.memory_address, e.memory_data_size);
    if gpa % PAGE_4K != 0 {
        return Err(SectionDefect::MisalignedAddress(gpa));
    }
    if size % PAGE_4K != 0 {
        return Err(SectionDefect::MisalignedSize(size));
    }
    if !matches!(kind, T::TdInfo | T::TdParams) {
        if size == 0 {
            return Err(SectionDefect::NoMemory { kind });
        }
        if raw > size {
            return Err(SectionDefect::RawLargerThanMemory {
                raw: e.raw_data_size,
                memory: size,
            });
        }
    }
    if gpa.checked_add(size).is_none() {
        return Err(SectionDefect::Wraps { gpa, size });
    }
    Ok(Section {
        kind,
        data_offset: offset,
        raw_size: raw,
        gpa,
        mem_size: size,
        attributes: a,
    })
}

impl TdvfImage {
    /// Locates and validates the metadata of `image`, a whole TDVF image
    /// that will end at 4 GiB.
    pub fn parse(image: &[u8]) -> Result<TdvfImage, TdvfError> {
        let len = image.len() as u64;
        if len < GUIDED_TABLE_FOOTER_FROM_END {
            return Err(TdvfError::TooSmall { len });
        }
        if len > IMAGE_END {
            return Err(TdvfError::TooLarge { len });
        }
        let guided = locate_by_guided_table(image)?;
        let pointer = locate_by_tdshim_pointer(image);
        let descriptor = match (guided, pointer) {
            (Some(g), Ok(p)) if g != p => {
                return Err(TdvfError::LocatorsDisagree {
                    guided_table: g,
                    tdshim_pointer: p,
                })
            }
            (Some(d), _) | (None, Ok(d)) => d,
            (None, Err(pointer)) => return Err(TdvfError::NoMetadata { pointer }),
        };
        let located = Located {
            guided_table: guided.is_some(),
            tdshim_pointer: pointer.is_ok(),
        };
        let bad = |defect| TdvfError::Descriptor {
            offset: descriptor,
            defect,
        };
        let d: TdvfDescriptor =
            read(image, descriptor).ok_or(bad(DescriptorDefect::Truncated {
                need: descriptor + DESCRIPTOR_LEN,
                len,
            }))?;
        if d.signature != TDVF_SIGNATURE {
            return Err(bad(DescriptorDefect::Signature(d.signature)));
        }
        if d.version != TDVF_VERSION {
            return Err(bad(DescriptorDefect::Version(d.version)));
        }
        let count = to_usize(u64::from(d.section_count));
        if count == 0 {
            return Err(bad(DescriptorDefect::NoSections));
        }
        if count > MAX_SECTIONS {
            return Err(bad(DescriptorDefect::TooManySections(d.section_count)));
        }
        let table_len = DESCRIPTOR_LEN + SECTION_ENTRY_LEN * u64::from(d.section_count);
        if u64::from(d.length) != table_len {
            return Err(bad(DescriptorDefect::Length {
                length: d.length,
                sections: d.section_count,
            }));
        }
        if descriptor + table_len > len {
            return Err(bad(DescriptorDefect::Truncated {
                need: descriptor + table_len,
                len,
            }));
        }

        let mut out = TdvfImage {
            image_len: len,
            descriptor,
            located,
            sections: [Section::EMPTY; MAX_SECTIONS],
            count,
        };
        let (mut hobs, mut payloads, mut params, mut infos, mut tdparams) = (0, 0, 0, 0, 0);
        for index in 0..count {
            let at = descriptor + DESCRIPTOR_LEN + SECTION_ENTRY_LEN * index as u64;
            let entry: TdvfSectionEntry =
                read(image, at).ok_or(bad(DescriptorDefect::Truncated {
                    need: at + SECTION_ENTRY_LEN,
                    len,
                }))?;
            let s = check_section(&entry, len)
                .map_err(|defect| TdvfError::Section { index, defect })?;
            let once = match s.kind {
                TdvfSectionType::TdHob => Some(&mut hobs),
                TdvfSectionType::Payload => Some(&mut payloads),
                TdvfSectionType::PayloadParam => Some(&mut params),
                TdvfSectionType::TdInfo => Some(&mut infos),
                TdvfSectionType::TdParams => Some(&mut tdparams),
                _ => None,
            };
            if let Some(n) = once {
                *n += 1;
                if *n > 1 {
                    return Err(TdvfError::Section {
                        index,
                        defect: SectionDefect::Duplicate { kind: s.kind },
                    });
                }
            }
            out.sections[index] = s;
        }
        out.check_whole()?;
        Ok(out)
    }

    /// The rules over the whole list.
    fn check_whole(&self) -> Result<(), TdvfError> {
        use TdvfSectionType as T;
        let has = |k| self.of_kind(k).next().is_some();
        if !has(T::Bfv) {
            return Err(TdvfError::NoBfv);
        }
        if !has(T::TdHob) && !has(T::PermMem) {
            return Err(TdvfError::NoHobNorPermMem);
        }
        if has(T::PayloadParam) && !has(T::Payload) {
            return Err(TdvfError::PayloadParamWithoutPayload);
        }
        for (index, s) in self.sections().iter().enumerate() {
            if matches!(s.kind, T::TdInfo | T::TdParams) {
                let inside = self.of_kind(T::Bfv).any(|b| {
                    s.data_offset >= b.data_offset
                        && s.data_offset + s.raw_size <= b.data_offset + b.raw_size
                });
                if !inside {
                    return Err(TdvfError::Section {
                        index,
                        defect: SectionDefect::NotInsideBfv { kind: s.kind },
                    });
                }
            }
        }
        for (a, sa) in self.sections().iter().enumerate() {
            for (b, sb) in self.sections().iter().enumerate().skip(a + 1) {
                let (ra, rb) = (sa.memory_range(), sb.memory_range());
                if !ra.is_empty() && !rb.is_empty() && ra.start < rb.end && rb.start < ra.end {
                    return Err(TdvfError::Overlap { a, b });
                }
            }
        }
        let reset = IMAGE_END - 16;
        if !self
            .of_kind(T::Bfv)
            .any(|b| b.memory_range().contains(&reset))
        {
            return Err(TdvfError::ResetVectorOutsideBfv { gpa: reset });
        }
        Ok(())
    }

    /// The sections, in metadata order (the order the VMM adds them in,
    /// which MRTD depends on).
    pub fn sections(&self) -> &[Section] {
        &self.sections[..self.count]
    }

    /// The sections of one type, in metadata order.
    pub fn of_kind(&self, kind: TdvfSectionType) -> impl Iterator<Item = &Section> + '_ {
        self.sections().iter().filter(move |s| s.kind == kind)
    }

    /// The TD_HOB section, if any (at most one).
    pub fn td_hob(&self) -> Option<&Section> {
        self.of_kind(TdvfSectionType::TdHob).next()
    }

    /// The image's length in bytes.
    pub fn image_len(&self) -> u64 {
        self.image_len
    }

    /// The GPA of the image's first byte, so that it ends at 4 GiB.
    pub fn base_gpa(&self) -> u64 {
        IMAGE_END - self.image_len
    }

    /// File offset of the descriptor.
    pub fn descriptor_offset(&self) -> u64 {
        self.descriptor
    }

    /// Which locators found the metadata (when both did, they agreed).
    pub fn located(&self) -> Located {
        self.located
    }

    fn check_len(&self, image: &[u8]) -> Result<(), TdvfError> {
        if image.len() as u64 == self.image_len {
            Ok(())
        } else {
            Err(TdvfError::ImageLength {
                parsed: self.image_len,
                given: image.len() as u64,
            })
        }
    }
}

/// A TDCALL found (and replaced) in a BFV section.
pub use crate::tdcall_patch::TdcallSite;

impl TdvfImage {
    /// Each BFV section's raw data in the file and the GPA it starts at:
    /// where TDCALLs are looked for (a CFV holds data, keys for instance).
    fn code_ranges(&self) -> impl Iterator<Item = (core::ops::Range<u64>, u64)> + '_ {
        self.of_kind(TdvfSectionType::Bfv)
            .map(|bfv| (bfv.file_range(), bfv.gpa))
    }
}

/// A site at file `offset` inside the code range `file` that starts at
/// GPA `gpa`.
fn site(file: &core::ops::Range<u64>, gpa: u64, offset: u64) -> TdcallSite {
    TdcallSite {
        offset,
        addr: gpa + (offset - file.start),
    }
}

/// Calls `on_site` for each TDCALL (`66 0F 01 CC`) in the BFV sections'
/// raw data of `image` (the bytes `tdvf` was parsed from), in file order,
/// and nowhere else; returns how many.
pub fn find_tdcalls(
    tdvf: &TdvfImage,
    image: &[u8],
    mut on_site: impl FnMut(TdcallSite),
) -> Result<usize, TdvfError> {
    tdvf.check_len(image)?;
    let mut count = 0;
    for (file, gpa) in tdvf.code_ranges() {
        for offset in crate::tdcall_patch::find(image, file.clone()) {
            on_site(site(&file, gpa, offset));
            count += 1;
        }
    }
    Ok(count)
}

/// Replaces each TDCALL in the BFV sections' raw data of `image` with
/// [`abi::tdcall::TDCALL_PATCH`] (`out DOORBELL_PORT, al` then a 2-byte
/// NOP), calling `on_site` for each; returns how many. Nothing outside the
/// BFVs' raw data changes. Measure the image ([`mrtd_stream`]) first.
pub fn patch_tdcalls(
    tdvf: &TdvfImage,
    image: &mut [u8],
    mut on_site: impl FnMut(TdcallSite),
) -> Result<usize, TdvfError> {
    tdvf.check_len(image)?;
    let mut count = 0;
    for (file, gpa) in tdvf.code_ranges() {
        count += crate::tdcall_patch::patch(image, file.clone(), |offset| {
            on_site(site(&file, gpa, offset))
        });
    }
    Ok(count)
}

/// The 128-byte buffer TDH.MEM.PAGE.ADD or TDH.MR.EXTEND hashes: `tag`,
/// the GPA (little-endian) at byte 16, zeros elsewhere.
pub fn mrtd_buffer(tag: &[u8], gpa: u64) -> [u8; MRTD_BUFFER_LEN] {
    let mut b = [0u8; MRTD_BUFFER_LEN];
    b[..tag.len()].copy_from_slice(tag);
    b[MRTD_GPA_OFFSET..MRTD_GPA_OFFSET + 8].copy_from_slice(&gpa.to_le_bytes());
    b
}

/// How many TDX module calls the measurement models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MrtdCalls {
    /// TDH.MEM.PAGE.ADD, one per 4 KiB page.
    pub page_adds: u64,
    /// TDH.MR.EXTEND, one per 256-byte chunk.
    pub extends: u64,
}

/// Feeds `update` the byte stream the TDX module hashes into MRTD (with
/// SHA-384) as the VMM builds the TD from `image` as given (unpatched):
/// for each section in metadata order, for each 4 KiB page, the
/// TDH.MEM.PAGE.ADD buffer (unless the section is PAGE.AUG) and then, for
/// an MR.EXTEND section, for each 256-byte chunk of the page, the
/// TDH.MR.EXTEND buffer and the chunk's 256 bytes (raw data, then zeros
/// past the raw size). This is the order QEMU and KVM add the pages in and
/// the one td-shim's `td-shim-tee-info-hash` reproduces. Its cost is
/// linear in the sections' memory sizes, which the metadata does not
/// bound: check the sections against the TD's memory first.
pub fn mrtd_stream(
    tdvf: &TdvfImage,
    image: &[u8],
    mut update: impl FnMut(&[u8]),
) -> Result<MrtdCalls, TdvfError> {
    tdvf.check_len(image)?;
    let mut calls = MrtdCalls::default();
    let chunk_len = to_usize(MR_EXTEND_CHUNK);
    for s in tdvf.sections() {
        let mut page = 0;
        while page < s.mem_size {
            let gpa = s.gpa + page;
            if !s.page_aug() {
                update(&mrtd_buffer(MRTD_TAG_PAGE_ADD, gpa));
                calls.page_adds += 1;
            }
            if s.mr_extend() {
                let mut off = page;
                while off < page + PAGE_4K {
                    update(&mrtd_buffer(MRTD_TAG_MR_EXTEND, s.gpa + off));
                    let mut chunk = [0u8; 256];
                    if off < s.raw_size {
                        let have = to_usize((s.raw_size - off).min(MR_EXTEND_CHUNK));
                        let from = to_usize(s.data_offset + off);
                        chunk[..have].copy_from_slice(&image[from..from + have]);
                    }
                    update(&chunk[..chunk_len]);
                    calls.extends += 1;
                    off += MR_EXTEND_CHUNK;
                }
            }
            page += PAGE_4K;
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests;
