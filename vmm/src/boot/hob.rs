//! Builds the TD HOB list: the PHIT, one resource descriptor per RAM range
//! (initial memory as SYSTEM_MEMORY, everything else as MEMORY_UNACCEPTED,
//! split around the MMIO hole), and the payload GUID HOB with the command
//! line. It is the only thing the firmware is told about the machine.

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
    pub fn finish(mut self, base: u64, memory: (u64, u64), free: (u64, u64)) -> Vec<u8> {
        let end_offset = self.bytes.len() as u64;
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
            efi_end_of_hob_list: base + end_offset,
        };
        self.bytes[..core::mem::size_of::<HandoffInfoTable>()].copy_from_slice(phit.as_bytes());
        self.bytes
    }
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
    for &(start, len) in &spec.ram {
        let end = start + len;
        let mut cursor = start;
        if init_start < end && init_end > start {
            if init_start > start {
                b.resource(
                    resource_type::MEMORY_UNACCEPTED,
                    resource_attr::RAM,
                    start,
                    init_start - start,
                );
            }
            let s = init_start.max(start);
            let e = init_end.min(end);
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
