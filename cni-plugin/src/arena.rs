//! The plugin process's allocator: a bump arena that never frees, then the system's.
//!
//! A CNI invocation is one short process that allocates a few hundred KiB and exits.
//! musl's allocator (the shipped plugin is static musl) maps and unmaps pages as small
//! blocks come and go: a perf profile of ADD found 35 `mmap` and 22 `munmap` calls per
//! invocation, and since the process has a second thread (the pod namespace's netlink
//! socket is made on one), each `munmap` flushes the other CPU's TLB with an IPI, a VM
//! exit on a virtual machine. Here an allocation is a pointer bump in a zero page of
//! `.bss`, and a free is nothing: the process's exit returns it all. Past the arena (an
//! unusually large request), allocations go to the system allocator as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Far more than an invocation uses (a few hundred KiB); pages never touched cost nothing.
const ARENA_BYTES: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: the bytes are only reached through pointers `BumpArena::alloc` hands out, each
// to a disjoint range claimed with an atomic compare-exchange.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
/// Offset of the arena's first unclaimed byte.
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct BumpArena;

impl BumpArena {
    fn base() -> usize {
        ARENA.0.get() as usize
    }

    fn owns(ptr: *mut u8) -> bool {
        let at = ptr as usize;
        at >= Self::base() && at < Self::base() + ARENA_BYTES
    }

    /// Claim `layout`'s bytes in the arena; `None` when they do not fit.
    fn claim(layout: Layout) -> Option<*mut u8> {
        let base = Self::base();
        let mut next = NEXT.load(Ordering::Relaxed);
        loop {
            let start = (base + next).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size())?;
            if end > ARENA_BYTES {
                return None;
            }
            match NEXT.compare_exchange_weak(next, end, Ordering::Relaxed, Ordering::Relaxed) {
                // Derived from the arena's own pointer, so it keeps its provenance.
                Ok(_) => return Some(ARENA.0.get().cast::<u8>().wrapping_add(start)),
                Err(now) => next = now,
            }
        }
    }
}

// SAFETY: `alloc` returns either a range of the arena no other allocation overlaps
// (claimed atomically, aligned as asked, never handed out twice) or the system
// allocator's block; `dealloc` passes the system's blocks back to it and leaves the
// arena's alone (never reused, so never aliased).
unsafe impl GlobalAlloc for BumpArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::claim(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract (a non-zero size) is passed on unchanged.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::claim(layout) {
            // Arena bytes start zero and are never handed out twice.
            Some(ptr) => ptr,
            // SAFETY: as for `alloc`.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::owns(ptr) {
            // SAFETY: not the arena's, so the system allocator made it with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_aligned_disjoint_and_zeroed() {
        let small = Layout::from_size_align(3, 1).unwrap();
        let wide = Layout::from_size_align(64, 64).unwrap();
        let a = BumpArena::claim(small).unwrap();
        let b = BumpArena::claim(wide).unwrap();
        assert_eq!(b as usize % 64, 0);
        assert!(b as usize >= a as usize + 3);
        assert!(BumpArena::owns(a) && BumpArena::owns(b));
        // SAFETY: `b` is a fresh claim of 64 bytes.
        assert!(
            unsafe { std::slice::from_raw_parts(b, 64) }
                .iter()
                .all(|&x| x == 0)
        );
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let huge = Layout::from_size_align(ARENA_BYTES + 1, 8).unwrap();
        assert!(BumpArena::claim(huge).is_none());
    }
}
