//! `cargo xtask build` builds the guests and the VMM; `cargo xtask run --
//! <vmm run args>` also boots a TD with the freshly built firmware and kernel
//! (unless the arguments name their own).

use std::process::{exit, Command};

const USAGE: &str = "usage: cargo xtask build
       cargo xtask run -- [vmm run arguments]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("build") => build().map(|_| 0),
        Some("run") => run(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(0)
        }
        _ => Err(USAGE.to_string()),
    };
    match code {
        Ok(c) => exit(c),
        Err(e) => {
            eprintln!("xtask: {e}");
            exit(2);
        }
    }
}

fn build() -> Result<(xtask::GuestImages, std::path::PathBuf), String> {
    let guests = xtask::build_guests()?;
    let vmm = xtask::build_vmm()?;
    eprintln!(
        "xtask: built {}, {}, {}",
        guests.firmware.display(),
        guests.kernel.display(),
        vmm.display()
    );
    Ok((guests, vmm))
}

fn run(args: &[String]) -> Result<i32, String> {
    let (guests, vmm) = build()?;
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let mut cmd = Command::new(&vmm);
    cmd.arg("run");
    let names = |flag: &str| {
        args.iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    };
    if !names("--firmware") {
        cmd.arg("--firmware").arg(&guests.firmware);
    }
    if !names("--kernel") {
        cmd.arg("--kernel").arg(&guests.kernel);
    }
    cmd.args(args);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {}: {e}", vmm.display()))?;
    Ok(status.code().unwrap_or(1))
}
