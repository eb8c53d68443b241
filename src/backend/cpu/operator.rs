//! The operator family on the CPU: the definition of every program of the
//! operator kernel (`docs/math.md` §5) as plain loops, one output element at a
//! time, parallel over chunks of the output.
//!
//! f16 and f32 storage compute in f32 with the scalars rounded once to f32; f64
//! storage computes in f64 with the unrounded scalars. Sums run left to right
//! in the order written here, which the device kernels follow exactly.

use rayon::prelude::*;

use super::{CpuBackend, CpuBuffer, Element, Math};
use crate::backend::params::{program, OperatorParams};
use crate::error::{Error, Result};
use crate::ops::operator::OperatorScalars;
use crate::ops::{OperatorCall, OperatorOps};
use crate::tensor::DType;

/// Output elements per parallel work item.
const CHUNK: usize = 16 * 1024;

impl OperatorOps for CpuBackend {
    fn operator_supports(&self, dtype: DType) -> bool {
        dtype.is_real_float()
    }

    fn operator_apply_checked(&self, call: OperatorCall<'_, Self>) -> Result<()> {
        launch_on_storage!(self, call.dtype, apply(call))
    }
}

/// The checked call on storage `S`; `None` if the buffers are not of `S` (the
/// checked call gave them the call's dtype, so that never happens).
fn apply<S: Element>(call: OperatorCall<'_, CpuBackend>) -> Option<()> {
    let input = S::slice(call.input)?;
    let CpuBuffer::U32(table) = call.table else {
        return None;
    };
    let program = Program::<S::M>::new(call.params, &call.scalars, call.dense);
    let n_out = call.params.n_out as usize;
    // The checked call guarantees the output holds n_out elements, the input
    // every element the program reads, and the table every index it reads.
    program.evaluate_all(
        input,
        table,
        &mut S::slice_mut(call.output)?[..n_out],
        S::from_math,
    );
    Some(())
}

/// The launch parameters with the scalars in the math type.
pub(super) struct Program<'d, M> {
    p: OperatorParams,
    scale: M,
    h: [M; 3],
    g: [M; 3],
    /// The separable programs' matrices (f64; rounded to `M` where read, as
    /// the device reads their f32 bits).
    dense: &'d [f64],
}

impl<'d, M: Math> Program<'d, M> {
    pub(super) fn new(p: OperatorParams, s: &OperatorScalars, dense: &'d [f64]) -> Self {
        Program {
            p,
            scale: M::from_f64(s.scale),
            h: s.h.map(M::from_f64),
            g: s.g.map(M::from_f64),
            dense,
        }
    }

    /// Every output element, `out[o] = conv(value(o))`: the definition, except
    /// that the pooling projector sums each block once and writes the mean to
    /// the block's s² pixels — the same sum in the same order as `value`, so
    /// bit-identical (the emulated CUDA kernels, which evaluate `value` per
    /// element, are compared with this bit for bit).
    pub(super) fn evaluate_all<S: Element<M = M>, T: Copy + Send>(
        &self,
        input: &[S],
        table: &[u32],
        out: &mut [T],
        conv: impl Fn(M) -> T + Sync,
    ) {
        let p = &self.p;
        if p.program == program::POOL_PROJECT {
            let (height, width, s) = (p.height as usize, p.width as usize, p.factor as usize);
            let plane = height * width;
            // Output planes are input planes: P maps [B, C, H, W] to itself.
            out.par_chunks_mut(plane).enumerate().for_each(|(k, out)| {
                let x = &input[k * plane..(k + 1) * plane];
                for row in (0..height).step_by(s) {
                    for col in (0..width).step_by(s) {
                        let mut acc = M::ZERO;
                        for a in 0..s {
                            for b in 0..s {
                                acc = acc + x[(row + a) * width + col + b].to_math();
                            }
                        }
                        let v = conv(self.scale * acc);
                        for a in 0..s {
                            out[(row + a) * width + col..][..s].fill(v);
                        }
                    }
                }
            });
            return;
        }
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(chunk, out)| {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = conv(self.value(chunk * CHUNK + k, input, table));
                }
            });
    }

    /// Output element `o`: the definition every backend computes.
    pub(super) fn value<S: Element<M = M>>(&self, o: usize, input: &[S], table: &[u32]) -> M {
        let p = &self.p;
        let (out_item, in_item) = (p.out_item as usize, p.in_item as usize);
        let (b, r) = (o / out_item, o % out_item);
        let x = &input[b * in_item..(b + 1) * in_item];
        let at = |i: usize| x[i].to_math();
        let (height, width, s) = (p.height as usize, p.width as usize, p.factor as usize);
        let plane = height * width;
        // Channel, row and column of pixel r of a [_, rows, cols] item.
        let pixel =
            |r: usize, rows: usize, cols: usize| (r / (rows * cols), (r / cols) % rows, r % cols);
        // Σ over the s×s block with top-left (row, col) of channel c, rows then columns.
        let block_sum = |c: usize, row: usize, col: usize| {
            let mut acc = M::ZERO;
            for a in 0..s {
                for bb in 0..s {
                    acc = acc + at(c * plane + (row + a) * width + col + bb);
                }
            }
            acc
        };
        let grey = |px: usize| {
            self.h[0] * at(px) + self.h[1] * at(plane + px) + self.h[2] * at(2 * plane + px)
        };
        let rank = |r: usize| table[p.rank_offset as usize + r];
        let matrix = |k: usize| M::from_f64(self.dense[p.rank_offset as usize + k]);
        match p.program {
            program::GATHER => at(table[r] as usize),
            program::SCATTER => match rank(r) {
                program::NONE => M::ZERO,
                t => at(t as usize),
            },
            program::MASK => match rank(r) {
                program::NONE => M::ZERO,
                _ => at(r),
            },
            program::POOL_MEAN => {
                let (c, i, j) = pixel(r, height / s, width / s);
                self.scale * block_sum(c, s * i, s * j)
            }
            program::POOL_SPREAD => {
                let (c, i, j) = pixel(r, height, width);
                let (rows, cols) = (height / s, width / s);
                self.scale * at(c * rows * cols + (i / s) * cols + j / s)
            }
            program::POOL_PROJECT => {
                let (c, i, j) = pixel(r, height, width);
                self.scale * block_sum(c, i / s * s, j / s * s)
            }
            program::COLOR_DOT => grey(r),
            program::COLOR_SPREAD => self.g[r / plane] * at(r % plane),
            program::COLOR_PROJECT => self.g[r / plane] * grey(r % plane),
            program::SEP_ROWS => {
                // in [C, height, width] → out [C, height, factor]; M is factor × width.
                let (c, a, j) = pixel(r, height, s);
                let row = c * plane + a * width;
                let mut acc = M::ZERO;
                for b in 0..width {
                    acc = acc + at(row + b) * matrix(j * width + b);
                }
                acc
            }
            program::SEP_COLS => {
                // in [C, height, width] → out [C, factor, width]; M is factor × height.
                let (c, i, j) = pixel(r, s, width);
                let mut acc = M::ZERO;
                for a in 0..height {
                    acc = acc + matrix(i * height + a) * at(c * plane + a * width + j);
                }
                acc
            }
            _ => M::ZERO,
        }
    }
}
