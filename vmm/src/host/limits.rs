//! The host's per-process limits as the VMM meets them: the thread stack
//! sizes it asks for (never the `ulimit -s` default), the address space a
//! run needs beyond what the TD has already reserved (`ulimit -v`, checked
//! before any guest runs so a later allocation cannot abort the process),
//! and the process limit (`ulimit -u`) named in diagnostics.

use thiserror::Error;

/// Stack of each vCPU thread the VMM starts (vCPU 0 runs on the caller's
/// thread). Measured: the deepest path (a debug build's accept with the
/// invariant check) uses under a quarter of it.
pub const VCPU_STACK_BYTES: usize = 1 << 20;

/// Stack of the thread the `vmm` command runs on (building the TD, vCPU 0,
/// the report), so `ulimit -s` does not decide whether it overflows.
pub const MAIN_STACK_BYTES: usize = 8 << 20;

/// Address space a run needs beyond the TD's reservations and the vCPU
/// stacks: the one malloc arena of the vCPU threads (64 MiB reserved, see
/// `one_thread_arena`), the trace buffer, the report and whatever a guest
/// may make the VMM allocate (capped lists, a console capture of at most
/// 1 MiB). Measured with `cargo xtask limits`.
pub const RUN_HEADROOM_BYTES: u64 = 96 << 20;

/// Most malloc arenas: the main one and one that every other thread
/// shares. glibc gives each new thread an arena of its own while there
/// are fewer than 8 per core, each reserving 64 MiB of address space:
/// with 64 vCPUs on two cores that was 1 GiB of `ulimit -v`, and the
/// arenas were taken first, so vCPU threads could not start. The vCPUs
/// allocate nothing on their accept path, so sharing one costs nothing.
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps the malloc arenas (the `vmm` command does, first thing; a library
/// user keeps its own allocator settings). glibc only: other C libraries
/// have no per-thread arenas to cap.
pub fn one_thread_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is thread-safe and only changes the allocator's
    // tuning; arenas made before it stay, later threads share.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS)
    };
}

/// A limit that would stop the run later, found before any guest runs.
#[derive(Debug, Error)]
pub enum LimitError {
    #[error(
        "the address-space limit (ulimit -v {limit_kib}) leaves less than {need_mib} MiB \
         beyond the {used_mib} MiB this TD reserved (guest RAM included) for {vcpus} vCPU \
         stacks and the run itself: raise ulimit -v to at least {want_kib} (KiB)"
    )]
    AddressSpace {
        limit_kib: u64,
        used_mib: u64,
        need_mib: u64,
        vcpus: u32,
        want_kib: u64,
    },
    /// The limit is not what is short: the process's address space is
    /// (a 47-bit user space holds at most 128 TiB) or the kernel refused.
    #[error("cannot map {need_mib} MiB more of address space beyond the {used_mib} MiB in use: {source}")]
    NoAddressSpace {
        need_mib: u64,
        used_mib: u64,
        source: std::io::Error,
    },
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    // SAFETY: a zeroed rlimit is valid storage for getrlimit to fill.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid out-parameter.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// The soft process limit (`ulimit -u`), if there is one.
pub fn nproc_limit() -> Option<u64> {
    rlimit(libc::RLIMIT_NPROC)
}

/// This process's virtual size (VmSize), from /proc/self/statm.
fn virtual_size() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Address space the run of a TD with `vcpus` vCPUs and `mem_bytes` of RAM
/// needs beyond what is reserved when it is built: the vCPU stacks, the
/// headroom, and the first block of shared memory (a kernel's bounce pool).
pub fn run_needs(vcpus: u32, mem_bytes: u64) -> u64 {
    u64::from(vcpus.saturating_sub(1)) * VCPU_STACK_BYTES as u64
        + RUN_HEADROOM_BYTES
        + mem_bytes.min(crate::memory::shared_alias::SHARED_BLOCK_BYTES)
}

/// Before guest RAM is reserved: room for it, its page-state tables
/// (about 2 MiB per TiB) and then what running needs.
pub fn ensure_room_for_td(mem_bytes: u64, vcpus: u32) -> Result<(), LimitError> {
    let tables = mem_bytes >> 19;
    let bytes = mem_bytes
        .saturating_add(tables)
        .saturating_add(run_needs(vcpus, mem_bytes));
    ensure_address_space(bytes, vcpus)
}

/// Once guest RAM and its tables are reserved: room for what running
/// needs.
pub fn ensure_room_for_run(vcpus: u32, mem_bytes: u64) -> Result<(), LimitError> {
    ensure_address_space(run_needs(vcpus, mem_bytes), vcpus)
}

/// Checks that `bytes` more of address space can be mapped now (with an
/// address-space limit, by mapping and unmapping that much, inaccessible
/// and unbacked: it costs no memory).
pub fn ensure_address_space(bytes: u64, vcpus: u32) -> Result<(), LimitError> {
    // Without a limit a failed reservation is its own error, later.
    let Some(limit) = rlimit(libc::RLIMIT_AS).filter(|_| bytes > 0) else {
        return Ok(());
    };
    let len = usize::try_from(bytes).unwrap_or(usize::MAX);
    // SAFETY: an anonymous, private, inaccessible mapping at an address
    // the kernel picks touches no existing mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        // SAFETY: `p` is the mapping of `len` bytes made just above.
        unsafe { libc::munmap(p, len) };
        return Ok(());
    }
    let source = std::io::Error::last_os_error();
    let used = virtual_size().unwrap_or(0);
    // What the VMM maps besides varies a little from run to run: the
    // limit is to blame unless it clears the need by this much, and the
    // advice asks for this much more.
    const SLACK: u64 = 16 << 20;
    if used.saturating_add(bytes).saturating_add(SLACK) <= limit {
        return Err(LimitError::NoAddressSpace {
            need_mib: bytes.div_ceil(1 << 20),
            used_mib: used >> 20,
            source,
        });
    }
    Err(LimitError::AddressSpace {
        limit_kib: limit / 1024,
        used_mib: used >> 20,
        need_mib: bytes.div_ceil(1 << 20),
        vcpus,
        want_kib: (used + bytes + SLACK).div_ceil(1 << 20) * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_needs_grows_with_the_vcpus_started() {
        assert_eq!(run_needs(1, 0), RUN_HEADROOM_BYTES);
        assert_eq!(
            run_needs(64, 0) - run_needs(1, 0),
            63 * VCPU_STACK_BYTES as u64
        );
        assert_eq!(run_needs(1, 64 << 40) - run_needs(1, 0), 1 << 30);
    }

    #[test]
    fn the_address_space_message_names_the_limit_and_the_fix() {
        let e = LimitError::AddressSpace {
            limit_kib: 4096,
            used_mib: 3,
            need_mib: 256,
            vcpus: 4,
            want_kib: 265_216,
        };
        let m = e.to_string();
        assert!(
            m.contains("ulimit -v 4096") && m.contains("at least 265216"),
            "{m}"
        );
    }
}
