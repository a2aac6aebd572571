//! The `vmm` command line, built inside the test package (see Cargo.toml).

fn main() {
    std::process::exit(vmm::cli::main_with(std::env::args_os()));
}
