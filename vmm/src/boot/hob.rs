//! Builds the TD HOB list: the PHIT, one resource descriptor per RAM range
//! (initial memory as SYSTEM_MEMORY, everything else as MEMORY_UNACCEPTED,
//! split around the MMIO hole), and, for our ELF firmware, the payload GUID
//! HOB with the command line. It is the only thing the firmware is told
//! about the machine. A TDVF firmware's list (`build_tdvf_hob`) is TDVF's:
//! only the HOB types TDVF firmware accepts (td-shim refuses any other),
//! and `EfiEndOfHobList` just past the END HOB, where td-shim checks it.

use abi::guid::{self, Guid};
use abi::hob::{
    self, align_hob, hob_type, resource_attr, resource_type, GuidHeader, HandoffInfoTable, Header,
    PayloadInfo, ResourceDescriptor,
};
use abi::pod::Pod;
use thiserror::Error;

/// Why a HOB list could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HobBuildError {
    #[error("command line is {0} bytes, more than the {max}-byte limit", max = hob::MAX_CMDLINE_LEN)]
    CmdlineTooLong(usize),
    #[error("HOB of {0} bytes does not fit a 16-bit HOB length")]
    HobTooLong(usize),
    #[error("TD HOB grew from the planned {planned} bytes to {built}")]
    Grew { planned: u64, built: u64 },
}

/// Accumulates HOBs; the PHIT is written last, at the front.
#[derive(Debug)]
pub struct HobBuilder {
    bytes: Vec<u8>,
}

impl Default for HobBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HobBuilder {
    /// A list with room reserved for the PHIT.
    pub fn new() -> Self {
        HobBuilder {
            bytes: vec![0; core::mem::size_of::<HandoffInfoTable>()],
        }
    }

    fn header(hob_type: u16, len: usize) -> Result<Header, HobBuildError> {
        Ok(Header {
            hob_type,
            hob_length: u16::try_from(len).map_err(|_| HobBuildError::HobTooLong(len))?,
            reserved: 0,
        })
    }

    /// Adds a resource descriptor.
    pub fn resource(&mut self, resource_type: u32, attribute: u32, start: u64, length: u64) {
        let r = ResourceDescriptor {
            header: Header {
                hob_type: hob_type::RESOURCE_DESCRIPTOR,
                hob_length: hob_length::<ResourceDescriptor>(),
                reserved: 0,
            },
            owner: guid::ZERO,
            resource_type,
            resource_attribute: attribute,
            physical_start: start,
            resource_length: length,
        };
        self.bytes.extend_from_slice(r.as_bytes());
    }

    /// Adds a GUID extension HOB carrying `data` (padded to 8 bytes).
    pub fn guid(&mut self, name: Guid, data: &[u8]) -> Result<(), HobBuildError> {
        let len = align_hob(core::mem::size_of::<GuidHeader>() + data.len());
        let g = GuidHeader {
            header: Self::header(hob_type::GUID_EXTENSION, len)?,
            name,
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(g.as_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(start + len, 0);
        Ok(())
    }

    /// Appends the END HOB and fills the PHIT, for a list placed at `base`.
    pub fn finish(self, base: u64, memory: (u64, u64), free: (u64, u64)) -> Vec<u8> {
        self.finish_with(base, memory, free, EndOfList::AtEndHob)
    }

    /// `finish`, with `EfiEndOfHobList` where `end` says.
    pub fn finish_with(
        mut self,
        base: u64,
        memory: (u64, u64),
        free: (u64, u64),
        end: EndOfList,
    ) -> Vec<u8> {
        let end_offset = self.bytes.len() as u64;
        let end_of_list = match end {
            EndOfList::AtEndHob => end_offset,
            EndOfList::PastEndHob => end_offset + core::mem::size_of::<Header>() as u64,
        };
        let end = Header {
            hob_type: hob_type::END_OF_HOB_LIST,
            hob_length: hob_length::<Header>(),
            reserved: 0,
        };
        self.bytes.extend_from_slice(end.as_bytes());
        let phit = HandoffInfoTable {
            header: Header {
                hob_type: hob_type::HANDOFF,
                hob_length: hob_length::<HandoffInfoTable>(),
                reserved: 0,
            },
            version: hob::HANDOFF_VERSION,
            boot_mode: hob::BOOT_WITH_FULL_CONFIGURATION,
            efi_memory_bottom: memory.0,
            efi_memory_top: memory.1,
            efi_free_memory_bottom: free.0,
            efi_free_memory_top: free.1,
            efi_end_of_hob_list: base + end_of_list,
        };
        self.bytes[..core::mem::size_of::<HandoffInfoTable>()].copy_from_slice(phit.as_bytes());
        self.bytes
    }
}

/// Where the PHIT's `EfiEndOfHobList` points: edk2's PEI writes the
/// address of the END HOB (our firmware reads that); td-shim checks that
/// it points just past it (`td-shim-interface/src/td_uefi_pi/hob.rs`
/// `check_hob_length`), as TDVF firmware expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndOfList {
    /// The END HOB's address.
    AtEndHob,
    /// The byte after the END HOB.
    PastEndHob,
}

/// The resource descriptors of `ram` (`(gpa, len)`, ascending): the parts
/// inside `initial` (ascending, disjoint) as SYSTEM_MEMORY, every other
/// byte as MEMORY_UNACCEPTED; each RAM byte described once.
fn describe_ram(b: &mut HobBuilder, ram: &[(u64, u64)], initial: &[(u64, u64)]) {
    for &(start, len) in ram {
        let end = start + len;
        let mut cursor = start;
        for &(s, l) in initial {
            let (s, e) = (s.max(cursor), (s + l).min(end));
            if s >= e {
                continue;
            }
            if s > cursor {
                b.resource(
                    resource_type::MEMORY_UNACCEPTED,
                    resource_attr::RAM,
                    cursor,
                    s - cursor,
                );
            }
            b.resource(resource_type::SYSTEM_MEMORY, resource_attr::RAM, s, e - s);
            cursor = e;
        }
        if cursor < end {
            b.resource(
                resource_type::MEMORY_UNACCEPTED,
                resource_attr::RAM,
                cursor,
                end - cursor,
            );
        }
    }
}

/// Builds the TD HOB a TDVF firmware reads, at `base`: the PHIT (its
/// memory range the accepted `initial` ranges' span, `EfiEndOfHobList`
/// just past the END HOB) and the resource descriptors of `ram` with the
/// `initial` ranges (the TD_HOB section and any other section in RAM,
/// ascending and disjoint) accepted; no other HOB (td-shim fails on a
/// memory-allocation, FV or CPU HOB, and its test payload on any ACPI
/// table it did not build).
pub fn build_tdvf_hob(base: u64, ram: &[(u64, u64)], initial: &[(u64, u64)]) -> Vec<u8> {
    let mut b = HobBuilder::new();
    describe_ram(&mut b, ram, initial);
    let low = initial.first().map_or(0, |r| r.0);
    let high = initial.last().map_or(0, |r| r.0 + r.1);
    b.finish_with(base, (low, high), (0, 0), EndOfList::PastEndHob)
}

/// What the TD HOB describes.
#[derive(Clone, Debug)]
pub struct TdHobSpec<'a> {
    /// GPA the list is written at.
    pub base: u64,
    /// RAM ranges `(gpa, len)`, ascending.
    pub ram: Vec<(u64, u64)>,
    /// Initial memory `(gpa, len)`: accepted by construction.
    pub initial: (u64, u64),
    /// Firmware scratch memory inside initial memory `(gpa, len)`.
    pub free: (u64, u64),
    /// Payload `(gpa, len)`, `(0, 0)` when there is none.
    pub payload: (u64, u64),
    /// Command line for the payload.
    pub cmdline: &'a str,
}

/// Builds the TD HOB list for `spec`.
pub fn build_td_hob(spec: &TdHobSpec<'_>) -> Result<Vec<u8>, HobBuildError> {
    if spec.cmdline.len() > hob::MAX_CMDLINE_LEN {
        return Err(HobBuildError::CmdlineTooLong(spec.cmdline.len()));
    }
    let mut b = HobBuilder::new();
    let (init_start, init_len) = spec.initial;
    let init_end = init_start + init_len;
    describe_ram(&mut b, &spec.ram, &[spec.initial]);
    let info = PayloadInfo {
        image_base: spec.payload.0,
        image_size: spec.payload.1,
        // A line too long for a u32 is too long for its HOB too: `guid`
        // below refuses it.
        cmdline_len: u32::try_from(spec.cmdline.len()).unwrap_or(u32::MAX),
        reserved: 0,
    };
    let mut data = info.as_bytes().to_vec();
    data.extend_from_slice(spec.cmdline.as_bytes());
    b.guid(guid::PAYLOAD_INFO, &data)?;
    Ok(b.finish(
        spec.base,
        (init_start, init_end),
        (spec.free.0, spec.free.0 + spec.free.1),
    ))
}

/// The HOB length of a fixed-size HOB structure (checked at compile time:
/// each is far below 64 KiB).
const fn hob_length<T>() -> u16 {
    let n = core::mem::size_of::<T>();
    assert!(n <= u16::MAX as usize);
    #[allow(clippy::cast_possible_truncation)] // asserted above
    let n = n as u16;
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::hob::{Hob, HobError, HobList};
    use abi::GIB;

    fn spec(cmdline: &str) -> TdHobSpec<'_> {
        TdHobSpec {
            base: 0x20_0000,
            ram: vec![(0, 3 * GIB), (4 * GIB, 5 * GIB)],
            initial: (0x10_0000, 0x30_0000),
            free: (0x30_0000, 0x10_0000),
            payload: (0x38_0000, 0x1234),
            cmdline,
        }
    }

    /// td-shim's checks of a TD HOB (`td_uefi_pi/hob.rs`: every length
    /// non-zero and `reserved` 0, the PHIT 56 bytes with a 4 KiB-aligned
    /// memory top, resource descriptors 48 bytes, `EfiEndOfHobList` just
    /// past the END HOB; `shim_info.rs`: only PHIT, resource, GUID and END
    /// HOBs), and every RAM byte described once.
    #[test]
    fn a_tdvf_hob_passes_td_shims_checks() {
        let base = 0x80_0000;
        let ram = [(0, 3 * GIB), (4 * GIB, GIB)];
        let initial = [(0x80_0000, 0x2_0000)];
        let bytes = build_tdvf_hob(base, &ram, &initial);
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let (mut at, mut described, mut accepted) = (0usize, 0u64, Vec::new());
        loop {
            let (kind, len) = (u16_at(at), usize::from(u16_at(at + 2)));
            assert!(len > 0 && bytes[at + 4..at + 8] == [0; 4], "HOB at {at}");
            match kind {
                hob_type::HANDOFF => {
                    assert_eq!((at, len), (0, 56));
                    assert_eq!(u64_at(at + 16) % 4096, 0, "EfiMemoryTop aligned");
                }
                hob_type::RESOURCE_DESCRIPTOR => {
                    assert_eq!(len, 48);
                    let (t, start, size) = (bytes[at + 24], u64_at(at + 32), u64_at(at + 40));
                    described += size;
                    if u32::from(t) == resource_type::SYSTEM_MEMORY {
                        accepted.push((start, size));
                    } else {
                        assert_eq!(u32::from(t), resource_type::MEMORY_UNACCEPTED);
                    }
                }
                hob_type::END_OF_HOB_LIST => {
                    assert_eq!(u64_at(48), base + (at + len) as u64, "just past END");
                    break;
                }
                other => panic!("HOB type {other} at {at}"),
            }
            at += len;
        }
        assert_eq!(described, 4 * GIB);
        assert_eq!(accepted, initial);
        // Our firmware's list keeps edk2's convention: the END HOB itself.
        let ours = build_td_hob(&spec("")).unwrap();
        let end = u64::from_le_bytes(ours[48..56].try_into().unwrap());
        assert_eq!(end - 0x20_0000, (ours.len() - 8) as u64);
    }

    #[test]
    fn parses_back_what_it_wrote() {
        let bytes = build_td_hob(&spec("fw.accept=all console=1")).unwrap();
        let list = HobList::parse(&bytes, 0x20_0000).unwrap();
        assert_eq!(list.len(), bytes.len());
        assert_eq!(list.phit().version, 9);
        assert_eq!(list.phit().efi_memory_bottom, 0x10_0000);
        assert_eq!(list.phit().efi_memory_top, 0x40_0000);
        assert_eq!(list.phit().efi_free_memory_top, 0x40_0000);
        let res: Vec<_> = list
            .memory_resources()
            .map(|r| (r.resource_type, r.physical_start, r.resource_length))
            .collect();
        assert_eq!(
            res,
            vec![
                (resource_type::MEMORY_UNACCEPTED, 0, 0x10_0000),
                (resource_type::SYSTEM_MEMORY, 0x10_0000, 0x30_0000),
                (
                    resource_type::MEMORY_UNACCEPTED,
                    0x40_0000,
                    3 * GIB - 0x40_0000
                ),
                (resource_type::MEMORY_UNACCEPTED, 4 * GIB, 5 * GIB),
            ]
        );
        let (info, cmdline) = list.payload_info().unwrap().unwrap();
        assert_eq!(info.image_base, 0x38_0000);
        assert_eq!(info.image_size, 0x1234);
        assert_eq!(cmdline, b"fw.accept=all console=1");
        assert!(list.iter().all(|h| !matches!(h, Hob::Other { .. })));
        // HOB lengths are 8-byte aligned, so is the total.
        assert_eq!(bytes.len() % 8, 0);
    }

    #[test]
    fn total_ram_is_described_exactly_once() {
        let bytes = build_td_hob(&spec("")).unwrap();
        let list = HobList::parse(&bytes, 0x20_0000).unwrap();
        let total: u64 = list.memory_resources().map(|r| r.resource_length).sum();
        assert_eq!(total, 8 * GIB);
    }

    #[test]
    fn parser_rejects_corruption() {
        let bytes = build_td_hob(&spec("x")).unwrap();
        // Wrong base: the PHIT's end pointer no longer matches.
        assert!(matches!(
            HobList::parse(&bytes, 0x1000),
            Err(HobError::EndMismatch { .. })
        ));
        // Truncated: no END HOB.
        assert!(HobList::parse(&bytes[..bytes.len() - 8], 0x20_0000).is_err());
        // Non-zero reserved field in the second HOB.
        let mut bad = bytes.clone();
        bad[56 + 4] = 1;
        assert_eq!(
            HobList::parse(&bad, 0x20_0000).unwrap_err(),
            HobError::ReservedNotZero { offset: 56 }
        );
        // Overlapping memory resources.
        let mut b = HobBuilder::new();
        b.resource(resource_type::SYSTEM_MEMORY, resource_attr::RAM, 0, 0x2000);
        b.resource(
            resource_type::MEMORY_UNACCEPTED,
            resource_attr::RAM,
            0x1000,
            0x2000,
        );
        let bytes = b.finish(0, (0, 0), (0, 0));
        assert!(matches!(
            HobList::parse(&bytes, 0),
            Err(HobError::OverlappingResources { .. })
        ));
        // Unaligned memory resource.
        let mut b = HobBuilder::new();
        b.resource(
            resource_type::SYSTEM_MEMORY,
            resource_attr::RAM,
            0x10,
            0x2000,
        );
        let bytes = b.finish(0, (0, 0), (0, 0));
        assert!(matches!(
            HobList::parse(&bytes, 0),
            Err(HobError::BadResource { .. })
        ));
    }

    #[test]
    fn parser_never_panics_on_mutations() {
        use proptest::prelude::*;
        let bytes = build_td_hob(&spec("fw.selftest=1")).unwrap();
        proptest!(|(flips in proptest::collection::vec((0usize..bytes.len(), any::<u8>()), 1..8), cut in 0usize..400)| {
            let mut b = bytes.clone();
            for (i, v) in flips { b[i] = v; }
            b.truncate(cut.min(b.len()));
            let _ = HobList::parse(&b, 0x20_0000).map(|l| l.iter().count());
        });
    }

    #[test]
    fn overlong_cmdline_is_refused() {
        let long = "x".repeat(hob::MAX_CMDLINE_LEN + 1);
        assert_eq!(
            build_td_hob(&spec(&long)).unwrap_err(),
            HobBuildError::CmdlineTooLong(hob::MAX_CMDLINE_LEN + 1)
        );
    }
}
