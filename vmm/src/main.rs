//! `vmm` binary entry point: everything lives in the library's `cli` module.

fn main() {
    std::process::exit(vmm::cli::main_with(std::env::args_os()));
}
