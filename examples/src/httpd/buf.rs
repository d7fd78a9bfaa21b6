//! Filling payload buffers: the one place the HTTP layer writes bytes into
//! the spare room of a buffer from the source.

use nta_net::RxBuf;

/// Appends `bytes` to `buf`.
///
/// # Panics
///
/// If `buf` has no room for them (callers size their buffers first).
#[inline]
pub fn append_bytes<B: RxBuf>(buf: &mut B, bytes: &[u8]) {
    let filled = buf.len();
    let spare = buf.spare_mut();
    assert!(spare.len() >= bytes.len(), "append of {} bytes into {} bytes of room", bytes.len(), spare.len());
    // SAFETY: the spare room is valid for `spare.len() >= bytes.len()`
    // bytes of writes and belongs to `buf`, which is borrowed exclusively,
    // so it cannot overlap `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), spare.as_mut_ptr().cast::<u8>(), bytes.len()) };
    // SAFETY: `bytes.len()` more bytes after the `filled` ones were just
    // written, within the capacity (checked above).
    unsafe { buf.set_len(filled + bytes.len()) };
}

/// A copy of `data` in one exact buffer from `source`; `None` when the
/// source is exhausted.
pub fn copy_to<S: nta_net::BufSource>(source: &S, data: &[u8]) -> Option<bytes::Bytes> {
    let mut buf = source.try_alloc(data.len()).ok()?;
    append_bytes(&mut buf, data);
    Some(buf.freeze())
}
