//! Degradation operators H: inpainting, average-pool super-resolution,
//! colorization, separable blur and bicubic downsampling of `[C, H, W]`
//! image items, built on a backend for the guidance and DDS runs there.

use diffinv::ops::operator::separable::gaussian_taps;
use diffinv::ops::{Operator, OperatorOps};
use diffinv::{Error, Shape};

use crate::run::On;
use crate::{
    entry, free_handle, invalid, null, write_handle, write_out, DiffinvBackend, DiffinvOperator,
    DiffinvStatus,
};

/// What to build, with the constructor's own arguments.
enum Kind<'a> {
    Inpaint { mask: &'a [f32], kept_entries: bool },
    AvgPool { factor: usize },
    Colorize { weights: [f64; 3] },
    Blur { taps: Vec<f64> },
    Bicubic { factor: usize },
}

fn build<B: OperatorOps>(backend: &B, item: Shape, kind: &Kind<'_>) -> Result<Operator<B>, Error> {
    match kind {
        Kind::Inpaint { mask, kept_entries } => {
            Operator::inpaint(backend, item, mask, *kept_entries)
        }
        Kind::AvgPool { factor } => Operator::avg_pool(backend, item, *factor),
        Kind::Colorize { weights } => Operator::colorize(backend, item, *weights),
        Kind::Blur { taps } => Operator::blur(backend, item, taps),
        Kind::Bicubic { factor } => Operator::bicubic(backend, item, *factor),
    }
}

/// Build `kind` for `[channels, height, width]` items on `backend` into `*out`.
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle).
unsafe fn new_operator(
    backend: *const DiffinvBackend,
    item: [usize; 3],
    kind: Kind<'_>,
    out: *mut *mut DiffinvOperator,
) -> Result<(), Error> {
    // SAFETY: the caller's contract.
    let handle = unsafe { backend.as_ref() }.ok_or(null("backend"))?;
    if out.is_null() {
        return Err(null("out"));
    }
    let item = Shape::from_dims(&item)?;
    let on = match handle {
        DiffinvBackend::Cpu(b) => On::Cpu(build(b, item, &kind)?),
        DiffinvBackend::Cuda(b) => On::Cuda(build(&**b, item, &kind)?),
    };
    // SAFETY: the caller's contract.
    unsafe { write_handle(out, DiffinvOperator { backend, on }) }
}

/// Inpainting of `[channels, height, width]` items: `mask` holds one entry
/// per item element (`mask_len` = channels·height·width), 1 = observed, 0 =
/// missing, nothing else, at least one 1. With `kept_entries` a measurement
/// is the list of observed values (y item: their count); otherwise it is the
/// masked image (y item = x item).
///
/// # Safety
/// Non-null pointers are valid: `backend` a live handle, `mask` for
/// `mask_len` floats (read here only), `out` writable for one pointer.
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_inpaint_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    mask: *const f32,
    mask_len: usize,
    kept_entries: bool,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    entry(|| {
        if mask.is_null() {
            return Err(null("mask"));
        }
        // SAFETY: non-null, `mask_len` floats: the caller's contract.
        let mask = unsafe { std::slice::from_raw_parts(mask, mask_len) };
        let kind = Kind::Inpaint { mask, kept_entries };
        // SAFETY: the caller's contract.
        unsafe { new_operator(backend, [channels, height, width], kind, out) }
    })
}

/// Super-resolution by `factor`×`factor` average pooling (`factor` divides
/// height and width; y item `[channels, height/factor, width/factor]`).
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_avg_pool_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    factor: usize,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    let kind = Kind::AvgPool { factor };
    // SAFETY: the caller's contract.
    entry(|| unsafe { new_operator(backend, [channels, height, width], kind, out) })
}

/// Colorization of 3-channel items: y = `r`·R + `g`·G + `b`·B per pixel (y
/// item `[1, height, width]`); the weights are finite, not all zero.
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_colorize_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    r: f64,
    g: f64,
    b: f64,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    let kind = Kind::Colorize { weights: [r, g, b] };
    // SAFETY: the caller's contract.
    entry(|| unsafe { new_operator(backend, [channels, height, width], kind, out) })
}

/// Separable zero-boundary blur with the 1-D kernel `taps[0..taps_len]`
/// along rows and columns (1 ≤ `taps_len` ≤ min(height, width)); y item =
/// x item.
///
/// # Safety
/// Non-null pointers are valid: `backend` a live handle, `taps` for
/// `taps_len` doubles (read here only).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_blur_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    taps: *const f64,
    taps_len: usize,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    entry(|| {
        if taps.is_null() {
            return Err(null("taps"));
        }
        // SAFETY: non-null, `taps_len` doubles: the caller's contract.
        let taps = unsafe { std::slice::from_raw_parts(taps, taps_len) }.to_vec();
        // SAFETY: the caller's contract.
        unsafe { new_operator(backend, [channels, height, width], Kind::Blur { taps }, out) }
    })
}

/// [`diffinv_operator_blur_new`] with the normalised Gaussian kernel of
/// standard deviation `sigma` (> 0) and `2·radius + 1` taps.
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_gaussian_blur_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    sigma: f64,
    radius: usize,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    entry(|| {
        // The taps' formula divides by σ²: anything else would give NaN taps.
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(invalid("sigma", sigma, "must be finite and > 0"));
        }
        let taps = gaussian_taps(sigma, radius);
        // SAFETY: the caller's contract.
        unsafe { new_operator(backend, [channels, height, width], Kind::Blur { taps }, out) }
    })
}

/// Bicubic downsampling by `factor` (divides height and width).
///
/// # Safety
/// Non-null pointers are valid (`backend` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_bicubic_new(
    backend: *const DiffinvBackend,
    channels: usize,
    height: usize,
    width: usize,
    factor: usize,
    out: *mut *mut DiffinvOperator,
) -> DiffinvStatus {
    let kind = Kind::Bicubic { factor };
    // SAFETY: the caller's contract.
    entry(|| unsafe { new_operator(backend, [channels, height, width], kind, out) })
}

/// Free an operator (null: nothing). Every run using it must be freed first.
///
/// # Safety
/// `op` is null or a handle from a `diffinv_operator_*_new`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_free(op: *mut DiffinvOperator) {
    // SAFETY: the caller's contract.
    unsafe { free_handle(op) }
}

/// The element counts of one image item (x) and one measurement item (y)
/// into `*x_len` and `*y_len`: a run's x, z and ε hold batch·x_len elements,
/// its y batch·y_len.
///
/// # Safety
/// Non-null pointers are valid (`op` a live handle).
#[no_mangle]
pub unsafe extern "C" fn diffinv_operator_item_lens(
    op: *const DiffinvOperator,
    x_len: *mut usize,
    y_len: *mut usize,
) -> DiffinvStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let op = unsafe { op.as_ref() }.ok_or(null("op"))?;
        // Both outputs or neither: a null second one must not leave the first written.
        if x_len.is_null() || y_len.is_null() {
            return Err(null(if x_len.is_null() { "x_len" } else { "y_len" }));
        }
        let (x, y) = match &op.on {
            On::Cpu(o) => (o.x_item(), o.y_item()),
            On::Cuda(o) => (o.x_item(), o.y_item()),
        };
        // SAFETY: the caller's contract.
        unsafe {
            write_out(x_len, "x_len", x.checked_len()?)?;
            write_out(y_len, "y_len", y.checked_len()?)
        }
    })
}
