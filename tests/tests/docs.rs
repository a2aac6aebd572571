//! The reference pages say exactly what the code reads: every `vmm run`
//! flag is in `docs/cli.md` and every flag there exists; every guest
//! command-line word the guests read is in `docs/guest-cmdline.md` and
//! every word there is read by a guest; and every relative link in the
//! README and the pages leads to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests lives one level below the workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The long flags (`--name`) in `text`.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    for (i, _) in text.match_indices("--") {
        let prev_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if prev_ok && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(format!("--{name}"));
        }
    }
    out
}

/// The first column of every table row of `text` that starts with a
/// backquoted item: the item up to its first `=`, space or backquote.
fn table_items(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            l.chars()
                .take_while(|c| !matches!(c, '=' | ' ' | '`' | '\\'))
                .collect()
        })
        .collect()
}

#[test]
fn every_vmm_run_flag_is_in_the_cli_reference_and_back() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_vmm-cli"))
        .args(["run", "--help"])
        .output()
        .expect("vmm run --help");
    assert!(help.status.success());
    let mut code = long_flags(&String::from_utf8_lossy(&help.stdout));
    code.remove("--help");
    let documented = table_items(&read("docs/cli.md"));
    let documented: BTreeSet<String> = documented
        .into_iter()
        .filter(|i| i.starts_with("--"))
        .collect();
    assert!(code.len() > 15, "{code:?}");
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(missing.is_empty(), "flags not in docs/cli.md: {missing:?}");
    assert!(
        stale.is_empty(),
        "docs/cli.md names flags that do not exist: {stale:?}"
    );
}

/// Every key the guests read: `cmdline::get(cmdline, "KEY")`,
/// `param::number(cmdline, "KEY", ..)` and the kernel's `on("KEY")`.
fn guest_words() -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for dir in [
        "guest-fw/src",
        "guest-kernel/src",
        "guest-rt/src",
        "guest-chaos/src",
    ] {
        let mut files = vec![root().join(dir)];
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for pat in ["get(cmdline, \"", "number(cmdline, \"", "on(\""] {
                for (i, _) in text.match_indices(pat) {
                    let rest = &text[i + pat.len()..];
                    if let Some(end) = rest.find('"') {
                        words.insert(rest[..end].to_string());
                    }
                }
            }
        }
    }
    words
}

#[test]
fn every_guest_word_is_in_the_guest_reference_and_back() {
    let code = guest_words();
    let documented = table_items(&read("docs/guest-cmdline.md"));
    assert!(code.len() > 20, "{code:?}");
    for w in ["fw.accept", "accept_memory", "kexec_accept", "seed"] {
        assert!(code.contains(w), "the scan missed {w}: {code:?}");
    }
    let missing: Vec<_> = code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "words not in docs/guest-cmdline.md: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "docs/guest-cmdline.md names words no guest reads: {stale:?}"
    );
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let mut pages = vec![PathBuf::from("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p.strip_prefix(root()).unwrap().to_path_buf());
        }
    }
    for page in pages {
        let text = read(page.to_str().unwrap());
        let dir = root().join(&page).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let target: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
            if target.contains("://") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap();
            assert!(
                dir.join(file).exists(),
                "{}: link to {target} leads nowhere",
                page.display()
            );
        }
    }
}

/// The rows of the table under the heading line `heading` of `text` whose
/// first cell is a number (decimal or 0x hex): that number and the first
/// backquoted item of the second cell.
fn numbered_rows(text: &str, heading: &str) -> BTreeSet<(u64, String)> {
    let mut lines = text.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no heading {heading:?}");
    let mut rows = BTreeSet::new();
    for line in lines.take_while(|l| !l.starts_with('#')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 || !cells[0].is_empty() {
            continue;
        }
        let n = cells[1].trim_matches('`');
        let n = match n.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => n.parse(),
        };
        let Ok(n) = n else { continue };
        let name = cells[2].split('`').nth(1).unwrap_or_else(|| {
            panic!("{heading}: row {line:?} has no backquoted name");
        });
        rows.insert((n, name.to_string()));
    }
    rows
}

/// The names of the `pub const` items of `pub mod module` in an `abi`
/// source file, to check that a test's list of them is complete.
fn const_names(file: &str, module: &str) -> BTreeSet<String> {
    let text = read(file);
    let start = format!("pub mod {module} {{");
    let body = text
        .lines()
        .skip_while(|l| l.trim() != start)
        .skip(1)
        .take_while(|l| l.trim_end() != "}");
    body.filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter(|l| !l.starts_with("fn "))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

fn named(items: &[(u64, &str)]) -> BTreeSet<(u64, String)> {
    items.iter().map(|(n, s)| (*n, s.to_string())).collect()
}

/// Checks a table of the ABI page against `want`, both ways.
fn same_table(doc: &str, heading: &str, want: BTreeSet<(u64, String)>) {
    let have = numbered_rows(doc, heading);
    let missing: Vec<_> = want.difference(&have).collect();
    let stale: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/guest-abi.md `{heading}`: missing {missing:?}, not in abi {stale:?}"
    );
}

#[test]
fn the_guest_abi_page_has_the_numbers_of_abi() {
    use abi::report::{Counter, Mark};
    use abi::tdcall::{leaf, status};
    use abi::tdreport::rtmr_offset;
    use abi::vmcall::{abi_version, emu, fatal_code, ghci, vmcall_status};
    let doc = read("docs/guest-abi.md");

    let leaves = [
        leaf::VP_VMCALL,
        leaf::VP_INFO,
        leaf::MR_RTMR_EXTEND,
        leaf::VP_VEINFO_GET,
        leaf::MR_REPORT,
        leaf::MEM_PAGE_ACCEPT,
        leaf::VM_RD,
        leaf::VM_WR,
        leaf::VP_RD,
        leaf::VP_WR,
        leaf::SYS_RD,
        leaf::MR_VERIFYREPORT,
        leaf::MEM_PAGE_ATTR_WR,
    ];
    assert_eq!(const_names("abi/src/tdcall.rs", "leaf").len(), leaves.len());
    let want = leaves
        .iter()
        .map(|l| (u64::from(*l), leaf::name(*l).to_string()));
    same_table(&doc, "## Leaves", want.collect());

    let statuses = [
        status::SUCCESS,
        status::OPERAND_INVALID,
        status::OPERAND_BUSY,
        status::PAGE_ALREADY_ACCEPTED,
        status::PAGE_SIZE_MISMATCH,
        status::NO_VALID_VE_INFO,
        status::EPT_WALK_FAILED,
        status::INVALID_REPORTMACSTRUCT,
    ];
    let codes: BTreeSet<_> = const_names("abi/src/tdcall.rs", "status")
        .into_iter()
        .filter(|n| !n.starts_with("OPERAND_R") && !n.ends_with("_MASK") && n != "ERROR_BIT")
        .collect();
    assert_eq!(codes.len(), statuses.len(), "{codes:?}");
    let want = statuses.iter().map(|s| (*s, status::name(*s).to_string()));
    same_table(&doc, "### Statuses", want.collect());

    let r10 = [
        (vmcall_status::SUCCESS, "SUCCESS"),
        (vmcall_status::RETRY, "RETRY"),
        (vmcall_status::OPERAND_INVALID, "OPERAND_INVALID"),
        (vmcall_status::GPA_INUSE, "GPA_INUSE"),
        (vmcall_status::ALIGN_ERROR, "ALIGN_ERROR"),
        (vmcall_status::SUBFUNC_UNSUPPORTED, "SUBFUNC_UNSUPPORTED"),
    ];
    let names: BTreeSet<_> = r10.iter().map(|(_, n)| n.to_string()).collect();
    assert_eq!(names, const_names("abi/src/vmcall.rs", "vmcall_status"));
    same_table(&doc, "### VMCALL statuses (R10)", named(&r10));

    let subs = [
        (ghci::INSTRUCTION_CPUID, "INSTRUCTION_CPUID"),
        (ghci::INSTRUCTION_HLT, "INSTRUCTION_HLT"),
        (ghci::INSTRUCTION_IO, "INSTRUCTION_IO"),
        (ghci::INSTRUCTION_RDMSR, "INSTRUCTION_RDMSR"),
        (ghci::INSTRUCTION_WRMSR, "INSTRUCTION_WRMSR"),
        (ghci::VE_REQUEST_MMIO, "VE_REQUEST_MMIO"),
        (ghci::GET_TD_VM_CALL_INFO, "GET_TD_VM_CALL_INFO"),
        (ghci::MAP_GPA, "MAP_GPA"),
        (ghci::GET_QUOTE, "GET_QUOTE"),
        (ghci::REPORT_FATAL_ERROR, "REPORT_FATAL_ERROR"),
        (
            ghci::SETUP_EVENT_NOTIFY_INTERRUPT,
            "SETUP_EVENT_NOTIFY_INTERRUPT",
        ),
    ];
    // The module's other constants are arguments, not sub-functions.
    let arguments = [
        "X2APIC_",
        "ICR_",
        "WAKE_",
        "IO_DIRECTION_",
        "FATAL_",
        "CPUID_",
        "EVENT_NOTIFY_",
    ];
    let names: BTreeSet<_> = const_names("abi/src/vmcall.rs", "ghci")
        .into_iter()
        .filter(|n| !arguments.iter().any(|a| n.starts_with(a)))
        .collect();
    assert_eq!(names, subs.iter().map(|(_, n)| n.to_string()).collect());
    same_table(&doc, "### GHCI sub-functions (R10 = 0)", named(&subs));

    let fatal = [
        (fatal_code::PANIC, "PANIC"),
        (fatal_code::EXCEPTION, "EXCEPTION"),
        (fatal_code::BAD_HOB, "BAD_HOB"),
        (fatal_code::ACCEPT_FAILED, "ACCEPT_FAILED"),
        (fatal_code::NOT_ZERO, "NOT_ZERO"),
        (fatal_code::BAD_CMDLINE, "BAD_CMDLINE"),
        (fatal_code::ABI_VERSION, "ABI_VERSION"),
        (fatal_code::VIRT_EXCEPTION, "VIRT_EXCEPTION"),
    ]
    .map(|(c, n)| (u64::from(c), n));
    let names: BTreeSet<_> = fatal.iter().map(|(_, n)| n.to_string()).collect();
    assert_eq!(names, const_names("abi/src/vmcall.rs", "fatal_code"));
    same_table(&doc, "### Fatal error codes", named(&fatal));

    let vendor = [
        (emu::SHUTDOWN, "SHUTDOWN"),
        (emu::MARK, "MARK"),
        (emu::SYSTEM_TABLE, "SYSTEM_TABLE"),
        (emu::COUNTER, "COUNTER"),
        (emu::CONSOLE_WRITE, "CONSOLE_WRITE"),
        (emu::SEPT_LEVEL, "SEPT_LEVEL"),
        (emu::ABI_VERSION, "ABI_VERSION"),
        (emu::REMOVE_PAGE, "REMOVE_PAGE"),
    ];
    let names: BTreeSet<_> = const_names("abi/src/vmcall.rs", "emu")
        .into_iter()
        .filter(|n| !n.ends_with("_MAX"))
        .collect();
    assert_eq!(names, vendor.iter().map(|(_, n)| n.to_string()).collect());
    same_table(&doc, "## Vendor calls", named(&vendor));

    let marks = (0..=u8::MAX as u64)
        .filter_map(Mark::from_id)
        .map(|m| (m as u64, m.as_str().to_string()));
    same_table(&doc, "### Mark ids", marks.collect());
    let counters = Counter::ALL
        .iter()
        .map(|c| (*c as u64, c.as_str().to_string()));
    same_table(&doc, "### Counter ids", counters.collect());

    // The version, its encoding, and the numbers the prose gives.
    let (major, minor) = (abi_version::MAJOR, abi_version::MINOR);
    let facts = [
        format!("**ABI version {major}.{minor}**"),
        format!("`{:#x}` for version {major}.{minor}", abi_version::CURRENT),
        format!("host ABI {major}.{minor}, guest built for {major}.{minor}"),
        format!("port `{:#x}`", abi::tdcall::DOORBELL_PORT),
        format!("`out {:#x}, al`", abi::tdcall::DOORBELL_PORT),
        format!(
            "`{}` (`TDCALL_INSN`",
            abi::tdcall::TDCALL_INSN
                .map(|b| format!("{b:02X}"))
                .join(" ")
        ),
        format!(
            "`{}` (`TDCALL_PATCH`)",
            abi::tdcall::TDCALL_PATCH
                .map(|b| format!("{b:02X}"))
                .join(" ")
        ),
        format!("R10 = `{:#x}`", abi::vmcall::VENDOR_EMU),
        format!("bits of `{:#x}`", abi::vmcall::EXPOSABLE_MASK),
        format!("RCX = `{:#x}`", abi::vmcall::EXPOSE_R10_R15),
        format!("ICR (`{:#x}`)", ghci::X2APIC_ICR),
        format!("vector `{:#x}`", ghci::WAKE_VECTOR),
        format!("x2APIC SVR (`{:#x}`)", ghci::X2APIC_SVR),
        format!("`{:#x}` at start", ghci::X2APIC_SVR_RESET),
        format!("`{:#x}`), which", ghci::X2APIC_SVR_WRITABLE),
        format!("index port `{:#x}`", abi::vmcall::CMOS_INDEX_PORT),
        format!("data port `{:#x}`", abi::vmcall::CMOS_DATA_PORT),
        format!("one of {} bytes", abi::vmcall::CMOS_LEN),
        format!(
            "leaves `{:#x}` and `{:#x}`",
            ghci::CPUID_LEAF_TOPOLOGY,
            ghci::CPUID_LEAF_TOPOLOGY_V2
        ),
        format!(
            "vector, {} to {}",
            ghci::EVENT_NOTIFY_VECTOR_MIN,
            ghci::EVENT_NOTIFY_VECTOR_MAX
        ),
        format!(
            "{}-byte aligned (`EXTEND_ALIGN`)",
            abi::tdreport::EXTEND_ALIGN
        ),
        format!(
            "| {}, {}, {}, {} |",
            rtmr_offset(0),
            rtmr_offset(1),
            rtmr_offset(2),
            rtmr_offset(3)
        ),
        format!(
            "`{:#x}`-`{:#x}`",
            abi::vmcall::COM1_BASE,
            abi::vmcall::COM1_BASE + abi::vmcall::COM1_LEN - 1
        ),
        format!("1 to {}", emu::CONSOLE_WRITE_MAX),
        format!("most {} bytes read", ghci::FATAL_MESSAGE_MAX),
        format!(
            "`[{:#x}, {:#x})`",
            abi::layout::FIRMWARE_BASE,
            abi::layout::FIRMWARE_BASE + abi::layout::FIRMWARE_MAX_SIZE
        ),
        format!("version `{:#x}`", abi::hob::HANDOFF_VERSION),
        format!("at most {}", abi::hob::MAX_CMDLINE_LEN),
        format!("at most {} KiB", abi::hob::MAX_HOB_LIST_BYTES / 1024),
        format!("`{}` (`PAYLOAD_INFO`)", abi::guid::PAYLOAD_INFO),
        format!("magic `{:#x}`", abi::boot::BOOT_INFO_MAGIC),
        format!("signature `{:#x}`", abi::boot::SYSTEM_TABLE_SIGNATURE),
        format!(
            "`{:#04x}`, `{:#04x}` (ring 0)",
            abi::layout::selector::CODE64_RING0,
            abi::layout::selector::DATA_RING0
        ),
        format!(
            "`{:#04x}`, `{:#04x}` (ring 3)",
            abi::layout::selector::CODE64_RING3,
            abi::layout::selector::DATA_RING3
        ),
    ];
    // Prose wraps: compare with every run of white space as one space.
    let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for fact in facts {
        assert!(flat.contains(&fact), "docs/guest-abi.md lacks {fact:?}");
    }
}
