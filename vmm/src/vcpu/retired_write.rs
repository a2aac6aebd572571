//! The instruction behind an emulated MMIO write. KVM emulates a guest
//! write to a GPA without a memslot, retires the instruction (RIP past it,
//! a string instruction's RDI/RSI/RCX stepped) and only then exits, with
//! the write's GPA, length and data but not where the instruction began.
//! On TDX the EPT violation comes before the instruction retires, so a
//! precise #VE needs the state before it: this finds the instruction from
//! the code bytes that end at RIP and the registers, and gives the
//! registers as they were before it. No KVM here (`GuestView` reads and
//! translates guest memory); unit-tested with hand-assembled code.
//!
//! Which instructions: a pure store (one memory operand, written and not
//! read; no register or flag written; no control flow: `mov`, `movnti`,
//! SSE stores, `setcc`), and `stos`/`movs` with or without `rep`. A
//! candidate must write the exit's GPA with at least the exit's length,
//! and, where its source is a general-purpose or XMM register, an
//! immediate, or (for `movs`) accepted memory, the exit's bytes. The
//! shortest candidate that checks is taken: a longer one ending at the same
//! RIP only adds prefix bytes, so re-running the shorter one does the same
//! write. Candidates whose data cannot be checked are taken only alone.

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use kvm_bindings::kvm_regs;

/// The longest x86 instruction.
const MAX_INSN: usize = 15;
/// RFLAGS.RF: KVM's emulator sets it while a `rep` string instruction is
/// not finished (RIP still at it) and clears it when one completes.
const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.DF: string instructions step down.
const RFLAGS_DF: u64 = 1 << 10;

/// Guest memory as the instruction saw it.
pub trait GuestView {
    /// The GPA of linear address `gva`, if the guest maps it.
    fn translate(&self, gva: u64) -> Option<u64>;
    /// Reads accepted guest memory at `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
}

/// The vCPU state KVM left after the write.
pub struct After<'a> {
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: &'a kvm_regs,
    /// Segment bases ES, CS, SS, DS, FS, GS (only FS and GS count in
    /// 64-bit mode).
    pub segment_bases: [u64; 6],
    /// XMM0..XMM15, 16 bytes each (the XSAVE legacy area), if known.
    pub xmm: Option<&'a [u8]>,
    /// 64, 32 or 16: the code segment's mode.
    pub bitness: u32,
}

/// The write KVM handed the VMM.
pub struct Write<'a> {
    pub gpa: u64,
    pub bytes: &'a [u8],
}

/// The instruction found and the registers before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// The registers to run it again with (RIP at it).
    pub regs: kvm_regs,
    /// Its length in bytes.
    pub len: usize,
    /// Its mnemonic, for diagnostics.
    pub mnemonic: String,
}

/// Why the instruction of a retired write cannot be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetiredWriteError {
    #[error("the code bytes before RIP {rip:#x} are not readable")]
    CodeUnreadable { rip: u64 },
    #[error(
        "no instruction ending at RIP {rip:#x} is a store of {len} bytes to GPA {gpa:#x} \
         whose effect can be undone"
    )]
    NotFound { rip: u64, gpa: u64, len: usize },
    #[error(
        "{count} instructions ending at RIP {rip:#x} could have written GPA {gpa:#x} and \
         their data cannot be checked"
    )]
    Ambiguous { rip: u64, gpa: u64, count: usize },
}

/// A candidate instruction and whether its data was checked.
struct Candidate {
    found: Found,
    checked: bool,
}

/// Finds the instruction that made `write` and the registers before it.
pub fn instruction_before(
    view: &dyn GuestView,
    after: &After<'_>,
    write: &Write<'_>,
) -> Result<Found, RetiredWriteError> {
    let rip = after.regs.rip;
    let not_found = || RetiredWriteError::NotFound {
        rip,
        gpa: write.gpa,
        len: write.bytes.len(),
    };
    if after.regs.rflags & RFLAGS_RF != 0 {
        // An unfinished `rep` string store: RIP is still at it.
        let mut code = [0u8; MAX_INSN];
        let n = read_code(view, rip, &mut code);
        if n == 0 {
            return Err(RetiredWriteError::CodeUnreadable { rip });
        }
        let insn = Decoder::with_ip(after.bitness, &code[..n], rip, DecoderOptions::NONE).decode();
        return string_store(view, after, &insn, write, false)
            .filter(|c| c.checked)
            .map(|c| c.found)
            .ok_or_else(not_found);
    }
    let mut code = [0u8; MAX_INSN];
    let start = rip.saturating_sub(MAX_INSN as u64);
    let span = abi::to_usize(rip - start);
    let window = &mut code[MAX_INSN - span..];
    // Bytes that end at RIP; the first pages of the window may be unmapped.
    let mut from = 0;
    while from < span {
        if read_code(view, start + from as u64, &mut window[from..]) == span - from {
            break;
        }
        from = (from + 1).max(
            abi::to_usize((start + from as u64 + abi::PAGE_4K) & !(abi::PAGE_4K - 1))
                - abi::to_usize(start),
        );
    }
    let readable = span.saturating_sub(from);
    if readable == 0 {
        return Err(RetiredWriteError::CodeUnreadable { rip });
    }
    let mut matched: Vec<Candidate> = Vec::new();
    for k in 1..=readable {
        let bytes = &code[MAX_INSN - k..];
        let ip = rip - k as u64;
        let insn = Decoder::with_ip(after.bitness, bytes, ip, DecoderOptions::NONE).decode();
        if insn.is_invalid() || insn.len() != k {
            continue;
        }
        if let Some(c) = string_store(view, after, &insn, write, true)
            .or_else(|| pure_store(after, &insn, view, write))
        {
            matched.push(c);
        }
    }
    if let Some(c) = matched.iter().find(|c| c.checked) {
        return Ok(c.found.clone());
    }
    match matched.len() {
        0 => Err(not_found()),
        1 => Ok(matched.swap_remove(0).found),
        count => Err(RetiredWriteError::Ambiguous {
            rip,
            gpa: write.gpa,
            count,
        }),
    }
}

/// Reads up to `buf.len()` code bytes from linear address `at`, page by
/// page, stopping at the first unreadable byte; returns how many it read.
fn read_code(view: &dyn GuestView, at: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let gva = at + done as u64;
        let in_page = abi::to_usize(abi::PAGE_4K - (gva & (abi::PAGE_4K - 1)));
        let Some(gpa) = view.translate(gva) else {
            break;
        };
        let n = in_page.min(buf.len() - done);
        // The longest readable part of this page's share (at most 15
        // bytes: a few tries).
        match (1..=n)
            .rev()
            .find(|&m| view.read(gpa, &mut buf[done..done + m]))
        {
            Some(m) if m == n => done += n,
            Some(m) => return done + m,
            None => break,
        }
    }
    done
}

/// The value of register `r` (GPRs and XMM registers) in little-endian
/// bytes, `r.size()` long.
fn register_bytes(after: &After<'_>, r: Register) -> Option<Vec<u8>> {
    if r.is_xmm() {
        let i = r.number();
        let xmm = after.xmm?;
        return xmm.get(i * 16..i * 16 + 16).map(<[u8]>::to_vec);
    }
    let value = gpr(after.regs, r)?;
    Some(value.to_le_bytes()[..r.size().min(8)].to_vec())
}

/// A general-purpose register's value (the high-byte registers shifted
/// down), or a segment base, as `virtual_address` asks for them.
fn gpr(regs: &kvm_regs, r: Register) -> Option<u64> {
    let full = match r.full_register() {
        Register::RAX => regs.rax,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RBX => regs.rbx,
        Register::RSP => regs.rsp,
        Register::RBP => regs.rbp,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        _ => return None,
    };
    Some(match r {
        Register::AH | Register::CH | Register::DH | Register::BH => (full >> 8) & 0xff,
        _ if r.size() >= 8 => full,
        _ => full & ((1u64 << (8 * r.size())) - 1),
    })
}

/// `virtual_address`'s register reader.
fn register_value(after: &After<'_>, r: Register) -> Option<u64> {
    let segment = |i: usize| {
        // 64-bit mode ignores the ES, CS, SS and DS bases.
        if after.bitness == 64 && i < 4 {
            0
        } else {
            after.segment_bases[i]
        }
    };
    match r {
        Register::ES => Some(segment(0)),
        Register::CS => Some(segment(1)),
        Register::SS => Some(segment(2)),
        Register::DS => Some(segment(3)),
        Register::FS => Some(segment(4)),
        Register::GS => Some(segment(5)),
        _ => gpr(after.regs, r),
    }
}

/// The offset within `[ea, ea + size)` where the exit's write begins: at
/// `ea`, or at the next page if the store crosses one (KVM splits such a
/// write and exits for the part without a slot).
fn offset_of_write(view: &dyn GuestView, ea: u64, size: usize, write: &Write<'_>) -> Option<usize> {
    let split = abi::to_usize(abi::PAGE_4K - (ea & (abi::PAGE_4K - 1)));
    [0, split]
        .into_iter()
        .filter(|&o| o < size && o + write.bytes.len() <= size)
        .find(|&o| view.translate(ea.wrapping_add(o as u64)) == Some(write.gpa))
}

/// Compares the store's data (`value`, if known) at `offset` with the
/// exit's: `Some(true)` checked and equal, `Some(false)` different, `None`
/// not known.
fn data_matches(value: Option<Vec<u8>>, offset: usize, write: &Write<'_>) -> Option<bool> {
    let value = value?;
    Some(value.get(offset..offset + write.bytes.len()) == Some(write.bytes))
}

/// `insn` as a pure store that made `write`.
fn pure_store(
    after: &After<'_>,
    insn: &Instruction,
    view: &dyn GuestView,
    write: &Write<'_>,
) -> Option<Candidate> {
    if insn.flow_control() != FlowControl::Next
        || insn.is_stack_instruction()
        || insn.rflags_modified() != 0
        || insn.has_lock_prefix()
    {
        return None;
    }
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(insn);
    let writes_register = info.used_registers().iter().any(|u| {
        !matches!(
            u.access(),
            OpAccess::Read | OpAccess::CondRead | OpAccess::None
        )
    });
    let [memory] = info.used_memory() else {
        return None;
    };
    if writes_register || memory.access() != OpAccess::Write {
        return None;
    }
    let size = memory.memory_size().size();
    let ea = memory.virtual_address(0, |r, _, _| register_value(after, r))?;
    let offset = offset_of_write(view, ea, size, write)?;
    // The source: the operand that is not the memory one.
    let value = (0..insn.op_count()).find_map(|i| match insn.op_kind(i) {
        OpKind::Memory => None,
        OpKind::Register => Some(register_bytes(after, insn.op_register(i))),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(Some(
            insn.immediate(i).to_le_bytes()[..size.min(8)].to_vec(),
        )),
        _ => Some(None),
    });
    let checked = match data_matches(value.flatten(), offset, write) {
        Some(false) => return None,
        Some(true) => true,
        None => false,
    };
    let mut regs = *after.regs;
    regs.rip = insn.ip();
    Some(Candidate {
        found: Found {
            regs,
            len: insn.len(),
            mnemonic: format!("{:?}", insn.mnemonic()).to_lowercase(),
        },
        checked,
    })
}

/// `insn` as a `stos` or `movs` whose last element was `write`: finished
/// (`completed`, RIP past it) or a `rep` one that goes on (RIP at it).
/// 64-bit addressing only.
fn string_store(
    view: &dyn GuestView,
    after: &After<'_>,
    insn: &Instruction,
    write: &Write<'_>,
    completed: bool,
) -> Option<Candidate> {
    let movs = match insn.mnemonic() {
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => false,
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => true,
        _ => return None,
    };
    if insn.op0_kind() != OpKind::MemoryESRDI || insn.is_invalid() {
        return None;
    }
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let regs = after.regs;
    if !completed && (!rep || regs.rcx == 0) {
        return None;
    }
    if completed && rep && regs.rcx != 0 {
        return None;
    }
    let size = insn.memory_size().size();
    let step = |r: u64| {
        if regs.rflags & RFLAGS_DF != 0 {
            r.wrapping_add(size as u64)
        } else {
            r.wrapping_sub(size as u64)
        }
    };
    let rdi = step(regs.rdi);
    let offset = offset_of_write(view, rdi, size, write)?;
    let value = if movs {
        let mut buf = vec![0u8; size];
        view.translate(step(regs.rsi))
            .filter(|&gpa| view.read(gpa, &mut buf))
            .map(|_| buf)
    } else {
        Some(regs.rax.to_le_bytes()[..size].to_vec())
    };
    let checked = match data_matches(value, offset, write) {
        Some(false) => return None,
        Some(true) => true,
        None => false,
    };
    let mut before = *regs;
    before.rip = insn.ip();
    before.rdi = rdi;
    if movs {
        before.rsi = step(regs.rsi);
    }
    if rep {
        before.rcx = regs.rcx.wrapping_add(1);
    }
    Some(Candidate {
        found: Found {
            regs: before,
            len: insn.len(),
            mnemonic: format!("{}{:?}", if rep { "rep " } else { "" }, insn.mnemonic())
                .to_lowercase(),
        },
        checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Identity-mapped guest memory: `bytes` at `base`; linear addresses
    /// in `unmapped` pages do not translate.
    struct Memory {
        base: u64,
        bytes: Vec<u8>,
        unmapped: Vec<u64>,
        offset: BTreeMap<u64, u64>,
    }

    impl Memory {
        fn new(base: u64, bytes: Vec<u8>) -> Self {
            Memory {
                base,
                bytes,
                unmapped: Vec::new(),
                offset: BTreeMap::new(),
            }
        }
    }

    impl GuestView for Memory {
        fn translate(&self, gva: u64) -> Option<u64> {
            let page = gva & !0xfff;
            if self.unmapped.contains(&page) {
                return None;
            }
            Some(gva + self.offset.get(&page).copied().unwrap_or(0))
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
            let Some(at) = gpa.checked_sub(self.base) else {
                return false;
            };
            let at = abi::to_usize(at);
            match self.bytes.get(at..at + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    const CODE: u64 = 0x10_0000;

    /// Code `before` + `insn` at CODE, RIP after `insn`.
    fn setup(before: &[u8], insn: &[u8]) -> (Memory, kvm_regs) {
        let mut code = before.to_vec();
        code.extend_from_slice(insn);
        let regs = kvm_regs {
            rip: CODE + code.len() as u64,
            rflags: 2,
            ..Default::default()
        };
        (Memory::new(CODE, code), regs)
    }

    fn find(
        mem: &Memory,
        regs: &kvm_regs,
        gpa: u64,
        bytes: &[u8],
    ) -> Result<Found, RetiredWriteError> {
        let after = After {
            regs,
            segment_bases: [0; 6],
            xmm: None,
            bitness: 64,
        };
        instruction_before(mem, &after, &Write { gpa, bytes })
    }

    #[test]
    fn a_mov_from_a_register_is_found_and_rip_goes_back_to_it() {
        // nop; nop; mov [rdi], rax
        let (mem, mut regs) = setup(&[0x90, 0x90], &[0x48, 0x89, 0x07]);
        regs.rdi = 0x20_0000;
        regs.rax = 0x1122_3344_5566_7788;
        let f = find(&mem, &regs, 0x20_0000, &regs.rax.to_le_bytes()).unwrap();
        assert_eq!(f.regs.rip, CODE + 2);
        assert_eq!(f.len, 3);
        assert_eq!(f.mnemonic, "mov");
        assert_eq!(f.regs.rdi, regs.rdi);
    }

    #[test]
    fn the_source_register_is_told_by_the_data() {
        // mov [rdi], r8d (44 89 07) ends in `89 07`, mov [rdi], eax: the
        // same address and length; the data tells them apart.
        let (mem, mut regs) = setup(&[0x90], &[0x44, 0x89, 0x07]);
        regs.rdi = 0x20_0000;
        regs.rax = 0xaaaa_aaaa;
        regs.r8 = 0x5555_5555;
        let f = find(&mem, &regs, 0x20_0000, &0x5555_5555u32.to_le_bytes()).unwrap();
        assert_eq!(f.regs.rip, CODE + 1);
        assert_eq!(f.len, 3);
        // Equal data: either re-runs to the same write; the shorter wins.
        regs.r8 = regs.rax;
        let f = find(&mem, &regs, 0x20_0000, &0xaaaa_aaaau32.to_le_bytes()).unwrap();
        assert_eq!(f.regs.rip, CODE + 2);
    }

    #[test]
    fn the_length_of_the_write_tells_the_operand_size() {
        // mov [rdi], rax (48 89 07) against mov [rdi], eax (89 07).
        let (mem, mut regs) = setup(&[0x90], &[0x48, 0x89, 0x07]);
        regs.rdi = 0x30_0000;
        regs.rax = 7;
        let f = find(&mem, &regs, 0x30_0000, &7u64.to_le_bytes()).unwrap();
        assert_eq!(f.len, 3);
    }

    #[test]
    fn an_immediate_store_with_displacement_and_a_byte_store_are_found() {
        // mov qword [rbx + 0x10], 0x2a (48 c7 43 10 2a 00 00 00)
        let (mem, mut regs) = setup(&[], &[0x48, 0xc7, 0x43, 0x10, 0x2a, 0, 0, 0]);
        regs.rbx = 0x40_0000;
        let f = find(&mem, &regs, 0x40_0010, &0x2au64.to_le_bytes()).unwrap();
        assert_eq!((f.regs.rip, f.len), (CODE, 8));
        // mov [rsi], ah (88 26)
        let (mem, mut regs) = setup(&[0x90, 0x90], &[0x88, 0x26]);
        regs.rsi = 0x40_0000;
        regs.rax = 0xbe00;
        let f = find(&mem, &regs, 0x40_0000, &[0xbe]).unwrap();
        assert_eq!(f.regs.rip, CODE + 2);
        assert!(find(&mem, &regs, 0x40_0000, &[0x00]).is_err());
    }

    #[test]
    fn a_read_modify_write_or_a_wrong_address_is_not_a_candidate() {
        // add [rdi], rax: it read the memory first, so it never retires
        // with a write exit; it is no candidate.
        let (mem, mut regs) = setup(&[0x90], &[0x48, 0x01, 0x07]);
        regs.rdi = 0x20_0000;
        let e = find(&mem, &regs, 0x20_0000, &[0; 8]).unwrap_err();
        assert!(matches!(e, RetiredWriteError::NotFound { .. }), "{e}");
        // mov [rdi], rax, but the exit is for another GPA.
        let (mem, mut regs) = setup(&[0x90], &[0x48, 0x89, 0x07]);
        regs.rdi = 0x20_0000;
        let e = find(&mem, &regs, 0x20_1000, &[0; 8]).unwrap_err();
        assert_eq!(
            e,
            RetiredWriteError::NotFound {
                rip: regs.rip,
                gpa: 0x20_1000,
                len: 8
            }
        );
    }

    #[test]
    fn a_push_or_a_call_is_refused() {
        // push rax: RSP moved; the exit's write is its slot.
        let (mem, mut regs) = setup(&[0x90], &[0x50]);
        regs.rsp = 0x50_0000 - 8;
        assert!(find(&mem, &regs, 0x50_0000 - 8, &[0; 8]).is_err());
    }

    #[test]
    fn a_store_that_crosses_into_the_page_that_exited_is_found() {
        // mov [rdi], rax with rdi 4 bytes before a page end; the exit is
        // for the second page's part.
        let (mem, mut regs) = setup(&[], &[0x48, 0x89, 0x07]);
        regs.rdi = 0x20_0ffc;
        regs.rax = 0x1122_3344_5566_7788;
        let f = find(&mem, &regs, 0x20_1000, &regs.rax.to_le_bytes()[4..]).unwrap();
        assert_eq!(f.regs.rip, CODE);
    }

    #[test]
    fn a_finished_stos_is_stepped_back_one_element() {
        // stosq, written: RDI past it, RF clear.
        let (mem, mut regs) = setup(&[0x90], &[0x48, 0xab]);
        regs.rdi = 0x60_0008;
        regs.rcx = 5;
        regs.rax = 0x99;
        let f = find(&mem, &regs, 0x60_0000, &0x99u64.to_le_bytes()).unwrap();
        assert_eq!(f.regs.rip, CODE + 1);
        assert_eq!((f.regs.rdi, f.regs.rcx), (0x60_0000, 5));
        assert_eq!(f.mnemonic, "stosq");
        // The last element of a rep stosq (RCX 0 after it): its suffix
        // `stosq` re-runs to the same write and the same RCX, RDI.
        let (mem, mut regs) = setup(&[0x90], &[0xf3, 0x48, 0xab]);
        regs.rdi = 0x60_0008;
        regs.rax = 0x99;
        let f = find(&mem, &regs, 0x60_0000, &0x99u64.to_le_bytes()).unwrap();
        assert_eq!(f.regs.rip, CODE + 2);
        assert_eq!((f.regs.rdi, f.regs.rcx), (0x60_0000, 0));
        // A wrong RAX is no match.
        assert!(find(&mem, &regs, 0x60_0000, &0x98u64.to_le_bytes()).is_err());
    }

    #[test]
    fn an_unfinished_rep_stos_stays_at_rip_with_its_registers_stepped_back() {
        // RF set: RIP at the rep stosb, RCX and RDI stepped one element.
        let (mem, mut regs) = setup(&[0x90], &[0xf3, 0xaa, 0x90]);
        regs.rip = CODE + 1;
        regs.rflags |= RFLAGS_RF;
        regs.rdi = 0x60_0001;
        regs.rcx = 9;
        regs.rax = 0x5a;
        let f = find(&mem, &regs, 0x60_0000, &[0x5a]).unwrap();
        assert_eq!(f.regs.rip, CODE + 1);
        assert_eq!((f.regs.rdi, f.regs.rcx), (0x60_0000, 10));
        // Down (DF set): RDI steps back up.
        regs.rflags |= RFLAGS_DF;
        regs.rdi = 0x60_0000 - 1;
        let f = find(&mem, &regs, 0x60_0000, &[0x5a]).unwrap();
        assert_eq!(f.regs.rdi, 0x60_0000);
    }

    #[test]
    fn a_mov_before_a_rep_stos_is_not_taken_for_it() {
        // mov [rdi - 8], rax; rep stosq, with RF clear: RIP past the mov is
        // at the rep stosq, which has not run (the mov's write exited).
        let (mem, mut regs) = setup(&[0x48, 0x89, 0x47, 0xf8], &[]);
        let mut code = mem.bytes.clone();
        code.extend_from_slice(&[0xf3, 0x48, 0xab]);
        let mem = Memory::new(CODE, code);
        regs.rip = CODE + 4;
        regs.rdi = 0x60_0008;
        regs.rcx = 4;
        let f = find(&mem, &regs, 0x60_0000, &[0; 8]).unwrap();
        assert_eq!(f.regs.rip, CODE);
        assert_eq!((f.regs.rdi, f.regs.rcx), (0x60_0008, 4));
    }

    #[test]
    fn a_movs_is_checked_against_its_source() {
        // movsq (48 a5), finished: the source is readable, its bytes count.
        let mut code = vec![0x48, 0xa5];
        code.resize(0x100, 0);
        code[0x80..0x88].copy_from_slice(&0xfeedu64.to_le_bytes());
        let mut mem = Memory::new(CODE, code);
        mem.offset.insert(0x70_0000, 0);
        let mut regs = kvm_regs {
            rip: CODE + 2,
            rflags: 2,
            rsi: CODE + 0x88,
            rdi: 0x70_0008,
            ..Default::default()
        };
        let f = find(&mem, &regs, 0x70_0000, &0xfeedu64.to_le_bytes()).unwrap();
        assert_eq!((f.regs.rsi, f.regs.rdi), (CODE + 0x80, 0x70_0000));
        assert!(find(&mem, &regs, 0x70_0000, &0xbeefu64.to_le_bytes()).is_err());
        regs.rsi = 0x9000_0000;
        // The source is not readable: the one candidate is taken unchecked.
        assert!(find(&mem, &regs, 0x70_0000, &0xbeefu64.to_le_bytes()).is_ok());
    }

    #[test]
    fn an_xmm_store_is_checked_against_the_xsave_area() {
        // movdqu [rdi], xmm1 (f3 0f 7f 0f); KVM exits with the first 8 bytes.
        let (mem, mut regs) = setup(&[0x90], &[0xf3, 0x0f, 0x7f, 0x0f]);
        regs.rdi = 0x20_0000;
        let mut xmm = vec![0u8; 256];
        xmm[16..32].copy_from_slice(&[7; 16]);
        let after = After {
            regs: &regs,
            segment_bases: [0; 6],
            xmm: Some(&xmm),
            bitness: 64,
        };
        let w = Write {
            gpa: 0x20_0000,
            bytes: &[7; 8],
        };
        let f = instruction_before(&mem, &after, &w).unwrap();
        assert_eq!(f.regs.rip, CODE + 1);
        assert_eq!(f.len, 4);
        // Other data: not this store. Its suffix `0f 7f 0f` (movq [rdi],
        // mm1) is an MMX store whose data the VMM cannot check, taken as
        // the only candidate left.
        let w = Write {
            gpa: 0x20_0000,
            bytes: &[6; 8],
        };
        let f = instruction_before(&mem, &after, &w).unwrap();
        assert_eq!((f.regs.rip, f.len), (CODE + 2, 3));
    }

    #[test]
    fn code_at_the_start_of_a_page_after_an_unmapped_one_is_read() {
        // The 15-byte window reaches into an unmapped page before RIP's.
        let mut code = vec![0u8; 0x1000];
        code.extend_from_slice(&[0x48, 0x89, 0x07]);
        let mut mem = Memory::new(CODE - 0x1000, code);
        mem.unmapped.push(CODE - 0x1000);
        let regs = kvm_regs {
            rip: CODE + 3,
            rflags: 2,
            rdi: 0x20_0000,
            ..Default::default()
        };
        let f = find(&mem, &regs, 0x20_0000, &[0; 8]).unwrap();
        assert_eq!(f.regs.rip, CODE);
        let regs = kvm_regs {
            rip: CODE - 0x800,
            ..regs
        };
        assert_eq!(
            find(&mem, &regs, 0x20_0000, &[0; 8]).unwrap_err(),
            RetiredWriteError::CodeUnreadable { rip: CODE - 0x800 }
        );
    }

    #[test]
    fn random_bytes_before_a_store_never_hide_it() {
        // Whatever precedes `mov [rdi], rax`, the mov (or an equivalent
        // suffix of it) is what is found, never a longer false match.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            let mut junk = [0u8; 12];
            for b in &mut junk {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed.to_le_bytes()[0];
            }
            let (mem, mut regs) = setup(&junk, &[0x48, 0x89, 0x07]);
            regs.rdi = 0x20_0000;
            regs.rax = seed;
            let f = find(&mem, &regs, 0x20_0000, &seed.to_le_bytes()).unwrap();
            assert_eq!(f.regs.rip, CODE + 12, "after {junk:x?}");
        }
    }
}
