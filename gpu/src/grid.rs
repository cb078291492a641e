//! Launch configurations of the kernels in `gpu/kernels/`: pure arithmetic,
//! unit-tested on the CPU. Each kernel's [`LaunchShape`] is declared in the
//! kernel table (`gpu/kernels/table.rs`); the device path and the CPU
//! execution of the tests both launch with [`LaunchShape::config`].

/// Grid and block of one kernel launch (x, y, z), and dynamic shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks per grid.
    pub grid: (u32, u32, u32),
    /// Threads per block.
    pub block: (u32, u32, u32),
}

/// Threads per block of the elementwise (grid-stride) kernels.
pub const ELEM_THREADS: u32 = 256;
/// Largest grid of an elementwise kernel: beyond that the grid-stride loop
/// takes over (keeps every SM busy on any GPU of the last decade).
pub const MAX_ELEM_BLOCKS: u32 = 65_535;
/// Threads per block of the one-thread-per-row kernels (loss, accuracy).
pub const ROW_THREADS: u32 = 128;
/// Threads per block of the reductions: `REDUCE_THREADS` in common.cuh.
pub const REDUCE_THREADS: u32 = 256;
/// Blocks of `dot_partial`, i.e. partial sums reduced by `reduce_sum`.
pub const DOT_BLOCKS: u32 = 1024;
/// Largest grid of a per-channel kernel (CUDA's limit on `gridDim.x`).
pub const MAX_CHANNEL_BLOCKS: u32 = i32::MAX as u32;
/// Columns per block of `col_sum` (block 32 × 8).
pub const COLSUM_COLS: u32 = 32;
/// Row groups per block of `col_sum`.
pub const COLSUM_ROWS: u32 = 8;

/// How a kernel is launched: the block it is written for and how its grid
/// follows the size of the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchShape {
    /// Grid-stride loop over `size` elements: [`Launch::elementwise`].
    Elementwise,
    /// One thread per row, `size` rows: [`Launch::per_row`].
    PerRow,
    /// `col_sum` over `size` columns: [`Launch::col_sum`].
    ColSum,
    /// `dot_partial` over `size` elements: [`Launch::dot_partial`].
    DotPartial,
    /// One block of [`REDUCE_THREADS`], whatever the size: [`Launch::one_block`].
    OneBlock,
    /// One thread, whatever the size: [`Launch::single`].
    Single,
    /// One block of [`REDUCE_THREADS`] per channel, `size` channels:
    /// [`Launch::per_channel`].
    PerChannel,
}

impl LaunchShape {
    /// The launch for `size`; `None` when there is nothing to do (size 0
    /// for the sized shapes, or a size beyond the shape's 32-bit limit).
    pub fn config(self, size: u64) -> Option<Launch> {
        match self {
            LaunchShape::Elementwise => Launch::elementwise(size),
            LaunchShape::PerRow => Launch::per_row(u32::try_from(size).ok()?),
            LaunchShape::ColSum => Launch::col_sum(u32::try_from(size).ok()?),
            LaunchShape::DotPartial => Launch::dot_partial(size),
            LaunchShape::OneBlock => Some(Launch::one_block()),
            LaunchShape::Single => Some(Launch::single()),
            LaunchShape::PerChannel => Launch::per_channel(size),
        }
    }

    /// The block every launch of this shape has.
    pub fn block(self) -> (u32, u32, u32) {
        match self {
            LaunchShape::Elementwise => (ELEM_THREADS, 1, 1),
            LaunchShape::PerRow => (ROW_THREADS, 1, 1),
            LaunchShape::ColSum => (COLSUM_COLS, COLSUM_ROWS, 1),
            LaunchShape::DotPartial | LaunchShape::OneBlock | LaunchShape::PerChannel => {
                (REDUCE_THREADS, 1, 1)
            }
            LaunchShape::Single => (1, 1, 1),
        }
    }

    /// The largest grid (x) of this shape; y and z are always 1.
    pub fn max_grid(self) -> u32 {
        match self {
            LaunchShape::Elementwise => MAX_ELEM_BLOCKS,
            LaunchShape::PerRow => u32::MAX.div_ceil(ROW_THREADS),
            LaunchShape::ColSum => u32::MAX.div_ceil(COLSUM_COLS),
            LaunchShape::DotPartial => DOT_BLOCKS,
            LaunchShape::OneBlock | LaunchShape::Single => 1,
            LaunchShape::PerChannel => MAX_CHANNEL_BLOCKS,
        }
    }
}

impl Launch {
    /// Elementwise kernel over `n` entries (grid-stride loop inside);
    /// `None` when there is nothing to do.
    pub fn elementwise(n: u64) -> Option<Launch> {
        if n == 0 {
            return None;
        }
        let blocks = n.div_ceil(ELEM_THREADS as u64).min(MAX_ELEM_BLOCKS as u64) as u32;
        Some(Launch {
            grid: (blocks, 1, 1),
            block: (ELEM_THREADS, 1, 1),
        })
    }

    /// One thread per row (`loss_rows`, `loss_hvp`, `count_correct`).
    pub fn per_row(rows: u32) -> Option<Launch> {
        if rows == 0 {
            return None;
        }
        Some(Launch {
            grid: (rows.div_ceil(ROW_THREADS), 1, 1),
            block: (ROW_THREADS, 1, 1),
        })
    }

    /// `col_sum` over `cols` columns.
    pub fn col_sum(cols: u32) -> Option<Launch> {
        if cols == 0 {
            return None;
        }
        Some(Launch {
            grid: (cols.div_ceil(COLSUM_COLS), 1, 1),
            block: (COLSUM_COLS, COLSUM_ROWS, 1),
        })
    }

    /// `dot_partial` over `n` entries: at most [`DOT_BLOCKS`] blocks, one
    /// partial sum each.
    pub fn dot_partial(n: u64) -> Option<Launch> {
        if n == 0 {
            return None;
        }
        let blocks = n.div_ceil(REDUCE_THREADS as u64).min(DOT_BLOCKS as u64) as u32;
        Some(Launch {
            grid: (blocks, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        })
    }

    /// One block of [`REDUCE_THREADS`] (`reduce_sum`).
    pub fn one_block() -> Launch {
        Launch {
            grid: (1, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        }
    }

    /// One block of [`REDUCE_THREADS`] per channel (the batch-norm sums,
    /// `chan_sum`); `None` for no channels or more than
    /// [`MAX_CHANNEL_BLOCKS`].
    pub fn per_channel(channels: u64) -> Option<Launch> {
        if channels == 0 || channels > MAX_CHANNEL_BLOCKS as u64 {
            return None;
        }
        Some(Launch {
            grid: (channels as u32, 1, 1),
            block: (REDUCE_THREADS, 1, 1),
        })
    }

    /// A single thread (`commit_step`).
    pub fn single() -> Launch {
        Launch {
            grid: (1, 1, 1),
            block: (1, 1, 1),
        }
    }

    /// Threads in the whole grid.
    pub fn threads(&self) -> u64 {
        let g = self.grid.0 as u64 * self.grid.1 as u64 * self.grid.2 as u64;
        let b = self.block.0 as u64 * self.block.1 as u64 * self.block.2 as u64;
        g * b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_covers_or_strides() {
        assert_eq!(Launch::elementwise(0), None);
        for n in [
            1u64,
            255,
            256,
            257,
            669_706,
            1 << 24,
            16_785_418,
            5_000_000_000,
        ] {
            let l = Launch::elementwise(n).unwrap();
            assert_eq!(l.block, (ELEM_THREADS, 1, 1));
            assert!(l.grid.0 >= 1 && l.grid.0 <= MAX_ELEM_BLOCKS);
            if n <= MAX_ELEM_BLOCKS as u64 * ELEM_THREADS as u64 {
                // one element per thread at most, and no idle block
                assert!(l.threads() >= n, "{n}");
                assert!(l.threads() - n < ELEM_THREADS as u64);
            } else {
                assert_eq!(l.grid.0, MAX_ELEM_BLOCKS);
            }
        }
    }

    #[test]
    fn per_row_and_col_sum() {
        assert_eq!(Launch::per_row(0), None);
        let l = Launch::per_row(4096).unwrap();
        assert_eq!(l.grid.0 * l.block.0, 4096);
        let l = Launch::per_row(129).unwrap();
        assert_eq!(l.grid.0, 2);
        assert_eq!(Launch::col_sum(0), None);
        let l = Launch::col_sum(10).unwrap();
        assert_eq!((l.grid.0, l.block), (1, (32, 8, 1)));
        let l = Launch::col_sum(4097).unwrap();
        assert_eq!(l.grid.0, 129);
        // col_sum's shared array is [8][33]: the block must fit it.
        assert!(l.block.0 <= 32 && l.block.1 == 8);
    }

    #[test]
    fn reductions_fit_their_buffers() {
        assert_eq!(Launch::dot_partial(0), None);
        let l = Launch::dot_partial(10).unwrap();
        assert_eq!(l.grid.0, 1);
        let l = Launch::dot_partial(669_706).unwrap();
        assert!(l.grid.0 <= DOT_BLOCKS && l.grid.0 >= 1);
        let l = Launch::dot_partial(1 << 40).unwrap();
        assert_eq!(l.grid.0, DOT_BLOCKS);
        // block_sum in common.cuh needs exactly REDUCE_THREADS, a power of two
        assert_eq!(l.block.0, REDUCE_THREADS);
        assert!(REDUCE_THREADS.is_power_of_two());
        assert_eq!(Launch::one_block().block.0, REDUCE_THREADS);
        assert_eq!(Launch::single().threads(), 1);
    }

    #[test]
    fn shapes_give_their_configs() {
        use LaunchShape::*;
        for shape in [
            Elementwise,
            PerRow,
            ColSum,
            DotPartial,
            OneBlock,
            Single,
            PerChannel,
        ] {
            for size in [1u64, 5, 300, 70_000, 1 << 33] {
                let Some(l) = shape.config(size) else {
                    // only the 32-bit shapes refuse sizes beyond u32
                    assert!(
                        matches!(shape, PerRow | ColSum | PerChannel)
                            && size > MAX_CHANNEL_BLOCKS as u64
                    );
                    continue;
                };
                assert_eq!(l.block, shape.block(), "{shape:?}");
                assert!(
                    l.grid.0 >= 1 && l.grid.0 <= shape.max_grid(),
                    "{shape:?} {size}"
                );
                assert_eq!((l.grid.1, l.grid.2), (1, 1));
            }
        }
        assert_eq!(Elementwise.config(0), None);
        assert_eq!(OneBlock.config(0), Some(Launch::one_block()));
        assert_eq!(ColSum.config(70), Launch::col_sum(70));
    }

    #[test]
    fn constants_match_common_cuh() {
        let src = crate::kernels::COMMON;
        assert!(src.contains(&format!("#define REDUCE_THREADS {REDUCE_THREADS}")));
        let act = crate::kernels::Module::Act.source();
        assert!(act.contains(&format!("blockIdx.x * {COLSUM_COLS} + threadIdx.x")));
        assert!(act.contains(&format!("r += {COLSUM_ROWS}")));
    }
}
