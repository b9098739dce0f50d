//! port-monitor's kernel programs.
//!
//! The rule here is cost (docs/how-it-works.md, "What a hook costs"): the programs run in the
//! path of every connection on the node. The hot path counts in per-CPU maps and returns; only
//! rare events (a failed connect or bind) read more of the socket and send a record.
#![no_std]
#![no_main]
#![expect(
    clippy::doc_markdown,
    reason = "kernel state, errno and function names read better unquoted in these notes"
)]

mod kernel;
mod maps;
mod probes;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
