//! Fixed-size arrays of metadata in their own anonymous mapping.
//!
//! nta-core never asks the Rust global allocator for memory, because it can
//! itself *be* the global allocator (`NtaGlobal`). Shards and node metadata
//! therefore live in `MAP_NORESERVE` mappings made here: pages that are never
//! touched (metadata of segments that were never mapped) cost no RSS.

use crate::sys;
use std::io;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

/// `len` values of `T` in a private anonymous mapping.
pub struct MetaArray<T> {
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: MetaArray owns its values like a Box<[T]> does.
unsafe impl<T: Send> Send for MetaArray<T> {}
// SAFETY: shared access only hands out &T, like &[T].
unsafe impl<T: Sync> Sync for MetaArray<T> {}

impl<T> MetaArray<T> {
    /// Maps room for `len` values, each initialised by `init(i)`.
    pub fn new(len: usize, mut init: impl FnMut(usize) -> T) -> io::Result<Self> {
        let bytes = Self::bytes_for(len);
        let raw = sys::map_anonymous(bytes)?.cast::<T>();
        for i in 0..len {
            // SAFETY: `raw` has room for `len` values and is suitably aligned
            // (mmap returns page-aligned memory; `T`'s alignment is checked).
            unsafe { raw.as_ptr().add(i).write(init(i)) };
        }
        Ok(Self { ptr: raw, len, _owns: PhantomData })
    }

    /// Maps room for `len` values whose all-zero bit pattern is a valid,
    /// initial value. Untouched pages stay unbacked.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T`.
    pub unsafe fn zeroed(len: usize) -> io::Result<Self> {
        let raw = sys::map_anonymous(Self::bytes_for(len))?.cast::<T>();
        Ok(Self { ptr: raw, len, _owns: PhantomData })
    }

    fn bytes_for(len: usize) -> usize {
        assert!(std::mem::align_of::<T>() <= 4096);
        (len.max(1) * std::mem::size_of::<T>()).next_multiple_of(4096)
    }

    /// Bytes of address space the array occupies.
    pub fn mapped_bytes(&self) -> usize {
        Self::bytes_for(self.len)
    }
}

impl<T> Deref for MetaArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialised values owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for MetaArray<T> {
    fn drop(&mut self) {
        // SAFETY: the values are initialised and are not used after this.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len));
            sys::unmap(self.ptr.cast(), Self::bytes_for(self.len));
        }
    }
}

impl<T> std::fmt::Debug for MetaArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaArray").field("len", &self.len).finish()
    }
}
