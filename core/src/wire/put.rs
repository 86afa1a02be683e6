//! The sink that message bodies are written into: a caller's byte slice,
//! or (with the `bytes` feature) any [`bytes::BufMut`]. Kept apart from
//! `bytes` because that crate needs an allocator and the codec must not.

/// Big-endian writes, named as in [`bytes::BufMut`].
pub(crate) trait Put {
    fn put_slice(&mut self, src: &[u8]);

    fn put_u8(&mut self, v: u8) {
        self.put_slice(&[v]);
    }
    fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.put_slice(&v.to_be_bytes());
    }
}

/// Writes into a slice that the caller sized with `encoded_len`.
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    written: usize,
    /// Set if a write did not fit; encoders size the slice first, so this
    /// stays false, but a mistake truncates instead of panicking.
    pub(crate) overflowed: bool,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            written: 0,
            overflowed: false,
        }
    }
}

impl Put for SliceWriter<'_> {
    fn put_slice(&mut self, src: &[u8]) {
        let end = self.written.saturating_add(src.len());
        match self.buf.get_mut(self.written..end) {
            Some(dst) => {
                dst.copy_from_slice(src);
                self.written = end;
            }
            None => self.overflowed = true,
        }
    }
}

/// Adapts any [`bytes::BufMut`] that the caller checked has room.
#[cfg(feature = "bytes")]
pub(crate) struct BufMutWriter<'b, B: bytes::BufMut>(pub(crate) &'b mut B);

#[cfg(feature = "bytes")]
impl<B: bytes::BufMut> Put for BufMutWriter<'_, B> {
    fn put_slice(&mut self, src: &[u8]) {
        self.0.put_slice(src);
    }
}
