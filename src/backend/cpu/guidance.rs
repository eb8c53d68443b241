//! The guidance family on the CPU: the definition of the C-ΠGDM passes
//! (`docs/math.md` §6.4; `ops::guidance` documents each pass), one element at
//! a time, with P applied by the operator family's own per-element program.
//!
//! Network tensors are stored as f16/f32 (f64 on the oracle path) and the
//! conjugate state as f32 (f64); math is f32 (f64), every sum left to right
//! as written here, which the device kernels follow exactly.

use rayon::prelude::*;

use super::operator::Program;
use super::{CpuBackend, CpuBuffer, Element, Math};
use crate::backend::params::{cpgdm_pass, program};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::guidance::{CpgdmCall, GuidanceOps};
use crate::tensor::DType;

/// Elements per parallel work item.
const CHUNK: usize = 16 * 1024;

impl GuidanceOps for CpuBackend {
    fn guidance_supports(&self, dtype: DType) -> bool {
        dtype.is_real_float()
    }

    fn cpgdm_pass_checked(&self, call: CpgdmCall<'_, Self>) -> Result<()> {
        launch_on_storage!(self, call.dtype, pass(self, call))
    }
}

/// The checked pass on network storage `S` and state storage `S::M`; `None`
/// if a buffer is not of its dtype (the checked call rules that out).
fn pass<S: Element>(backend: &CpuBackend, call: CpgdmCall<'_, CpuBackend>) -> Option<()>
where
    S::M: Element<M = S::M>,
{
    let n = call.params.op.n_out as usize;
    let op = Program::<S::M>::new(call.params.op, &call.op_scalars, &[]);
    let c = call.coefficients.map(S::M::from_f64);
    let (pass, use_g, use_z) = (
        call.params.pass,
        call.params.use_g != 0,
        call.params.use_z != 0,
    );
    let CpuBuffer::U32(table) = call.table else {
        return None;
    };
    let (eps, g, hy) = (S::slice(call.eps)?, S::slice(call.g)?, S::slice(call.hy)?);
    // The checked call guarantees every buffer holds n elements.
    let u = &mut <S::M as Element>::slice_mut(call.u)?[..n];
    let v = &mut <S::M as Element>::slice_mut(call.v)?[..n];
    let x = &mut S::slice_mut(call.x)?[..n];
    let m = &mut S::slice_mut(call.m)?[..n];
    let at = |t: &[S], i: usize| t[i].to_math();
    // P of ε (and of g and z where the pass reads them). The pooling projector
    // is evaluated once per pass through the operator family (one block sum
    // per block) into scratch from the backend's pool; the elementwise ones
    // inline, per element.
    let scratch = Scratch::<S::M>::new(backend, n);
    let precompute = call.params.op.program == program::POOL_PROJECT;
    let project = |src: &[S]| -> Option<Option<CpuBuffer>> {
        if !precompute {
            return Some(None);
        }
        let mut buf = scratch.take()?;
        op.evaluate_all(src, table, <S::M as Element>::slice_mut(&mut buf)?, |v| v);
        Some(Some(buf))
    };
    fn stored<M: Element>(buf: &Option<CpuBuffer>) -> Option<&[M]> {
        buf.as_ref().and_then(M::slice)
    }
    let projected = |stored: Option<&[S::M]>, src: &[S], o: usize| match stored {
        Some(values) => values[o],
        None => op.value(o, src, table),
    };
    let pe_buf = project(eps)?;
    let pe_stored = stored::<S::M>(&pe_buf);
    let pe = |o: usize| projected(pe_stored, eps, o);
    if pass == cpgdm_pass::RESIDUAL {
        // m = hy − c0·u + c1·Pε: the only pass that writes m.
        m.par_chunks_mut(CHUNK)
            .zip(u.par_chunks(CHUNK))
            .enumerate()
            .for_each(|(chunk, (m, u))| {
                for k in 0..m.len() {
                    let o = chunk * CHUNK + k;
                    m[k] = S::from_math(at(hy, o) - c[0] * u[k] + c[1] * pe(o));
                }
            });
        pe_buf.into_iter().for_each(|b| scratch.give_back(b));
        return Some(());
    }
    // INIT and UPDATE read m only: it holds the update's noise z, if any.
    let z_all: &[S] = m;
    let pg_buf = if use_g { project(g)? } else { None };
    let pz_buf = if use_z { project(z_all)? } else { None };
    let (pg_stored, pz_stored) = (stored::<S::M>(&pg_buf), stored::<S::M>(&pz_buf));
    u.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(x.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, ((u, v), x))| {
            for k in 0..u.len() {
                let o = chunk * CHUNK + k;
                match pass {
                    cpgdm_pass::INIT => {
                        // ε holds z here, so pe is P z.
                        let (z, pz) = (at(eps, o), pe(o));
                        u[k] = c[0] * at(hy, o) + c[1] * pz;
                        v[k] = c[2] * (z - pz);
                        x[k] = S::from_math(c[3] * at(hy, o) + c[4] * z + c[5] * pz);
                    }
                    cpgdm_pass::UPDATE => {
                        let (e, pe) = (at(eps, o), pe(o));
                        let mut un = c[0] * u[k] + c[1] * at(hy, o) + c[2] * pe;
                        let mut vn = c[8] * v[k] + c[4] * (e - pe);
                        if use_g {
                            let pg = projected(pg_stored, g, o);
                            un = un + c[3] * pg;
                            vn = vn + c[5] * (at(g, o) - pg);
                        }
                        if use_z {
                            let pz = projected(pz_stored, z_all, o);
                            un = un + c[9] * pz;
                            vn = vn + c[9] * (at(z_all, o) - pz);
                        }
                        u[k] = un;
                        v[k] = vn;
                        x[k] = S::from_math(c[6] * vn + c[7] * un);
                    }
                    _ => {}
                }
            }
        });
    for buf in [pe_buf, pg_buf, pz_buf].into_iter().flatten() {
        scratch.give_back(buf);
    }
    Some(())
}

/// Scratch vectors of `n` math-type elements from the backend's pool.
struct Scratch<'b, M> {
    backend: &'b CpuBackend,
    n: usize,
    math: std::marker::PhantomData<M>,
}

impl<'b, M: Element> Scratch<'b, M> {
    fn new(backend: &'b CpuBackend, n: usize) -> Self {
        Scratch {
            backend,
            n,
            math: std::marker::PhantomData,
        }
    }

    fn take(&self) -> Option<CpuBuffer> {
        let (b, n) = (self.backend, self.n);
        b.pool().take(n, M::DTYPE, || b.alloc(n, M::DTYPE)).ok()
    }

    fn give_back(&self, buf: CpuBuffer) {
        self.backend.pool().give_back(self.n, M::DTYPE, buf);
    }
}
