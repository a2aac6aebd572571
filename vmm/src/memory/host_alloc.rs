//! Host allocations sized from the guest's RAM (`--mem`): fallible, so a
//! host that cannot reserve them gets a clear "cannot reserve" error
//! instead of an abort, and zeroed through the allocator's zeroed path, so
//! the parts never written cost no host memory.

/// The host could not reserve memory sized from the guest's RAM.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot reserve {bytes} bytes of host memory for {what}")]
pub struct ReserveError {
    pub what: &'static str,
    pub bytes: u64,
}

/// `n` zeroed `u32`s from the allocator's zeroed path (fresh pages stay
/// untouched until written), or an error instead of the abort of `vec!`.
pub(crate) fn try_zeroed_u32(n: u64, what: &'static str) -> Result<Vec<u32>, ReserveError> {
    let err = ReserveError {
        what,
        bytes: n.saturating_mul(4),
    };
    let n = usize::try_from(n).map_err(|_| err.clone())?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u32>(n).map_err(|_| err.clone())?;
    // SAFETY: the layout has a non-zero size (n > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<u32>();
    if ptr.is_null() {
        return Err(err);
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `[u32; n]`; all n elements are initialised (zero is a valid u32).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// `n` zeroed `AtomicU64`s, as `try_zeroed_u32` (zero is a valid atomic).
pub(crate) fn try_zeroed_atomic_u64(
    n: u64,
    what: &'static str,
) -> Result<Vec<std::sync::atomic::AtomicU64>, ReserveError> {
    use std::sync::atomic::AtomicU64;
    let err = ReserveError {
        what,
        bytes: n.saturating_mul(8),
    };
    let n = usize::try_from(n).map_err(|_| err.clone())?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<AtomicU64>(n).map_err(|_| err.clone())?;
    // SAFETY: the layout has a non-zero size (n > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        return Err(err);
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `[AtomicU64; n]`; all n elements are initialised (an all-zero
    // AtomicU64 is a valid zero).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}
