//! The allocator's settings for a process that runs the transformer tower: a binary calls
//! [`tune`] at start-up (the `aisle` binary does, first thing in `main`).
//!
//! Why: glibc's malloc hands allocations above its mmap threshold (128 KiB, raised on the fly
//! up to the size of the largest freed block) straight to the kernel, and gives the top of the
//! heap back once more than 128 KiB of it is free. The transformer tower allocates and frees
//! buffers of several MB per op (a batch of 64 titles of 17 tokens is 6.7 MB at the FFN's 1,536
//! wide), so each op faulted in fresh zeroed pages and each free unmapped them again, with a
//! TLB shoot-down on the other core. `perf` on `aisle bench minilm` put about 15% of the time in
//! the kernel's page clearing, faults and cross-core calls. Keeping freed memory in the process
//! (a trim threshold of 1 GiB, an mmap threshold at glibc's 32 MiB maximum) removes that; the
//! cost is that the process keeps its peak heap until it exits.
//!
//! `AISLE_SYSTEM_MALLOC=1` keeps glibc's defaults (to measure the difference).

/// Applies the settings above (glibc on Linux only; a no-op elsewhere). Returns whether they
/// were applied.
pub fn tune() -> bool {
    if std::env::var_os("AISLE_SYSTEM_MALLOC").is_some_and(|v| v == "1") {
        return false;
    }
    imp::tune()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn tune() -> bool {
        // SAFETY: mallopt only changes malloc's parameters (under malloc's own lock), with plain
        // integers in and out; `tune`'s callers call it at start-up, before other threads
        // allocate.
        let (mmap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20),
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30),
            )
        };
        mmap == 1 && trim == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() -> bool {
        false
    }
}
