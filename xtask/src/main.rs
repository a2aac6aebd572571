//! `cargo xtask build` builds the guests and the VMM; `cargo xtask run --
//! <vmm run args>` also boots a TD with the freshly built firmware and kernel
//! (unless the arguments name their own).

use std::process::{exit, Command};
use xtask::{Result, XtaskError};

const USAGE: &str = "usage: cargo xtask build
       cargo xtask run -- [vmm run arguments]
       cargo xtask bench [--quick] [--sizes 1,4,16,64] [--repeats N] [--profiles auto,standard] [--out DIR]
       cargo xtask bench --micro [--profiles auto,standard] [--out DIR]
       cargo xtask bench --vcpus [--quick] [--repeats N] [--profiles auto] [--out DIR]
       cargo xtask bench --sept [--quick] [--repeats N] [--profiles auto] [--out DIR]
       cargo xtask bench --leaves [--quick] [--profiles auto,standard] [--out DIR]
       cargo xtask bench --orders [--quick] [--sizes 4,64] [--repeats N] [--profiles auto] [--out DIR]
       cargo xtask bench --flat [--quick] [--sizes 1,4,...,65536] [--repeats N] [--profiles auto] [--baseline DIR] [--out DIR]
       cargo xtask bench --replot DIR
       cargo xtask limits [--mems 1G,1T,64T] [--cpus 1,64]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("build") => build().map(|_| 0),
        Some("run") => run(&args[1..]),
        Some("bench") => bench(&args[1..]).map(|_| 0),
        Some("limits") => limits(&args[1..]).map(|_| 0),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(0)
        }
        Some(other) => Err(XtaskError::Usage(format!("unknown command `{other}`"))),
        None => Err(XtaskError::Usage("no command given".into())),
    };
    match code {
        Ok(c) => exit(c),
        Err(e) => {
            eprintln!("xtask: {}", e.chain());
            if e.is_usage() {
                eprintln!("{USAGE}");
            }
            exit(2);
        }
    }
}

fn build() -> Result<(xtask::GuestImages, std::path::PathBuf)> {
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

fn run(args: &[String]) -> Result<i32> {
    let (guests, vmm) = build()?;
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    let mut cmd = Command::new(&vmm);
    cmd.arg("run");
    let names = |flag: &str| {
        args.iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    };
    // Our kernel goes with our firmware; a firmware of the user's (a TDVF
    // image such as td-shim's carries its own payload) runs as given.
    if !names("--firmware") {
        cmd.arg("--firmware").arg(&guests.firmware);
        if !names("--kernel") {
            cmd.arg("--kernel").arg(&guests.kernel);
        }
    }
    cmd.args(args);
    // The stop signals (SIGINT, SIGTERM, SIGHUP, SIGUSR1... see the VMM's
    // signal policy) go to the VMM, which stops the guest and still writes
    // its report; this process waits for it and returns its status.
    let stop = vmm::internals::stop_signals();
    forward_stop_signals(&stop);
    // The VMM starts with the stop signals blocked and unblocks them once
    // its handlers are in: a signal in its first instants is then held,
    // not fatal (its default action would leave no report).
    use std::os::unix::process::CommandExt;
    let blocked = stop.clone();
    // SAFETY: sigemptyset, sigaddset and sigprocmask are async-signal-safe
    // and touch only this stack's set (`blocked` was built before the fork).
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &sig in &blocked {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| XtaskError::Spawn {
        program: vmm.clone(),
        source,
    })?;
    let mut forwarded = 0;
    loop {
        let status = child.try_wait().map_err(|source| XtaskError::Wait {
            program: vmm.clone(),
            source,
        })?;
        if let Some(status) = status {
            // Killed by a signal (before its handlers were in): 128 + N.
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(1));
        }
        let sig = STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
        if sig != 0 && sig != forwarded {
            // A pid always fits pid_t (the kernel hands out no larger ones).
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, sig) };
            }
            forwarded = sig;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, std::sync::atomic::Ordering::SeqCst);
}

fn forward_stop_signals(stop: &[i32]) {
    let handler = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for &sig in stop {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, handler) };
    }
}

fn limits(args: &[String]) -> Result<()> {
    let value = |flag: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let mems = value("--mems", "1G,1T,64T");
    let mems: Vec<&str> = mems.split(',').collect();
    let cpus = value("--cpus", "1,64")
        .split(',')
        .map(|c| {
            c.parse::<u32>().map_err(|e| XtaskError::BadValue {
                flag: "--cpus",
                value: c.to_string(),
                source: Box::new(e),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = xtask::limits::measure(&mems, &cpus)?;
    print!("{}", xtask::limits::table(&rows));
    let count = rows.iter().map(|r| r.bad_statuses.len()).sum();
    if count > 0 {
        return Err(XtaskError::NotCleanRefusal { count });
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let root = xtask::workspace_root();
    if let Some(i) = args.iter().position(|a| a == "--replot") {
        let dir = args
            .get(i + 1)
            .ok_or_else(|| XtaskError::Usage("--replot needs a directory".into()))?;
        return xtask::bench::replot(std::path::Path::new(dir));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let micro = args.iter().any(|a| a == "--micro");
    let vcpus_only = args.iter().any(|a| a == "--vcpus");
    let sept_only = args.iter().any(|a| a == "--sept");
    let leaves_only = args.iter().any(|a| a == "--leaves");
    let orders_only = args.iter().any(|a| a == "--orders");
    let flat_only = args.iter().any(|a| a == "--flat");
    let mut baseline: Option<std::path::PathBuf> = None;
    let mut cfg = if quick {
        xtask::bench::BenchConfig::quick(root.join("target").join("bench-quick"))
    } else {
        xtask::bench::BenchConfig::full(root.join("bench"))
    };
    let mut it = args.iter().filter(|a| {
        !matches!(
            a.as_str(),
            "--quick" | "--micro" | "--vcpus" | "--sept" | "--leaves" | "--orders" | "--flat"
        )
    });
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| XtaskError::Usage(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--sizes" => {
                cfg.sizes_gib = value()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .trim_end_matches(['G', 'g'])
                            .parse::<u64>()
                            .map_err(|e| XtaskError::BadValue {
                                flag: "--sizes",
                                value: s.to_string(),
                                source: Box::new(e),
                            })
                    })
                    .collect::<Result<_>>()?
            }
            "--repeats" => {
                let v = value()?;
                cfg.repeats = v.parse().map_err(|e| XtaskError::BadValue {
                    flag: "--repeats",
                    value: v.clone(),
                    source: Box::new(e),
                })?
            }
            "--profiles" => cfg.profiles = value()?.split(',').map(str::to_string).collect(),
            "--out" => cfg.out = value()?.into(),
            "--baseline" if flat_only => baseline = Some(value()?.into()),
            other => return Err(XtaskError::Usage(format!("unknown bench argument {other}"))),
        }
    }
    if cfg.sizes_gib.is_empty() || cfg.repeats == 0 || cfg.profiles.is_empty() {
        return Err(XtaskError::Usage(
            "bench needs at least one size, one repeat and one profile".into(),
        ));
    }
    if micro {
        xtask::bench::micro(&cfg.out, &cfg.profiles)?;
        return xtask::bench::targets::write(&cfg.out);
    }
    if flat_only {
        // Its own sizes (1 GiB to 64 TiB) and repeats unless given.
        let sizes = if args.iter().any(|a| a == "--sizes") {
            cfg.sizes_gib.clone()
        } else if quick {
            vec![1, 64]
        } else {
            xtask::bench::flat::SIZES_GIB.to_vec()
        };
        let repeats = if args.iter().any(|a| a == "--repeats") {
            cfg.repeats
        } else if quick {
            1
        } else {
            7
        };
        xtask::bench::flat::flat(
            &cfg.out,
            &cfg.profiles,
            repeats,
            &sizes,
            baseline.as_deref(),
        )?;
        return xtask::bench::targets::write(&cfg.out);
    }
    if orders_only {
        // Its own sizes (4 and 64 GiB) and repeats unless given.
        let sizes = if args.iter().any(|a| a == "--sizes") {
            cfg.sizes_gib.clone()
        } else {
            vec![4, 64]
        };
        let repeats = if args.iter().any(|a| a == "--repeats") {
            cfg.repeats
        } else if quick {
            1
        } else {
            5
        };
        xtask::bench::orders::orders(&cfg.out, &cfg.profiles[0], repeats, &sizes)?;
        return Ok(());
    }
    if leaves_only {
        xtask::bench::leaves::leaves(&cfg.out, &cfg.profiles, !cfg.leaves_full)?;
        return Ok(());
    }
    if sept_only {
        // The host page-size axis alone (repeats follow --repeats when given).
        let repeats = if args.iter().any(|a| a == "--repeats") {
            cfg.repeats
        } else {
            cfg.sept_repeats
        };
        xtask::bench::sept::sept(&cfg.out, &cfg.profiles, repeats, &cfg.sept_counts)?;
        return xtask::bench::targets::write(&cfg.out);
    }
    if vcpus_only {
        // The vCPU axis alone (its repeats follow --repeats when given).
        let repeats = if args.iter().any(|a| a == "--repeats") {
            cfg.repeats
        } else {
            cfg.vcpu_repeats
        };
        xtask::bench::vcpu_axis(&cfg.out, &cfg.profiles[0], repeats, &cfg.vcpu_counts)?;
        return xtask::bench::targets::write(&cfg.out);
    }
    xtask::bench::run(&cfg)
}
