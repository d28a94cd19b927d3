//! podkit's global allocator: mimalloc, asked the way its fast path wants.
//!
//! podkit's only unsafe code, kept in a crate of its own so every other crate still forbids
//! it: a `GlobalAlloc` is an unsafe trait over raw pointers. Used by podproxy, whose requests allocate and free dozens of small
//! and medium buffers each.
//!
//! The `mimalloc` crate hands every Rust allocation to `mi_malloc_aligned`, with the layout's
//! alignment. mimalloc v3 serves that from its small-block fast path only for sizes up to
//! `MI_SMALL_SIZE_MAX` (1 KiB) whose free block happens to be aligned; every larger request
//! (hyper's read and write buffers, header maps) takes the aligned generic path, which
//! over-allocates. Under wrk that path ran about four times per proxied request, some 900
//! instructions of podproxy's 32k (callgrind). A plain `mi_malloc` already returns what such
//! layouts need: mimalloc is a drop-in `malloc`, so its blocks are aligned to
//! `MI_MAX_ALIGN_SIZE` (16, `sizeof(max_align_t)`) from 16 bytes up, and every block is at least
//! word-aligned (bins are multiples of 8 from a 16-aligned page start). Only alignments beyond
//! that keep the aligned calls. The same fix is proposed upstream
//! (purpleprotocol/mimalloc_rust#170) and was made in reussir-lang/reussir#339.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this size has (`MI_MAX_ALIGN_SIZE`).
const MAX_ALIGN: usize = 16;
/// The alignment every mimalloc block has, whatever its size.
const WORD: usize = std::mem::size_of::<usize>();

/// True when a plain `mi_malloc(size)` is aligned enough for `align`.
#[inline]
fn plain_will_do(size: usize, align: usize) -> bool {
    align <= WORD || (align <= MAX_ALIGN && size >= MAX_ALIGN)
}

/// mimalloc through its unaligned entry points wherever they suffice.
pub struct MiMalloc;

// SAFETY: every pointer comes from mimalloc and goes back to it (`mi_free` takes blocks from
// the aligned and the plain calls alike); a plain call is used only where its alignment
// guarantee covers the layout, as `plain_will_do` checks.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_will_do(layout.size(), layout.align()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_will_do(layout.size(), layout.align()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_will_do(new_size, layout.align()) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (size, alignment) the rule sends to the plain calls comes back aligned, through
    /// alloc, alloc_zeroed and realloc, across mimalloc's bins (small, medium, large).
    #[test]
    fn plain_calls_are_aligned_where_they_are_used() {
        let a = MiMalloc;
        let mut sizes: Vec<usize> = (1..=300).collect();
        sizes.extend([
            511,
            512,
            1000,
            1024,
            1025,
            4096,
            8191,
            8192,
            65536,
            70000,
            1 << 20,
            5 << 20,
        ]);
        for &align in &[1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} align {align}");
                    p.write_bytes(0xAB, size);
                    let p = a.realloc(p, layout, size * 3 + 7);
                    assert_eq!(p as usize % align, 0, "realloc {size} align {align}");
                    assert_eq!(*p, 0xAB, "realloc kept the bytes");
                    a.dealloc(
                        p,
                        Layout::from_size_align(size * 3 + 7, align).expect("a valid layout"),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn the_rule_keeps_aligned_calls_for_large_alignments() {
        assert!(plain_will_do(1, 1));
        assert!(plain_will_do(4, 8));
        assert!(plain_will_do(16, 16));
        assert!(!plain_will_do(8, 16));
        assert!(!plain_will_do(4096, 32));
        assert!(!plain_will_do(128, 128));
    }
}
