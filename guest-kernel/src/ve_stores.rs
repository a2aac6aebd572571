//! `kernel.selftest=ve-stores` (with `ve_accept=on`): every kind of store
//! into a page that is not accepted takes one #VE, whose handler accepts
//! the page and returns to the store, which then runs again: the page holds
//! exactly what was stored, and the bytes around it read as zeros. The
//! kinds are those the VMM must find again after KVM retired them (plain
//! `mov` of every width and source, `setcc`, `movnti`, `stos` and `movs`
//! with and without `rep`, a `rep` that reaches a pending page half way, a
//! store across a page boundary).

use crate::mm;
use core::arch::asm;
use guest_rt::fatal::code;
use guest_rt::idt::ve_accepts;
use guest_rt::{fatal, println};

const PAGE: u64 = 4096;

/// Reads the `u64` at `at` (accepted memory by then).
fn read(at: u64) -> u64 {
    // SAFETY: `at` lies in the test's own 2 MiB block, accepted by the
    // stores before it.
    unsafe { (at as *const u64).read_volatile() }
}

/// Reads the byte at `at`.
fn read_byte(at: u64) -> u8 {
    // SAFETY: as `read`.
    unsafe { (at as *const u8).read_volatile() }
}

/// Checks `got` against `want` for the store named `what`.
fn expect(what: &str, at: u64, got: u64, want: u64) {
    if got != want {
        fatal!(
            code::PANIC,
            "ve-stores: {what} at {at:#x} reads {got:#x}, expected {want:#x}"
        );
    }
}

/// Runs the stores; each `page(n)` of a fresh 2 MiB block is pending until
/// the store that touches it first.
pub fn run() {
    if !guest_rt::idt::ve_accept() {
        fatal!(
            code::BAD_CMDLINE,
            "kernel.selftest=ve-stores needs ve_accept=on"
        );
    }
    let Some(block) = mm::alloc(9) else {
        fatal!(code::PANIC, "ve-stores: no free 2 MiB block");
    };
    // Page 0 holds the allocator's links (touched); the rest is untouched.
    let page = |n: u64| block + n * PAGE;
    let before = ve_accepts();
    let value: u64 = 0x0123_4567_89ab_cdef;
    // The stores: each target lies inside `block`, a 2 MiB allocation this
    // test owns and never frees.
    // SAFETY: every store writes inside `block` (above); the registers
    // named are inputs, but for the string instructions', declared
    // clobbered; none touches the stack or flags the compiler relies on.
    unsafe {
        // 1: mov [reg + disp8], r64
        asm!("mov [{p} + 8], {v}", p = in(reg) page(1), v = in(reg) value);
        // 2: mov byte [reg + disp8], imm8
        asm!("mov byte ptr [{p} + 5], 0x5a", p = in(reg) page(2));
        // 3: mov word [reg], r16 (operand-size prefix)
        asm!("mov word ptr [{p}], ax", p = in(reg) page(3), in("rax") 0xbeefu64);
        // 4: mov dword [reg + disp32], imm32
        asm!("mov dword ptr [{p} + 0x800], 0x12345678", p = in(reg) page(4));
        // 5: mov [reg], ah (a high-byte register)
        asm!("mov byte ptr [{p}], ah", p = in(reg) page(5), in("rax") 0xc300u64);
        // 6: rep stosq over a whole page: the first element exits, the
        // instruction is not finished (RIP at it).
        asm!(
            "rep stosq",
            inout("rdi") page(6) => _,
            inout("rcx") PAGE / 8 => _,
            in("rax") value,
        );
        // 8: rep movsq, a page from page 6 into page 8.
        asm!(
            "rep movsq",
            inout("rsi") page(6) => _,
            inout("rdi") page(8) => _,
            inout("rcx") PAGE / 8 => _,
        );
        // 7: rep stosb from the end of an accepted page (page 6, after the
        // copy) into a pending one: the 17th element exits, half way.
        asm!(
            "rep stosb",
            inout("rdi") page(7) - 16 => _,
            inout("rcx") 32u64 => _,
            in("rax") 0x77u64,
        );
        // 9: stosq without rep (RDI stepped by the retired store).
        asm!("stosq", inout("rdi") page(9) + 24 => _, in("rax") !value);
        // 10: a qword across the boundary of an accepted page (page 9) into
        // a pending one (page 10): KVM writes the first half and exits for
        // the second.
        asm!("mov [{p}], {v}", p = in(reg) page(10) - 4, v = in(reg) value);
        // 11: movnti (a non-temporal store)
        asm!("movnti [{p} + 16], {v}", p = in(reg) page(11), v = in(reg) !value);
        // 12: setcc to memory (ZF set by the compare)
        asm!("cmp {a}, {a}", "sete byte ptr [{p} + 1]", a = in(reg) 0u64, p = in(reg) page(12));
        // 13: RIP-relative addressing cannot reach the block; an index
        // register with scale: mov [base + index*8 + disp], r32
        asm!(
            "mov dword ptr [{b} + {i} * 8 + 0x10], {v:e}",
            b = in(reg) page(13),
            i = in(reg) 3u64,
            v = in(reg) 0xfeed_f00du64,
        );
    }
    let taken = ve_accepts() - before;
    expect("#VE accepts (pages 1 to 13)", block, taken, 13);
    expect("mov r64", page(1) + 8, read(page(1) + 8), value);
    expect("the rest of page 1", page(1), read(page(1)), 0);
    expect("mov imm8", page(2), read(page(2)), 0x5a << 40);
    expect("mov r16", page(3), read(page(3)), 0xbeef);
    expect(
        "mov imm32",
        page(4) + 0x800,
        read(page(4) + 0x800),
        0x1234_5678,
    );
    expect("mov ah", page(5), read(page(5)), 0xc3);
    for q in 0..PAGE / 8 {
        // rep stosb overwrote page 6's last 16 bytes after the copy.
        let six = if q < PAGE / 8 - 2 {
            value
        } else {
            0x7777_7777_7777_7777
        };
        expect("rep stosq", page(6) + q * 8, read(page(6) + q * 8), six);
        expect("rep movsq", page(8) + q * 8, read(page(8) + q * 8), value);
    }
    for b in 0..16 {
        expect(
            "rep stosb (pending half)",
            page(7) + b,
            u64::from(read_byte(page(7) + b)),
            0x77,
        );
    }
    expect("after rep stosb", page(7) + 16, read(page(7) + 16), 0);
    expect("stosq", page(9) + 24, read(page(9) + 24), !value);
    expect("mov across pages", page(10) - 4, read(page(10) - 4), value);
    expect("movnti", page(11) + 16, read(page(11) + 16), !value);
    expect("sete", page(12), read(page(12)), 1 << 8);
    expect(
        "mov [b + i*8 + d]",
        page(13) + 0x28,
        read(page(13) + 0x28),
        0xfeed_f00d,
    );
    println!("kernel: ve-stores: 13 kinds of store into pending pages, each after one #VE accept, all exact");
}
