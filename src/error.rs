//! One error type for everything a caller can get wrong or a machine can lack.
//!
//! Every variant carries the values that caused it, so a message is actionable
//! without a debugger.

use crate::tensor::{DType, Shape};

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Every failure the crate reports. Nothing on a user-reachable path panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend's library, driver or device is not present on this machine.
    #[error("backend `{backend}` is unavailable: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },

    /// A backend name (argument or `DIFFINV_BACKEND`) that is not one we know.
    #[error("unknown backend {name:?}: expected one of cpu, wgpu, cuda, auto")]
    UnknownBackend { name: String },

    /// The backend cannot store or compute in this dtype.
    #[error("backend `{backend}` does not support dtype {dtype:?}")]
    UnsupportedDType { backend: &'static str, dtype: DType },

    /// Two tensors that must agree in shape do not.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        what: &'static str,
        expected: Shape,
        got: Shape,
    },

    /// Two tensors that must agree in dtype do not.
    #[error("dtype mismatch for {what}: expected {expected:?}, got {got:?}")]
    DTypeMismatch {
        what: &'static str,
        expected: DType,
        got: DType,
    },

    /// A host slice or device buffer has the wrong number of elements.
    #[error("length mismatch for {what}: expected {expected} elements, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// A buffer larger than the device can bind.
    #[error("backend `{backend}` cannot bind {bytes} bytes (limit {limit})")]
    TooLarge {
        backend: &'static str,
        bytes: u64,
        limit: u64,
    },

    /// One launch over more work items than the backend's kernels can index.
    #[error("backend `{backend}` cannot index {items} work items in one launch (limit {limit})")]
    TooManyWorkItems {
        backend: &'static str,
        items: u64,
        limit: u64,
    },

    /// A shape with a zero-sized dimension or too many elements for a kernel index.
    #[error("invalid shape {shape}: {reason}")]
    InvalidShape { shape: Shape, reason: &'static str },

    /// A shape of a rank this crate does not hold.
    #[error("invalid rank {rank}: shapes have 1..={max} dimensions")]
    InvalidRank { rank: usize, max: usize },

    /// A view that does not fit inside its tensor.
    #[error(
        "view of {len} elements at offset {offset} does not fit a tensor of {tensor_len} elements"
    )]
    ViewOutOfRange {
        offset: usize,
        len: usize,
        tensor_len: usize,
    },

    /// Kernel arguments that do not match the kernel's declared signature
    /// (count, kind or size): caught before the launch.
    #[error("arguments of kernel `{kernel}` do not match its signature: {reason}")]
    KernelSignature {
        kernel: &'static str,
        reason: String,
    },

    /// The number of sampling steps is outside `1..=train_steps`.
    #[error("invalid number of steps {steps}: must be in 1..={train_steps}")]
    InvalidSteps { steps: usize, train_steps: usize },

    /// A step index past the end of the plan being run.
    #[error("step {step} is out of range: the plan has {steps} steps")]
    StepOutOfRange { step: usize, steps: usize },

    /// A user-given timestep list is not strictly decreasing or out of range.
    #[error("invalid timestep {value} at position {index}: {reason}")]
    InvalidTimesteps {
        index: usize,
        value: f64,
        reason: &'static str,
    },

    /// A numeric option outside its valid range (or NaN).
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },

    /// A hand-made solver step that the fused kernels cannot run as written.
    #[error("invalid solver step: {reason}")]
    InvalidStep { reason: String },

    /// A non-finite value was found where finite values are required
    /// (reported only when the sampler's finiteness check is on).
    #[error("non-finite value {value} in {what} at step {step}, element {index} ({count} non-finite in total)")]
    NonFinite {
        what: &'static str,
        step: usize,
        index: usize,
        value: f32,
        count: usize,
    },

    /// A failure inside a backend: driver call, kernel compilation, device loss.
    #[error("backend `{backend}` failed: {message}")]
    Device {
        backend: &'static str,
        message: String,
    },

    /// A host-side linear-algebra step failed on the values given (a
    /// measurement covariance that is not positive definite, say).
    #[error("{what} failed: {reason}")]
    Numerical { what: &'static str, reason: String },

    /// An operator this path cannot apply.
    #[error("operator {operator} is not supported here: {reason}")]
    UnsupportedOperator {
        operator: String,
        reason: &'static str,
    },

    /// A UNet `config.json` key whose value the built-in UNet does not
    /// implement (or cannot parse), including another model class.
    #[error("unsupported UNet config: `{key}` = {value}")]
    UnsupportedConfig { key: String, value: String },

    /// A checkpoint file that cannot be opened, mapped or parsed (e.g. truncated).
    #[error("cannot read checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },

    /// A weight the config requires is absent from the checkpoint.
    #[error("checkpoint tensor `{name}` is missing")]
    MissingTensor { name: String },

    /// A checkpoint weight of the wrong shape or of a dtype we cannot read.
    #[error("checkpoint tensor `{name}`: expected {expected}, got {got}")]
    BadTensor {
        name: String,
        expected: String,
        got: String,
    },

    /// A null pointer where caller-owned memory (or a handle) was expected.
    #[error("null pointer given for {what}")]
    NullPointer { what: &'static str },

    /// A caller's wgpu buffer lacks usages the backend needs to bind, read or
    /// write it (`missing` lists them, in wgpu's notation).
    #[error("wgpu buffer for {what} lacks the usages {missing}")]
    MissingBufferUsage { what: &'static str, missing: String },

    /// A caller's buffer or allocation is smaller than the tensor it must hold.
    #[error("{what} holds {got} bytes, {expected} needed")]
    BufferTooSmall {
        what: &'static str,
        expected: u64,
        got: u64,
    },

    /// A caller's device pointer is not aligned for the dtype's vector loads.
    #[error("{what} at address {address:#x} is not {align}-byte aligned")]
    Misaligned {
        what: &'static str,
        address: u64,
        align: u64,
    },
}
