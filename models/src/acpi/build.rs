//! Writing RSDP -> XSDT -> MADT into a caller's buffer for a number of
//! CPUs and a wakeup mailbox (the firmware publishes them).

use abi::acpi::*;
use abi::pod::Pod;

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

pub(super) const XSDT_OFFSET: usize = RSDP_LEN.next_multiple_of(16);
pub(super) const MADT_OFFSET: usize = (XSDT_OFFSET + SDT_LEN + 8).next_multiple_of(8);

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
