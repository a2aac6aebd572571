//! The TD's private memory: the RAM layout, the page-state table (ground
//! truth per 4 KiB page), the host mapping of guest RAM, the memslots that
//! expose accepted memory to KVM, and the facade that keeps the three in
//! step (`private`, with what an accept does to the host in `accept_host`,
//! releases in `release`, MapGPA's shared alias in `shared_alias`, first-touch mapping in `first_touch`, checked
//! reads and writes), with the invariants that must hold between them.
//! It knows nothing of TDCALLs, vCPUs or reports: pausing the vCPUs around
//! a memslot merge is asked of whoever implements `memslots::GuestPause`.

pub mod accept_host;
pub mod firmware_window;
pub mod first_touch;
pub mod guest_ram;
pub mod host_alloc;
pub mod host_remove;
pub mod invariants;
pub mod layout;
pub mod memslots;
pub mod page_runs;
pub mod page_state;
pub mod pending_mechanism;
pub mod private;
pub mod release;
pub mod sept_locks;
pub mod shared_alias;
pub mod uffd;
