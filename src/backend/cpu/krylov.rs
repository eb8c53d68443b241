//! The Krylov family on the CPU: the definition of the CG and DDS passes
//! (`docs/math.md` §9; `backend::params::cg_pass` documents each pass).
//!
//! Every sum runs the way the device kernels run it ([`lane_sum`]): a sample's
//! elements in chunks of [`CG_CHUNK`], each chunk's 256 lanes accumulating in
//! order and then folding pairwise; a pass re-sums its sample's chunk partials
//! the same way. f32 state computes in f32, f64 state (the oracle) in f64.

use rayon::prelude::*;

use super::operator::Program;
use super::{CpuBackend, CpuBuffer, Element, Math};
use crate::backend::params::{cg_pass, dds_pass, CgParams, CG_CHUNK, CG_LANES};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::krylov::{CgCall, CgScalars, DdsBuffers, DdsCall, KrylovOps};
use crate::tensor::DType;

impl KrylovOps for CpuBackend {
    fn cg_supports(&self, dtype: DType) -> bool {
        matches!(dtype, DType::F32 | DType::F64)
    }

    fn dds_supports(&self, dtype: DType) -> bool {
        dtype.is_real_float()
    }

    fn cg_pass_checked(&self, call: CgCall<'_, Self>) -> Result<()> {
        let dtype = call.dtype;
        match dtype {
            DType::F32 => cg::<f32>(self, call),
            DType::F64 => cg::<f64>(self, call),
            _ => None,
        }
        .ok_or(Error::UnsupportedDType {
            backend: "cpu",
            dtype,
        })?;
        self.count_launch();
        Ok(())
    }

    fn dds_pass_checked(&self, call: DdsCall<'_, Self>) -> Result<()> {
        launch_on_storage!(self, call.dtype, dds(call))
    }
}

/// Σ of `n` terms the way every CG kernel sums them: lane l accumulates terms
/// l, l + 256, … in order, then the 256 lanes fold pairwise (lane i += lane
/// i + s for s = 128, 64, …, 1).
pub(crate) fn lane_sum<M: Math>(n: usize, term: impl Fn(usize) -> M) -> M {
    let mut lanes = [M::ZERO; CG_LANES];
    for (l, lane) in lanes.iter_mut().enumerate() {
        let mut acc = M::ZERO;
        for i in (l..n).step_by(CG_LANES) {
            acc = acc + term(i);
        }
        *lane = acc;
    }
    let mut s = CG_LANES / 2;
    while s > 0 {
        for i in 0..s {
            lanes[i] = lanes[i] + lanes[i + s];
        }
        s /= 2;
    }
    lanes[0]
}

/// The scalars of sample `b` a pass reads from the partial sums.
struct Sums<'a, M> {
    partials: &'a [M],
    batch: usize,
    chunks: usize,
}

impl<M: Math> Sums<'_, M> {
    /// The sum in `slot` (0, 1: ⟨r, r⟩ ping-pong; 2: ⟨p, q⟩; 3: ⟨b, b⟩) of
    /// sample `b`.
    fn get(&self, slot: usize, b: usize) -> M {
        let start = (slot * self.batch + b) * self.chunks;
        lane_sum(self.chunks, |g| self.partials[start + g])
    }
}

/// β of DIRECTION k (0 at k = 0, or where the last residual was exactly 0).
fn beta<M: Math>(sums: &Sums<'_, M>, k: usize, b: usize) -> M {
    if k == 0 {
        return M::ZERO;
    }
    let old = sums.get((k + 1) % 2, b);
    if old != M::ZERO {
        sums.get(k % 2, b) / old
    } else {
        M::ZERO
    }
}

/// α of UPDATE k, or `None` where the sample has stopped (tolerance reached,
/// residual down to rounding by the stall rule, or ⟨p, q⟩ exactly 0: nothing
/// left to do).
fn alpha<M: Math>(sums: &Sums<'_, M>, k: usize, b: usize, c: &Scalars<M>) -> Option<M> {
    let rr = sums.get(k % 2, b);
    if k >= 1 && c.tolerance2 >= M::ZERO && rr < c.tolerance2 {
        return None;
    }
    if rr <= c.stall2 * sums.get(3, b) {
        return None;
    }
    let pq = sums.get(2, b);
    (pq != M::ZERO).then(|| rr / pq)
}

/// The checked CG pass on state `M`; `None` if a buffer is not of its dtype.
fn cg<M: Element<M = M> + Math>(backend: &CpuBackend, call: CgCall<'_, CpuBackend>) -> Option<()> {
    let p: CgParams = call.params;
    let (item, batch, chunks) = (p.item as usize, p.batch as usize, p.chunks as usize);
    let n = item * batch;
    let c = scalars::<M>(&call.scalars);
    let k = p.iteration as usize;
    // G v of the pass's vector (x or r): the t buffer, or P v inline. The
    // UPDATE pass needs none.
    let source: &[M] = if p.pass == cg_pass::RESIDUAL {
        &M::slice(call.x)?[..n]
    } else {
        &M::slice(call.r)?[..n]
    };
    // P v goes to scratch from the backend's pool (no allocation per pass).
    let mut scratch = None;
    let gv: Option<&[M]> = match (p.pass, p.gram_from_t != 0, call.table) {
        (cg_pass::UPDATE | cg_pass::DOT, _, _) => None,
        (_, true, _) => Some(&M::slice(call.t)?[..n]),
        (_, false, Some(CpuBuffer::U32(table))) => {
            let program = Program::<M>::new(p.op, &call.op_scalars, &[]);
            let buf = scratch.insert(
                backend
                    .pool()
                    .take(n, M::DTYPE, || backend.alloc(n, M::DTYPE))
                    .ok()?,
            );
            let out = &mut M::slice_mut(buf)?[..n];
            program.evaluate_all(source, table, out, |v| v);
            Some(&*out)
        }
        _ => return None,
    };
    let old_partials = M::slice(call.partials)?[..4 * batch * chunks].to_vec();
    let sums = Sums {
        partials: &old_partials,
        batch,
        chunks,
    };
    let x = &mut M::slice_mut(call.x)?[..n];
    let r = &mut M::slice_mut(call.r)?[..n];
    let pv = &mut M::slice_mut(call.p)?[..n];
    let q = &mut M::slice_mut(call.q)?[..n];
    let d = &M::slice(call.d)?[..n];
    let CpuBuffer::U32(iterations) = call.iterations else {
        return None;
    };
    let mut fresh = vec![M::ZERO; batch * chunks];
    // ⟨b, b⟩ of the RESIDUAL pass, for slot 3.
    let mut rhs_sums = vec![M::ZERO; batch * chunks];
    for b in 0..batch {
        let span = b * item..(b + 1) * item;
        let partial = &mut fresh[b * chunks..(b + 1) * chunks];
        let (x, r, pv, q) = (
            &mut x[span.clone()],
            &mut r[span.clone()],
            &mut pv[span.clone()],
            &mut q[span.clone()],
        );
        let (d, gv) = (&d[span.clone()], gv.map(|g| &g[span]));
        match p.pass {
            cg_pass::RESIDUAL => {
                let gv = gv?;
                chunks1(r, partial, |base, r| {
                    for (k, rv) in r.iter_mut().enumerate() {
                        let o = base + k;
                        let rhs = c.rhs_x * x[o] + c.rhs_d * d[o];
                        let kx = c.identity * x[o] + c.gram * gv[o];
                        *rv = rhs - kx;
                    }
                    lane_sum(r.len(), |i| r[i] * r[i])
                });
                let (x, d) = (&*x, d);
                chunked_sum(&mut rhs_sums[b * chunks..(b + 1) * chunks], item, |o| {
                    let rhs = c.rhs_x * x[o] + c.rhs_d * d[o];
                    rhs * rhs
                });
                iterations[b] = 0;
            }
            cg_pass::DIRECTION => {
                let gv = gv?;
                let beta = beta(&sums, k, b);
                let r = &*r;
                chunks2(pv, q, partial, |base, pv, q| {
                    for i in 0..pv.len() {
                        let o = base + i;
                        let kr = c.identity * r[o] + c.gram * gv[o];
                        if k == 0 {
                            pv[i] = r[o];
                            q[i] = kr;
                        } else {
                            pv[i] = r[o] + beta * pv[i];
                            q[i] = kr + beta * q[i];
                        }
                    }
                    lane_sum(pv.len(), |i| pv[i] * q[i])
                });
            }
            cg_pass::UPDATE => match alpha(&sums, k, b, &c) {
                Some(alpha) => {
                    let (pv, q) = (&*pv, &*q);
                    chunks2(x, r, partial, |base, x, r| {
                        for i in 0..x.len() {
                            x[i] = x[i] + alpha * pv[base + i];
                            r[i] = r[i] - alpha * q[base + i];
                        }
                        lane_sum(r.len(), |i| r[i] * r[i])
                    });
                    iterations[b] += 1;
                }
                None => chunked_sum(partial, item, |o| r[o] * r[o]),
            },
            cg_pass::DOT => {
                let t = &M::slice(call.t)?[b * item..(b + 1) * item];
                chunked_sum(partial, item, |o| d[o] * t[o]);
            }
            _ => return None,
        }
    }
    let slot = match p.pass {
        cg_pass::RESIDUAL => 0,
        cg_pass::DIRECTION | cg_pass::DOT => 2,
        _ => (k + 1) % 2,
    };
    let partials = M::slice_mut(call.partials)?;
    partials[slot * batch * chunks..(slot + 1) * batch * chunks].copy_from_slice(&fresh);
    if p.pass == cg_pass::RESIDUAL {
        partials[3 * batch * chunks..4 * batch * chunks].copy_from_slice(&rhs_sums);
    }
    if let Some(buf) = scratch {
        backend.pool().give_back(n, M::DTYPE, buf);
    }
    Some(())
}

/// For each chunk g of a sample, in parallel: `f(g·CG_CHUNK, chunk of a)`
/// updates the chunk and returns its partial sum.
fn chunks1<M: Math>(a: &mut [M], partial: &mut [M], f: impl Fn(usize, &mut [M]) -> M + Sync) {
    a.par_chunks_mut(CG_CHUNK)
        .zip(partial.par_iter_mut())
        .enumerate()
        .for_each(|(g, (a, out))| *out = f(g * CG_CHUNK, a));
}

/// [`chunks1`] over the same chunk of two vectors.
fn chunks2<M: Math>(
    a: &mut [M],
    b: &mut [M],
    partial: &mut [M],
    f: impl Fn(usize, &mut [M], &mut [M]) -> M + Sync,
) {
    a.par_chunks_mut(CG_CHUNK)
        .zip(b.par_chunks_mut(CG_CHUNK))
        .zip(partial.par_iter_mut())
        .enumerate()
        .for_each(|(g, ((a, b), out))| *out = f(g * CG_CHUNK, a, b));
}

/// Each chunk's [`lane_sum`] of `term` over a sample of `item` elements.
fn chunked_sum<M: Math>(partial: &mut [M], item: usize, term: impl Fn(usize) -> M + Sync) {
    partial.par_iter_mut().enumerate().for_each(|(g, out)| {
        let start = g * CG_CHUNK;
        let len = CG_CHUNK.min(item - start);
        *out = lane_sum(len, |i| term(start + i));
    });
}

/// The pass's scalars in the state's math type (f32 rounds once, like the
/// params the devices read).
struct Scalars<M> {
    identity: M,
    gram: M,
    rhs_x: M,
    rhs_d: M,
    tolerance2: M,
    stall2: M,
}

fn scalars<M: Math>(s: &CgScalars) -> Scalars<M> {
    Scalars {
        identity: M::from_f64(s.identity),
        gram: M::from_f64(s.gram),
        rhs_x: M::from_f64(s.rhs_x),
        rhs_d: M::from_f64(s.rhs_d),
        tolerance2: M::from_f64(s.tolerance2),
        stall2: M::from_f64(s.stall2),
    }
}

/// The checked DDS pass on network storage `S` and state `S::M`.
fn dds<S: Element>(call: DdsCall<'_, CpuBackend>) -> Option<()>
where
    S::M: Element<M = S::M>,
{
    let n = (call.params.item * call.params.batch) as usize;
    let [c0, c1, c2] = call.c.map(S::M::from_f64);
    match (call.params.pass, call.buffers) {
        (dds_pass::TWEEDIE, DdsBuffers::Tweedie { xt, eps, x0 }) => {
            let (xt, eps) = (&S::slice(xt)?[..n], &S::slice(eps)?[..n]);
            let x0 = &mut <S::M as Element>::slice_mut(x0)?[..n];
            x0.par_iter_mut().enumerate().for_each(|(o, v)| {
                *v = (xt[o].to_math() - c1 * eps[o].to_math()) / c0;
            });
        }
        (dds_pass::RENOISE, DdsBuffers::Renoise { x0, eps, z, xt }) => {
            let x0 = &<S::M as Element>::slice(x0)?[..n];
            let (eps, z) = (&S::slice(eps)?[..n], &S::slice(z)?[..n]);
            let xt = &mut S::slice_mut(xt)?[..n];
            xt.par_iter_mut().enumerate().for_each(|(o, v)| {
                *v = S::from_math(c0 * x0[o] + c1 * z[o].to_math() + c2 * eps[o].to_math());
            });
        }
        _ => return None,
    }
    Some(())
}
