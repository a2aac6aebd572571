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
    for dir in ["guest-fw/src", "guest-kernel/src", "guest-rt/src"] {
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
