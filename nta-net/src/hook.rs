//! The published-buffer hook: every rx and tx buffer of every backend, with
//! its [`Flow`], offered to whoever subscribed. The zero-copy sniffer plugs in
//! here.
//!
//! # Cost when nobody listens
//!
//! [`publish`] is `#[inline]` and is one relaxed load of a global flag and one
//! predictable branch. The flow is passed as a closure, so a backend does not
//! even build it (socket addresses are 28-byte copies) unless someone
//! listens. Everything else lives in the cold `publish_slow`.
//!
//! # Ordering
//!
//! `ACTIVE` is a hint, read `Relaxed`: a buffer published while a subscriber
//! is being added or removed may or may not reach it, which is the usual
//! contract of a packet tap. The subscriber list itself is behind a
//! read-write lock, so a subscriber that was seen is complete.
//!
//! # Invariant
//!
//! `ACTIVE == !SUBSCRIBERS.is_empty()`, kept under the write lock.
//!
//! # What a subscriber gets
//!
//! `data` borrows the buffer for the duration of the call only. For a pool
//! buffer it lies inside the pool's shared memory (`pool.locate(ptr)`), so
//! the exporter ([`crate::export`]) publishes a descriptor of where it lies
//! instead of copying it, and holds the chunk while a reader needs it. A
//! TCP buffer also comes with its stream offset: how many bytes the
//! connection carried in that direction before it, which is what a pcap
//! writer needs for TCP sequence numbers.
//!
//! # Batch time
//!
//! A driver that handles completions in batches (one wait of its event
//! loop, then every event it returned) calls [`begin_batch`] after each
//! wait. While someone listens, that stores the wait's end on the calling
//! thread, and [`batch_time`] gives it to subscribers: every buffer of the
//! batch is stamped with the moment its batch was seen, read once per
//! batch instead of once per buffer (a clock read was a quarter of the
//! exporter's cost per packet). A thread whose driver does not batch
//! (tokio's) has no batch time, and its subscribers read the clock.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::Flow;

/// Receives every published buffer. Called on the I/O thread: keep it short.
pub trait Subscriber: Send + Sync + 'static {
    /// One rx or tx buffer of `flow`.
    fn on_buffer(&self, flow: &Flow, data: &[u8]);

    /// One rx or tx buffer of `flow`, with its stream offset for TCP (see
    /// the module notes). By default, [`Subscriber::on_buffer`].
    fn on_packet(&self, flow: &Flow, data: &[u8], stream_offset: Option<u64>) {
        let _ = stream_offset;
        self.on_buffer(flow, data)
    }
}

impl<F> Subscriber for F
where
    F: Fn(&Flow, &[u8]) + Send + Sync + 'static,
{
    fn on_buffer(&self, flow: &Flow, data: &[u8]) {
        self(flow, data)
    }
}

type SubscriberList = Vec<(u64, Arc<dyn Subscriber>)>;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static SUBSCRIBERS: RwLock<SubscriberList> = parking_lot::const_rwlock(Vec::new());

/// Keeps a subscriber registered; dropping it unsubscribes.
#[derive(Debug)]
#[must_use = "dropping the subscription unsubscribes at once"]
pub struct Subscription {
    id: u64,
}

/// Registers `subscriber` for every buffer of every backend in this process.
pub fn subscribe(subscriber: Arc<dyn Subscriber>) -> Subscription {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut list = SUBSCRIBERS.write();
    list.push((id, subscriber));
    ACTIVE.store(true, Ordering::Relaxed);
    Subscription { id }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut list = SUBSCRIBERS.write();
        list.retain(|(id, _)| *id != self.id);
        ACTIVE.store(!list.is_empty(), Ordering::Relaxed);
    }
}

/// True when at least one subscriber is registered.
#[inline]
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

thread_local! {
    /// When the calling thread's current batch began; `None` outside a
    /// batch, or when nobody listened as it began.
    static BATCH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A driver begins a batch of completions (see the module notes); `now`
/// is called only while someone listens. Outside that, one relaxed load,
/// one branch and one thread-local store per batch.
#[inline]
pub fn begin_batch(now: impl FnOnce() -> Instant) {
    let at = is_active().then(now);
    BATCH.with(|b| b.set(at));
}

/// When the calling thread's current batch began, if its driver batches
/// and someone listened when it began.
#[inline]
pub fn batch_time() -> Option<Instant> {
    BATCH.with(Cell::get)
}

/// Offers `data`, a buffer of the flow that `flow` builds (and for TCP, at
/// `stream_offset` in its direction), to the subscribers. One branch when
/// there are none.
#[inline]
pub fn publish(flow: impl FnOnce() -> Flow, data: &[u8], stream_offset: Option<u64>) {
    if is_active() {
        publish_slow(&flow(), data, stream_offset);
    }
}

/// Cold: only reached while a sniffer is attached, and then the subscriber's
/// own work dominates anyway.
#[cold]
#[inline(never)]
fn publish_slow(flow: &Flow, data: &[u8], stream_offset: Option<u64>) {
    for (_, subscriber) in SUBSCRIBERS.read().iter() {
        subscriber.on_packet(flow, data, stream_offset);
    }
}
