//! cuBLAS for the nn family's matmul on a GPU: an optional library, loaded at
//! run time. Without it — or on a device that is not a real GPU, such as the
//! emulation harness — matmul runs the crate's own kernel (kernels/nn.cu).
//!
//! Unexercised without a GPU: on a machine without one only the argument
//! mapping runs (the unit test below, against BLAS's column-major
//! definition); the `cuda_device` arms of the nn parity tests run the GEMM
//! itself against the CPU, at the kernel's tolerance, where a GPU is present.

use std::ffi::c_void;

use cudarc::cublas::{result, sys};
use cudarc::driver::CudaStream;

use super::device::VendorGemm;
use crate::error::{Error, Result};

/// A cuBLAS handle bound to the device's stream, so its GEMMs are ordered with
/// the crate's kernels like any launch.
pub(super) struct Blas {
    handle: sys::cublasHandle_t,
}

// SAFETY: cuBLAS allows one handle to be used from several host threads as
// long as its configuration does not change meanwhile; it is set once, in
// `open`, and never again.
unsafe impl Send for Blas {}
// SAFETY: as above.
unsafe impl Sync for Blas {}

/// The column-major GEMM cuBLAS runs for a row-major [`VendorGemm`]: row-major
/// `C = op(A)·op(B)` is column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`, so B goes first.
/// A row-major r×c matrix is a column-major c×r one with leading dimension c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ColumnMajor {
    /// Whether B (the first operand) and A (the second) are transposed.
    trans_b: bool,
    trans_a: bool,
    /// Rows and columns of the column-major Cᵀ (n × m) and the depth.
    rows: i32,
    cols: i32,
    depth: i32,
    ldb: i32,
    lda: i32,
    ldc: i32,
    stride_b: i64,
    stride_a: i64,
    stride_c: i64,
    batch: i32,
}

/// `None` when a size exceeds cuBLAS's 32-bit arguments.
fn column_major(g: &VendorGemm) -> Option<ColumnMajor> {
    let int = |v: usize| i32::try_from(v).ok();
    let (m, n, k, batch) = (int(g.m)?, int(g.n)?, int(g.k)?, int(g.batch)?);
    let elements = |rows: i32, cols: i32| i64::from(rows) * i64::from(cols);
    Some(ColumnMajor {
        trans_b: g.trans_b,
        trans_a: g.trans_a,
        rows: n,
        cols: m,
        depth: k,
        // B is stored k×n (row-major; column-major n×k, ld n), or n×k when transposed.
        ldb: if g.trans_b { k } else { n },
        lda: if g.trans_a { m } else { k },
        ldc: n,
        stride_b: elements(k, n),
        stride_a: elements(m, k),
        stride_c: elements(m, n),
        batch,
    })
}

/// cuBLAS's type for A, B and C of `g`.
fn storage_type(g: &VendorGemm) -> sys::cudaDataType {
    if g.f16 {
        sys::cudaDataType::CUDA_R_16F
    } else {
        sys::cudaDataType::CUDA_R_32F
    }
}

fn op(transposed: bool) -> sys::cublasOperation_t {
    if transposed {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl Blas {
    /// cuBLAS on `stream`, or `None` when libcublas does not load or cannot
    /// make a handle: then every matmul takes the crate's kernel.
    pub(super) fn open(stream: &CudaStream) -> Option<Blas> {
        // SAFETY: only probes whether libcublas loads.
        if !unsafe { sys::is_culib_present() } {
            return None;
        }
        // cudarc panics when the library lacks a symbol it resolves lazily
        // (one older than the CUDA version it was built for): no cuBLAS then.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let blas = Blas {
                handle: result::create_handle().ok()?,
            };
            // SAFETY: the handle is live; the stream outlives it (the device
            // owns both and drops the handle first, see DriverDevice).
            unsafe { result::set_stream(blas.handle, stream.cu_stream() as _) }.ok()?;
            Some(blas)
        }))
        .ok()
        .flatten()
    }

    /// `g` on device addresses `a`, `b`, `c`, stored in f32 or (`g.f16`)
    /// f16, with f32 products and accumulation either way
    /// (CUBLAS_COMPUTE_32F): for f32 that rules out TF32, whose 10-bit
    /// mantissa would miss the family's tolerance; for f16 — whose products
    /// are exact in f32 — it runs on tensor cores, each output rounded to
    /// f16 once, as the kernel does. α and β are f32 host values for both.
    /// `Ok(false)` when a size exceeds cuBLAS's 32-bit arguments, so the
    /// caller runs its own kernel.
    ///
    /// # Safety
    /// `a` holds batch·m·k elements of the storage type, `b` batch·k·n and
    /// `c` batch·m·n, live on the handle's stream.
    pub(super) unsafe fn gemm(&self, g: &VendorGemm, a: u64, b: u64, c: u64) -> Result<bool> {
        let Some(cm) = column_major(g) else {
            return Ok(false);
        };
        let storage = storage_type(g);
        // SAFETY: the caller's contract on a, b, c; alpha and beta are host
        // values that outlive the call (cuBLAS's default host pointer mode).
        unsafe {
            result::gemm_strided_batched_ex(
                self.handle,
                op(cm.trans_b),
                op(cm.trans_a),
                cm.rows,
                cm.cols,
                cm.depth,
                (&g.alpha as *const f32).cast::<c_void>(),
                b as *const c_void,
                storage,
                cm.ldb,
                cm.stride_b,
                a as *const c_void,
                storage,
                cm.lda,
                cm.stride_a,
                (&g.beta as *const f32).cast::<c_void>(),
                c as *mut c_void,
                storage,
                cm.ldc,
                cm.stride_c,
                cm.batch,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device {
            backend: "cuda",
            message: format!("cuBLAS GEMM: {e:?}"),
        })?;
        Ok(true)
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created in `open` and destroyed only here; a failure to
        // destroy at teardown leaves nothing to recover.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAS's strided-batched GEMM as its reference documents it:
    /// `C[z] = α·op(X[z])·op(Y[z]) + β·C[z]`, every matrix column-major,
    /// element (i, j) of a matrix with leading dimension ld at `i + j·ld`.
    fn blas_reference(
        cm: &ColumnMajor,
        alpha: f32,
        x: &[f32],
        y: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        let at = |data: &[f32], base: i64, ld: i32, trans: bool, i: i32, j: i32| {
            let (r, col) = if trans { (j, i) } else { (i, j) };
            f64::from(data[(base + i64::from(r) + i64::from(col) * i64::from(ld)) as usize])
        };
        for z in 0..i64::from(cm.batch) {
            for j in 0..cm.cols {
                for i in 0..cm.rows {
                    let sum: f64 = (0..cm.depth)
                        .map(|l| {
                            at(x, z * cm.stride_b, cm.ldb, cm.trans_b, i, l)
                                * at(y, z * cm.stride_a, cm.lda, cm.trans_a, l, j)
                        })
                        .sum();
                    let o = (z * cm.stride_c + i64::from(i) + i64::from(j) * i64::from(cm.ldc))
                        as usize;
                    c[o] = (f64::from(alpha) * sum + f64::from(beta) * f64::from(c[o])) as f32;
                }
            }
        }
    }

    /// The mapping, run through the BLAS definition, computes the row-major
    /// product the nn family defines, for every transpose combination.
    #[test]
    fn the_column_major_call_computes_the_row_major_product() {
        let (batch, m, n, k) = (2, 3, 5, 4);
        let value = |i: usize| ((i * 7919) % 13) as f32 - 6.0;
        let a: Vec<f32> = (0..batch * m * k).map(value).collect();
        let b: Vec<f32> = (0..batch * k * n).map(|i| value(i + 5)).collect();
        let c0: Vec<f32> = (0..batch * m * n).map(|i| value(i + 9)).collect();
        for flags in 0..4 {
            let g = VendorGemm {
                batch,
                m,
                n,
                k,
                trans_a: flags & 1 != 0,
                trans_b: flags & 2 != 0,
                alpha: 0.5,
                beta: 1.0,
                f16: false,
            };
            let cm = column_major(&g).unwrap();
            let mut got = c0.clone();
            blas_reference(&cm, g.alpha, &b, &a, g.beta, &mut got);
            for z in 0..batch {
                for r in 0..m {
                    for col in 0..n {
                        let dot: f32 = (0..k)
                            .map(|i| {
                                let av = if g.trans_a {
                                    a[z * m * k + i * m + r]
                                } else {
                                    a[z * m * k + r * k + i]
                                };
                                let bv = if g.trans_b {
                                    b[z * k * n + col * k + i]
                                } else {
                                    b[z * k * n + i * n + col]
                                };
                                av * bv
                            })
                            .sum();
                        let o = (z * m + r) * n + col;
                        // Small integers and halves: both sides are exact.
                        assert_eq!(
                            got[o],
                            0.5 * dot + c0[o],
                            "flags {flags}, z {z}, ({r}, {col})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_beyond_32_bits_are_left_to_the_kernel() {
        let g = VendorGemm {
            batch: 1,
            m: 1 << 31,
            n: 1,
            k: 1,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            f16: false,
        };
        assert_eq!(column_major(&g), None);
    }

    /// f16 storage hands cuBLAS f16 operands (with f32 compute, set in
    /// `gemm`); everything else stays f32.
    #[test]
    fn the_storage_type_follows_the_call() {
        let g = VendorGemm {
            batch: 1,
            m: 2,
            n: 3,
            k: 4,
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 0.0,
            f16: false,
        };
        assert_eq!(storage_type(&g), sys::cudaDataType::CUDA_R_32F);
        let h = VendorGemm { f16: true, ..g };
        assert_eq!(storage_type(&h), sys::cudaDataType::CUDA_R_16F);
        // The layout mapping does not depend on the storage.
        assert_eq!(column_major(&g), column_major(&h));
    }
}
