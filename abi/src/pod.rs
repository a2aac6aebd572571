//! Plain-old-data views: how ABI structures become bytes and back without
//! copying field by field.

/// A type that is safe to view as bytes and to build from any bytes.
///
/// # Safety
/// Implementors must be `repr(C)` (or `repr(transparent)`), contain no
/// padding bytes, and accept every bit pattern as a valid value.
pub unsafe trait Pod: Copy + 'static {
    /// The value's bytes, in memory order.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Pod` has no padding, so all `size_of::<Self>()` bytes
        // behind `self` are initialised; the slice borrows `self`.
        unsafe {
            core::slice::from_raw_parts(
                self as *const Self as *const u8,
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// Reads a value from the start of `bytes` (any alignment); `None` when
    /// `bytes` is too short.
    fn read_from_prefix(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked above, `read_unaligned` copes with
        // any alignment, and every bit pattern is a valid `Self`.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Self) })
    }
}

// SAFETY: integers and arrays of Pod are plain data without padding.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: arrays of Pod have no padding between elements.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
