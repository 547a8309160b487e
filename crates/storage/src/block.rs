//! The blocks an upload is cut into on its way to the backend. Their bytes start on a page
//! boundary, so the filesystem backend can hand them to an `O_DIRECT` write as they are: that
//! write needs an aligned buffer, and copying each block into one would cost what it saves.

use std::sync::Mutex;

use bytes::Bytes;

/// What `O_DIRECT` asks of a write's buffer address, file offset and length on the filesystems
/// a registry runs on (their logical block size is 512 or 4096 bytes).
pub(crate) const DIRECT_ALIGN: usize = 4096;

pub(crate) fn is_aligned(n: usize) -> bool {
    n.is_multiple_of(DIRECT_ALIGN)
}

/// Buffers of blocks that were written and dropped, kept for the next ones: a fresh 1 MiB
/// allocation is paged in by the kernel anew (page faults were ~5 % of a push's CPU), a reused
/// one is resident. A few suffice for a push's pipeline (the block filling, the one hashing, the
/// one writing); more would only hold memory while the registry is idle.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const SPARE_MAX: usize = 8;

fn spare(size: usize) -> Vec<u8> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    match spare.iter().position(|b| b.capacity() >= size) {
        Some(i) => spare.swap_remove(i),
        None => Vec::with_capacity(size),
    }
}

/// What a frozen block's [`Bytes`] own: dropping the last of them returns the buffer.
struct Frozen {
    buf: Vec<u8>,
    start: usize,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_MAX {
            spare.push(buf);
        }
    }
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
        let mut buf = spare(capacity + DIRECT_ALIGN);
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
        Bytes::from_owner(Frozen {
            buf: self.buf,
            start: self.start,
        })
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
    fn a_dropped_block_is_reused_aligned_and_empty() {
        let mut first = Block::with_capacity(1 << 16);
        first.fill(&[7; 1 << 16]);
        let frozen = first.freeze();
        let address = frozen.as_ptr().addr();
        drop(frozen);
        // Other tests take spares too: look for this one among a few.
        let reused: Vec<Block> = (0..SPARE_MAX + 1)
            .map(|_| Block::with_capacity(1 << 16))
            .collect();
        let again = reused
            .iter()
            .find(|b| b.buf.as_ptr().addr() + b.start == address);
        let again = again.expect("the dropped block's buffer was not reused");
        assert!(again.is_empty());
        assert!(is_aligned(address));
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
