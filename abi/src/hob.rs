//! TD HOB list: the PI structures the VMM writes and the firmware reads, and
//! a validating parser both sides use.
//!
//! Layouts follow the PI specification (`PiHob.h`). Every HOB starts with an
//! 8-byte generic header, is 8-byte aligned, and the list ends with an
//! END_OF_HOB_LIST header. The PHIT comes first; its `efi_end_of_hob_list`
//! holds the address of the end HOB (edk2's convention).

use crate::guid::Guid;
use crate::pod::Pod;

/// HOB types.
pub mod hob_type {
    pub const HANDOFF: u16 = 0x0001;
    pub const MEMORY_ALLOCATION: u16 = 0x0002;
    pub const RESOURCE_DESCRIPTOR: u16 = 0x0003;
    pub const GUID_EXTENSION: u16 = 0x0004;
    pub const FV: u16 = 0x0005;
    pub const CPU: u16 = 0x0006;
    pub const MEMORY_POOL: u16 = 0x0007;
    pub const FV2: u16 = 0x0009;
    pub const LOAD_PEIM: u16 = 0x000a;
    pub const UNUSED: u16 = 0xfffe;
    pub const END_OF_HOB_LIST: u16 = 0xffff;
}

/// Resource types of a resource descriptor.
pub mod resource_type {
    pub const SYSTEM_MEMORY: u32 = 0;
    pub const MEMORY_MAPPED_IO: u32 = 1;
    pub const IO: u32 = 2;
    pub const FIRMWARE_DEVICE: u32 = 3;
    pub const MEMORY_MAPPED_IO_PORT: u32 = 4;
    pub const MEMORY_RESERVED: u32 = 5;
    pub const IO_RESERVED: u32 = 6;
    pub const MEMORY_UNACCEPTED: u32 = 7;
}

/// Resource attribute bits.
pub mod resource_attr {
    pub const PRESENT: u32 = 0x1;
    pub const INITIALIZED: u32 = 0x2;
    pub const TESTED: u32 = 0x4;
    pub const UNCACHEABLE: u32 = 0x400;
    pub const WRITE_BACK_CACHEABLE: u32 = 0x2000;
    /// What the VMM sets on every RAM descriptor (present, initialised, tested).
    pub const RAM: u32 = PRESENT | INITIALIZED | TESTED;
}

/// PHIT version the VMM writes and the parser requires.
pub const HANDOFF_VERSION: u32 = 0x0009;
/// Boot mode "full configuration".
pub const BOOT_WITH_FULL_CONFIGURATION: u32 = 0;
/// Longest HOB list the parser accepts.
pub const MAX_HOB_LIST_BYTES: u64 = 64 * 1024;

/// EFI_HOB_GENERIC_HEADER.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub hob_type: u16,
    pub hob_length: u16,
    pub reserved: u32,
}

/// EFI_HOB_HANDOFF_INFO_TABLE (PHIT).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffInfoTable {
    pub header: Header,
    pub version: u32,
    pub boot_mode: u32,
    pub efi_memory_top: u64,
    pub efi_memory_bottom: u64,
    pub efi_free_memory_top: u64,
    pub efi_free_memory_bottom: u64,
    pub efi_end_of_hob_list: u64,
}

/// EFI_HOB_RESOURCE_DESCRIPTOR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceDescriptor {
    pub header: Header,
    pub owner: Guid,
    pub resource_type: u32,
    pub resource_attribute: u32,
    pub physical_start: u64,
    pub resource_length: u64,
}

/// EFI_HOB_GUID_TYPE header; the GUID's data follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuidHeader {
    pub header: Header,
    pub name: Guid,
}

/// Data of the `guid::PAYLOAD_INFO` GUID HOB; `cmdline_len` bytes of command
/// line (no NUL) follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// GPA of the payload (kernel ELF file bytes), 0 when there is none.
    pub image_base: u64,
    /// Size of the payload in bytes, 0 when there is none.
    pub image_size: u64,
    /// Length of the command line that follows this structure.
    pub cmdline_len: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

// SAFETY: all four are repr(C) with naturally aligned u16/u32/u64/Guid fields
// and no padding (sizes asserted below); every bit pattern is valid.
unsafe impl Pod for Header {}
// SAFETY: as above.
unsafe impl Pod for HandoffInfoTable {}
// SAFETY: as above.
unsafe impl Pod for ResourceDescriptor {}
// SAFETY: as above.
unsafe impl Pod for GuidHeader {}
// SAFETY: as above.
unsafe impl Pod for PayloadInfo {}

const _: () = assert!(core::mem::size_of::<Header>() == 8);
const _: () = assert!(core::mem::size_of::<HandoffInfoTable>() == 56);
const _: () = assert!(core::mem::size_of::<ResourceDescriptor>() == 48);
const _: () = assert!(core::mem::size_of::<GuidHeader>() == 24);
const _: () = assert!(core::mem::size_of::<PayloadInfo>() == 24);

/// Largest command line the payload HOB may carry.
pub const MAX_CMDLINE_LEN: usize = 4096;

/// Rounds a HOB length up to the 8-byte alignment HOBs keep.
pub const fn align_hob(len: usize) -> usize {
    (len + 7) & !7
}

/// Why a HOB list was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HobError {
    /// The list is shorter than the HOB that starts at `offset`.
    Truncated { offset: usize },
    /// The first HOB is not a PHIT of the right size and version.
    BadPhit,
    /// A HOB at `offset` has a length that is zero, unaligned or too small
    /// for its type.
    BadLength { offset: usize, length: u16 },
    /// A HOB at `offset` has a non-zero reserved field.
    ReservedNotZero { offset: usize },
    /// The list has no END_OF_HOB_LIST before its end.
    NoEnd,
    /// The PHIT's end-of-list address does not point at the END HOB.
    EndMismatch { expected: u64, found: u64 },
    /// A resource descriptor at `offset` is empty, unaligned or wraps around.
    BadResource { offset: usize },
    /// Two memory resource descriptors overlap.
    OverlappingResources { a: u64, b: u64 },
    /// The payload GUID HOB is malformed.
    BadPayloadInfo,
}

impl core::fmt::Display for HobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HobError::Truncated { offset } => {
                write!(f, "HOB at offset {offset:#x} runs past the list")
            }
            HobError::BadPhit => write!(f, "first HOB is not a version-9 PHIT"),
            HobError::BadLength { offset, length } => {
                write!(f, "HOB at offset {offset:#x} has bad length {length}")
            }
            HobError::ReservedNotZero { offset } => {
                write!(f, "HOB at offset {offset:#x} has a non-zero reserved field")
            }
            HobError::NoEnd => write!(f, "no END_OF_HOB_LIST"),
            HobError::EndMismatch { expected, found } => {
                write!(
                    f,
                    "PHIT end-of-list {found:#x} is not the END HOB at {expected:#x}"
                )
            }
            HobError::BadResource { offset } => {
                write!(
                    f,
                    "resource descriptor at offset {offset:#x} is empty, unaligned or wraps"
                )
            }
            HobError::OverlappingResources { a, b } => {
                write!(f, "memory resources at {a:#x} and {b:#x} overlap")
            }
            HobError::BadPayloadInfo => write!(f, "payload GUID HOB is malformed"),
        }
    }
}

/// One HOB of a validated list.
#[derive(Clone, Copy, Debug)]
pub enum Hob<'a> {
    Handoff(HandoffInfoTable),
    Resource(ResourceDescriptor),
    Guid { name: Guid, data: &'a [u8] },
    Other { hob_type: u16, bytes: &'a [u8] },
}

/// A HOB list whose structure has been validated.
#[derive(Clone, Copy, Debug)]
pub struct HobList<'a> {
    bytes: &'a [u8],
    phit: HandoffInfoTable,
}

impl<'a> HobList<'a> {
    /// Validates the HOB list in `bytes`, which the guest mapped at GPA
    /// `base`. `bytes` may extend past the END HOB; the list stops there.
    ///
    /// Checks: a version-9 PHIT first, every length 8-byte aligned and large
    /// enough for its type, zero reserved fields, an END HOB whose address is
    /// the PHIT's `efi_end_of_hob_list`, memory resource descriptors 4 KiB
    /// aligned, non-empty, not wrapping and not overlapping.
    pub fn parse(bytes: &'a [u8], base: u64) -> Result<Self, HobError> {
        let bytes = &bytes[..bytes.len().min(crate::to_usize(MAX_HOB_LIST_BYTES))];
        let phit = HandoffInfoTable::read_from_prefix(bytes).ok_or(HobError::BadPhit)?;
        if phit.header.hob_type != hob_type::HANDOFF
            || phit.header.hob_length as usize != core::mem::size_of::<HandoffInfoTable>()
            || phit.version != HANDOFF_VERSION
        {
            return Err(HobError::BadPhit);
        }
        let mut offset = 0usize;
        let end = loop {
            let header =
                Header::read_from_prefix(&bytes[offset..]).ok_or(HobError::Truncated { offset })?;
            if header.reserved != 0 {
                return Err(HobError::ReservedNotZero { offset });
            }
            let length = header.hob_length as usize;
            let min = match header.hob_type {
                hob_type::HANDOFF => core::mem::size_of::<HandoffInfoTable>(),
                hob_type::RESOURCE_DESCRIPTOR => core::mem::size_of::<ResourceDescriptor>(),
                hob_type::GUID_EXTENSION => core::mem::size_of::<GuidHeader>(),
                _ => core::mem::size_of::<Header>(),
            };
            if length < min || !length.is_multiple_of(8) {
                return Err(HobError::BadLength {
                    offset,
                    length: header.hob_length,
                });
            }
            if bytes.len() - offset < length {
                return Err(HobError::Truncated { offset });
            }
            if header.hob_type == hob_type::HANDOFF && offset != 0 {
                return Err(HobError::BadPhit);
            }
            if header.hob_type == hob_type::END_OF_HOB_LIST {
                break offset;
            }
            offset += length;
            if offset >= bytes.len() {
                return Err(HobError::NoEnd);
            }
        };
        let end_gpa = base.wrapping_add(end as u64);
        if phit.efi_end_of_hob_list != end_gpa {
            return Err(HobError::EndMismatch {
                expected: end_gpa,
                found: phit.efi_end_of_hob_list,
            });
        }
        let list = HobList {
            bytes: &bytes[..end + core::mem::size_of::<Header>()],
            phit,
        };
        list.check_resources()?;
        Ok(list)
    }

    fn check_resources(&self) -> Result<(), HobError> {
        let mut offset = 0;
        for hob in self.iter() {
            let len = match hob {
                Hob::Handoff(_) => core::mem::size_of::<HandoffInfoTable>(),
                Hob::Resource(r) => {
                    let end = r.physical_start.checked_add(r.resource_length);
                    if r.resource_length == 0 || end.is_none() {
                        return Err(HobError::BadResource { offset });
                    }
                    if is_memory(r.resource_type)
                        && (r.physical_start % crate::PAGE_4K != 0
                            || r.resource_length % crate::PAGE_4K != 0)
                    {
                        return Err(HobError::BadResource { offset });
                    }
                    r.header.hob_length as usize
                }
                Hob::Guid { data, .. } => core::mem::size_of::<GuidHeader>() + data.len(),
                Hob::Other { bytes, .. } => bytes.len(),
            };
            offset += len;
        }
        // Quadratic, but HOB lists hold a handful of descriptors.
        for (i, a) in self.memory_resources().enumerate() {
            for b in self.memory_resources().skip(i + 1) {
                let a_end = a.physical_start + a.resource_length;
                let b_end = b.physical_start + b.resource_length;
                if a.physical_start < b_end && b.physical_start < a_end {
                    return Err(HobError::OverlappingResources {
                        a: a.physical_start,
                        b: b.physical_start,
                    });
                }
            }
        }
        if let Some(Err(e)) = self.payload_info() {
            return Err(e);
        }
        Ok(())
    }

    /// The PHIT.
    pub fn phit(&self) -> &HandoffInfoTable {
        &self.phit
    }

    /// The list's length in bytes, END HOB included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a valid list has at least a PHIT and an END HOB.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Iterates over every HOB except the END HOB.
    pub fn iter(&self) -> HobIter<'a> {
        HobIter {
            bytes: self.bytes,
            offset: 0,
        }
    }

    /// Resource descriptors of memory (system memory or unaccepted memory).
    pub fn memory_resources(&self) -> impl Iterator<Item = ResourceDescriptor> + 'a {
        self.iter().filter_map(|h| match h {
            Hob::Resource(r) if is_memory(r.resource_type) => Some(r),
            _ => None,
        })
    }

    /// The data of the first GUID HOB named `name`.
    pub fn guid_data(&self, name: &Guid) -> Option<&'a [u8]> {
        self.iter().find_map(|h| match h {
            Hob::Guid { name: n, data } if n == *name => Some(data),
            _ => None,
        })
    }

    /// The payload GUID HOB, decoded: `(info, command line bytes)`.
    pub fn payload_info(&self) -> Option<Result<(PayloadInfo, &'a [u8]), HobError>> {
        let data = self.guid_data(&crate::guid::PAYLOAD_INFO)?;
        Some(decode_payload_info(data))
    }
}

fn decode_payload_info(data: &[u8]) -> Result<(PayloadInfo, &[u8]), HobError> {
    let info = PayloadInfo::read_from_prefix(data).ok_or(HobError::BadPayloadInfo)?;
    let start = core::mem::size_of::<PayloadInfo>();
    let len = info.cmdline_len as usize;
    if len > MAX_CMDLINE_LEN || data.len() - start < len || info.reserved != 0 {
        return Err(HobError::BadPayloadInfo);
    }
    if info.image_base.checked_add(info.image_size).is_none() {
        return Err(HobError::BadPayloadInfo);
    }
    Ok((info, &data[start..start + len]))
}

/// True for resource types that describe RAM.
pub const fn is_memory(resource_type: u32) -> bool {
    resource_type == resource_type::SYSTEM_MEMORY
        || resource_type == resource_type::MEMORY_UNACCEPTED
}

/// Iterator over the HOBs of a validated list (END HOB excluded).
#[derive(Clone, Debug)]
pub struct HobIter<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for HobIter<'a> {
    type Item = Hob<'a>;

    fn next(&mut self) -> Option<Hob<'a>> {
        // The list was validated by `HobList::parse`: lengths are in bounds.
        let rest = &self.bytes[self.offset..];
        let header = Header::read_from_prefix(rest)?;
        if header.hob_type == hob_type::END_OF_HOB_LIST {
            return None;
        }
        let bytes = &rest[..header.hob_length as usize];
        self.offset += bytes.len();
        Some(match header.hob_type {
            hob_type::HANDOFF => Hob::Handoff(HandoffInfoTable::read_from_prefix(bytes)?),
            hob_type::RESOURCE_DESCRIPTOR => {
                Hob::Resource(ResourceDescriptor::read_from_prefix(bytes)?)
            }
            hob_type::GUID_EXTENSION => {
                let g = GuidHeader::read_from_prefix(bytes)?;
                Hob::Guid {
                    name: g.name,
                    data: &bytes[core::mem::size_of::<GuidHeader>()..],
                }
            }
            hob_type => Hob::Other { hob_type, bytes },
        })
    }
}
