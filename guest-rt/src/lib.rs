//! The runtime both bare-metal guests share: the TDCALL doorbell and its
//! typed wrappers (`tdcall`), the ABI version check (`abi_check`), console
//! output through GHCI Instruction.IO (`console`, `println!`), fatal errors
//! reported to the host (`fatal`, `fatal!`, the panic handler), an IDT that
//! reports exceptions (`idt`), and numeric command-line words (`param`).
//! (The chaos self-test both guests can run is its own crate,
//! `guest-chaos`.)
//! Position-independent: it works in the fixed-address firmware and in the
//! relocatable kernel, in ring 0 and in ring 3.
#![no_std]

pub mod abi_check;
pub mod console;
pub mod fatal;
pub mod global;
pub mod idt;
pub mod paging;
pub mod param;
pub mod spin;
pub mod stack;
pub mod tdcall;
