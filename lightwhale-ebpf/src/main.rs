//! eBPF programs of lightwhale. Each module contains one program family with
//! the maps it owns.
#![no_std]
#![no_main]

mod activity;
mod entry_counts;
mod steer;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
