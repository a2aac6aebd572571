//! The measurement leaves: `TDG.MR.RTMR.EXTEND` (leaf 2), `TDG.MR.REPORT`
//! (leaf 4) and `TDG.MR.VERIFYREPORT` (leaf 22), with the TD's
//! measurement state (`Measurements`: MRTD, the four RTMRs, XFAM and the
//! report key).
//!
//! Statuses follow the TDX module 1.5 source (`tdg_mr_rtmr_extend.c`,
//! `tdg_mr_report.c`, `tdg_mr_verifyreport.c`): a misaligned operand, one
//! with a bit at or above GPAW, a shared one where only private memory
//! will do, an RTMR index above 3 or a subtype other than 0 answer
//! `TDX_OPERAND_INVALID` naming the register (decoded in `tdcall`). A
//! memory operand that passes those checks is then walked in the Secure
//! EPT (`check_walk_and_map_guest_side_gpa`, `helpers.c`), and a walk
//! that fails returns no status at all: a pending page is a #VE or, with
//! SEPT_VE_DISABLE, a TD exit (PENDING_EPT_VIOLATION), and an unmapped
//! GPA an EPT-violation TD exit. Here a pending operand stops the TD as
//! any guest access to pending memory does (`pending_access`), and one
//! that is not RAM, or shared (this VMM maps no shared memory), as an
//! access there does (`bad_gpa`).
//!
//! The MAC of a report is not a hardware MAC: it is an HMAC-SHA-256 over
//! bytes 0..224 of the REPORTMACSTRUCT under a key the VMM draws for each
//! TD and never shows the guest. A report therefore verifies on the TD
//! that produced it and on no other.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::{GpaKind, PrivateMemory};
use crate::report::outcome::Outcome;
use crate::stop::{Access, Fatal, Stop};
use crate::tdx::event::Handled;
use crate::tdx::module::TdxModule;
use crate::tdx::tdcall::{GuestGpa, ReportRequest, RtmrExtend};
use abi::tdcall::{leaf, Status};
use abi::tdreport::{
    offset, rtmr_offset, MAC_INPUT_LEN, MAC_LEN, REPORTDATA_LEN, REPORTMACSTRUCT_LEN, SHA384_LEN,
    SUBTYPE_TDX, TDINFO_LEN, TDREPORT_LEN, TEE_TCB_INFO_LEN, TYPE_TDX, VERSION_NO_SERVTDS,
};
use sha2::{Digest, Sha256, Sha384};

/// A SHA-384 measurement register.
pub type Measurement = [u8; SHA384_LEN];

/// Bytes of the report key (an HMAC-SHA-256 key).
const KEY_LEN: usize = 32;

/// XFAM the TDINFO reports: x87 and SSE, the two bits every TD has.
const XFAM_X87_SSE: u64 = 0x3;

/// The TD's measurements and the key its reports are MACed with.
#[derive(Clone)]
pub struct Measurements {
    /// MRTD: zero until the VMM measures the initial image
    /// (`TdxModule::set_mrtd`).
    pub mrtd: Measurement,
    /// RTMR[0..4], zero at start.
    pub rtmr: [Measurement; 4],
    /// TDINFO.XFAM.
    pub xfam: u64,
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Measurements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Measurements")
            .field("mrtd", &hex(&self.mrtd))
            .field("rtmr", &self.rtmr_hex())
            .finish_non_exhaustive()
    }
}

impl Measurements {
    /// Zero registers and a fresh key.
    pub fn new() -> Self {
        Measurements {
            mrtd: [0; SHA384_LEN],
            rtmr: [[0; SHA384_LEN]; 4],
            xfam: XFAM_X87_SSE,
            key: fresh_key(),
        }
    }

    /// MRTD in hex for the report; `None` while it is unmeasured (zero).
    pub fn mrtd_hex(&self) -> Option<String> {
        (self.mrtd != [0; SHA384_LEN]).then(|| hex(&self.mrtd))
    }

    /// RTMR[0..4] in hex, for the report.
    pub fn rtmr_hex(&self) -> Vec<String> {
        self.rtmr.iter().map(|r| hex(r)).collect()
    }

    /// `RTMR[i] = SHA-384(RTMR[i] || digest)`.
    pub fn extend(&mut self, index: usize, digest: &Measurement) {
        let rtmr = &mut self.rtmr[index];
        let new = Sha384::new()
            .chain_update(*rtmr)
            .chain_update(digest)
            .finalize();
        rtmr.copy_from_slice(&new);
    }

    /// The TDREPORT_STRUCT for `attributes` and `reportdata`, MACed.
    pub fn report(&self, attributes: u64, reportdata: &[u8; REPORTDATA_LEN]) -> [u8; TDREPORT_LEN] {
        let mut r = [0u8; TDREPORT_LEN];
        r[offset::REPORT_TYPE..offset::REPORT_TYPE + 3].copy_from_slice(&[
            TYPE_TDX,
            SUBTYPE_TDX,
            VERSION_NO_SERVTDS,
        ]);
        // CPUSVN and TEE_TCB_INFO (SVNs, MRSEAM, MRSIGNERSEAM) stay zero:
        // there is no SEAM module to measure.
        put(&mut r, offset::REPORTDATA, reportdata);
        put(&mut r, offset::ATTRIBUTES, &attributes.to_le_bytes());
        put(&mut r, offset::XFAM, &self.xfam.to_le_bytes());
        put(&mut r, offset::MRTD, &self.mrtd);
        // MRCONFIGID, MROWNER, MROWNERCONFIG and SERVTD_HASH: zero.
        for (i, rtmr) in (0u64..).zip(&self.rtmr) {
            put(&mut r, rtmr_offset(i), rtmr);
        }
        let tcb = offset::TEE_TCB_INFO..offset::TEE_TCB_INFO + TEE_TCB_INFO_LEN;
        let tcb_hash = Sha384::digest(&r[tcb]);
        put(&mut r, offset::TEE_TCB_INFO_HASH, &tcb_hash);
        let info_hash = Sha384::digest(&r[offset::TDINFO..offset::TDINFO + TDINFO_LEN]);
        put(&mut r, offset::TEE_INFO_HASH, &info_hash);
        let mac = hmac_sha256(&self.key, &r[..MAC_INPUT_LEN]);
        put(&mut r, offset::MAC, &mac);
        r
    }

    /// Whether a REPORTMACSTRUCT's MAC is this TD's over its bytes 0..224.
    pub fn verify(&self, mac_struct: &[u8; REPORTMACSTRUCT_LEN]) -> bool {
        let want = hmac_sha256(&self.key, &mac_struct[..MAC_INPUT_LEN]);
        let have = &mac_struct[offset::MAC..offset::MAC + MAC_LEN];
        // In constant time, as a MAC check should be.
        want.iter().zip(have).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn put(r: &mut [u8], at: usize, bytes: &[u8]) {
    r[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `bytes` as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A key from the host's random source (the standard library's hasher
/// keys, which come from it, should `/dev/urandom` be unreadable).
fn fresh_key() -> [u8; KEY_LEN] {
    use std::io::Read;
    let mut key = [0u8; KEY_LEN];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    key
}

/// HMAC-SHA-256 (RFC 2104) of `msg` under `key` (at most one block).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    k[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Where a memory operand that passed the number checks is: readable
/// (accepted private memory) or a stop, as the module's walk would
/// leave the TD (see the file's comment).
fn walk<B: SlotBackend>(
    mem: &PrivateMemory<B>,
    op: GuestGpa,
    leaf_no: u16,
    access: Access,
    rip: u64,
) -> Result<(), Stop> {
    let (outcome, what) = if op.shared {
        (
            Outcome::BadGpa,
            "shared memory, which this VMM does not map",
        )
    } else {
        match mem.classify(op.gpa) {
            GpaKind::Accepted => return Ok(()),
            GpaKind::Pending => (Outcome::PendingAccess, "memory that was never accepted"),
            GpaKind::NotRam => (Outcome::BadGpa, "a GPA that is not RAM"),
        }
    };
    let message = format!(
        "{} operand at GPA {:#x}{} is {what}",
        leaf::name(leaf_no),
        op.gpa,
        if op.shared { " (shared)" } else { "" }
    );
    Err(Stop::fatal(
        outcome,
        Fatal::new(message)
            .gpa(Some(op.gpa))
            .rip(Some(rip))
            .access(access),
    ))
}

/// Reads the operand at `op` (accepted private memory, after `walk`).
fn read<B: SlotBackend, const N: usize>(mem: &PrivateMemory<B>, op: GuestGpa) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    mem.read_accepted(op.gpa, &mut buf).then_some(buf)
}

/// A walk that succeeded and a read that did not: an operand crossing
/// into a page in another state. The alignments make that impossible.
fn unreadable(leaf_no: u16, op: GuestGpa, rip: u64) -> Handled {
    Handled::stop(Stop::error(
        format!(
            "{} operand at GPA {:#x} could not be read",
            leaf::name(leaf_no),
            op.gpa
        ),
        Some(rip),
    ))
}

/// `TDG.MR.RTMR.EXTEND`.
pub fn rtmr_extend<B: SlotBackend>(
    tdx: &mut TdxModule,
    mem: &PrivateMemory<B>,
    req: &RtmrExtend,
    rip: u64,
) -> Handled {
    let l = leaf::MR_RTMR_EXTEND;
    if let Err(stop) = walk(mem, req.digest, l, Access::Read, rip) {
        return Handled::stop(stop);
    }
    let Some(digest) = read::<B, SHA384_LEN>(mem, req.digest) else {
        return unreadable(l, req.digest, rip);
    };
    match req.index {
        Ok(index) => {
            tdx.measure.extend(index.get(), &digest);
            Handled::answer(Status::Success)
        }
        Err(op) => Handled::answer(Status::OperandInvalid(op)),
    }
}

/// `TDG.MR.REPORT`.
pub fn report<B: SlotBackend>(
    tdx: &TdxModule,
    mem: &mut PrivateMemory<B>,
    req: &ReportRequest,
    rip: u64,
) -> Handled {
    let l = leaf::MR_REPORT;
    if let Err(stop) = walk(mem, req.data, l, Access::Read, rip) {
        return Handled::stop(stop);
    }
    let Some(data) = read::<B, REPORTDATA_LEN>(mem, req.data) else {
        return unreadable(l, req.data, rip);
    };
    let out = match req.report {
        Ok(out) => out,
        Err(op) => return Handled::answer(Status::OperandInvalid(op)),
    };
    if let Err(stop) = walk(mem, out, l, Access::Write, rip) {
        return Handled::stop(stop);
    }
    let report = tdx.measure.report(tdx.attributes, &data);
    if !mem.write_accepted(out.gpa, &report) {
        return unreadable(l, out, rip);
    }
    Handled::answer(Status::Success)
}

/// `TDG.MR.VERIFYREPORT`.
pub fn verify_report<B: SlotBackend>(
    tdx: &TdxModule,
    mem: &PrivateMemory<B>,
    mac: GuestGpa,
    rip: u64,
) -> Handled {
    let l = leaf::MR_VERIFYREPORT;
    if let Err(stop) = walk(mem, mac, l, Access::Read, rip) {
        return Handled::stop(stop);
    }
    let Some(mac_struct) = read::<B, REPORTMACSTRUCT_LEN>(mem, mac) else {
        return unreadable(l, mac, rip);
    };
    if tdx.measure.verify(&mac_struct) {
        Handled::answer(Status::Success)
    } else {
        Handled::answer(Status::InvalidReportMacStruct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hmac_is_rfc_4231s() {
        // RFC 4231 test cases 1 and 2.
        assert_eq!(
            hmac_sha256(&[0x0b; 20], b"Hi There").to_vec(),
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    #[test]
    fn an_extend_is_sha384_of_the_old_value_and_the_digest() {
        let mut m = Measurements::new();
        let digest = [7u8; SHA384_LEN];
        m.extend(2, &digest);
        let mut cat = vec![0u8; SHA384_LEN];
        cat.extend_from_slice(&digest);
        assert_eq!(m.rtmr[2].to_vec(), Sha384::digest(&cat).to_vec());
        assert_eq!(m.rtmr[0], [0; SHA384_LEN]);
        assert_eq!(m.rtmr_hex()[2], hex(&m.rtmr[2]));
        assert_eq!(m.rtmr_hex()[0], "0".repeat(96));
    }

    #[test]
    fn a_report_has_the_layout_hashes_and_a_mac_this_td_verifies() {
        let mut m = Measurements::new();
        m.mrtd = [0xaa; SHA384_LEN];
        m.extend(1, &[1; SHA384_LEN]);
        let r = m.report(0x1234, &[0x5c; REPORTDATA_LEN]);
        assert_eq!(r[..4], [0x81, 0, 0, 0]);
        assert_eq!(r[offset::REPORTDATA..offset::REPORTDATA + 64], [0x5c; 64]);
        assert_eq!(
            r[offset::ATTRIBUTES..offset::ATTRIBUTES + 8],
            0x1234u64.to_le_bytes()
        );
        assert_eq!(r[offset::XFAM..offset::XFAM + 8], 3u64.to_le_bytes());
        assert_eq!(r[offset::MRTD..offset::MRTD + 48], [0xaa; 48]);
        assert_eq!(r[768..816], m.rtmr[1]);
        let info_hash = Sha384::digest(&r[512..1024]);
        assert_eq!(r[80..128], info_hash[..]);
        let tcb_hash = Sha384::digest(&r[256..256 + 239]);
        assert_eq!(r[32..80], tcb_hash[..]);
        let mac: [u8; REPORTMACSTRUCT_LEN] = r[..256].try_into().unwrap();
        assert!(m.verify(&mac));
        // td-shim's test: bytes 0..4 become 81 01 00 00.
        let mut forged = mac;
        forged[..4].copy_from_slice(&[0x81, 1, 0, 0]);
        assert!(!m.verify(&forged));
        let mut forged = mac;
        forged[offset::MAC] ^= 1;
        assert!(!m.verify(&forged));
        // Another TD's key does not verify it.
        assert!(!Measurements::new().verify(&mac));
        assert!(!format!("{m:?}").contains("key"));
    }
}
