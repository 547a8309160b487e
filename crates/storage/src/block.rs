//! The blocks an upload is cut into on its way to the backend. Their bytes start on a page
//! boundary, so the filesystem backend can hand them to an `O_DIRECT` write as they are: that
//! write needs an aligned buffer, and copying each block into one would cost what it saves.

use bytes::Bytes;

/// What `O_DIRECT` asks of a write's buffer address, file offset and length on the filesystems
/// a registry runs on (their logical block size is 512 or 4096 bytes).
pub(crate) const DIRECT_ALIGN: usize = 4096;

pub(crate) fn is_aligned(n: usize) -> bool {
    n.is_multiple_of(DIRECT_ALIGN)
}

/// A buffer of fixed capacity, filled front to back, whose first byte is [`DIRECT_ALIGN`]ed.
pub(crate) struct Block {
    /// `start` bytes of padding, then the content; never grown past its capacity, so never
    /// moved.
    buf: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl Block {
    pub(crate) fn with_capacity(capacity: usize) -> Block {
        let mut buf = Vec::<u8>::with_capacity(capacity + DIRECT_ALIGN);
        let misaligned = buf.as_ptr().addr() % DIRECT_ALIGN;
        let start = (DIRECT_ALIGN - misaligned) % DIRECT_ALIGN;
        buf.resize(start, 0);
        Block {
            buf,
            start,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() == self.capacity
    }

    /// Copies in as much of `bytes` as fits; returns how much that was.
    pub(crate) fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = (self.capacity - self.len()).min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }

    pub(crate) fn freeze(self) -> Bytes {
        let start = self.start;
        Bytes::from(self.buf).slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_start_aligned_and_hold_what_was_filled_in_order() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for capacity in [1, 4095, 4096, 5000, 1 << 20] {
            let mut block = Block::with_capacity(capacity);
            let mut taken = 0;
            for piece in data.chunks(777) {
                taken += block.fill(piece);
                if block.is_full() {
                    break;
                }
            }
            assert_eq!(taken, capacity.min(data.len()));
            let frozen = block.freeze();
            assert_eq!(
                frozen.as_ptr().addr() % DIRECT_ALIGN,
                0,
                "capacity {capacity}"
            );
            assert_eq!(&frozen[..], &data[..taken]);
        }
    }

    #[test]
    fn a_full_block_takes_nothing_more() {
        let mut block = Block::with_capacity(3);
        assert!(block.is_empty());
        assert_eq!(block.fill(b"abcdef"), 3);
        assert!(block.is_full());
        assert_eq!(block.fill(b"g"), 0);
        assert_eq!(&block.freeze()[..], b"abc");
    }
}
