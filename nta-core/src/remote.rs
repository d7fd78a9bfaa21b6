//! The remote-free queue: frees made on a shard that does not own the chunk.
//!
//! # Protocol
//!
//! Each shard has one intrusive multi-producer, single-consumer queue (NTA's
//! "queue for frees made on another CPU"; snmalloc and mimalloc's
//! `thread_free` list work the same way). The link lives in the freed chunk
//! itself, so pushing allocates nothing:
//!
//! - **push_chain** (any thread): the caller links its chunks first
//!   ([`Chain`]); write `next = head` into the last one, then CAS `head`
//!   from `next` to the first, with `Release` so the owner sees the links
//!   (and the chunks' final contents) once it sees the first. One CAS and
//!   one counter update for the lot, so a thread handing back a batch (a
//!   thread cache's overflow) takes the owner's queue line once, not once
//!   per chunk (snmalloc's remote cache and mimalloc's delayed free batch,
//!   for the same reason). **push** is a chain of one.
//! - **take_all** (the owner, holding its shard): swap `head` with null,
//!   `Acquire`, and walk the detached list at leisure.
//!
//! Because the consumer only ever detaches the whole list, the classic ABA
//! problem of Treiber stacks cannot arise: a node is never popped and
//! re-pushed while a producer holds a stale `head` that points at it (a
//! chunk is pushed at most once per allocation, and can be re-allocated only
//! after the owner detached and freed it).
//!
//! Each queued chunk stores three words (every chunk has at least four):
//! the link, its parked mark (see `mark`), and the length the caller
//! passed to `free_sized` (or `usize::MAX` when unknown). The link words
//! are plain memory written before the publishing CAS and read after the
//! consuming swap; they go through `crate::sync::{cell_write, cell_read}`
//! so that the loom model tracks them as cells.

use crate::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use crate::sync::{cell_read, cell_write};
use std::ptr;

/// Link words written into a queued chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RemoteLink {
    pub next: *mut RemoteLink,
    pub mark: u64,
    pub len: usize,
}

/// One shard's queue of chunks freed elsewhere.
#[derive(Debug)]
pub struct RemoteQueue {
    head: AtomicPtr<RemoteLink>,
    /// Chunks ever pushed (producers' counter).
    pushed: AtomicU64,
}

impl Default for RemoteQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteQueue {
    /// An empty queue. (Not `const`: loom's atomics have no const `new`.)
    pub fn new() -> Self {
        Self { head: AtomicPtr::new(ptr::null_mut()), pushed: AtomicU64::new(0) }
    }

    /// Pushes a chunk, writing `mark` and `len` into it. Lock-free: retries
    /// only when another push or the owner's `take_all` changed `head` in
    /// between.
    ///
    /// # Safety
    /// `chunk` must be a live chunk of at least 24 bytes that the caller
    /// gives up, aligned for pointers, and not already queued.
    #[inline]
    pub unsafe fn push(&self, chunk: *mut u8, len: usize, mark: u64) {
        let mut one = Chain::default();
        // SAFETY: forwarded from the caller.
        unsafe {
            one.add(chunk, len, mark);
            self.push_chain(&one);
        }
    }

    /// Pushes every chunk of `chain` (at least one) with one CAS.
    ///
    /// # Safety
    /// The chain's chunks must be as for [`RemoteQueue::push`], and linked
    /// by [`Chain::add`] only.
    #[inline]
    pub unsafe fn push_chain(&self, chain: &Chain) {
        debug_assert!(chain.count > 0);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the chain's chunks are ours until the CAS publishes
            // them; only the last one's link changes.
            unsafe { cell_write(chain.last, RemoteLink { next: head, mark: chain.last_mark, len: chain.last_len }) };
            // Release: every link written by `Chain::add` and the one above
            // happen-before the owner's Acquire swap that observes `first`.
            match self.head.compare_exchange_weak(head, chain.first, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        self.pushed.fetch_add(chain.count, Ordering::Relaxed);
    }

    /// Whether the queue looks empty (a racy hint for the owner's fast path).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Detaches every queued chunk; returns the first (null when empty).
    /// Walk the list with [`RemoteQueue::link`].
    #[inline]
    pub fn take_all(&self) -> *mut RemoteLink {
        // Acquire pairs with the Release CAS of every push in the list.
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// The link words of a detached node.
    ///
    /// # Safety
    /// `node` must be on a list returned by [`RemoteQueue::take_all`] and
    /// not yet reused.
    #[inline]
    pub unsafe fn link(node: *mut RemoteLink) -> RemoteLink {
        // SAFETY: per the caller, the push's writes happen-before this read.
        unsafe { cell_read(node) }
    }

    /// Chunks pushed so far.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }
}

/// Chunks linked for one [`RemoteQueue::push_chain`], newest first.
#[derive(Debug)]
pub struct Chain {
    first: *mut RemoteLink,
    last: *mut RemoteLink,
    last_mark: u64,
    last_len: usize,
    count: u64,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { first: ptr::null_mut(), last: ptr::null_mut(), last_mark: 0, last_len: 0, count: 0 }
    }
}

impl Chain {
    /// Links `chunk` in front, writing `mark` and `len` into it.
    ///
    /// # Safety
    /// As for [`RemoteQueue::push`]; the chunk is given up to the chain.
    #[inline]
    pub unsafe fn add(&mut self, chunk: *mut u8, len: usize, mark: u64) {
        let node = chunk.cast::<RemoteLink>();
        // SAFETY: the caller gives the chunk up; no one else reads it until
        // the chain is pushed.
        unsafe { cell_write(node, RemoteLink { next: self.first, mark, len }) };
        if self.count == 0 {
            (self.last, self.last_mark, self.last_len) = (node, mark, len);
        }
        self.first = node;
        self.count += 1;
    }

    /// Whether no chunk is linked.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
