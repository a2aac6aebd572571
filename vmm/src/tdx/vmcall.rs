//! `TDG.VP.VMCALL`: the services a TD asks of its host, with GHCI register
//! semantics (only registers exposed in RCX are seen or written): the
//! instruction services (CPUID from the TD's table, HLT, IO to COM1 and
//! CMOS, RDMSR/WRMSR of the x2APIC SVR and ICR), GetTdVmCallInfo,
//! SetupEventNotifyInterrupt, MapGPA (private <-> shared, in bounded
//! steps with the GHCI retry), GetQuote (unsupported), ReportFatalError;
//! plus the vendor calls for shutdown, phase marks, counters and the
//! system table, which come back to the run loop as events.

use crate::host::console::Console;
use crate::memory::memslots::SlotBackend;
use crate::memory::private::{GpaKind, PrivateMemory};
use crate::stop::{Fatal, Stop};
use crate::tdx::cmos::Cmos;
use crate::tdx::event::{Event, Handled};
use crate::tdx::module::TdxModule;
use crate::tdx::tdcall::VmcallInputs;
use abi::report::{Counter, Mark, Outcome};
use abi::tdcall::Status;
use abi::vmcall::{emu, ghci, gpr, vmcall_status, COM1_BASE, COM1_LEN, GHCI_STANDARD, VENDOR_EMU};
use kvm_bindings::kvm_regs;

/// Most bytes one MapGPA converts. A longer range converts its first
/// `MAP_GPA_STEP_BYTES` and answers `TDG.VP.VMCALL_RETRY` with R11 = the
/// GPA (shared bit as in R12) to call again from, as Linux's `tdx_map_gpa`
/// expects: each call holds the TD's state lock for a bounded time.
pub const MAP_GPA_STEP_BYTES: u64 = 64 << 20;

/// What a VMCALL needs of the TD.
struct Services<'a, B: SlotBackend> {
    tdx: &'a mut TdxModule,
    mem: &'a mut PrivateMemory<B>,
    console: &'a mut Console,
    /// The calling vCPU's index (its x2APIC ID).
    vcpu: u32,
}

/// Handles a VMCALL from vCPU `vcpu` (the TDCALL itself succeeds:
/// `TDX_SUCCESS`); sets the exposed outputs (R10, the VMCALL's status,
/// and R11, or R12-R15 for CPUID) in `regs`.
pub fn handle<B: SlotBackend>(
    tdx: &mut TdxModule,
    mem: &mut PrivateMemory<B>,
    console: &mut Console,
    vcpu: u32,
    input: &VmcallInputs,
    regs: &mut kvm_regs,
) -> Handled {
    tdx.counters.vmcall(input.r10, input.r11);
    let mut out = Outputs::default();
    let mut services = Services {
        tdx,
        mem,
        console,
        vcpu,
    };
    let handled = match input.r10 {
        GHCI_STANDARD => standard(&mut services, regs, input, &mut out),
        VENDOR_EMU => vendor(&mut services, input, &mut out),
        other => {
            log::debug!(
                "VMCALL with unknown R10 {other:#x}: returning TDG.VP.VMCALL_INVALID_OPERAND"
            );
            out.r10 = vmcall_status::OPERAND_INVALID;
            Handled::answer(Status::Success)
        }
    };
    if input.exposes(gpr::R10) {
        regs.r10 = out.r10;
    }
    if let Some(v) = out.r11 {
        if input.exposes(gpr::R11) {
            regs.r11 = v;
        }
    }
    if let Some([eax, ebx, ecx, edx]) = out.cpuid {
        for (n, reg, v) in [
            (gpr::R12, &mut regs.r12, eax),
            (gpr::R13, &mut regs.r13, ebx),
            (gpr::R14, &mut regs.r14, ecx),
            (gpr::R15, &mut regs.r15, edx),
        ] {
            if input.exposes(n) {
                *reg = u64::from(v);
            }
        }
    }
    handled
}

#[derive(Default)]
struct Outputs {
    r10: u64,
    r11: Option<u64>,
    /// Instruction.CPUID's EAX-EDX, for R12-R15.
    cpuid: Option<[u32; 4]>,
}

fn standard<B: SlotBackend>(
    svc: &mut Services<'_, B>,
    regs: &kvm_regs,
    input: &VmcallInputs,
    out: &mut Outputs,
) -> Handled {
    match input.r11 {
        ghci::INSTRUCTION_IO => instruction_io(svc.console, &mut svc.tdx.cmos, input, out),
        ghci::REPORT_FATAL_ERROR => Handled::stop(fatal_error(svc.mem, regs, input)),
        ghci::INSTRUCTION_HLT => Handled::event(Event::Halt),
        ghci::INSTRUCTION_WRMSR if input.r12 == ghci::X2APIC_ICR => {
            Handled::event(Event::Ipi(input.r13))
        }
        ghci::INSTRUCTION_WRMSR | ghci::INSTRUCTION_RDMSR if input.r12 == ghci::X2APIC_SVR => {
            x2apic_svr(svc, input, out);
            Handled::answer(Status::Success)
        }
        ghci::INSTRUCTION_CPUID => {
            match (u32::try_from(input.r12), u32::try_from(input.r13)) {
                (Ok(leaf), Ok(subleaf)) => {
                    out.cpuid = Some(svc.tdx.cpuid.answer(leaf, subleaf, svc.vcpu));
                }
                _ => out.r10 = vmcall_status::OPERAND_INVALID,
            }
            Handled::answer(Status::Success)
        }
        ghci::MAP_GPA => map_gpa(svc, regs, input, out),
        ghci::GET_TD_VM_CALL_INFO => {
            out.r11 = Some(0);
            Handled::answer(Status::Success)
        }
        ghci::SETUP_EVENT_NOTIFY_INTERRUPT => {
            let vector = (ghci::EVENT_NOTIFY_VECTOR_MIN..=ghci::EVENT_NOTIFY_VECTOR_MAX)
                .contains(&input.r12)
                .then(|| u8::try_from(input.r12).ok())
                .flatten();
            match vector {
                Some(v) => svc.tdx.event_notify_vector = Some(v),
                None => out.r10 = vmcall_status::OPERAND_INVALID,
            }
            Handled::answer(Status::Success)
        }
        ghci::GET_QUOTE => {
            log::debug!(
                "GetQuote: no quoting service; returning TDG.VP.VMCALL_SUBFUNC_UNSUPPORTED"
            );
            out.r10 = vmcall_status::SUBFUNC_UNSUPPORTED;
            Handled::answer(Status::Success)
        }
        other => {
            log::debug!("GHCI sub-function {other:#x} is not provided: returning TDG.VP.VMCALL_INVALID_OPERAND");
            out.r10 = vmcall_status::OPERAND_INVALID;
            Handled::answer(Status::Success)
        }
    }
}

/// MapGPA: R12 = start (the shared bit set converts to shared, clear to
/// private), R13 = length. Converts at most `MAP_GPA_STEP_BYTES`; the
/// rest is the guest's to ask again for (RETRY, R11 = where). A failure
/// of the host itself stops the TD.
fn map_gpa<B: SlotBackend>(
    svc: &mut Services<'_, B>,
    regs: &kvm_regs,
    input: &VmcallInputs,
    out: &mut Outputs,
) -> Handled {
    let req = match input.map_gpa(svc.mem.layout()) {
        Ok(req) => req,
        Err(status) => {
            log::debug!(
                "MapGPA of {:#x} (+{:#x}): refused with {status:#x}",
                input.r12,
                input.r13
            );
            // R11 = the GPA that failed, as KVM's `tdx_map_gpa` answers.
            out.r10 = status;
            out.r11 = Some(input.r12);
            return Handled::answer(Status::Success);
        }
    };
    let step = req.len.min(MAP_GPA_STEP_BYTES);
    let (to, done) = if req.shared {
        ("shared", svc.mem.convert_to_shared(req.gpa, step))
    } else {
        ("private", svc.mem.convert_to_private(req.gpa, step))
    };
    if let Err(e) = done {
        return Handled::stop(Stop::error(
            format!("MapGPA of {:#x} (+{step:#x}) to {to} failed: {e}", req.gpa),
            Some(regs.rip),
        ));
    }
    log::debug!("MapGPA: {:#x} (+{step:#x}) is {to}", req.gpa);
    if step < req.len {
        out.r10 = vmcall_status::RETRY;
        out.r11 = Some(input.r12 + step);
    }
    Handled::answer(Status::Success)
}

/// The vendor console write: `len` bytes at `gpa` go to the UART's
/// transmit register one by one. With the shared bit in `gpa` they are
/// read from shared memory, all of which the guest must have converted
/// (what a TDX host can read); without it from accepted private memory (a
/// convenience of this VMM for the firmware and the early kernel, which a
/// TDX host could not offer). Anything else (no bytes, too many, memory
/// that is neither) is refused with nothing written.
fn console_write<B: SlotBackend>(svc: &mut Services<'_, B>, gpa: u64, len: u64, out: &mut Outputs) {
    if len == 0 || len > emu::CONSOLE_WRITE_MAX {
        log::debug!("console write of {len} bytes at {gpa:#x}: length out of range");
        out.r10 = vmcall_status::OPERAND_INVALID;
        return;
    }
    let mut buf = [0u8; abi::to_usize(emu::CONSOLE_WRITE_MAX)];
    let buf = &mut buf[..abi::to_usize(len)];
    let shared = gpa & svc.mem.layout().shared_bit() != 0;
    let read = if shared {
        svc.mem.read_shared(gpa, buf)
    } else {
        svc.mem.read_accepted(gpa, buf)
    };
    if !read {
        log::debug!(
            "console write of {len} bytes at {gpa:#x}: not {}",
            if shared {
                "shared memory"
            } else {
                "accepted RAM"
            }
        );
        out.r10 = vmcall_status::OPERAND_INVALID;
        return;
    }
    if shared {
        svc.mem.count_console_shared(len);
    }
    for &b in buf.iter() {
        svc.console.write(0, b);
    }
}

/// Instruction.RDMSR / WRMSR of the calling vCPU's x2APIC SVR: a read
/// returns it in R11; a write of R13 with a reserved bit set is refused
/// (a #GP on hardware).
fn x2apic_svr<B: SlotBackend>(svc: &mut Services<'_, B>, input: &VmcallInputs, out: &mut Outputs) {
    let Some(svr) = svc.tdx.svr.get_mut(abi::to_usize(u64::from(svc.vcpu))) else {
        out.r10 = vmcall_status::OPERAND_INVALID;
        return;
    };
    if input.r11 == ghci::INSTRUCTION_RDMSR {
        out.r11 = Some(*svr);
    } else if input.r13 & !ghci::X2APIC_SVR_WRITABLE != 0 {
        log::debug!("WRMSR x2APIC SVR {:#x}: reserved bits set", input.r13);
        out.r10 = vmcall_status::OPERAND_INVALID;
    } else {
        *svr = input.r13;
    }
}

/// An access of `size` bytes at `port` to the CMOS device: byte `i` goes
/// to port `port + i` (little-endian), as the bus splits it for a device
/// with byte-wide registers; bytes at ports with no device read as 0xff
/// and are dropped on a write. `None` when no byte reaches the device.
fn cmos_io(cmos: &mut Cmos, port: u16, size: u64, write: Option<u64>) -> Option<u64> {
    let ports: Vec<Option<u16>> = (0..size)
        .map(|i| u16::try_from(i).ok().and_then(|i| port.checked_add(i)))
        .collect();
    if !ports.iter().flatten().any(|p| Cmos::claims(*p)) {
        return None;
    }
    let mut value = 0u64;
    for (i, p) in (0u32..).zip(ports) {
        let p = p.filter(|p| Cmos::claims(*p));
        match (p, write) {
            (Some(p), Some(data)) => cmos.write(p, (data >> (8 * i)).to_le_bytes()[0]),
            (None, Some(_)) => {}
            (Some(p), None) => value |= u64::from(cmos.read(p)) << (8 * i),
            (None, None) => value |= 0xff << (8 * i),
        }
    }
    Some(value)
}

/// Instruction.IO: R12 = size, R13 = direction, R14 = port, R15 = data.
fn instruction_io(
    console: &mut Console,
    cmos: &mut Cmos,
    input: &VmcallInputs,
    out: &mut Outputs,
) -> Handled {
    let (size, dir) = (input.r12, input.r13);
    let port = u16::try_from(input.r14);
    let (Ok(port), true, true) = (
        port,
        matches!(size, 1 | 2 | 4),
        dir <= ghci::IO_DIRECTION_WRITE,
    ) else {
        out.r10 = vmcall_status::OPERAND_INVALID;
        return Handled::answer(Status::Success);
    };
    let mask = if size == 4 {
        u32::MAX as u64
    } else {
        (1u64 << (size * 8)) - 1
    };
    let com1 = port
        .checked_sub(COM1_BASE)
        .filter(|o| *o < COM1_LEN)
        .and_then(|o| u8::try_from(o).ok());
    if let (Some(offset), 1) = (com1, size) {
        if dir == ghci::IO_DIRECTION_WRITE {
            // A 1-byte write: the data is R15's low byte.
            console.write(offset, input.r15.to_le_bytes()[0]);
        } else {
            out.r11 = Some(console.read(offset) as u64);
        }
        return Handled::answer(Status::Success);
    }
    let write = (dir == ghci::IO_DIRECTION_WRITE).then_some(input.r15);
    if let Some(value) = cmos_io(cmos, port, size, write) {
        if write.is_none() {
            out.r11 = Some(value);
        }
        return Handled::answer(Status::Success);
    }
    log::debug!("Instruction.IO to unassigned port {port:#x} (size {size}, dir {dir})");
    if dir == ghci::IO_DIRECTION_READ {
        out.r11 = Some(mask);
    }
    Handled::event(Event::UnassignedIo)
}

/// ReportFatalError: R12 bits 31:0 = error code; if bit 63 is set, R13 is
/// the GPA of a NUL-terminated message page. Linux instead puts up to 64
/// message bytes in R14, R15, RBX, RDI, RSI, R8, R9, RDX.
fn fatal_error<B: SlotBackend>(
    mem: &PrivateMemory<B>,
    regs: &kvm_regs,
    input: &VmcallInputs,
) -> Stop {
    let code = input.r12 & 0xffff_ffff;
    let message = if input.r12 & ghci::FATAL_GPA_VALID != 0 {
        let gpa = input.r13;
        let mut page = vec![0u8; ghci::FATAL_MESSAGE_MAX];
        if !gpa.is_multiple_of(abi::PAGE_4K) {
            format!("[message GPA {gpa:#x} is not 4 KiB aligned; not read]")
        } else if mem.read_accepted(gpa, &mut page) {
            printable(&page)
        } else {
            let why = match mem.classify(gpa) {
                GpaKind::Pending => "pending memory",
                GpaKind::NotRam => "not RAM",
                GpaKind::Accepted => "partly pending",
            };
            format!("[message GPA {gpa:#x} is {why}; not read]")
        }
    } else {
        let order = [
            gpr::R14,
            gpr::R15,
            gpr::RBX,
            gpr::RDI,
            gpr::RSI,
            gpr::R8,
            gpr::R9,
            gpr::RDX,
        ];
        let bytes: Vec<u8> = order
            .iter()
            .filter(|n| input.exposes(**n))
            .flat_map(|n| crate::tdx::tdcall::gpr_value(regs, *n).to_le_bytes())
            .collect();
        printable(&bytes)
    };
    log::info!(
        "guest reported a fatal error, code {code:#x}: {}",
        crate::host::console::one_line(&message)
    );
    // An exception handler names the faulting instruction (bit 62, R14);
    // otherwise the RIP is where the guest reported from.
    let rip = if input.r12 & ghci::FATAL_RIP_VALID != 0 && input.exposes(gpr::R14) {
        input.r14
    } else {
        regs.rip
    };
    Stop::fatal(
        Outcome::GuestPanic,
        Fatal::new(format!(
            "guest fatal error {code:#x} ({}): {message}",
            abi::vmcall::fatal_code::name(code as u32)
        ))
        .rip(Some(rip)),
    )
}

/// Bytes up to the first NUL, as text with control characters escaped.
fn printable(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

fn vendor<B: SlotBackend>(
    svc: &mut Services<'_, B>,
    input: &VmcallInputs,
    out: &mut Outputs,
) -> Handled {
    let invalid = |out: &mut Outputs, what: &str| {
        log::debug!("{what} {} is not defined", input.r12);
        out.r10 = vmcall_status::OPERAND_INVALID;
        Handled::answer(Status::Success)
    };
    match input.r11 {
        // The exit code is R12's low 32 bits, signed.
        emu::SHUTDOWN => Handled::stop(Stop::shutdown(i64::from(
            (input.r12 & 0xffff_ffff) as u32 as i32,
        ))),
        emu::MARK => match Mark::from_id(input.r12) {
            Some(mark) => Handled::event(Event::Mark(mark, input.r13)),
            None => invalid(out, "guest phase mark"),
        },
        emu::SYSTEM_TABLE => Handled::event(Event::SystemTable(input.r12)),
        emu::COUNTER => match Counter::from_id(input.r12) {
            Some(c) => Handled::event(Event::Counter(c, input.r13)),
            None => invalid(out, "guest counter"),
        },
        emu::SEPT_LEVEL => {
            out.r11 = Some(match svc.mem.sept_level() {
                abi::tdcall::SeptLevel::L2M => 0,
                abi::tdcall::SeptLevel::L4K => 1,
            });
            Handled::answer(Status::Success)
        }
        emu::CONSOLE_WRITE => {
            console_write(svc, input.r12, input.r13, out);
            Handled::answer(Status::Success)
        }
        emu::ABI_VERSION => {
            out.r11 = Some(abi::vmcall::abi_version::CURRENT);
            Handled::answer(Status::Success)
        }
        emu::REMOVE_PAGE => {
            let gpa = input.r12;
            let accepted = gpa.is_multiple_of(abi::PAGE_4K)
                && svc.mem.layout().ram_offset(gpa, abi::PAGE_4K).is_some()
                && svc.mem.classify(gpa) == GpaKind::Accepted;
            if !accepted {
                log::debug!("REMOVE_PAGE {gpa:#x}: not an accepted private RAM page");
                out.r10 = vmcall_status::OPERAND_INVALID;
                return Handled::answer(Status::Success);
            }
            match svc.mem.remove_by_host(gpa) {
                Ok(true) => Handled::answer(Status::Success),
                Ok(false) => {
                    out.r10 = vmcall_status::OPERAND_INVALID;
                    Handled::answer(Status::Success)
                }
                Err(e) => Handled::stop(Stop::error(
                    format!("removing GPA {gpa:#x} for the guest's REMOVE_PAGE failed: {e}"),
                    None,
                )),
            }
        }
        other => {
            log::debug!("vendor VMCALL {other:#x} is not defined");
            out.r10 = vmcall_status::OPERAND_INVALID;
            Handled::answer(Status::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::host::console::Console;
    use crate::memory::guest_ram::Backing;
    use crate::memory::memslots::NoKvm;
    use crate::memory::private::PrivateMemory;
    use crate::tdx::dispatch::dispatch;
    use crate::tdx::event::Event;
    use crate::tdx::module::TdxModule;
    use crate::tdx::tdcall::{Leaf, Tdcall};
    use abi::tdcall::{accept::encode, leaf, PageLevel};
    use abi::vmcall::{emu, ghci, vmcall_status, EXPOSE_R10_R15, GHCI_STANDARD, VENDOR_EMU};
    use abi::GIB;
    use kvm_bindings::kvm_regs;

    struct Td {
        tdx: TdxModule,
        mem: PrivateMemory<NoKvm>,
        console: Console,
    }

    fn td() -> Td {
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let mut mem = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        let req = crate::tdx::accept::AcceptRequest::decode(
            mem.layout(),
            encode(4 * GIB, PageLevel::L2M),
        );
        crate::tdx::accept::accept_alone(&mut mem, &req).unwrap();
        Td {
            tdx: TdxModule::new(48, 2, None),
            mem,
            console: Console::new(false),
        }
    }

    fn vmcall(td: &mut Td, r10: u64, r11: u64, r12: u64, r13: u64) -> (kvm_regs, Option<Event>) {
        let mut regs = kvm_regs {
            rax: leaf::VP_VMCALL as u64,
            rcx: EXPOSE_R10_R15,
            r10,
            r11,
            r12,
            r13,
            ..Default::default()
        };
        let Tdcall::Leaf(call) = Tdcall::decode(&regs, td.mem.layout()) else {
            panic!("a VMCALL decodes as a leaf");
        };
        assert!(matches!(call, Leaf::VpVmcall(_)));
        let h = dispatch(
            &mut td.tdx,
            &mut td.mem,
            &mut td.console,
            0,
            &call,
            &mut regs,
        );
        (regs, h.event)
    }

    #[test]
    fn a_console_write_takes_the_bytes_from_accepted_memory_only() {
        let mut td = td();
        let at = 4 * GIB + 0x1000;
        assert!(td.mem.write_accepted(at, b"hello, console\n"));
        let (r, _) = vmcall(&mut td, VENDOR_EMU, emu::CONSOLE_WRITE, at, 15);
        assert_eq!(r.r10, 0);
        assert_eq!(td.console.text(), "hello, console\n");
        // Refused, with nothing written: no bytes, too many, pending memory,
        // a range running off accepted memory, no RAM, a wrapping range.
        for (gpa, len) in [
            (at, 0),
            (at, emu::CONSOLE_WRITE_MAX + 1),
            (4 * GIB + (2 << 20), 8),
            (4 * GIB + (2 << 20) - 4, 8),
            (3 * GIB + 0x1000, 8),
            (u64::MAX - 3, 8),
        ] {
            let (r, _) = vmcall(&mut td, VENDOR_EMU, emu::CONSOLE_WRITE, gpa, len);
            assert_eq!(r.r10, vmcall_status::OPERAND_INVALID, "{gpa:#x} + {len}");
        }
        assert_eq!(td.console.text(), "hello, console\n");
    }

    #[test]
    fn a_console_write_with_the_shared_bit_reads_shared_memory_only() {
        let mut td = td();
        let bit = td.mem.layout().shared_bit();
        let page = 4 * GIB + (4 << 20);
        let (r, _) = vmcall(&mut td, GHCI_STANDARD, ghci::MAP_GPA, page | bit, 0x1000);
        assert_eq!(r.r10, 0);
        assert!(td.mem.write_shared(page, b"through the bounce pool\n"));
        let (r, _) = vmcall(&mut td, VENDOR_EMU, emu::CONSOLE_WRITE, page | bit, 24);
        assert_eq!(r.r10, 0);
        assert_eq!(td.console.text(), "through the bounce pool\n");
        assert_eq!(td.mem.shared().console_bytes, 24);
        // The shared bit over private memory, the private alias of shared
        // memory, a range running off the shared page: refused.
        let private = 4 * GIB + 0x1000;
        assert!(td.mem.write_accepted(private, b"secret"));
        for gpa in [private | bit, page, (page + 0x1000 - 4) | bit] {
            let (r, _) = vmcall(&mut td, VENDOR_EMU, emu::CONSOLE_WRITE, gpa, 6);
            assert_eq!(r.r10, vmcall_status::OPERAND_INVALID, "{gpa:#x}");
        }
        assert_eq!(td.console.text(), "through the bounce pool\n");
        assert_eq!(td.mem.shared().console_bytes, 24);
    }

    #[test]
    fn the_abi_version_call_answers_the_current_version() {
        let mut td = td();
        let (r, event) = vmcall(&mut td, VENDOR_EMU, emu::ABI_VERSION, 0, 0);
        assert_eq!((r.rax, r.r10, event), (0, 0, None));
        assert_eq!(r.r11, abi::vmcall::abi_version::CURRENT);
        let (r, _) = vmcall(&mut td, VENDOR_EMU, emu::ABI_VERSION + 1, 0, 0);
        assert_eq!(r.r10, vmcall_status::OPERAND_INVALID);
    }

    #[test]
    fn wrmsr_is_an_ipi_through_the_icr_and_refused_elsewhere() {
        let mut td = td();
        let icr = 1u64 << ghci::ICR_DEST_SHIFT | ghci::WAKE_VECTOR;
        let (r, event) = vmcall(
            &mut td,
            GHCI_STANDARD,
            ghci::INSTRUCTION_WRMSR,
            ghci::X2APIC_ICR,
            icr,
        );
        assert_eq!((r.r10, event), (0, Some(Event::Ipi(icr))));
        let (r, event) = vmcall(&mut td, GHCI_STANDARD, ghci::INSTRUCTION_WRMSR, 0x1b, 0);
        assert_eq!((r.r10, event), (vmcall_status::OPERAND_INVALID, None));
        let (r, event) = vmcall(&mut td, GHCI_STANDARD, ghci::INSTRUCTION_HLT, 0, 0);
        assert_eq!((r.r10, event), (0, Some(Event::Halt)));
    }
}
