//! The builder and the parser against each other, and against ACPI's
//! layout byte for byte; every malformed table the parser must refuse.

extern crate std;
use super::build::MADT_OFFSET;
use super::*;
use abi::acpi::*;
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
        std::format!("{}", abi::guid::ACPI_20_TABLE),
        "8868e871-e4f1-11d3-bc22-0080c73c8881"
    );
}
