//! The measurement leaves' contract: the TDREPORT_STRUCT layout that
//! `TDG.MR.REPORT` writes (offsets and sizes, as the TDX module 1.5 ABI
//! defines them and td-shim's `tdx-tdcall/src/tdreport.rs` parses them),
//! the REPORTMACSTRUCT that `TDG.MR.VERIFYREPORT` checks, and the operand
//! sizes and alignments of `TDG.MR.RTMR.EXTEND`, `TDG.MR.REPORT` and
//! `TDG.MR.VERIFYREPORT`.
//!
//! The emulated module's MAC is not a hardware MAC: it is an HMAC-SHA-256
//! over bytes `0..MAC_INPUT_LEN` of the REPORTMACSTRUCT under a key the
//! VMM holds per TD, so a report verifies on the TD that produced it and
//! nowhere else.

/// Bytes of a SHA-384 digest: an RTMR, MRTD, a hash field.
pub const SHA384_LEN: usize = 48;
/// RTMRs a TD has (`RTMR[0..4]`).
pub const NUM_RTMRS: u64 = 4;

/// `TDG.MR.RTMR.EXTEND` (leaf 2): RCX = GPA of the 48-byte digest to
/// extend with, aligned to `EXTEND_ALIGN`; RDX = the RTMR index.
pub const EXTEND_ALIGN: u64 = 64;

/// `TDG.MR.REPORT` (leaf 4): RCX = GPA of the TDREPORT_STRUCT output,
/// aligned to its size; RDX = GPA of the REPORTDATA input, aligned to its
/// size; R8 = the report subtype, which must be `SUBTYPE_TDX`.
pub const TDREPORT_LEN: usize = 1024;
/// Bytes of REPORTDATA (the caller's nonce or hash).
pub const REPORTDATA_LEN: usize = 64;
/// `TDG.MR.VERIFYREPORT` (leaf 22): RCX = GPA of a REPORTMACSTRUCT,
/// aligned to its size.
pub const REPORTMACSTRUCT_LEN: usize = 256;

/// REPORTTYPE.TYPE of a TDX report (byte 0).
pub const TYPE_TDX: u8 = 0x81;
/// REPORTTYPE.SUBTYPE (byte 1), and the only R8 `TDG.MR.REPORT` takes.
pub const SUBTYPE_TDX: u8 = 0;
/// REPORTTYPE.VERSION (byte 2) of a TD without service TDs.
pub const VERSION_NO_SERVTDS: u8 = 0;

/// Offsets in the TDREPORT_STRUCT: the REPORTMACSTRUCT (0..256), then
/// TEE_TCB_INFO (256..512), then TDINFO (512..1024).
pub mod offset {
    /// REPORTTYPE: type, subtype, version, reserved (4 bytes), then 12
    /// reserved bytes.
    pub const REPORT_TYPE: usize = 0;
    /// CPUSVN (16 bytes).
    pub const CPUSVN: usize = 16;
    /// TEE_TCB_INFO_HASH: SHA-384 of TEE_TCB_INFO (48 bytes).
    pub const TEE_TCB_INFO_HASH: usize = 32;
    /// TEE_INFO_HASH: SHA-384 of TDINFO (48 bytes).
    pub const TEE_INFO_HASH: usize = 80;
    /// REPORTDATA, as the caller gave it (64 bytes).
    pub const REPORTDATA: usize = 128;
    /// The MAC over bytes `0..MAC` (32 bytes), after 32 reserved bytes.
    pub const MAC: usize = 224;
    /// TEE_TCB_INFO (239 bytes, then 17 reserved).
    pub const TEE_TCB_INFO: usize = 256;
    /// TDINFO (512 bytes).
    pub const TDINFO: usize = 512;
    /// TDINFO.ATTRIBUTES (8 bytes): the TD attributes.
    pub const ATTRIBUTES: usize = 512;
    /// TDINFO.XFAM (8 bytes).
    pub const XFAM: usize = 520;
    /// TDINFO.MRTD (48 bytes): the build-time measurement.
    pub const MRTD: usize = 528;
    /// TDINFO.MRCONFIGID (48 bytes).
    pub const MRCONFIGID: usize = 576;
    /// TDINFO.MROWNER (48 bytes).
    pub const MROWNER: usize = 624;
    /// TDINFO.MROWNERCONFIG (48 bytes).
    pub const MROWNERCONFIG: usize = 672;
    /// TDINFO.RTMR[0] (48 bytes each, consecutive).
    pub const RTMR0: usize = 720;
    /// TDINFO.SERVTD_HASH (48 bytes), then 64 reserved bytes.
    pub const SERVTD_HASH: usize = 912;
}

/// Bytes of TEE_TCB_INFO that are defined (the rest of its 256 is reserved).
pub const TEE_TCB_INFO_LEN: usize = 239;
/// Bytes of TDINFO: TEE_INFO_HASH is the SHA-384 of all of them.
pub const TDINFO_LEN: usize = 512;
/// Bytes of the MAC.
pub const MAC_LEN: usize = 32;
/// The MAC covers bytes `0..MAC_INPUT_LEN` of the REPORTMACSTRUCT.
pub const MAC_INPUT_LEN: usize = offset::MAC;

/// The offset of `RTMR[index]` in the TDREPORT_STRUCT.
pub const fn rtmr_offset(index: u64) -> usize {
    offset::RTMR0 + crate::to_usize(index) * SHA384_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_td_shims() {
        // td-shim's test reads the RTMRs at these offsets.
        assert_eq!(
            [0, 1, 2, 3].map(rtmr_offset),
            [720, 768, 816, 864],
            "RTMR0..3"
        );
        assert_eq!(rtmr_offset(NUM_RTMRS), offset::SERVTD_HASH);
        assert_eq!(offset::SERVTD_HASH + SHA384_LEN + 64, TDREPORT_LEN);
        assert_eq!(offset::TDINFO + TDINFO_LEN, TDREPORT_LEN);
        assert_eq!(offset::MAC + MAC_LEN, REPORTMACSTRUCT_LEN);
        assert_eq!(offset::REPORTDATA + REPORTDATA_LEN + 32, offset::MAC);
        assert_eq!(offset::TEE_INFO_HASH + SHA384_LEN, offset::REPORTDATA);
        assert_eq!(offset::MRTD + 4 * SHA384_LEN, offset::RTMR0);
        assert_eq!(offset::TEE_TCB_INFO + TEE_TCB_INFO_LEN + 17, offset::TDINFO);
    }
}
