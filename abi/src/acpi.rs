//! ACPI as the firmware publishes it for several vCPUs: the RSDP (2.0), the
//! XSDT and a MADT with one Processor Local x2APIC entry per vCPU and a
//! Multiprocessor Wakeup structure (version 1), plus the wakeup mailbox the
//! APs park on. Owns the layouts, a builder that writes the three tables
//! into a caller's buffer, and a bounds-checked parser (for the kernel, on
//! guest memory through a read closure, and the VMM) that never panics on
//! hostile tables.
//!
//! Layouts: ACPI 6.5 sections 5.2.5 (RSDP), 5.2.6 (SDT header), 5.2.8
//! (XSDT), 5.2.12 (MADT), 5.2.12.12 (Processor Local x2APIC) and 5.2.12.19
//! (Multiprocessor Wakeup, with the version-1 reset vector Linux reads as
//! `acpi_madt_multiproc_wakeup`, `include/acpi/actbl2.h`).
//!
//! # The AP contract (what an OS may rely on)
//!
//! The firmware publishes one mailbox page ([`Mailbox`], in `EfiACPIMemoryNVS`
//! memory) and a reset vector in the page right after it (same memory type).
//! Every AP (vCPU index != 0) spins on the mailbox with interrupts off,
//! pausing and issuing GHCI Instruction.HLT between polls.
//!
//! - **Wakeup** (the OS's `acpi_wakeup_cpu`): the OS writes `apic_id` and
//!   `wakeup_vector`, then store-releases `command = WAKEUP`. The AP whose
//!   APIC ID (= its vCPU index) equals `apic_id` reads `wakeup_vector`, then
//!   store-releases `command = NOOP` (the OS may reuse the mailbox as soon as
//!   it reads 0) and jumps to the vector with: 64-bit mode, the firmware's CS
//!   and GDT, the firmware's page tables (the VMM's identity map of all guest
//!   memory), interrupts off, **RDI = its APIC ID**; every other register,
//!   RSP included, is undefined (the OS sets its own stack, IDT and CR3).
//! - **Test**: `command = TEST` with a matching `apic_id` is acknowledged by
//!   clearing `command`; the AP stays parked.
//! - Any other command, or a command for another APIC ID, is ignored. The
//!   broadcast APIC ID is not honoured on this mailbox.
//! - **Reset vector** (version 1): an OS that offlines a CPU (or a kernel
//!   about to kexec) jumps the CPU to `reset_vector` in 64-bit mode with
//!   paging that maps the mailbox page and the reset-vector page at their
//!   physical addresses (identity), interrupts off, any RSP and any other
//!   register contents. The AP learns its index again with TDG.VP.INFO (R9)
//!   and parks on the same mailbox, so a later kernel can wake it. It uses
//!   no stack and no memory but the mailbox.
//!
//! The firmware area of the mailbox ([`firmware_area`]) is the firmware's:
//! the OS must not write it.

use crate::pod::Pod;

/// `"RSD PTR "`.
pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// `"XSDT"`.
pub const XSDT_SIGNATURE: [u8; 4] = *b"XSDT";
/// `"APIC"`: the MADT.
pub const MADT_SIGNATURE: [u8; 4] = *b"APIC";

/// RSDP revision for ACPI 2.0 and later (with XSDT).
pub const RSDP_REVISION: u8 = 2;
/// XSDT revision.
pub const XSDT_REVISION: u8 = 1;
/// MADT revision written (the parser accepts any).
pub const MADT_REVISION: u8 = 5;
/// OEM ID written in every table.
pub const OEM_ID: [u8; 6] = *b"TDXEMU";
/// OEM table ID written in the XSDT and MADT.
pub const OEM_TABLE_ID: [u8; 8] = *b"ACCEPTEM";
/// Creator ID written in the XSDT and MADT.
pub const CREATOR_ID: u32 = u32::from_le_bytes(*b"TAEM");
/// The local APIC address the MADT states (the architectural default).
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;

/// Largest table (XSDT or MADT) the parser reads.
pub const MAX_TABLE_LEN: u32 = 1 << 20;

/// MADT subtable types used here.
pub mod madt_type {
    pub const LOCAL_APIC: u8 = 0;
    pub const LOCAL_X2APIC: u8 = 9;
    pub const MP_WAKEUP: u8 = 0x10;
}

/// Local APIC / x2APIC flags: bit 0 enabled, bit 1 online capable.
pub const APIC_ENABLED: u32 = 1;
pub const APIC_ONLINE_CAPABLE: u32 = 2;

/// Multiprocessor Wakeup structure versions.
pub mod wakeup_version {
    /// 16 bytes: no reset vector.
    pub const V0: u16 = 0;
    /// 24 bytes: with the reset vector.
    pub const V1: u16 = 1;
}

/// Mailbox commands (`Mailbox::command`).
pub mod command {
    pub const NOOP: u16 = 0;
    pub const WAKEUP: u16 = 1;
    pub const TEST: u16 = 2;
    /// Firmware-private (never on the published mailbox): accept the
    /// striped share of the range in the firmware area. td-shim uses 3
    /// too; edk2's private mailbox uses 2, which the ACPI mailbox gives to
    /// TEST.
    pub const ACCEPT_PAGES: u16 = 3;
}

/// `apic_id` value addressing every AP (firmware-private commands only).
pub const APIC_ID_BROADCAST: u32 = 0xffff_fffe;

/// Bytes of a mailbox (it is also 4 KiB aligned).
pub const MAILBOX_SIZE: u64 = 4096;

/// The Multiprocessor Wakeup Mailbox.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub command: u16,
    pub reserved: u16,
    pub apic_id: u32,
    pub wakeup_vector: u64,
    pub os_area: [u8; 2032],
    pub firmware_area: [u8; 2048],
}

/// Byte offsets of the mailbox fields (for assembly and atomics).
pub mod mailbox_offset {
    pub const COMMAND: usize = 0;
    pub const APIC_ID: usize = 4;
    pub const WAKEUP_VECTOR: usize = 8;
    pub const OS_AREA: usize = 0x10;
    pub const FIRMWARE_AREA: usize = 0x800;
}

/// This firmware's use of the firmware area: naturally aligned `u64`
/// words, offsets from the start of the mailbox. On the boot-time mailbox
/// (firmware memory) all of them are used; on the published one only
/// `ARRIVED`.
pub mod firmware_area {
    /// Bumped by the BSP (store-release) after it wrote a firmware command;
    /// an AP acts on each value once.
    pub const SEQUENCE: usize = 0x800;
    /// ACCEPT_PAGES: the range `[start, end)`, 2 MiB aligned at the start.
    pub const ACCEPT_START: usize = 0x808;
    pub const ACCEPT_END: usize = 0x810;
    /// ACCEPT_PAGES: vCPUs taking part (indices `0..cpus`, the BSP's
    /// share included); CPU i accepts the chunks at `start + i * CHUNK`
    /// with a stride of `cpus * CHUNK`.
    pub const ACCEPT_CPUS: usize = 0x818;
    /// ACCEPT_PAGES: flags, see `ACCEPT_4K_ONLY`.
    pub const ACCEPT_FLAGS: usize = 0x820;
    /// APs that finished the current firmware command.
    pub const DONE: usize = 0x828;
    /// APs that reached this mailbox's loop (on the published mailbox:
    /// every entry into the parking loop, reset vector included).
    pub const ARRIVED: usize = 0x830;
    /// `ACCEPT_FLAGS` bit: accept in 4 KiB pages only (`fw.accept_page=4k`).
    pub const ACCEPT_4K_ONLY: u64 = 1;
}

/// RSDP (ACPI 2.0+), 36 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub signature: [u8; 8],
    /// Checksum of the first 20 bytes.
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub revision: u8,
    pub rsdt_address: u32,
    pub length: u32,
    pub xsdt_address: u64,
    /// Checksum of all `length` bytes.
    pub extended_checksum: u8,
    pub reserved: [u8; 3],
}

/// Bytes covered by `Rsdp::checksum` (the ACPI 1.0 part).
pub const RSDP_V1_LEN: usize = 20;

/// The common header of every system description table, 36 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    pub creator_id: u32,
    pub creator_revision: u32,
}

/// The MADT's fixed part, 44 bytes; subtables follow.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtHeader {
    pub header: SdtHeader,
    pub local_apic_address: u32,
    pub flags: u32,
}

/// Processor Local APIC (type 0), 8 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    pub kind: u8,
    pub length: u8,
    pub processor_uid: u8,
    pub apic_id: u8,
    pub flags: u32,
}

/// Processor Local x2APIC (type 9), 16 bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalX2Apic {
    pub kind: u8,
    pub length: u8,
    pub reserved: u16,
    pub x2apic_id: u32,
    pub flags: u32,
    pub processor_uid: u32,
}

/// Multiprocessor Wakeup structure (type 0x10), version 1, 24 bytes
/// (version 0 is the first 16).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpWakeup {
    pub kind: u8,
    pub length: u8,
    pub version: u16,
    pub reserved: u32,
    pub mailbox_address: u64,
    pub reset_vector: u64,
}

/// Length of a version-0 wakeup structure.
pub const MP_WAKEUP_V0_LEN: u8 = 16;

// SAFETY: all of these are repr(C) (packed where ACPI packs them) with
// integer and byte-array fields only, so no padding (sizes asserted below)
// and every bit pattern is a valid value.
unsafe impl Pod for Mailbox {}
// SAFETY: as above.
unsafe impl Pod for Rsdp {}
// SAFETY: as above.
unsafe impl Pod for SdtHeader {}
// SAFETY: as above.
unsafe impl Pod for MadtHeader {}
// SAFETY: as above.
unsafe impl Pod for LocalApic {}
// SAFETY: as above.
unsafe impl Pod for LocalX2Apic {}
// SAFETY: as above.
unsafe impl Pod for MpWakeup {}

const _: () = assert!(core::mem::size_of::<Mailbox>() == 4096);
const _: () = assert!(core::mem::offset_of!(Mailbox, apic_id) == mailbox_offset::APIC_ID);
const _: () =
    assert!(core::mem::offset_of!(Mailbox, wakeup_vector) == mailbox_offset::WAKEUP_VECTOR);
const _: () = assert!(core::mem::offset_of!(Mailbox, os_area) == mailbox_offset::OS_AREA);
const _: () =
    assert!(core::mem::offset_of!(Mailbox, firmware_area) == mailbox_offset::FIRMWARE_AREA);
const _: () = assert!(core::mem::size_of::<Rsdp>() == 36);
const _: () = assert!(core::mem::size_of::<SdtHeader>() == 36);
const _: () = assert!(core::mem::size_of::<MadtHeader>() == 44);
const _: () = assert!(core::mem::size_of::<LocalApic>() == 8);
const _: () = assert!(core::mem::size_of::<LocalX2Apic>() == 16);
const _: () = assert!(core::mem::size_of::<MpWakeup>() == 24);

const RSDP_LEN: usize = core::mem::size_of::<Rsdp>();
const SDT_LEN: usize = core::mem::size_of::<SdtHeader>();
const MADT_LEN: usize = core::mem::size_of::<MadtHeader>();
const X2APIC_LEN: usize = core::mem::size_of::<LocalX2Apic>();
const WAKEUP_LEN: usize = core::mem::size_of::<MpWakeup>();
const X2APIC_LEN_U8: u8 = 16;
const WAKEUP_LEN_U8: u8 = 24;
const RSDP_LEN_U32: u32 = 36;
const RSDP_V1_LEN_U32: u32 = 20;
const MADT_LEN_U32: u32 = 44;
const _: () = assert!(
    X2APIC_LEN_U8 as usize == X2APIC_LEN
        && WAKEUP_LEN_U8 as usize == WAKEUP_LEN
        && RSDP_LEN_U32 as usize == RSDP_LEN
        && RSDP_V1_LEN_U32 as usize == RSDP_V1_LEN
        && MADT_LEN_U32 as usize == MADT_LEN
);

/// The byte that makes `bytes` sum to zero (mod 256) once stored in a
/// checksum field that currently holds 0.
pub fn checksum_fix(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

// ---------------------------------------------------------------- builder

/// Where `build_tables` put each table (GPAs) and how many bytes it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub rsdp: u64,
    pub xsdt: u64,
    pub madt: u64,
    pub len: usize,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The buffer holds `have` bytes; the tables need `need`.
    BufferTooSmall { need: usize, have: usize },
    /// The buffer's GPA is not 16-byte aligned (the RSDP must be).
    Misaligned(u64),
    /// Zero CPUs, or more than `MAX_BUILD_CPUS`.
    CpuCount(u32),
    /// The mailbox GPA is zero or not 4 KiB aligned.
    BadMailbox(u64),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::BufferTooSmall { need, have } => {
                write!(f, "ACPI tables need {need} bytes, the buffer has {have}")
            }
            BuildError::Misaligned(g) => {
                write!(f, "ACPI table buffer at {g:#x} is not 16-byte aligned")
            }
            BuildError::CpuCount(n) => write!(f, "cannot describe {n} CPUs in a MADT"),
            BuildError::BadMailbox(m) => {
                write!(f, "wakeup mailbox {m:#x} is not a 4 KiB-aligned page")
            }
        }
    }
}

/// Most CPUs `build_tables` describes (keeps the MADT far below
/// `MAX_TABLE_LEN`).
pub const MAX_BUILD_CPUS: u32 = 4096;

const XSDT_OFFSET: usize = RSDP_LEN.next_multiple_of(16);
const MADT_OFFSET: usize = (XSDT_OFFSET + SDT_LEN + 8).next_multiple_of(8);

/// Bytes `build_tables` writes for `cpus` CPUs.
pub const fn tables_len(cpus: u32) -> usize {
    MADT_OFFSET + MADT_LEN + X2APIC_LEN * cpus as usize + WAKEUP_LEN
}

fn header(signature: [u8; 4], length: usize, revision: u8) -> SdtHeader {
    SdtHeader {
        signature,
        length: u32::try_from(length).unwrap_or(u32::MAX),
        revision,
        checksum: 0,
        oem_id: OEM_ID,
        oem_table_id: OEM_TABLE_ID,
        oem_revision: 1,
        creator_id: CREATOR_ID,
        creator_revision: 1,
    }
}

fn put<T: Pod>(buf: &mut [u8], at: usize, value: &T) -> usize {
    let bytes = value.as_bytes();
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    at + bytes.len()
}

/// Writes RSDP (offset 0) -> XSDT -> MADT into `buf`, which the tables
/// will occupy at guest-physical address `gpa`. The MADT lists CPUs
/// `0..cpus` as enabled Processor Local x2APIC entries (APIC ID = UID =
/// vCPU index) and ends with a version-1 wakeup structure for `mailbox`
/// and `reset_vector`. Bytes past `tables_len(cpus)` are left alone.
pub fn build_tables(
    buf: &mut [u8],
    gpa: u64,
    cpus: u32,
    mailbox: u64,
    reset_vector: u64,
) -> Result<TableLayout, BuildError> {
    if cpus == 0 || cpus > MAX_BUILD_CPUS {
        return Err(BuildError::CpuCount(cpus));
    }
    if !gpa.is_multiple_of(16) {
        return Err(BuildError::Misaligned(gpa));
    }
    if mailbox == 0 || !mailbox.is_multiple_of(MAILBOX_SIZE) {
        return Err(BuildError::BadMailbox(mailbox));
    }
    let len = tables_len(cpus);
    if buf.len() < len {
        return Err(BuildError::BufferTooSmall {
            need: len,
            have: buf.len(),
        });
    }
    let buf = &mut buf[..len];
    buf.fill(0);
    let xsdt_gpa = gpa + XSDT_OFFSET as u64;
    let madt_gpa = gpa + MADT_OFFSET as u64;

    let madt_len = len - MADT_OFFSET;
    let mut at = put(
        buf,
        MADT_OFFSET,
        &MadtHeader {
            header: header(MADT_SIGNATURE, madt_len, MADT_REVISION),
            local_apic_address: LOCAL_APIC_ADDRESS,
            flags: 0,
        },
    );
    for cpu in 0..cpus {
        at = put(
            buf,
            at,
            &LocalX2Apic {
                kind: madt_type::LOCAL_X2APIC,
                length: X2APIC_LEN_U8,
                reserved: 0,
                x2apic_id: cpu,
                flags: APIC_ENABLED,
                processor_uid: cpu,
            },
        );
    }
    put(
        buf,
        at,
        &MpWakeup {
            kind: madt_type::MP_WAKEUP,
            length: WAKEUP_LEN_U8,
            version: wakeup_version::V1,
            reserved: 0,
            mailbox_address: mailbox,
            reset_vector,
        },
    );
    buf[MADT_OFFSET + 9] = checksum_fix(&buf[MADT_OFFSET..]);

    let xsdt_len = SDT_LEN + 8;
    let end = put(
        buf,
        XSDT_OFFSET,
        &header(XSDT_SIGNATURE, xsdt_len, XSDT_REVISION),
    );
    put(buf, end, &madt_gpa);
    buf[XSDT_OFFSET + 9] = checksum_fix(&buf[XSDT_OFFSET..XSDT_OFFSET + xsdt_len]);

    put(
        buf,
        0,
        &Rsdp {
            signature: RSDP_SIGNATURE,
            checksum: 0,
            oem_id: OEM_ID,
            revision: RSDP_REVISION,
            rsdt_address: 0,
            length: RSDP_LEN_U32,
            xsdt_address: xsdt_gpa,
            extended_checksum: 0,
            reserved: [0; 3],
        },
    );
    buf[8] = checksum_fix(&buf[..RSDP_V1_LEN]);
    buf[32] = checksum_fix(&buf[..RSDP_LEN]);
    Ok(TableLayout {
        rsdp: gpa,
        xsdt: xsdt_gpa,
        madt: madt_gpa,
        len,
    })
}

// ----------------------------------------------------------------- parser

/// The wakeup structure as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wakeup {
    pub version: u16,
    pub mailbox: u64,
    /// Present from version 1 on.
    pub reset_vector: Option<u64>,
}

/// One processor entry of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub apic_id: u32,
    pub processor_uid: u32,
    /// Flags bit 0: usable now.
    pub enabled: bool,
    /// Flags bit 1: may be brought online later.
    pub online_capable: bool,
    /// Found as an x2APIC (type 9) entry rather than a local APIC (type 0).
    pub x2apic: bool,
}

/// What the parser found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpInfo {
    pub xsdt: u64,
    pub madt: u64,
    pub madt_len: u32,
    /// Enabled processor entries (local APIC and x2APIC).
    pub cpus: u32,
    /// The Multiprocessor Wakeup structure, if any.
    pub wakeup: Option<Wakeup>,
}

/// Why tables were refused. `at` is a GPA; `offset` is within the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The read closure refused `[gpa, gpa + len)`.
    Unreadable {
        gpa: u64,
        len: usize,
    },
    BadSignature {
        table: &'static str,
        at: u64,
    },
    BadChecksum {
        table: &'static str,
        at: u64,
    },
    BadLength {
        table: &'static str,
        at: u64,
        len: u32,
    },
    /// RSDP revision below 2 (no XSDT).
    RsdpRevision(u8),
    /// The XSDT lists no MADT.
    NoMadt,
    /// A MADT subtable whose length is too small for its type or runs past
    /// the table.
    BadSubtable {
        offset: u32,
        kind: u8,
        len: u8,
    },
    /// A wakeup structure of a version this parser does not know.
    WakeupVersion(u16),
    /// More than one wakeup structure.
    DuplicateWakeup,
    /// The wakeup mailbox is zero or not 4 KiB aligned.
    BadMailbox(u64),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AcpiError::Unreadable { gpa, len } => {
                write!(f, "ACPI: cannot read {len} bytes at {gpa:#x}")
            }
            AcpiError::BadSignature { table, at } => {
                write!(f, "ACPI: no {table} signature at {at:#x}")
            }
            AcpiError::BadChecksum { table, at } => {
                write!(f, "ACPI: {table} at {at:#x} has a bad checksum")
            }
            AcpiError::BadLength { table, at, len } => {
                write!(f, "ACPI: {table} at {at:#x} has a bad length {len}")
            }
            AcpiError::RsdpRevision(r) => write!(f, "ACPI: RSDP revision {r} has no XSDT"),
            AcpiError::NoMadt => write!(f, "ACPI: the XSDT lists no MADT"),
            AcpiError::BadSubtable { offset, kind, len } => write!(
                f,
                "ACPI: MADT subtable type {kind:#x} at offset {offset} has a bad length {len}"
            ),
            AcpiError::WakeupVersion(v) => {
                write!(
                    f,
                    "ACPI: multiprocessor wakeup structure version {v} is unknown"
                )
            }
            AcpiError::DuplicateWakeup => {
                write!(f, "ACPI: more than one multiprocessor wakeup structure")
            }
            AcpiError::BadMailbox(m) => {
                write!(f, "ACPI: wakeup mailbox {m:#x} is not a 4 KiB-aligned page")
            }
        }
    }
}

/// A read closure over `bytes` that sit at GPA `base`: it fills the buffer
/// from `[gpa, gpa + buf.len())` or refuses a range outside `bytes`.
pub fn slice_reader(bytes: &[u8], base: u64) -> impl FnMut(u64, &mut [u8]) -> bool + '_ {
    move |gpa, buf| {
        let Some(off) = gpa.checked_sub(base) else {
            return false;
        };
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        match off
            .checked_add(buf.len())
            .and_then(|end| bytes.get(off..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

fn read_into<R: FnMut(u64, &mut [u8]) -> bool>(
    read: &mut R,
    gpa: u64,
    buf: &mut [u8],
) -> Result<(), AcpiError> {
    let unreadable = AcpiError::Unreadable {
        gpa,
        len: buf.len(),
    };
    if gpa.checked_add(buf.len() as u64).is_none() || !read(gpa, buf) {
        return Err(unreadable);
    }
    Ok(())
}

fn read_pod<T: Pod, R: FnMut(u64, &mut [u8]) -> bool>(
    read: &mut R,
    gpa: u64,
) -> Result<T, AcpiError> {
    let mut buf = [0u8; 64];
    let n = core::mem::size_of::<T>();
    let bytes = &mut buf[..n];
    read_into(read, gpa, bytes)?;
    T::read_from_prefix(bytes).ok_or(AcpiError::Unreadable { gpa, len: n })
}

/// Sum of `len` bytes at `gpa`, read in pieces.
fn sum_at<R: FnMut(u64, &mut [u8]) -> bool>(
    read: &mut R,
    gpa: u64,
    len: u32,
) -> Result<u8, AcpiError> {
    const PIECE: u32 = 256;
    let mut buf = [0u8; PIECE as usize];
    let mut total = 0u8;
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(PIECE);
        let piece = &mut buf[..n as usize];
        read_into(read, gpa + u64::from(done), piece)?;
        total = total.wrapping_add(sum(piece));
        done += n;
    }
    Ok(total)
}

/// Reads and checks an SDT header at `at`: signature, length within
/// `[min_len, MAX_TABLE_LEN]`, readable and summing to zero.
fn table<R: FnMut(u64, &mut [u8]) -> bool>(
    read: &mut R,
    at: u64,
    signature: [u8; 4],
    name: &'static str,
    min_len: usize,
) -> Result<SdtHeader, AcpiError> {
    let h: SdtHeader = read_pod(read, at)?;
    if h.signature != signature {
        return Err(AcpiError::BadSignature { table: name, at });
    }
    let len = h.length;
    if (len as usize) < min_len || len > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength {
            table: name,
            at,
            len,
        });
    }
    if sum_at(read, at, len)? != 0 {
        return Err(AcpiError::BadChecksum { table: name, at });
    }
    Ok(h)
}

/// Parses RSDP -> XSDT -> MADT from `rsdp` through `read` (which fills a
/// buffer from guest memory or refuses), calling `on_cpu` for each
/// processor entry. Everything is bounds-checked: a table whose
/// signature, length or checksum is wrong, or that points at memory
/// `read` refuses, is an error, never a panic.
pub fn parse_with<R, F>(rsdp: u64, mut read: R, mut on_cpu: F) -> Result<MpInfo, AcpiError>
where
    R: FnMut(u64, &mut [u8]) -> bool,
    F: FnMut(Cpu),
{
    let r: Rsdp = read_pod(&mut read, rsdp)?;
    if r.signature != RSDP_SIGNATURE {
        return Err(AcpiError::BadSignature {
            table: "RSDP",
            at: rsdp,
        });
    }
    if sum_at(&mut read, rsdp, RSDP_V1_LEN_U32)? != 0 {
        return Err(AcpiError::BadChecksum {
            table: "RSDP",
            at: rsdp,
        });
    }
    if r.revision < RSDP_REVISION {
        return Err(AcpiError::RsdpRevision(r.revision));
    }
    let len = r.length;
    if (len as usize) < RSDP_LEN || len > 4096 {
        return Err(AcpiError::BadLength {
            table: "RSDP",
            at: rsdp,
            len,
        });
    }
    if sum_at(&mut read, rsdp, len)? != 0 {
        return Err(AcpiError::BadChecksum {
            table: "RSDP",
            at: rsdp,
        });
    }

    let xsdt = r.xsdt_address;
    let xh = table(&mut read, xsdt, XSDT_SIGNATURE, "XSDT", SDT_LEN)?;
    let xsdt_len = xh.length;
    if !(xsdt_len as usize - SDT_LEN).is_multiple_of(8) {
        return Err(AcpiError::BadLength {
            table: "XSDT",
            at: xsdt,
            len: xsdt_len,
        });
    }
    let mut madt = None;
    for i in 0..(xsdt_len as usize - SDT_LEN) / 8 {
        let entry: u64 = read_pod(&mut read, xsdt + (SDT_LEN + i * 8) as u64)?;
        let sig: [u8; 4] = read_pod(&mut read, entry)?;
        if sig == MADT_SIGNATURE {
            madt = Some(entry);
            break;
        }
    }
    let madt = madt.ok_or(AcpiError::NoMadt)?;
    let mh = table(&mut read, madt, MADT_SIGNATURE, "MADT", MADT_LEN)?;
    let madt_len = mh.length;

    let mut info = MpInfo {
        xsdt,
        madt,
        madt_len,
        cpus: 0,
        wakeup: None,
    };
    let mut off = MADT_LEN_U32;
    while off < madt_len {
        let at = madt + u64::from(off);
        let head = if madt_len - off >= 2 {
            Some(read_pod::<[u8; 2], _>(&mut read, at)?)
        } else {
            None
        };
        let [kind, sub_len] = head.unwrap_or([0, 0]);
        let bad = AcpiError::BadSubtable {
            offset: off,
            kind,
            len: sub_len,
        };
        if head.is_none() || sub_len < 2 || u32::from(sub_len) > madt_len - off {
            return Err(bad);
        }
        match kind {
            madt_type::LOCAL_APIC => {
                if usize::from(sub_len) < core::mem::size_of::<LocalApic>() {
                    return Err(bad);
                }
                let e: LocalApic = read_pod(&mut read, at)?;
                let cpu = cpu_entry(
                    u32::from(e.apic_id),
                    u32::from(e.processor_uid),
                    e.flags,
                    false,
                );
                info.cpus += u32::from(cpu.enabled);
                on_cpu(cpu);
            }
            madt_type::LOCAL_X2APIC => {
                if usize::from(sub_len) < X2APIC_LEN {
                    return Err(bad);
                }
                let e: LocalX2Apic = read_pod(&mut read, at)?;
                let cpu = cpu_entry(e.x2apic_id, e.processor_uid, e.flags, true);
                info.cpus += u32::from(cpu.enabled);
                on_cpu(cpu);
            }
            madt_type::MP_WAKEUP => {
                if sub_len < MP_WAKEUP_V0_LEN {
                    return Err(bad);
                }
                let mut raw = [0u8; WAKEUP_LEN];
                let n = usize::from(sub_len).min(WAKEUP_LEN);
                read_into(&mut read, at, &mut raw[..n])?;
                let w = MpWakeup::read_from_prefix(&raw).ok_or(bad)?;
                let version = w.version;
                let reset_vector = match version {
                    wakeup_version::V0 => None,
                    wakeup_version::V1 if usize::from(sub_len) >= WAKEUP_LEN => {
                        Some(w.reset_vector)
                    }
                    wakeup_version::V1 => return Err(bad),
                    v => return Err(AcpiError::WakeupVersion(v)),
                };
                let mailbox = w.mailbox_address;
                if mailbox == 0 || !mailbox.is_multiple_of(MAILBOX_SIZE) {
                    return Err(AcpiError::BadMailbox(mailbox));
                }
                if info.wakeup.is_some() {
                    return Err(AcpiError::DuplicateWakeup);
                }
                info.wakeup = Some(Wakeup {
                    version,
                    mailbox,
                    reset_vector,
                });
            }
            _ => {}
        }
        off += u32::from(sub_len);
    }
    Ok(info)
}

fn cpu_entry(apic_id: u32, processor_uid: u32, flags: u32, x2apic: bool) -> Cpu {
    Cpu {
        apic_id,
        processor_uid,
        enabled: flags & APIC_ENABLED != 0,
        online_capable: flags & APIC_ONLINE_CAPABLE != 0,
        x2apic,
    }
}

/// `parse_with` without a per-CPU callback.
pub fn parse<R: FnMut(u64, &mut [u8]) -> bool>(rsdp: u64, read: R) -> Result<MpInfo, AcpiError> {
    parse_with(rsdp, read, |_| {})
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const BASE: u64 = 0x7fe0_0000;
    const MAILBOX: u64 = 0x7ff0_0000;
    const RESET: u64 = 0x7ff0_1000;

    fn built(cpus: u32) -> (Vec<u8>, TableLayout) {
        let mut buf = vec![0xaau8; tables_len(cpus) + 64];
        let layout = build_tables(&mut buf, BASE, cpus, MAILBOX, RESET).unwrap();
        (buf, layout)
    }

    fn parse_buf(buf: &[u8]) -> Result<MpInfo, AcpiError> {
        parse(BASE, slice_reader(buf, BASE))
    }

    /// Offset in the buffer of the MADT's first subtable.
    const SUBTABLES: usize = MADT_OFFSET + MADT_LEN;

    fn refix_madt(buf: &mut [u8]) {
        let len = u32::from_le_bytes(buf[MADT_OFFSET + 4..MADT_OFFSET + 8].try_into().unwrap());
        buf[MADT_OFFSET + 9] = 0;
        let end = (MADT_OFFSET + len as usize).clamp(MADT_OFFSET, buf.len());
        buf[MADT_OFFSET + 9] = checksum_fix(&buf[MADT_OFFSET..end]);
    }

    fn set_madt_len(buf: &mut [u8], len: u32) {
        buf[MADT_OFFSET + 4..MADT_OFFSET + 8].copy_from_slice(&len.to_le_bytes());
        refix_madt(buf);
    }

    #[test]
    fn round_trip() {
        for cpus in [1, 2, 4, 64] {
            let (buf, layout) = built(cpus);
            assert_eq!(layout.len, tables_len(cpus));
            // Bytes past the tables are untouched.
            assert!(buf[layout.len..].iter().all(|&b| b == 0xaa));
            let mut ids = Vec::new();
            let info = parse_with(BASE, slice_reader(&buf, BASE), |c| ids.push(c)).unwrap();
            assert_eq!(info.cpus, cpus);
            assert_eq!(info.xsdt, layout.xsdt);
            assert_eq!(info.madt, layout.madt);
            assert_eq!(
                info.wakeup,
                Some(Wakeup {
                    version: 1,
                    mailbox: MAILBOX,
                    reset_vector: Some(RESET)
                })
            );
            assert_eq!(ids.len(), cpus as usize);
            for (i, c) in ids.iter().enumerate() {
                assert_eq!(c.apic_id, i as u32);
                assert_eq!(c.processor_uid, i as u32);
                assert!(c.enabled && c.x2apic && !c.online_capable);
            }
        }
    }

    #[test]
    fn layout_is_acpis() {
        let (buf, layout) = built(2);
        assert_eq!(&buf[..8], b"RSD PTR ");
        assert_eq!(buf[15], 2, "RSDP revision");
        assert_eq!(sum(&buf[..20]), 0);
        assert_eq!(sum(&buf[..36]), 0);
        assert_eq!(u32::from_le_bytes(buf[20..24].try_into().unwrap()), 36);
        assert_eq!(
            u64::from_le_bytes(buf[24..32].try_into().unwrap()),
            layout.xsdt
        );
        let x = (layout.xsdt - BASE) as usize;
        assert_eq!(&buf[x..x + 4], b"XSDT");
        assert_eq!(
            u64::from_le_bytes(buf[x + 36..x + 44].try_into().unwrap()),
            layout.madt
        );
        let m = (layout.madt - BASE) as usize;
        assert_eq!(&buf[m..m + 4], b"APIC");
        // x2APIC entry for CPU 1, then the wakeup structure.
        let e = &buf[m + 44 + 16..m + 44 + 32];
        assert_eq!(&e[..4], &[9, 16, 0, 0]);
        assert_eq!(&e[4..8], &1u32.to_le_bytes());
        assert_eq!(&e[8..12], &1u32.to_le_bytes());
        let w = &buf[m + 44 + 32..m + 44 + 56];
        assert_eq!(&w[..4], &[0x10, 24, 1, 0]);
        assert_eq!(&w[8..16], &MAILBOX.to_le_bytes());
        assert_eq!(&w[16..24], &RESET.to_le_bytes());
        assert_eq!(m + 44 + 56, layout.len);
    }

    #[test]
    fn builder_refuses_bad_input() {
        let mut small = vec![0u8; tables_len(4) - 1];
        assert_eq!(
            build_tables(&mut small, BASE, 4, MAILBOX, RESET),
            Err(BuildError::BufferTooSmall {
                need: tables_len(4),
                have: tables_len(4) - 1
            })
        );
        let mut buf = vec![0u8; 8192];
        assert_eq!(
            build_tables(&mut buf, BASE + 8, 4, MAILBOX, RESET),
            Err(BuildError::Misaligned(BASE + 8))
        );
        assert_eq!(
            build_tables(&mut buf, BASE, 0, MAILBOX, RESET),
            Err(BuildError::CpuCount(0))
        );
        assert_eq!(
            build_tables(&mut buf, BASE, 4, MAILBOX + 8, RESET),
            Err(BuildError::BadMailbox(MAILBOX + 8))
        );
    }

    #[test]
    fn bad_checksums() {
        let (good, layout) = built(4);
        for (at, table) in [
            (8usize, "RSDP"), // RSDP 1.0 checksum
            (32, "RSDP"),     // extended checksum
            ((layout.xsdt - BASE) as usize + 9, "XSDT"),
            ((layout.madt - BASE) as usize + 30, "MADT"), // a body byte
        ] {
            let mut buf = good.clone();
            buf[at] ^= 0x40;
            let err = parse_buf(&buf).unwrap_err();
            assert!(
                matches!(err, AcpiError::BadChecksum { table: t, .. } if t == table),
                "{at}: {err:?}"
            );
        }
    }

    #[test]
    fn signatures_and_revision() {
        let (good, layout) = built(1);
        let mut buf = good.clone();
        buf[0] = b'X';
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadSignature { table: "RSDP", .. })
        ));
        let mut buf = good.clone();
        buf[15] = 0; // ACPI 1.0 RSDP: no XSDT
        buf[8] = 0;
        buf[8] = checksum_fix(&buf[..20]);
        assert_eq!(parse_buf(&buf), Err(AcpiError::RsdpRevision(0)));
        // The XSDT's only entry is not a MADT.
        let mut buf = good.clone();
        let m = (layout.madt - BASE) as usize;
        buf[m..m + 4].copy_from_slice(b"FACP");
        assert_eq!(parse_buf(&buf), Err(AcpiError::NoMadt));
    }

    #[test]
    fn truncated_lengths() {
        let (good, layout) = built(4);
        // The memory behind the tables ends early.
        for cut in [
            10,
            36,
            60,
            (layout.madt - BASE) as usize + 50,
            layout.len - 1,
        ] {
            let err = parse_buf(&good[..cut]).unwrap_err();
            assert!(
                matches!(err, AcpiError::Unreadable { .. }),
                "{cut}: {err:?}"
            );
        }
        // A MADT shorter than its fixed part.
        let mut buf = good.clone();
        set_madt_len(&mut buf, 40);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadLength {
                table: "MADT",
                len: 40,
                ..
            })
        ));
        // A MADT that ends inside the wakeup structure.
        let mut buf = good.clone();
        let madt_len = (layout.len - MADT_OFFSET) as u32;
        set_madt_len(&mut buf, madt_len - 4);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadSubtable {
                kind: 0x10,
                len: 24,
                ..
            })
        ));
        // One byte left after the last subtable.
        let mut buf = good.clone();
        set_madt_len(&mut buf, madt_len + 1);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadSubtable { len: 0, .. })
        ));
        // A subtable of length 0 (would loop forever) or too short for its type.
        for (len, kind) in [(0u8, 9u8), (1, 9), (8, 9), (12, 0x10), (4, 0)] {
            let mut buf = good.clone();
            buf[SUBTABLES] = kind;
            buf[SUBTABLES + 1] = len;
            refix_madt(&mut buf);
            assert!(
                matches!(
                    parse_buf(&buf),
                    Err(AcpiError::BadSubtable { offset: 44, .. })
                ),
                "{len} {kind}"
            );
        }
        // A table that claims to be enormous.
        let mut buf = good.clone();
        set_madt_len(&mut buf, MAX_TABLE_LEN + 1);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadLength { table: "MADT", .. })
        ));
        // An XSDT whose entries are not whole.
        let mut buf = good.clone();
        let x = (layout.xsdt - BASE) as usize;
        buf[x + 4] = 43;
        buf[x + 9] = 0;
        buf[x + 9] = checksum_fix(&buf[x..x + 43]);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadLength {
                table: "XSDT",
                len: 43,
                ..
            })
        ));
    }

    #[test]
    fn wakeup_versions() {
        let (good, layout) = built(2);
        let w = layout.len - WAKEUP_LEN;
        let mut buf = good.clone();
        buf[w + 2] = 2;
        refix_madt(&mut buf);
        assert_eq!(parse_buf(&buf), Err(AcpiError::WakeupVersion(2)));
        // Version 0: 16 bytes, no reset vector.
        let mut buf = good.clone();
        buf[w + 1] = 16;
        buf[w + 2] = 0;
        let madt_len = (layout.len - MADT_OFFSET - 8) as u32;
        set_madt_len(&mut buf, madt_len);
        let info = parse_buf(&buf).unwrap();
        assert_eq!(
            info.wakeup,
            Some(Wakeup {
                version: 0,
                mailbox: MAILBOX,
                reset_vector: None
            })
        );
        // Version 1 needs 24 bytes.
        let mut buf = good.clone();
        buf[w + 1] = 16;
        set_madt_len(&mut buf, madt_len);
        assert!(matches!(
            parse_buf(&buf),
            Err(AcpiError::BadSubtable {
                kind: 0x10,
                len: 16,
                ..
            })
        ));
        // A misaligned mailbox.
        let mut buf = good.clone();
        buf[w + 8] = 0x10;
        refix_madt(&mut buf);
        assert_eq!(parse_buf(&buf), Err(AcpiError::BadMailbox(MAILBOX + 0x10)));
    }

    #[test]
    fn no_wakeup_entry_and_duplicates() {
        let (good, layout) = built(3);
        let mut buf = good.clone();
        set_madt_len(&mut buf, (layout.len - MADT_OFFSET - WAKEUP_LEN) as u32);
        let info = parse_buf(&buf).unwrap();
        assert_eq!(info.cpus, 3);
        assert_eq!(info.wakeup, None);
        // Turn CPU 2's entry into a second wakeup structure (16 bytes, v0).
        let mut buf = good.clone();
        let e = SUBTABLES + 2 * 16;
        buf[e..e + 16].copy_from_slice(&[0x10, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f, 0, 0, 0, 0]);
        refix_madt(&mut buf);
        assert_eq!(parse_buf(&buf), Err(AcpiError::DuplicateWakeup));
    }

    #[test]
    fn local_apic_entries_and_disabled_cpus() {
        let (good, _) = built(3);
        let mut buf = good.clone();
        // CPU 1 disabled; CPU 2 rewritten as two local APIC entries.
        buf[SUBTABLES + 16 + 8] = 0;
        let e = SUBTABLES + 32;
        buf[e..e + 16].copy_from_slice(&[0, 8, 7, 5, 1, 0, 0, 0, 0, 8, 8, 6, 2, 0, 0, 0]);
        refix_madt(&mut buf);
        let mut cpus = Vec::new();
        let info = parse_with(BASE, slice_reader(&buf, BASE), |c| cpus.push(c)).unwrap();
        assert_eq!(info.cpus, 2, "{cpus:?}");
        assert_eq!(cpus.len(), 4);
        assert!(!cpus[1].enabled);
        assert_eq!(
            (cpus[2].apic_id, cpus[2].processor_uid, cpus[2].x2apic),
            (5, 7, false)
        );
        assert!(!cpus[3].enabled && cpus[3].online_capable);
    }

    #[test]
    fn hostile_pointers_are_errors() {
        let (good, layout) = built(2);
        // XSDT pointer far outside memory, and one that wraps.
        for xsdt in [0x1234_5000u64, u64::MAX - 8] {
            let mut buf = good.clone();
            buf[24..32].copy_from_slice(&xsdt.to_le_bytes());
            buf[32] = 0;
            buf[32] = checksum_fix(&buf[..36]);
            assert!(matches!(parse_buf(&buf), Err(AcpiError::Unreadable { .. })));
        }
        // MADT pointer that wraps.
        let mut buf = good.clone();
        let x = (layout.xsdt - BASE) as usize;
        buf[x + 36..x + 44].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        buf[x + 9] = 0;
        buf[x + 9] = checksum_fix(&buf[x..x + 44]);
        assert!(matches!(parse_buf(&buf), Err(AcpiError::Unreadable { .. })));
        // An RSDP below the reader's base.
        assert!(matches!(
            parse(BASE - 16, slice_reader(&good, BASE)),
            Err(AcpiError::Unreadable { .. })
        ));
    }

    #[test]
    fn random_corruption_never_panics() {
        let (good, _) = built(8);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut buf = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % buf.len() as u64) as usize;
                buf[at] = next() as u8;
            }
            // Keep the checksums right half the time so the parser gets
            // past them and meets the corruption itself.
            if next() % 2 == 0 {
                buf[8] = 0;
                buf[8] = checksum_fix(&buf[..20]);
                buf[32] = 0;
                buf[32] = checksum_fix(&buf[..36]);
                refix_madt(&mut buf);
            }
            let _ = parse_buf(&buf);
        }
    }

    #[test]
    fn mailbox_layout() {
        assert_eq!(core::mem::offset_of!(Mailbox, command), 0);
        assert_eq!(firmware_area::SEQUENCE, mailbox_offset::FIRMWARE_AREA);
        assert!(firmware_area::ARRIVED + 8 <= MAILBOX_SIZE as usize);
        assert_eq!(command::ACCEPT_PAGES, 3);
        assert_eq!(APIC_ID_BROADCAST, 0xffff_fffe);
    }

    #[test]
    fn acpi_20_guid() {
        assert_eq!(
            std::format!("{}", crate::guid::ACPI_20_TABLE),
            "8868e871-e4f1-11d3-bc22-0080c73c8881"
        );
    }
}
