//! The core every family builds on, on every backend: N-d shapes, views
//! (a window of one buffer, no copy), interleaved complex64 tensors,
//! per-sample f32 vectors, device zero-fill and pooled temporaries.

mod common;

use diffinv::{Complex32, DType, Error, HostSlice, HostVec, Ops, Shape, Temp, Tensor};

fn bits(v: HostVec) -> Vec<u64> {
    match v {
        HostVec::F16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostVec::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        HostVec::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        HostVec::C64(v) => v
            .iter()
            .map(|c| u64::from(c.re.to_bits()) << 32 | u64::from(c.im.to_bits()))
            .collect(),
        HostVec::U32(v) => v.iter().map(|&x| u64::from(x)).collect(),
    }
}

fn real_dtypes<B: Ops>(b: &B) -> Vec<DType> {
    [DType::F16, DType::F32, DType::F64]
        .into_iter()
        .filter(|&d| b.supports(d))
        .collect()
}

/// Views read and write exactly their window (odd offsets and lengths, so f16
/// windows start and end inside 32-bit words), leaving every other element
/// bit for bit as it was.
fn views_address_a_window_without_a_copy<B: Ops>(b: &B) {
    let shape = Shape::new(3, 2, 5, 7);
    let n = shape.checked_len().unwrap();
    for dtype in real_dtypes(b) {
        let base = common::values(5, n, 3.0);
        let mut t = Tensor::from_host(b, shape, dtype, HostSlice::F64(&base)).unwrap();
        let before = t.download(b).unwrap().into_f64();

        // Batch item 1 is elements 70..140.
        let item = t.item(1).unwrap();
        assert_eq!(item.shape(), Shape::from_dims(&[2, 5, 7]).unwrap());
        assert_eq!(item.download(b).unwrap().into_f64(), before[70..140]);

        for (offset, len) in [(13, 9), (0, 1), (1, 1), (n - 1, 1), (2, n - 3)] {
            let fresh = common::values(offset as u64 + 100, len, 3.0);
            let mut view = t.view_mut(offset, Shape::flat(len)).unwrap();
            view.upload(b, HostSlice::F64(&fresh)).unwrap();
            let window = view.download(b).unwrap();
            let want = Tensor::from_host(b, Shape::flat(len), dtype, HostSlice::F64(&fresh))
                .unwrap()
                .download(b)
                .unwrap();
            assert_eq!(bits(window), bits(want), "{dtype:?} window {offset}+{len}");
            let after = t.download(b).unwrap().into_f64();
            let outside = |v: &[f64]| -> Vec<u64> {
                v.iter()
                    .enumerate()
                    .filter(|(i, _)| !(offset..offset + len).contains(i))
                    .map(|(_, x)| x.to_bits())
                    .collect()
            };
            let reference = Tensor::from_host(b, shape, dtype, HostSlice::F64(&base))
                .unwrap()
                .download(b)
                .unwrap()
                .into_f64();
            assert_eq!(
                outside(&after),
                outside(&reference),
                "{dtype:?} outside {offset}+{len}"
            );
            t.upload(b, HostSlice::F64(&base)).unwrap();
        }

        // Windows that do not fit, and uploads of the wrong length, are typed errors.
        assert!(matches!(
            t.view(n - 2, Shape::flat(3)),
            Err(Error::ViewOutOfRange { offset, len: 3, tensor_len }) if offset == n - 2 && tensor_len == n
        ));
        assert!(matches!(
            t.view(usize::MAX, Shape::flat(2)),
            Err(Error::ViewOutOfRange { .. })
        ));
        assert!(matches!(t.item(3), Err(Error::ViewOutOfRange { .. })));
        let mut v = t.view_mut(4, Shape::flat(5)).unwrap();
        assert!(matches!(
            v.upload(b, HostSlice::F64(&[0.0; 4])),
            Err(Error::LengthMismatch {
                expected: 5,
                got: 4,
                ..
            })
        ));
    }
}

mod views {
    crate::for_each_backend!(super::views_address_a_window_without_a_copy);
}

fn awkward_complex(n: usize) -> Vec<Complex32> {
    let special = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        65504.0,
    ];
    (0..n)
        .map(|i| {
            Complex32::new(
                special[i % special.len()],
                (i as f32 - 20.5) / 3.0 * if i % 2 == 0 { 1.0 } else { -1.0 },
            )
        })
        .collect()
}

/// Complex64 tensors (interleaved re, im) of any rank round-trip bit for bit,
/// whole and through views; real data never converts into them.
fn complex_tensors_round_trip<B: Ops>(b: &B) {
    assert!(b.supports(DType::C64));
    let shape = Shape::from_dims(&[2, 3, 5, 7, 1]).unwrap(); // batch, coils, slices, H, W
    let n = shape.checked_len().unwrap();
    let data = awkward_complex(n);
    let mut t = Tensor::from_host(b, shape, DType::C64, HostSlice::C64(&data)).unwrap();
    assert_eq!(t.shape().rank(), 5);
    assert_eq!(
        bits(t.download(b).unwrap()),
        bits(HostVec::C64(data.clone()))
    );
    // Interleaved when widened.
    let flat = t.to_f32(b).unwrap();
    assert_eq!(flat.len(), 2 * n);
    assert_eq!(flat[7].to_bits(), data[3].im.to_bits());

    let patch = vec![Complex32::new(1.5, -2.5); 11];
    t.view_mut(37, Shape::flat(11))
        .unwrap()
        .upload(b, HostSlice::C64(&patch))
        .unwrap();
    let mut want = data.clone();
    want[37..48].copy_from_slice(&patch);
    assert_eq!(bits(t.download(b).unwrap()), bits(HostVec::C64(want)));
    assert_eq!(
        bits(t.item(1).unwrap().download(b).unwrap()),
        bits(t.view(105, Shape::flat(105)).unwrap().download(b).unwrap())
    );

    let real = vec![1.0f32; n];
    assert!(matches!(
        t.upload(b, HostSlice::F32(&real)),
        Err(Error::DTypeMismatch {
            expected: DType::C64,
            got: DType::F32,
            ..
        })
    ));
    let mut r = Tensor::zeros(b, Shape::flat(4), DType::F32).unwrap();
    assert!(matches!(
        r.upload(b, HostSlice::C64(&data[..4])),
        Err(Error::DTypeMismatch { .. })
    ));
}

mod complex {
    crate::for_each_backend!(super::complex_tensors_round_trip);
}

/// Per-sample f32 vectors start at zero and hold one value per item; a device
/// zero-fill clears any tensor.
fn per_sample_vectors_and_zero_fill<B: Ops>(b: &B) {
    let mut s = Tensor::per_sample(b, 5).unwrap();
    assert_eq!((s.dtype(), s.len()), (DType::F32, 5));
    assert_eq!(s.to_f32(b).unwrap(), vec![0.0; 5]);
    s.upload(b, HostSlice::F32(&[1.0, f32::NAN, -3.0, 4.0, 5.0]))
        .unwrap();
    s.fill_zero(b).unwrap();
    assert_eq!(s.to_f32(b).unwrap(), vec![0.0; 5]);
    let one = [Complex32::new(1.0, 1.0)];
    for dtype in real_dtypes(b).into_iter().chain([DType::C64]) {
        let n = 333;
        let mut t = Tensor::zeros(b, Shape::flat(n), dtype).unwrap();
        t.view_mut(0, Shape::flat(1))
            .unwrap()
            .upload(
                b,
                match dtype {
                    DType::C64 => HostSlice::C64(&one),
                    _ => HostSlice::F32(&[7.0]),
                },
            )
            .unwrap();
        t.fill_zero(b).unwrap();
        assert!(
            bits(t.download(b).unwrap()).iter().all(|&x| x == 0),
            "{dtype:?}"
        );
    }
}

/// u32 index tables round-trip exactly (every bit pattern) and never convert
/// to or from floats.
fn index_tables_round_trip<B: Ops>(b: &B) {
    assert!(b.supports(DType::U32));
    let v: Vec<u32> = (0..301u32)
        .map(|i| i.wrapping_mul(0x9E37_79B9))
        .chain([0, u32::MAX])
        .collect();
    let mut t = Tensor::from_host(b, Shape::flat(v.len()), DType::U32, HostSlice::U32(&v)).unwrap();
    assert_eq!(t.download(b).unwrap(), HostVec::U32(v.clone()));
    t.view_mut(3, Shape::flat(2))
        .unwrap()
        .upload(b, HostSlice::U32(&[7, 8]))
        .unwrap();
    assert_eq!(
        t.view(2, Shape::flat(3)).unwrap().download(b).unwrap(),
        HostVec::U32(vec![v[2], 7, 8])
    );
    assert!(matches!(
        t.upload(b, HostSlice::F32(&vec![0.0; v.len()])),
        Err(Error::DTypeMismatch { .. })
    ));
}

mod index_tables {
    crate::for_each_backend!(super::index_tables_round_trip);
}

mod per_sample {
    crate::for_each_backend!(super::per_sample_vectors_and_zero_fill);
}

/// Temporaries come from the backend's pool: after the first iteration of a
/// loop that takes the same temporaries, nothing is allocated.
fn temporaries_come_from_the_pool<B: Ops>(b: &B) {
    let pool = b.pool();
    let (allocs, reuses) = (pool.allocations(), pool.reuses());
    let shape = Shape::new(2, 3, 4, 5);
    for i in 0..10 {
        let mut a = Temp::new(b, shape, DType::F32).unwrap();
        let c = Temp::new(b, Shape::flat(7), DType::F16).unwrap();
        a.upload(b, HostSlice::F64(&common::values(i, 120, 1.0)))
            .unwrap();
        assert_eq!((a.len(), c.len()), (120, 7));
        if i == 0 {
            assert_eq!(pool.allocations() - allocs, 2, "first iteration allocates");
        }
    }
    assert_eq!(
        pool.allocations() - allocs,
        2,
        "no allocation after warm-up"
    );
    assert_eq!(pool.reuses() - reuses, 18);
    // Two loans of one size at once are two buffers.
    let one = Temp::new(b, Shape::flat(9), DType::F32).unwrap();
    let two = Temp::new(b, Shape::flat(9), DType::F32).unwrap();
    assert_eq!(pool.allocations() - allocs, 4);
    drop((one, two));
    assert!(Temp::new(b, Shape::new(1, 0, 1, 1), DType::F32).is_err());
}

mod pool {
    crate::for_each_backend!(super::temporaries_come_from_the_pool);
}

#[test]
fn shapes_have_any_rank_up_to_five() {
    let s = Shape::from_dims(&[2, 3, 4]).unwrap();
    assert_eq!((s.rank(), s.batch(), s.item_len()), (3, 2, 12));
    assert_eq!(s.dims(), &[2, 3, 4]);
    assert_eq!(s.to_string(), "[2, 3, 4]");
    let flat = Shape::flat(10);
    assert_eq!((flat.rank(), flat.batch(), flat.item_len()), (1, 1, 10));
    assert_eq!(
        Shape::new(2, 3, 4, 5).item(),
        Shape::from_dims(&[3, 4, 5]).unwrap()
    );
    assert!(Shape::from_dims(&[1; 5]).is_ok());
    assert!(matches!(
        Shape::from_dims(&[1; 6]),
        Err(Error::InvalidRank { rank: 6, max: 5 })
    ));
    assert!(matches!(
        Shape::from_dims(&[]),
        Err(Error::InvalidRank { rank: 0, .. })
    ));
    assert!(Shape::from_dims(&[3, 0]).unwrap().checked_len().is_err());
    assert_eq!(DType::C64.size(), 8);
    assert!(DType::C64.is_complex());
}
