//! The shared real-GPU CUDA backend for the tests (none on machines without a driver).

use std::sync::OnceLock;

use diffinv::backend::cuda::CudaBackend;

use super::skip;

static DEVICE: OnceLock<Option<CudaBackend>> = OnceLock::new();

/// GPU 0 through the driver, or `None` after a printed skip.
pub fn cuda() -> Option<&'static CudaBackend> {
    DEVICE
        .get_or_init(|| match CudaBackend::new(0) {
            Ok(b) => Some(b),
            Err(e) => {
                skip("cuda", e);
                None
            }
        })
        .as_ref()
}
