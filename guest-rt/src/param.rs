//! Numeric command-line words both guests read (`seed=`, `count=`,
//! `accept_retry=`, `kexec=`...): the value, a default when absent, and a
//! fatal error naming the word when it is not a number.

use crate::fatal::code;
use abi::cmdline;

/// The number `key=N` in `cmdline` (size suffixes allowed), or `default`.
pub fn number(cmdline: &str, key: &str, default: u64) -> u64 {
    match cmdline::get(cmdline, key).map(cmdline::parse_size) {
        None => default,
        Some(Ok(n)) => n,
        Some(Err(_)) => crate::fatal!(code::BAD_CMDLINE, "{key}= expects a number"),
    }
}
