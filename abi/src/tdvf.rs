//! TDVF firmware images (the format td-shim and OVMF's TDX build share): the
//! GUIDs and offsets that locate the TDX metadata at the end of the image,
//! the metadata's descriptor and section layouts, its section types and
//! attributes, the byte buffers the TDX module hashes into MRTD as the VMM
//! adds the initial pages, and the TDCALL encoding with the doorbell bytes
//! the VMM patches over it. The parser and its checks live in
//! `models::tdvf`.
//!
//! Sources: td-shim `td-shim-interface/src/metadata.rs` (the layouts and
//! numbers), QEMU `hw/i386/tdvf.c` and cloud-hypervisor
//! `arch/src/x86_64/tdx/mod.rs` (the GUIDed table), td-shim
//! `td-shim-tools/src/tee_info_hash.rs` (the MRTD buffers, as the Intel TDX
//! module specification defines them for TDH.MEM.PAGE.ADD and
//! TDH.MR.EXTEND).

use crate::guid::Guid;
use crate::pod::Pod;

/// A TDVF image is a flash image that ends at 4 GiB: its last byte is at
/// GPA `IMAGE_END - 1`, so it starts at `IMAGE_END - len`.
pub const IMAGE_END: u64 = crate::layout::FOUR_GIB;

/// GUID the 16 bytes before the descriptor hold,
/// `e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae` (td-shim `TDX_METADATA_GUID`).
pub const TDX_METADATA_GUID: Guid = Guid::new(
    0xe9ea_f9f3,
    0x168e,
    0x44d5,
    [0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae],
);

/// GUID of the OVMF GUIDed table's footer, `96b582de-1fb2-45f7-baea-a366c55a082d`.
pub const GUIDED_TABLE_FOOTER_GUID: Guid = Guid::new(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);

/// GUID of the GUIDed-table entry that holds the metadata's offset,
/// `e47a6535-984a-4798-865e-4685a7bf8ec2` (QEMU `TDX_METADATA_OFFSET_GUID`).
pub const TDX_METADATA_OFFSET_GUID: Guid = Guid::new(
    0xe47a_6535,
    0x984a,
    0x4798,
    [0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2],
);

/// The footer GUID starts this many bytes before the end of the image.
pub const GUIDED_TABLE_FOOTER_FROM_END: u64 = 0x30;

/// Every GUIDed-table entry (and the footer) ends with a `u16` length and
/// its GUID: the data come first, then the length (of the whole entry,
/// these 18 bytes included), then the GUID. The table is walked backwards
/// from the footer, whose length is the whole table's.
pub const GUIDED_ENTRY_TRAILER: u64 = 2 + 16;

/// The metadata-offset entry's data: a `u32`, the distance from the end of
/// the image to the descriptor (not a file offset).
pub const TDX_METADATA_OFFSET_ENTRY_LEN: u64 = 4 + GUIDED_ENTRY_TRAILER;

/// td-shim's own locator: the `u32` at end − 0x20 is the descriptor's file
/// offset, and the 16 bytes before the descriptor are
/// [`TDX_METADATA_GUID`] (td-shim `TDX_METADATA_OFFSET`, `shim_info.rs`).
pub const TDSHIM_METADATA_PTR_FROM_END: u64 = 0x20;

/// `'TDVF'` as the descriptor's little-endian first `u32`.
pub const TDVF_SIGNATURE: u32 = u32::from_le_bytes(*b"TDVF");

/// The only descriptor version defined.
pub const TDVF_VERSION: u32 = 1;

/// The metadata descriptor. `length` counts the descriptor and its
/// sections (16 + 32 × `section_count`), not the GUID before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TdvfDescriptor {
    pub signature: u32,
    pub length: u32,
    pub version: u32,
    pub section_count: u32,
}

// SAFETY: repr(C), four u32 (16 bytes), no padding, any bit pattern is valid.
unsafe impl Pod for TdvfDescriptor {}
const _: () = assert!(core::mem::size_of::<TdvfDescriptor>() == 16);

/// One metadata section, as stored after the descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TdvfSectionEntry {
    /// File offset of the section's raw data.
    pub data_offset: u32,
    /// Bytes of raw data in the file (0 for memory-only sections).
    pub raw_data_size: u32,
    /// GPA the section is loaded at.
    pub memory_address: u64,
    /// Bytes of guest memory the section covers (raw data, then zeros).
    pub memory_data_size: u64,
    /// A [`TdvfSectionType`] id.
    pub section_type: u32,
    /// [`ATTR_MR_EXTEND`], [`ATTR_PAGE_AUG`].
    pub attributes: u32,
}

// SAFETY: repr(C), u32 u32 u64 u64 u32 u32 with every field at its natural
// alignment (32 bytes), no padding, any bit pattern is valid.
unsafe impl Pod for TdvfSectionEntry {}
const _: () = assert!(core::mem::size_of::<TdvfSectionEntry>() == 32);

/// Size of the descriptor, the first `length` counts.
pub const DESCRIPTOR_LEN: u64 = 16;
/// Size of one section entry.
pub const SECTION_ENTRY_LEN: u64 = 32;

crate::named_enum! {
    /// Section types (td-shim `TDX_METADATA_SECTION_TYPE_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum TdvfSectionType: u32 {
        /// Boot firmware volume: code, measured into MRTD.
        Bfv = 0 => "BFV",
        /// Configuration firmware volume: data, added but not measured.
        Cfv = 1 => "CFV",
        /// Where the VMM writes the TD HOB.
        TdHob = 2 => "TD_HOB",
        /// Zeroed memory the firmware uses early (stack, heap, mailbox).
        TempMem = 3 => "TempMem",
        /// Memory the VMM adds with TDH.MEM.PAGE.AUG (unmeasured).
        PermMem = 4 => "PermMem",
        /// A kernel image.
        Payload = 5 => "Payload",
        /// The kernel's parameters.
        PayloadParam = 6 => "PayloadParam",
        /// TD info inside the BFV (no memory of its own).
        TdInfo = 7 => "TdInfo",
        /// TD params inside the BFV (no memory of its own).
        TdParams = 8 => "TdParams",
    }
}

/// Attribute bit 0: the VMM extends MRTD with the section's contents
/// (TDH.MR.EXTEND of every 256-byte chunk).
pub const ATTR_MR_EXTEND: u32 = 1 << 0;
/// Attribute bit 1: the VMM adds the section's pages with TDH.MEM.PAGE.AUG
/// (after the TD starts, unmeasured) instead of TDH.MEM.PAGE.ADD.
pub const ATTR_PAGE_AUG: u32 = 1 << 1;
/// Every attribute bit defined.
pub const ATTR_ALL: u32 = ATTR_MR_EXTEND | ATTR_PAGE_AUG;

/// Each TDH.MEM.PAGE.ADD and TDH.MR.EXTEND hashes a buffer of this many
/// bytes into MRTD: an ASCII tag at offset 0, the GPA (little-endian u64)
/// at [`MRTD_GPA_OFFSET`], zeros elsewhere.
pub const MRTD_BUFFER_LEN: usize = 128;
/// Offset of the GPA in an MRTD buffer.
pub const MRTD_GPA_OFFSET: usize = 16;
/// Tag of the buffer TDH.MEM.PAGE.ADD hashes (once per 4 KiB page).
pub const MRTD_TAG_PAGE_ADD: &[u8] = b"MEM.PAGE.ADD";
/// Tag of the buffer TDH.MR.EXTEND hashes, followed by the chunk's bytes.
pub const MRTD_TAG_MR_EXTEND: &[u8] = b"MR.EXTEND";
/// TDH.MR.EXTEND measures this many bytes per call.
pub const MR_EXTEND_CHUNK: u64 = 256;
/// Size of an MRTD (SHA-384).
pub const MRTD_LEN: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_their_registry_bytes() {
        // The footer GUID as it sits in a td-shim image.
        assert_eq!(
            GUIDED_TABLE_FOOTER_GUID.as_bytes(),
            &[
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
        assert_eq!(
            &TDX_METADATA_OFFSET_GUID.as_bytes()[..4],
            &[0x35, 0x65, 0x7a, 0xe4]
        );
        assert_eq!(
            &TDX_METADATA_GUID.as_bytes()[..4],
            &[0xf3, 0xf9, 0xea, 0xe9]
        );
    }

    #[test]
    fn numbers_match_td_shim() {
        assert_eq!(TDVF_SIGNATURE, 0x4656_4454);
        assert_eq!(TdvfSectionType::from_id(8), Some(TdvfSectionType::TdParams));
        assert_eq!(TdvfSectionType::from_id(9), None);
        assert_eq!(TdvfSectionType::TdHob.as_str(), "TD_HOB");
    }
}
