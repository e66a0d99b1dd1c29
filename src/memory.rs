//! The allocator's footprint: fewer arenas from the start, and freed memory given back to the
//! system after a cycle.
//!
//! A cycle that plans on a large values file builds a YAML tree of hundreds of thousands of
//! small nodes (a 10 MB file peaks at ~130 MB). Everything is dropped when the cycle ends, but
//! glibc keeps freed memory in its per-thread arenas, so the process stayed at ~140 MB until
//! the next large allocation. `malloc_trim(0)` returns every whole free page of every arena;
//! it costs milliseconds, once per cycle. Other C libraries: nothing to do here.

/// Return the freed heap pages of all arenas to the system (glibc); a no-op elsewhere.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own free lists
    // under its own locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The allocator's settings, before any thread starts (glibc; a no-op elsewhere):
///
/// - Two arenas, where glibc would make up to eight per core. Each thread that allocates under
///   contention gets an arena of its own, and memory freed into one is not reused by another,
///   so a cold scan's peak RSS carried ~5 MB of arenas' slack (1,000 images: 35.7 MB with the
///   default, 30.9 MB with two). Two keep the runtime's workers from contending on one lock.
/// - Allocations of 64 KiB and more get their own mapping, given back when freed. glibc's
///   default starts at 128 KiB and rises to the largest block freed so far, so after a cycle
///   freed a values file's buffers every later file-sized buffer came from the heap and pinned
///   it: a cold `once` committing 10,000 images peaked at 74.6 MiB, 69.0 MiB with this. (A
///   set threshold also keeps the heap's trim threshold at its 128 KiB, where glibc would
///   raise it to twice the mapping threshold.)
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt takes two plain integers and only sets an allocator parameter; called
    // from `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}
