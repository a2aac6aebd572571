//! Reading RSDP -> XSDT -> MADT through a read closure (the kernel reads
//! guest memory, the VMM and the tests a buffer): bounds-checked, so
//! hostile tables are an error, never a panic.

use abi::acpi::*;
use abi::pod::Pod;

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
