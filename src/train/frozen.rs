//! The base model's projections during training: `y = x · Wᵀ` with `W` frozen, whose backward
//! produces only the input's gradient.
//!
//! Why a custom op: candle's matmul backward also computes the weight's gradient (as costly as the
//! forward, and thrown away for a frozen base), and `QMatMul` has no backward at all, so gradients
//! would silently stop at every quantized projection. The weight stays as loaded: F32 for LoRA, or
//! packed 4-bit for QLoRA, dequantized for each use and dropped right after.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::engine::Weight;

pub(crate) enum Frozen {
    /// `[out, in]`, in the dtype the model computes in.
    Dense(Tensor),
    /// Kept as the file stores it (or re-quantized to 4 bits for QLoRA).
    Packed(Weight),
}

impl Frozen {
    /// The weight as a dense `[out, in]` tensor of `dtype`.
    fn dense(&self, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            Frozen::Dense(w) if w.dtype() == dtype => Ok(w.clone()),
            Frozen::Dense(w) => w.to_dtype(dtype),
            Frozen::Packed(w) => w.dequantize(&Device::Cpu)?.to_dtype(dtype),
        }
    }

    /// Bytes the weight occupies while training.
    pub(crate) fn resident_bytes(&self) -> usize {
        match self {
            Frozen::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Frozen::Packed(w) => w.packed_bytes(),
        }
    }
}

/// `x · Wᵀ` for `x` of shape `[..., in]`.
pub(crate) fn linear(weight: &Arc<Frozen>, x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(FrozenMatmul { weight: Arc::clone(weight) })
    } else {
        // Only the CPU kernel is ours; elsewhere candle's matmul is correct, it just also computes
        // the frozen weight's gradient.
        x.broadcast_matmul(&weight.dense(x.dtype())?.to_device(x.device())?.t()?)
    }
}

struct FrozenMatmul {
    weight: Arc<Frozen>,
}

impl FrozenMatmul {
    fn apply<T: candle_core::WithDType>(&self, x: &[T], dims: &[usize]) -> candle_core::Result<(Vec<T>, Shape)> {
        let features = *dims.last().expect("a matmul input has a feature dimension");
        let w = self.weight.dense(T::DTYPE)?;
        let (out_features, in_features) = w.dims2()?;
        if features != in_features {
            candle_core::bail!("frozen matmul: input has {features} features, the weight takes {in_features}");
        }
        let x = Tensor::from_slice(x, (x.len() / features, features), &Device::Cpu)?;
        let y = x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<T>()?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("checked above") = out_features;
        Ok((y, Shape::from(shape)))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen matmul: the input must be contiguous");
        };
        let dims = layout.dims();
        match storage {
            CpuStorage::F32(x) => self.apply(&x[start..end], dims).map(|(y, s)| (CpuStorage::F32(y), s)),
            CpuStorage::F64(x) => self.apply(&x[start..end], dims).map(|(y, s)| (CpuStorage::F64(y), s)),
            _ => candle_core::bail!("frozen matmul: only F32 and F64 inputs are supported"),
        }
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // dL/dx = dL/dy · W; the weight gets no gradient.
        let w = self.weight.dense(grad_y.dtype())?;
        Ok(Some(grad_y.contiguous()?.broadcast_matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Tensor, Var};

    use super::*;
    use crate::train::gradcheck::assert_gradients_match;

    fn check(weight: Frozen) {
        let weight = Arc::new(weight);
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (1, 3, 64), &Device::Cpu).unwrap()).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (1, 3, 32), &Device::Cpu).unwrap();
        let loss = |x: &Tensor| (linear(&weight, x).unwrap() * &probe).unwrap().sum_all().unwrap();
        let grads = loss(x.as_tensor()).backward().unwrap();
        assert_gradients_match(&x, grads.get(x.as_tensor()).unwrap(), |x| loss(x).to_scalar::<f64>().unwrap());
    }

    #[test]
    fn dense_backward_matches_finite_differences() {
        check(Frozen::Dense(Tensor::randn(0f64, 1.0, (32, 64), &Device::Cpu).unwrap()));
    }

    #[test]
    fn packed_4_bit_backward_matches_finite_differences() {
        let w = Tensor::randn(0f32, 1.0, (32, 64), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        check(Frozen::Packed(Weight::new(QMatMul::from_qtensor(q).unwrap()).unwrap()));
    }

    #[test]
    fn forward_equals_a_plain_matmul() {
        let w = Tensor::randn(0f32, 1.0, (5, 8), &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 8), &Device::Cpu).unwrap();
        let ours = linear(&Arc::new(Frozen::Dense(w.clone())), &x).unwrap();
        let plain = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let diff = (ours - plain).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
