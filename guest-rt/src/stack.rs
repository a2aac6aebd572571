//! Boot stacks with a painted guard: each guest's entry code paints its
//! stack and the guard below it (`paint_stack!`, which clobbers only
//! R8-R10, so the entry registers survive), and `high_water` finds how deep
//! the stack has been. A guest checks it before it leaves: an overflow
//! lands in the guard and becomes a fatal error, not a silent corruption of
//! the data below.

/// What unused stack and the guard hold.
pub const PAINT: u64 = 0x57ac_c0de_57ac_c0de;

/// Assembly that paints `[guard, top)` with `PAINT` (pass it as the
/// operand `paint = const guest_rt::stack::PAINT`). Clobbers R8-R10 only.
#[macro_export]
macro_rules! paint_stack {
    ($guard:literal, $top:literal) => {
        concat!(
            "lea r8, [rip + ",
            $guard,
            "]\n",
            "lea r9, [rip + ",
            $top,
            "]\n",
            "mov r10, {paint}\n",
            "2:\n",
            "mov [r8], r10\n",
            "add r8, 8\n",
            "cmp r8, r9\n",
            "jb 2b\n"
        )
    };
}

/// The deepest a painted stack has been, in bytes from its top: the
/// region is `len` bytes from `base` (its guard included), so more than
/// `len - guard` means it overflowed into the guard.
///
/// # Safety
///
/// `[base, base + len)` must be one static, 8-aligned region painted by
/// `paint_stack!` and only used as the stack it names.
pub unsafe fn high_water(base: *const u64, len: u64) -> u64 {
    let words = (len / 8) as usize;
    // SAFETY: the caller names a static region of `words` aligned words;
    // reading below the live frames reads memory nothing else writes.
    let untouched = (0..words)
        .take_while(|i| unsafe { base.add(*i).read_volatile() } == PAINT)
        .count();
    (words - untouched) as u64 * 8
}

/// Stops the guest (`what`: "kernel", "firmware") if its painted stack of
/// `stack` bytes, with its guard below, has run into the guard.
///
/// # Safety
///
/// As for `high_water`: `[guard_base, guard_base + guard + stack)` is one
/// painted stack region.
pub unsafe fn check(what: &str, at: &str, guard_base: *const u64, guard: u64, stack: u64) {
    // SAFETY: the caller's contract is `high_water`'s.
    let used = unsafe { high_water(guard_base, guard + stack) };
    if used > stack {
        crate::fatal!(
            crate::fatal::code::PANIC,
            "{what} stack overflow before {at}: {used} bytes used, the stack has {stack}"
        );
    }
}
