//! The blocks an upload is cut into on its way to the backend, and those a download is read into
//! from a file. Their bytes start on a page boundary, so the filesystem backend can hand them to
//! an `O_DIRECT` write as they are: that write needs an aligned buffer, and copying each block
//! into one would cost what it saves.

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
struct Spare(Mutex<Vec<Vec<u8>>>);

static SPARE: Spare = Spare(Mutex::new(Vec::new()));
const SPARE_MAX: usize = 8;

impl Spare {
    fn take(&self, size: usize) -> Vec<u8> {
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match spare.iter().position(|b| b.capacity() == size) {
            Some(i) => spare.swap_remove(i),
            None => Vec::with_capacity(size),
        }
    }

    /// Keeps `buf`, in place of the one kept longest if there are enough (so buffers of a size
    /// no longer asked for do not stay).
    fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut spare = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() >= SPARE_MAX {
            spare.remove(0);
        }
        spare.push(buf);
    }
}

/// What a frozen block's [`Bytes`] own: dropping the last of them gives the buffer back.
struct Frozen {
    buf: Vec<u8>,
    start: usize,
    spare: &'static Spare,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.buf));
    }
}

/// A buffer of fixed capacity, filled front to back, whose first byte is [`DIRECT_ALIGN`]ed.
pub(crate) struct Block {
    /// `start` bytes of padding, then the content; never grown past its capacity, so never
    /// moved.
    buf: Vec<u8>,
    start: usize,
    capacity: usize,
    spare: &'static Spare,
}

impl Block {
    pub(crate) fn with_capacity(capacity: usize) -> Block {
        Block::from(&SPARE, capacity)
    }

    fn from(spare: &'static Spare, capacity: usize) -> Block {
        let mut buf = spare.take(capacity + DIRECT_ALIGN);
        let misaligned = buf.as_ptr().addr() % DIRECT_ALIGN;
        let start = (DIRECT_ALIGN - misaligned) % DIRECT_ALIGN;
        buf.resize(start, 0);
        Block {
            buf,
            start,
            capacity,
            spare,
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

    /// Reads from `file` at `pos` until the block is full or the file ends. The bytes go
    /// straight into the buffer's unused capacity, so a reused buffer is not zeroed first. That
    /// capacity is up to a page more than the block's (the room kept for aligning its start), so
    /// a read may take up to a page more than fits; it is cut off again.
    pub(crate) fn read_at(&mut self, file: &std::fs::File, mut pos: u64) -> std::io::Result<()> {
        while !self.is_full() {
            let before = self.len();
            match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut self.buf), pos) {
                Ok(0) => break,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            self.buf.truncate(self.start + self.capacity);
            pos += (self.len() - before) as u64;
        }
        Ok(())
    }

    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from_owner(Frozen {
            buf: self.buf,
            start: self.start,
            spare: self.spare,
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
    fn a_dropped_block_is_reused_aligned_and_empty_and_the_oldest_spare_goes_first() {
        let spare: &'static Spare = Box::leak(Box::new(Spare(Mutex::new(Vec::new()))));
        let mut first = Block::from(spare, 1 << 16);
        first.fill(&[7; 1 << 16]);
        let frozen = first.freeze();
        let address = frozen.as_ptr().addr();
        drop(frozen);
        let again = Block::from(spare, 1 << 16);
        assert_eq!(again.buf.as_ptr().addr() + again.start, address);
        assert!(again.is_empty() && is_aligned(address));
        // Another size is not served from it; more than SPARE_MAX given back evicts the oldest.
        assert_ne!(Block::from(spare, 1 << 12).buf.as_ptr(), again.buf.as_ptr());
        let old = again.buf.as_ptr().addr();
        drop(again.freeze());
        let held: Vec<Bytes> = (0..SPARE_MAX)
            .map(|_| Block::from(spare, 100).freeze())
            .collect();
        drop(held);
        let kept = spare.0.lock().unwrap();
        assert_eq!(kept.len(), SPARE_MAX);
        assert!(kept.iter().all(|b| b.as_ptr().addr() != old));
    }

    #[test]
    fn a_block_read_from_a_file_holds_exactly_its_stretch_even_in_a_reused_buffer() {
        let data = testkit::random_bytes(3 << 20 | 1234, 5);
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let spare: &'static Spare = Box::leak(Box::new(Spare(Mutex::new(Vec::new()))));
        // A stale buffer first: its bytes must not show through a shorter read.
        let mut stale = Block::from(spare, 1 << 20);
        stale.fill(&[0xee; 1 << 20]);
        drop(stale.freeze());
        for (pos, expected) in [
            (0, 1 << 20),
            (4097, 1 << 20),
            (3 << 20, 1234),
            (data.len() as u64 - 1, 1),
            (data.len() as u64, 0),
        ] {
            let mut block = Block::from(spare, 1 << 20);
            block.read_at(&file, pos).unwrap();
            let frozen = block.freeze();
            let at = pos as usize;
            assert_eq!(frozen.len(), expected, "read at {pos}");
            assert!(frozen[..] == data[at..at + expected], "read at {pos}");
            assert!(is_aligned(frozen.as_ptr().addr()));
        }
        let mut small = Block::from(spare, 5000);
        small.read_at(&file, 10).unwrap();
        assert!(small.freeze()[..] == data[10..5010]);
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
