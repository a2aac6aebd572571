//! `TDG.VP.VMCALL<MapGPA>` driven through the doorbell: private -> shared
//! (pages pending, the shared alias mapped and usable), shared -> private
//! (the alias gone, pages pending until accepted again), the retry of a
//! long range, and every refused operand with nothing changed.

use super::ring;
use super::tests::{accept, td};
use crate::memory::invariants::check_all;
use crate::memory::memslots::NoKvm;
use crate::memory::private::GpaKind;
use crate::shared::TdShared;
use crate::tdx::vmcall::MAP_GPA_STEP_BYTES;
use crate::vcpu::exit::{on_memory, MemoryAction};
use crate::vcpu::VcpuState;
use abi::report::Outcome;
use abi::tdcall::{accept::encode, leaf, status, PageLevel};
use abi::vmcall::{ghci, vmcall_status, EXPOSE_R10_R15, GHCI_STANDARD};
use abi::{GIB, PAGE_4K};
use kvm_bindings::kvm_regs;

/// RAM above the hole (2 GiB of the 5 GiB TD).
const RAM: u64 = 4 * GIB;
/// The shared bit of a 48-bit TD.
const SHARED: u64 = 1 << 47;

/// A TD with its first 2 MiB at 4 GiB accepted, marked with 0xaa.
fn accepted_td() -> TdShared<NoKvm> {
    let td = td(1);
    let mut regs = accept(encode(RAM, PageLevel::L2M));
    ring(&td, &mut VcpuState::new(0), &mut regs);
    assert_eq!(regs.rax, status::SUCCESS);
    assert!(td.lock().memory.write_accepted(RAM, &[0xaa; 0x4000]));
    td
}

/// MapGPA of `len` bytes at `r12`: R10 and R11 as the guest sees them.
fn map_gpa(td: &TdShared<NoKvm>, r12: u64, len: u64) -> (u64, u64) {
    let mut regs = kvm_regs {
        rax: u64::from(leaf::VP_VMCALL),
        rcx: EXPOSE_R10_R15,
        r10: GHCI_STANDARD,
        r11: ghci::MAP_GPA,
        r12,
        r13: len,
        ..Default::default()
    };
    let rung = ring(td, &mut VcpuState::new(0), &mut regs);
    assert!(rung.stop.is_none(), "{:?}", rung.stop);
    assert_eq!(regs.rax, 0, "the TDCALL itself succeeds");
    (regs.r10, regs.r11)
}

#[test]
fn private_to_shared_releases_the_pages_and_maps_the_alias() {
    let td = accepted_td();
    let (r10, _) = map_gpa(&td, SHARED | (RAM + PAGE_4K), 2 * PAGE_4K);
    assert_eq!(r10, vmcall_status::SUCCESS);
    {
        let s = td.lock();
        let mem = &s.memory;
        // The private pages are pending again (host memory freed), their
        // neighbours untouched.
        assert_eq!(mem.pages().accepted_pages(), 512 - 2);
        assert_eq!(mem.classify(RAM + PAGE_4K), GpaKind::Pending);
        assert_eq!(mem.classify(RAM + 2 * PAGE_4K), GpaKind::Pending);
        assert_eq!(mem.classify(RAM), GpaKind::Accepted);
        assert_eq!(mem.classify(RAM + 3 * PAGE_4K), GpaKind::Accepted);
        let mut b = [0u8; 8];
        assert!(!mem.read_accepted(RAM + PAGE_4K, &mut b));
        assert!(mem.read_accepted(RAM + 3 * PAGE_4K, &mut b));
        assert_eq!(b, [0xaa; 8]);
        // The shared alias has a memslot, and nothing past it.
        assert!(mem.slots().covers(SHARED | (RAM + PAGE_4K)));
        assert!(mem.slots().covers(SHARED | (RAM + 3 * PAGE_4K - 1)));
        assert!(!mem.slots().covers(SHARED | RAM));
        assert!(!mem.slots().covers(SHARED | (RAM + 3 * PAGE_4K)));
        assert_eq!(
            mem.shared().ranges().collect::<Vec<_>>(),
            [(RAM + PAGE_4K, RAM + 3 * PAGE_4K)]
        );
        check_all(mem).unwrap();
    }
    // The alias reads fresh zeros and keeps what is written, with or
    // without the shared bit; beyond it, nothing is shared.
    let mut mem = td.lock();
    let mem = &mut mem.memory;
    let mut b = [0xffu8; 16];
    assert!(mem.read_shared(SHARED | (RAM + PAGE_4K), &mut b));
    assert_eq!(b, [0; 16]);
    assert!(mem.write_shared(SHARED | (RAM + 2 * PAGE_4K - 4), b"metadata"));
    assert!(mem.read_shared(RAM + 2 * PAGE_4K - 4, &mut b[..8]));
    assert_eq!(&b[..8], b"metadata");
    assert!(!mem.write_shared(RAM + 3 * PAGE_4K - 4, b"metadata"));
    assert!(!mem.read_shared(RAM, &mut b));
    // A shared page is no private memory the VMM may write.
    assert!(!mem.write_accepted(RAM + PAGE_4K, b"x"));
}

#[test]
fn shared_to_private_drops_the_alias_and_leaves_the_pages_pending() {
    let td = accepted_td();
    assert_eq!(map_gpa(&td, SHARED | RAM, 4 * PAGE_4K).0, 0);
    assert!(td.lock().memory.write_shared(RAM, b"shared"));
    // Back to private, the middle two pages only.
    assert_eq!(map_gpa(&td, RAM + PAGE_4K, 2 * PAGE_4K).0, 0);
    {
        let s = td.lock();
        let mem = &s.memory;
        assert_eq!(
            mem.shared().ranges().collect::<Vec<_>>(),
            [(RAM, RAM + PAGE_4K), (RAM + 3 * PAGE_4K, RAM + 4 * PAGE_4K)]
        );
        assert!(!mem.slots().covers(SHARED | (RAM + PAGE_4K)));
        assert!(mem.slots().covers(SHARED | RAM));
        assert!(mem.slots().covers(SHARED | (RAM + 3 * PAGE_4K)));
        let mut b = [0u8; 6];
        assert!(!mem.read_shared(RAM + PAGE_4K, &mut b));
        assert!(mem.read_shared(RAM, &mut b));
        assert_eq!(&b, b"shared");
        // Pending, as on TDX, until the guest accepts them again.
        assert_eq!(mem.classify(RAM + PAGE_4K), GpaKind::Pending);
        assert_eq!(mem.pages().accepted_pages(), 512 - 4);
        check_all(mem).unwrap();
    }
    // An access to the private page stops the TD as pending memory; one
    // to the dropped alias (no memslot) is a bad GPA.
    {
        let s = td.lock();
        assert!(matches!(
            on_memory(&s.memory, RAM + PAGE_4K),
            MemoryAction::Fault(Outcome::PendingAccess, _)
        ));
        assert!(matches!(
            on_memory(&s.memory, SHARED | (RAM + PAGE_4K)),
            MemoryAction::Fault(Outcome::BadGpa, _)
        ));
    }
    // Accepted again, it reads zero.
    let mut regs = accept(encode(RAM + PAGE_4K, PageLevel::L4K));
    ring(&td, &mut VcpuState::new(0), &mut regs);
    assert_eq!(regs.rax, status::SUCCESS);
    let s = td.lock();
    let mut b = [0xffu8; 8];
    assert!(s.memory.read_accepted(RAM + PAGE_4K, &mut b));
    assert_eq!(b, [0; 8]);
    check_all(&s.memory).unwrap();
}

#[test]
fn accepting_a_shared_page_converts_it_back_to_private() {
    let td = accepted_td();
    assert_eq!(map_gpa(&td, SHARED | RAM, 2 * PAGE_4K).0, 0);
    let mut regs = accept(encode(RAM, PageLevel::L4K));
    ring(&td, &mut VcpuState::new(0), &mut regs);
    assert_eq!(regs.rax, status::SUCCESS);
    let s = td.lock();
    assert_eq!(s.memory.classify(RAM), GpaKind::Accepted);
    assert!(!s.memory.slots().covers(SHARED | RAM));
    assert!(s.memory.slots().covers(SHARED | (RAM + PAGE_4K)));
    check_all(&s.memory).unwrap();
}

#[test]
fn a_long_range_converts_in_steps_with_the_ghci_retry() {
    let td = td(1);
    let len = 2 * MAP_GPA_STEP_BYTES + 5 * PAGE_4K;
    let (r10, r11) = map_gpa(&td, SHARED | RAM, len);
    assert_eq!(
        (r10, r11),
        (vmcall_status::RETRY, SHARED | (RAM + MAP_GPA_STEP_BYTES))
    );
    assert_eq!(
        td.lock().memory.shared().ranges().collect::<Vec<_>>(),
        [(RAM, RAM + MAP_GPA_STEP_BYTES)]
    );
    // The guest resumes at R11 (Linux's `tdx_map_gpa`), until done.
    let (r10, r11) = map_gpa(&td, r11, len - MAP_GPA_STEP_BYTES);
    assert_eq!(
        (r10, r11),
        (
            vmcall_status::RETRY,
            SHARED | (RAM + 2 * MAP_GPA_STEP_BYTES)
        )
    );
    assert_eq!(map_gpa(&td, r11, 5 * PAGE_4K).0, vmcall_status::SUCCESS);
    {
        let s = td.lock();
        assert_eq!(
            s.memory.shared().ranges().collect::<Vec<_>>(),
            [(RAM, RAM + len)]
        );
        check_all(&s.memory).unwrap();
    }
    // Back to private the same way.
    let (r10, r11) = map_gpa(&td, RAM, len);
    assert_eq!((r10, r11), (vmcall_status::RETRY, RAM + MAP_GPA_STEP_BYTES));
    assert_eq!(td.lock().memory.shared().ranges().count(), 1);
}

#[test]
fn bad_operands_are_refused_with_nothing_changed() {
    let td = accepted_td();
    let top = RAM + 2 * GIB;
    for (r12, len, want) in [
        // Not 4 KiB aligned: ALIGN_ERROR.
        (SHARED | (RAM + 0x800), PAGE_4K, vmcall_status::ALIGN_ERROR),
        (SHARED | RAM, 0x800, vmcall_status::ALIGN_ERROR),
        (RAM + 1, PAGE_4K, vmcall_status::ALIGN_ERROR),
        // No bytes, a wrap, at or past GPAW, across the shared bit.
        (SHARED | RAM, 0, vmcall_status::OPERAND_INVALID),
        (u64::MAX - 0xfff, 0x2000, vmcall_status::OPERAND_INVALID),
        ((1 << 48) | RAM, PAGE_4K, vmcall_status::OPERAND_INVALID),
        (
            SHARED - PAGE_4K,
            2 * PAGE_4K,
            vmcall_status::OPERAND_INVALID,
        ),
        // Not RAM: the hole, past the top, running off the top.
        (SHARED | (3 * GIB), PAGE_4K, vmcall_status::OPERAND_INVALID),
        (SHARED | top, PAGE_4K, vmcall_status::OPERAND_INVALID),
        (top - PAGE_4K, 2 * PAGE_4K, vmcall_status::OPERAND_INVALID),
        (
            SHARED | (3 * GIB - PAGE_4K),
            GIB + PAGE_4K,
            vmcall_status::OPERAND_INVALID,
        ),
    ] {
        // R11 names the GPA that failed, as KVM's `tdx_map_gpa` returns it.
        assert_eq!(map_gpa(&td, r12, len), (want, r12), "{r12:#x} +{len:#x}");
    }
    let s = td.lock();
    assert_eq!(s.memory.pages().accepted_pages(), 512);
    assert_eq!(s.memory.shared().ranges().count(), 0);
    assert!(!s.memory.slots().slots().any(|(g, _)| g >= SHARED));
    check_all(&s.memory).unwrap();
}
