//! The `vmm run` command line and the size grammar: any arguments parse
//! into a configuration or an error message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = vmm::internals::parse_size(&text);
    let mut args = vec!["vmm".to_string(), "run".into(), "--firmware".into(), "fw.elf".into()];
    args.extend(text.split('\0').take(16).map(String::from));
    let _ = vmm::internals::parse_run_args(args);
});
