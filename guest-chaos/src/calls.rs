//! The chaos workload's other calls: TDCALL leaves but the accept (known,
//! unknown, with version or reserved RAX bits), GHCI VMCALLs that do not
//! end the TD, port I/O to unassigned ports (through GHCI and directly),
//! and the check that accepted memory kept its contents.

use super::*;

impl Run<'_> {
    pub(super) fn check_rax(&mut self, what: &str, rax: u64, got: u64, want: u64) {
        if got != want {
            self.disagree(format_args!(
                "{what} (RAX {rax:#x}): status {got:#x} ({}), expected {want:#x} ({})",
                status::name(got),
                status::name(want)
            ));
        }
    }

    pub(super) fn other_leaf(&mut self) {
        let invalid_rax = status::OPERAND_INVALID | status::OPERAND_RAX;
        match self.rng.below(5) {
            0 => {
                let r = tdcall(Regs {
                    rax: leaf::VP_INFO as u64,
                    ..Default::default()
                });
                let gpaw = self.layout.gpaw as u64;
                let vcpus = self.with(|s| s.vcpus);
                if r.rax != 0
                    || r.rcx & abi::tdcall::vp_info::GPAW_MASK != gpaw
                    || r.r8 & 0xffff_ffff != vcpus
                    || vcpus == 0
                {
                    self.disagree(format_args!(
                        "TDG.VP.INFO: RAX {:#x} RCX {:#x} R8 {:#x}",
                        r.rax, r.rcx, r.r8
                    ));
                }
            }
            1 => {
                let rax = leaf::VP_VEINFO_GET as u64;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("TDG.VP.VEINFO.GET", rax, got, status::NO_VALID_VE_INFO);
            }
            2 => {
                // Any leaf the emulator does not provide.
                let l = loop {
                    let l = self.random_u16();
                    if !matches!(
                        l,
                        leaf::VP_VMCALL
                            | leaf::VP_INFO
                            | leaf::VP_VEINFO_GET
                            | leaf::MEM_PAGE_ACCEPT
                            | leaf::MR_RTMR_EXTEND
                            | leaf::MR_REPORT
                            | leaf::MR_VERIFYREPORT
                    ) {
                        break l;
                    }
                };
                let got = tdcall(Regs {
                    rax: l as u64,
                    rcx: self.rng.next_u64(),
                    ..Default::default()
                })
                .rax;
                self.check_rax("unknown leaf", l as u64, got, invalid_rax);
            }
            3 => {
                let known = [leaf::VP_INFO, leaf::MEM_PAGE_ACCEPT, leaf::VP_VMCALL]
                    [abi::to_usize(self.rng.below(3))];
                let rax = known as u64 | (1 + self.rng.below(255)) << 16;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("leaf with a version", rax, got, invalid_rax);
            }
            _ => {
                let rax = leaf::VP_INFO as u64 | (1 + self.rng.below(u64::MAX >> 24)) << 24;
                let got = tdcall(Regs {
                    rax,
                    ..Default::default()
                })
                .rax;
                self.check_rax("reserved RAX bits", rax, got, invalid_rax);
            }
        }
    }

    /// A uniformly random 16-bit number (a TDCALL leaf, a port).
    pub(super) fn random_u16(&mut self) -> u16 {
        #[allow(clippy::cast_possible_truncation)] // below(0x1_0000) < 2^16
        let v = self.rng.below(0x1_0000) as u16;
        v
    }

    pub(super) fn unassigned_port(&mut self) -> u16 {
        loop {
            let p = self.random_u16();
            // Nor a port from which a 4-byte access reaches the CMOS.
            let cmos = CMOS_INDEX_PORT - 3..=CMOS_DATA_PORT;
            if p != DOORBELL_PORT as u16
                && !(COM1_BASE..COM1_BASE + COM1_LEN).contains(&p)
                && !cmos.contains(&p)
            {
                return p;
            }
        }
    }

    pub(super) fn ghci(&mut self) {
        let r = |rng: &mut Rng| rng.next_u64();
        match self.rng.below(6) {
            0 => {
                // A GHCI sub-function the host does not provide.
                let sub = loop {
                    let s = self.rng.next_u64() & 0x1_ffff;
                    if !matches!(
                        s,
                        ghci::INSTRUCTION_IO
                            | ghci::REPORT_FATAL_ERROR
                            | ghci::GET_TD_VM_CALL_INFO
                            | ghci::INSTRUCTION_HLT
                            | ghci::INSTRUCTION_WRMSR
                            | ghci::INSTRUCTION_RDMSR
                            | ghci::INSTRUCTION_CPUID
                            | ghci::SETUP_EVENT_NOTIFY_INTERRUPT
                            | ghci::GET_QUOTE
                    ) {
                        break s;
                    }
                };
                let o = vmcall(GHCI_STANDARD, sub, r(&mut self.rng), r(&mut self.rng), 0, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "GHCI sub-function {sub:#x}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            1 => {
                let o = vmcall(GHCI_STANDARD, ghci::GET_TD_VM_CALL_INFO, 0, 0, 0, 0);
                if o.rax != 0 || o.r10 != 0 || o.r11 != 0 {
                    self.disagree(format_args!(
                        "GetTdVmCallInfo: RAX {:#x} R10 {:#x} R11 {:#x}",
                        o.rax, o.r10, o.r11
                    ));
                }
            }
            2 => {
                let size = [1u64, 2, 4][abi::to_usize(self.rng.below(3))];
                let port = self.unassigned_port() as u64;
                let write = self.rng.percent(50);
                let dir = if write {
                    ghci::IO_DIRECTION_WRITE
                } else {
                    ghci::IO_DIRECTION_READ
                };
                let o = vmcall(
                    GHCI_STANDARD,
                    ghci::INSTRUCTION_IO,
                    size,
                    dir,
                    port,
                    r(&mut self.rng),
                );
                self.out.unassigned_io += 1;
                let ones = if size == 4 {
                    u32::MAX as u64
                } else {
                    (1 << (size * 8)) - 1
                };
                if o.rax != 0 || o.r10 != 0 || (!write && o.r11 != ones) {
                    self.disagree(format_args!(
                        "Instruction.IO {} port {port:#x} size {size}: RAX {:#x} R10 {:#x} R11 {:#x}",
                        if write { "write" } else { "read" },
                        o.rax, o.r10, o.r11
                    ));
                }
            }
            3 => {
                let size = [0u64, 3, 5, 8, u64::MAX][abi::to_usize(self.rng.below(5))];
                let o = vmcall(GHCI_STANDARD, ghci::INSTRUCTION_IO, size, 0, 0x80, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "Instruction.IO size {size}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            4 => {
                let r10 = loop {
                    let v = self.rng.next_u64();
                    if v != GHCI_STANDARD && v != VENDOR_EMU {
                        break v;
                    }
                };
                let o = vmcall(r10, r(&mut self.rng), 0, 0, 0, 0);
                if o.rax != 0 || o.r10 != vmcall_status::OPERAND_INVALID {
                    self.disagree(format_args!(
                        "VMCALL R10 {r10:#x}: RAX {:#x} R10 {:#x}",
                        o.rax, o.r10
                    ));
                }
            }
            _ => {
                // RCX exposing registers the GHCI forbids (RSP, RAX, RCX...).
                let bad =
                    [1u64 << 0, 1 << 1, 1 << 4, 1 << 16, 1 << 63][abi::to_usize(self.rng.below(5))];
                let o = tdcall(Regs {
                    rax: leaf::VP_VMCALL as u64,
                    rcx: abi::vmcall::EXPOSE_R10_R15 | bad,
                    ..Default::default()
                });
                self.check_rax("VMCALL with a forbidden RCX bit", 0, o.rax, INVALID);
            }
        }
    }

    pub(super) fn port_io(&mut self) {
        let port = self.unassigned_port();
        self.out.unassigned_io += 1;
        let size = self.rng.below(3);
        if self.rng.percent(50) {
            let v = self.rng.next_u64();
            // SAFETY: port writes to ports with no device: the host drops
            // them; no memory is touched.
            unsafe {
                match size {
                    0 => {
                        asm!("out dx, al", in("dx") port, in("al") v.to_le_bytes()[0], options(nomem, nostack, preserves_flags))
                    }
                    1 => {
                        asm!("out dx, ax", in("dx") port, in("ax") (v & 0xffff) as u16, options(nomem, nostack, preserves_flags))
                    }
                    _ => {
                        asm!("out dx, eax", in("dx") port, in("eax") (v & 0xffff_ffff) as u32, options(nomem, nostack, preserves_flags))
                    }
                }
            }
        } else {
            let (got, ones): (u64, u64) = match size {
                0 => {
                    let v: u8;
                    // SAFETY: a read from a port with no device: the host
                    // returns all-ones; no memory is touched.
                    unsafe {
                        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xff)
                }
                1 => {
                    let v: u16;
                    // SAFETY: as above.
                    unsafe {
                        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xffff)
                }
                _ => {
                    let v: u32;
                    // SAFETY: as above.
                    unsafe {
                        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
                    };
                    (v as u64, 0xffff_ffff)
                }
            };
            if got != ones {
                self.disagree(format_args!(
                    "in from port {port:#x}: {got:#x}, expected all-ones"
                ));
            }
        }
    }

    pub(super) fn check_memory(&mut self) {
        let gpa = self.window_gpa();
        // Alone on the chunk: no CPU converts or removes the page between
        // the model's word and the read.
        let Some(c) = self.claim_exclusive(gpa) else {
            return;
        };
        if self.with(|s| s.model.is_accepted(gpa)) && read(gpa) != pattern(gpa) {
            self.disagree(format_args!(
                "accepted page {gpa:#x} holds {:#x}",
                read(gpa)
            ));
        }
        self.release_exclusive(c);
    }
}
