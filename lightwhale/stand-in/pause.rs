//! The only process of a stand-in container: it waits for signals forever
//! with next to no memory (a few KiB resident), without any library.
//!
//! Built by the daemon's build script as a static executable without the
//! standard library, and embedded in the daemon, which imports it into the
//! stand-in image.
#![no_std]
#![no_main]

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Entry point: sleeps in `pause(2)`, or `ppoll(2)` where there is no
/// `pause`, for the lifetime of the container. Docker ends it with SIGKILL.
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    loop {
        wait_for_signal();
    }
}

#[cfg(target_arch = "x86_64")]
fn wait_for_signal() {
    const SYS_PAUSE: usize = 34;
    // SAFETY: pause takes no arguments and only returns on a signal.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") SYS_PAUSE => _, lateout("rcx") _, lateout("r11") _);
    }
}

#[cfg(target_arch = "aarch64")]
fn wait_for_signal() {
    const SYS_PPOLL: usize = 73;
    // SAFETY: ppoll with no descriptors and no timeout only returns on a
    // signal.
    unsafe {
        core::arch::asm!(
            "svc 0",
            inlateout("x0") 0usize => _,
            in("x1") 0usize,
            in("x2") 0usize,
            in("x3") 0usize,
            in("x8") SYS_PPOLL,
        );
    }
}
