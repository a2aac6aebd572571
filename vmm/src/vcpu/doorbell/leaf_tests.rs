//! The measurement leaves, TDG.VP.INFO's attributes and the GHCI
//! instruction services, driven through the doorbell as they run: every
//! good case and every bad operand, with the status the guest sees.

use super::ring;
use super::tests::{accept, td};
use crate::memory::memslots::NoKvm;
use crate::shared::TdShared;
use crate::tdx::cpuid::{CpuidEntry, CpuidTable};
use crate::vcpu::VcpuState;
use abi::report::Outcome;
use abi::tdcall::{accept::encode, leaf, status, PageLevel};
use abi::tdreport::{offset, rtmr_offset, REPORTMACSTRUCT_LEN, SHA384_LEN, TDREPORT_LEN};
use abi::vmcall::{ghci, vmcall_status, EXPOSE_R10_R15, GHCI_STANDARD};
use abi::GIB;
use kvm_bindings::kvm_regs;
use sha2::{Digest, Sha384};

/// Accepted private memory (2 MiB from here).
const RAM: u64 = 4 * GIB;
/// Pending private memory.
const PENDING: u64 = 4 * GIB + abi::PAGE_2M;
/// The MMIO hole: not RAM.
const HOLE: u64 = 3 * GIB;
/// The shared bit of a 48-bit TD.
const SHARED: u64 = 1 << 47;
/// Past GPAW.
const BEYOND: u64 = 1 << 48;

const INVALID_RCX: u64 = status::OPERAND_INVALID | status::OPERAND_RCX;
const INVALID_RDX: u64 = status::OPERAND_INVALID | status::OPERAND_RDX;
const INVALID_R8: u64 = status::OPERAND_INVALID | status::OPERAND_R8;

/// A TD with `vcpus` vCPUs and its first 2 MiB at 4 GiB accepted.
fn accepted_td(vcpus: u32) -> TdShared<NoKvm> {
    let td = td(vcpus);
    let mut regs = accept(encode(RAM, PageLevel::L2M));
    ring(&td, &mut VcpuState::new(0), &mut regs);
    assert_eq!(regs.rax, status::SUCCESS);
    td
}

fn leaf_regs(l: u16, rcx: u64, rdx: u64, r8: u64) -> kvm_regs {
    kvm_regs {
        rax: u64::from(l),
        rcx,
        rdx,
        r8,
        rip: 0x1234,
        ..Default::default()
    }
}

/// Runs the leaf; its RAX, or the stop's outcome.
fn run(td: &TdShared<NoKvm>, l: u16, rcx: u64, rdx: u64, r8: u64) -> Result<u64, Outcome> {
    let mut regs = leaf_regs(l, rcx, rdx, r8);
    let rung = ring(td, &mut VcpuState::new(0), &mut regs);
    match rung.stop {
        Some(stop) => {
            assert_eq!(regs.rax, u64::from(l), "a stop writes nothing back");
            let fatal = stop.fatal.unwrap();
            assert_eq!(fatal.rip, Some(0x1234));
            assert!(fatal.gpa.is_some());
            Err(stop.outcome)
        }
        None => Ok(regs.rax),
    }
}

fn write(td: &TdShared<NoKvm>, gpa: u64, bytes: &[u8]) {
    assert!(td.lock().memory.write_accepted(gpa, bytes));
}

fn read<const N: usize>(td: &TdShared<NoKvm>, gpa: u64) -> [u8; N] {
    let mut buf = [0u8; N];
    assert!(td.lock().memory.read_accepted(gpa, &mut buf));
    buf
}

fn rtmrs(td: &TdShared<NoKvm>) -> [[u8; SHA384_LEN]; 4] {
    td.lock().tdx.measure.rtmr
}

#[test]
fn rtmr_extend_hashes_the_digest_into_the_register() {
    let td = accepted_td(1);
    let digest = [0x42u8; SHA384_LEN];
    write(&td, RAM + 0x40, &digest);
    assert_eq!(run(&td, leaf::MR_RTMR_EXTEND, RAM + 0x40, 3, 0), Ok(0));
    let mut cat = [0u8; 2 * SHA384_LEN];
    cat[SHA384_LEN..].copy_from_slice(&digest);
    let once = Sha384::digest(cat);
    assert_eq!(rtmrs(&td)[3][..], once[..]);
    // Again: the old value goes first.
    assert_eq!(run(&td, leaf::MR_RTMR_EXTEND, RAM + 0x40, 3, 0), Ok(0));
    cat[..SHA384_LEN].copy_from_slice(&once);
    assert_eq!(rtmrs(&td)[3][..], Sha384::digest(cat)[..]);
    assert_eq!(rtmrs(&td)[..3], [[0; SHA384_LEN]; 3]);
    assert_eq!(td.lock().tdx.counters.to_map()["TDG.MR.RTMR.EXTEND"], 2);
}

#[test]
fn rtmr_extend_refuses_every_bad_operand_with_nothing_changed() {
    let td = accepted_td(1);
    // RCX: misaligned, shared, past GPAW: TDX_OPERAND_INVALID | RCX.
    for rcx in [RAM + 0x20, RAM + 1, SHARED | RAM, BEYOND | RAM] {
        assert_eq!(run(&td, leaf::MR_RTMR_EXTEND, rcx, 0, 0), Ok(INVALID_RCX));
    }
    // RDX past 3: TDX_OPERAND_INVALID | RDX.
    for rdx in [4, 0x100, u64::MAX] {
        assert_eq!(run(&td, leaf::MR_RTMR_EXTEND, RAM, rdx, 0), Ok(INVALID_RDX));
    }
    assert_eq!(rtmrs(&td), [[0; SHA384_LEN]; 4]);
    // The digest in pending memory, or not in RAM: the TD stops, as the
    // module's walk leaves it (a bad index is not reached).
    assert_eq!(
        run(&td, leaf::MR_RTMR_EXTEND, PENDING, 9, 0),
        Err(Outcome::PendingAccess)
    );
    assert_eq!(
        run(&td, leaf::MR_RTMR_EXTEND, HOLE, 0, 0),
        Err(Outcome::BadGpa)
    );
}

/// A TD whose report is asked for with REPORTDATA at `RAM + 0x40` and
/// the output at `RAM + 0x400`; returns the TDREPORT_STRUCT.
fn good_report(td: &TdShared<NoKvm>) -> [u8; TDREPORT_LEN] {
    write(td, RAM + 0x40, &[0x5a; 64]);
    assert_eq!(run(td, leaf::MR_REPORT, RAM + 0x400, RAM + 0x40, 0), Ok(0));
    read::<TDREPORT_LEN>(td, RAM + 0x400)
}

#[test]
fn a_report_has_td_shims_layout_and_the_tds_state() {
    let td = accepted_td(1);
    write(&td, RAM + 0x80, &[7; SHA384_LEN]);
    assert_eq!(run(&td, leaf::MR_RTMR_EXTEND, RAM + 0x80, 1, 0), Ok(0));
    {
        let mut s = td.lock();
        s.tdx.set_attributes(0);
        s.tdx.set_mrtd([0xee; SHA384_LEN]);
    }
    let r = good_report(&td);
    // REPORTTYPE {0x81, 0, 0}: what td-shim's test expects.
    assert_eq!(r[..4], [0x81, 0, 0, 0]);
    assert_eq!(r[offset::REPORTDATA..offset::REPORTDATA + 64], [0x5a; 64]);
    assert_eq!(r[offset::ATTRIBUTES..offset::ATTRIBUTES + 8], [0; 8]);
    assert_eq!(r[offset::MRTD..offset::MRTD + 48], [0xee; 48]);
    let rtmr = rtmrs(&td);
    for (i, want) in (0u64..).zip(rtmr) {
        let at = rtmr_offset(i);
        assert_eq!(r[at..at + SHA384_LEN], want, "RTMR{i}");
    }
    assert_ne!(rtmr[1], [0; SHA384_LEN]);
    let tee_info_hash = Sha384::digest(&r[offset::TDINFO..]);
    assert_eq!(
        r[offset::TEE_INFO_HASH..offset::TEE_INFO_HASH + 48],
        tee_info_hash[..]
    );
    assert_eq!(td.lock().tdx.counters.to_map()["TDG.MR.REPORT"], 1);
}

#[test]
fn report_refuses_every_bad_operand_in_the_modules_order() {
    let td = accepted_td(1);
    write(&td, RAM + 0x400, &[0xcc; TDREPORT_LEN]);
    let (out, data) = (RAM + 0x400, RAM + 0x40);
    for (rcx, rdx, r8, want) in [
        // RCX misaligned, before anything else.
        (out + 0x200, data + 1, 1, INVALID_RCX),
        // RDX misaligned or past GPAW.
        (out, data + 0x20, 1, INVALID_RDX),
        (out, BEYOND | data, 1, INVALID_RDX),
        // R8 not 0.
        (out, data, 1, INVALID_R8),
        (out, data, u64::MAX, INVALID_R8),
        // RCX past GPAW, checked last.
        (BEYOND | out, data, 0, INVALID_RCX),
    ] {
        assert_eq!(
            run(&td, leaf::MR_REPORT, rcx, rdx, r8),
            Ok(want),
            "{rcx:#x} {rdx:#x} {r8}"
        );
    }
    assert_eq!(
        read::<TDREPORT_LEN>(&td, out),
        [0xcc; TDREPORT_LEN],
        "untouched"
    );
    // Memory the module's walk cannot use: the TD stops. REPORTDATA is
    // walked before R8 is checked.
    for (rcx, rdx, r8, want) in [
        (out, PENDING, 1, Outcome::PendingAccess),
        (out, HOLE, 0, Outcome::BadGpa),
        (out, SHARED | data, 0, Outcome::BadGpa),
        (PENDING, data, 0, Outcome::PendingAccess),
        (SHARED | out, data, 0, Outcome::BadGpa),
    ] {
        assert_eq!(run(&td, leaf::MR_REPORT, rcx, rdx, r8), Err(want));
    }
}

#[test]
fn verifyreport_accepts_this_tds_mac_only() {
    let td = accepted_td(1);
    let r = good_report(&td);
    let mac_at = RAM + 0x1000;
    write(&td, mac_at, &r[..REPORTMACSTRUCT_LEN]);
    assert_eq!(run(&td, leaf::MR_VERIFYREPORT, mac_at, 0, 0), Ok(0));
    // td-shim's test: bytes 0..4 become 81 01 00 00.
    write(&td, mac_at, &[0x81, 1, 0, 0]);
    assert_eq!(
        run(&td, leaf::MR_VERIFYREPORT, mac_at, 0, 0),
        Ok(status::INVALID_REPORTMACSTRUCT)
    );
    // Another TD's report does not verify here.
    let other = accepted_td(1);
    let theirs = good_report(&other);
    write(&td, mac_at, &theirs[..REPORTMACSTRUCT_LEN]);
    assert_eq!(
        run(&td, leaf::MR_VERIFYREPORT, mac_at, 0, 0),
        Ok(status::INVALID_REPORTMACSTRUCT)
    );
    assert_eq!(td.lock().tdx.counters.to_map()["TDG.MR.VERIFYREPORT"], 3);
}

#[test]
fn verifyreport_refuses_every_bad_operand() {
    let td = accepted_td(1);
    for rcx in [RAM + 0x80, RAM + 1, SHARED | RAM, BEYOND | RAM] {
        assert_eq!(run(&td, leaf::MR_VERIFYREPORT, rcx, 0, 0), Ok(INVALID_RCX));
    }
    assert_eq!(
        run(&td, leaf::MR_VERIFYREPORT, PENDING, 0, 0),
        Err(Outcome::PendingAccess)
    );
    assert_eq!(
        run(&td, leaf::MR_VERIFYREPORT, HOLE, 0, 0),
        Err(Outcome::BadGpa)
    );
}

#[test]
fn vp_info_reports_the_configured_attributes() {
    let td = td(1);
    let info = |td: &TdShared<NoKvm>| {
        let mut regs = leaf_regs(leaf::VP_INFO, 0, 0, 0);
        ring(td, &mut VcpuState::new(0), &mut regs);
        regs.rdx
    };
    assert_eq!(info(&td), abi::tdcall::vp_info::ATTR_SEPT_VE_DISABLE);
    td.lock().tdx.set_attributes(0);
    assert_eq!(info(&td), 0, "what td-shim's tests expect");
}

/// A GHCI call with R10-R15 exposed from vCPU `vcpu`: its registers.
fn ghci_call(
    td: &TdShared<NoKvm>,
    vcpu: u32,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
) -> kvm_regs {
    let mut regs = kvm_regs {
        rax: u64::from(leaf::VP_VMCALL),
        rcx: EXPOSE_R10_R15,
        r10: GHCI_STANDARD,
        r11,
        r12,
        r13,
        r14,
        r15,
        ..Default::default()
    };
    let rung = ring(td, &mut VcpuState::new(vcpu), &mut regs);
    assert!(rung.stop.is_none());
    assert_eq!(regs.rax, 0, "the TDCALL itself succeeds");
    regs
}

#[test]
fn cpuid_answers_from_the_table_with_the_vcpus_x2apic_id() {
    let td = td(2);
    td.lock().tdx.set_cpuid(CpuidTable::new(vec![
        CpuidEntry {
            leaf: 1,
            subleaf: None,
            regs: [0x806f8, 0x800, 0x7ffa_fbff, 0xbfeb_fbff],
        },
        CpuidEntry {
            leaf: 0xb,
            subleaf: Some(0),
            regs: [1, 1, 0x100, 0],
        },
    ]));
    let r = ghci_call(&td, 0, ghci::INSTRUCTION_CPUID, 1, 0, 0, 0);
    assert_eq!(
        (r.r10, r.r12, r.r13, r.r14, r.r15),
        (0, 0x806f8, 0x800, 0x7ffa_fbff, 0xbfeb_fbff)
    );
    // td-shim's AP loop: leaf 0xB, R15 = the x2APIC ID.
    let r = ghci_call(&td, 1, ghci::INSTRUCTION_CPUID, 0xb, 0, 0, 0);
    assert_eq!((r.r10, r.r12, r.r14, r.r15), (0, 1, 0x100, 1));
    // A leaf or subleaf wider than 32 bits: refused, outputs untouched.
    for (leaf, sub) in [(1 << 32, 0), (1, 1 << 32)] {
        let r = ghci_call(&td, 0, ghci::INSTRUCTION_CPUID, leaf, sub, 0x77, 0x88);
        assert_eq!(r.r10, vmcall_status::OPERAND_INVALID);
        assert_eq!((r.r12, r.r13, r.r14, r.r15), (leaf, sub, 0x77, 0x88));
    }
}

#[test]
fn the_x2apic_svr_is_per_vcpu_and_reads_back_what_was_written() {
    let td = td(2);
    let rd = |v| ghci_call(&td, v, ghci::INSTRUCTION_RDMSR, ghci::X2APIC_SVR, 0, 0, 0);
    let wr = |v, value| {
        ghci_call(
            &td,
            v,
            ghci::INSTRUCTION_WRMSR,
            ghci::X2APIC_SVR,
            value,
            0,
            0,
        )
    };
    let r = rd(0);
    assert_eq!((r.r10, r.r11), (0, ghci::X2APIC_SVR_RESET));
    // td-shim's test: read, write +1, read back.
    assert_eq!(wr(0, r.r11 + 1).r10, 0);
    assert_eq!(rd(0).r11, ghci::X2APIC_SVR_RESET + 1);
    assert_eq!(rd(1).r11, ghci::X2APIC_SVR_RESET, "vCPU 1 has its own");
    // Reserved bits: refused, nothing written.
    for value in [1 << 10, 1 << 13, 1 << 32] {
        assert_eq!(wr(1, value).r10, vmcall_status::OPERAND_INVALID);
    }
    assert_eq!(rd(1).r11, ghci::X2APIC_SVR_RESET);
    // Other MSRs stay refused; the ICR is still an IPI.
    let r = ghci_call(&td, 0, ghci::INSTRUCTION_RDMSR, 0x1b, 0, 0, 0);
    assert_eq!(r.r10, vmcall_status::OPERAND_INVALID);
    let r = ghci_call(&td, 0, ghci::INSTRUCTION_RDMSR, ghci::X2APIC_ICR, 0, 0, 0);
    assert_eq!(r.r10, vmcall_status::OPERAND_INVALID);
}

/// Instruction.IO: size, write data (None for a read); R10 and R11,
/// and whether it counted as unassigned I/O.
fn io_counted(td: &TdShared<NoKvm>, port: u64, size: u64, data: Option<u64>) -> (u64, u64, bool) {
    let dir = if data.is_some() {
        ghci::IO_DIRECTION_WRITE
    } else {
        ghci::IO_DIRECTION_READ
    };
    let mut regs = kvm_regs {
        rax: u64::from(leaf::VP_VMCALL),
        rcx: EXPOSE_R10_R15,
        r10: GHCI_STANDARD,
        r11: ghci::INSTRUCTION_IO,
        r12: size,
        r13: dir,
        r14: port,
        r15: data.unwrap_or(0),
        ..Default::default()
    };
    let mut v = VcpuState::new(0);
    ring(td, &mut v, &mut regs);
    assert_eq!(regs.rax, 0);
    (regs.r10, regs.r11, v.exits.unassigned_io == 1)
}

fn io(td: &TdShared<NoKvm>, port: u64, size: u64, data: Option<u64>) -> (u64, u64) {
    let (r10, r11, unassigned) = io_counted(td, port, size, data);
    assert!(!unassigned, "port {port:#x} reaches the CMOS");
    (r10, r11)
}

#[test]
fn cmos_reads_back_as_td_shims_io_tests_expect() {
    let td = td(1);
    // testiorw8: index 0x32, read, write +1, read back.
    assert_eq!(io(&td, 0x70, 1, Some(0x32)).0, 0);
    let (r10, first) = io(&td, 0x71, 1, None);
    assert_eq!((r10, first), (0, 0));
    io(&td, 0x71, 1, Some(first + 1));
    assert_eq!(io(&td, 0x71, 1, None).1, first + 1);
    // testiorw32: a 4-byte access at 0x71 is ports 0x71-0x74; only 0x71
    // has the device, the other bytes read as 0xff.
    let (_, read1) = io(&td, 0x71, 4, None);
    assert_eq!(read1, 0xffff_ff01);
    io(&td, 0x71, 4, Some(read1 + 1));
    assert_eq!(io(&td, 0x71, 4, None).1, read1 + 1);
    assert_eq!(io(&td, 0x71, 1, None).1, 2);
    // A 2-byte write at 0x70: index from the low byte, data from the high.
    io(&td, 0x70, 2, Some(0x9905));
    assert_eq!(io(&td, 0x71, 1, None).1, 0x99);
    io(&td, 0x70, 1, Some(0x32));
    assert_eq!(io(&td, 0x71, 1, None).1, 2, "byte 0x32 kept");
    // The index port is write-only.
    assert_eq!(io(&td, 0x70, 1, None).1, 0xff);
    // Next door, still nothing: unassigned I/O, as before.
    assert_eq!(io_counted(&td, 0x72, 1, None), (0, 0xff, true));
    assert_eq!(io_counted(&td, 0x6c, 4, None), (0, 0xffff_ffff, true));
    assert_eq!(io(&td, 0x6d, 4, None).1, 0xffff_ffff, "0x70 reads as 0xff");
}

#[test]
fn event_notify_takes_vectors_32_to_255() {
    let td = td(1);
    for (vector, r10) in [
        (32, 0),
        (255, 0),
        (31, vmcall_status::OPERAND_INVALID),
        (256, vmcall_status::OPERAND_INVALID),
        (u64::MAX, vmcall_status::OPERAND_INVALID),
    ] {
        let r = ghci_call(&td, 0, ghci::SETUP_EVENT_NOTIFY_INTERRUPT, vector, 0, 0, 0);
        assert_eq!(r.r10, r10, "vector {vector}");
    }
    assert_eq!(td.lock().tdx.event_notify_vector, Some(255));
}

#[test]
fn get_quote_is_unsupported() {
    let td = td(1);
    let r = ghci_call(&td, 0, ghci::GET_QUOTE, SHARED | RAM, 4096, 0, 0);
    assert_eq!(r.r10, vmcall_status::SUBFUNC_UNSUPPORTED);
}

#[test]
fn ve_info_is_the_vcpus_own_and_is_cleared_by_the_read() {
    use crate::tdx::module::VeInfo;
    use abi::tdcall::ve;
    let td = accepted_td(2);
    let get = |vcpu: u32| {
        let mut regs = kvm_regs {
            rax: u64::from(leaf::VP_VEINFO_GET),
            rcx: 7,
            ..Default::default()
        };
        ring(&td, &mut VcpuState::new(vcpu), &mut regs);
        regs
    };
    // None raised: no valid info, nothing written.
    let r = get(0);
    assert_eq!((r.rax, r.rcx), (status::NO_VALID_VE_INFO, 7));
    td.lock().tdx.ve_info[1] = Some(VeInfo {
        qualification: ve::QUAL_WRITE,
        gpa: PENDING + 0x123,
    });
    // vCPU 0 has none; vCPU 1 reads its own, once.
    assert_eq!(get(0).rax, status::NO_VALID_VE_INFO);
    let r = get(1);
    assert_eq!(r.rax, status::SUCCESS);
    assert_eq!(
        (r.rcx, r.rdx, r.r8, r.r9, r.r10),
        (
            ve::EXIT_REASON_EPT_VIOLATION,
            ve::QUAL_WRITE,
            0,
            PENDING + 0x123,
            0
        )
    );
    assert_eq!(get(1).rax, status::NO_VALID_VE_INFO);
}
