//! Finite-difference gradient checks for the training ops (tests only).

use candle_core::{Tensor, Var};

/// Compares `analytic` (the gradient backprop gave for `var`) with central differences of `f`
/// at up to 24 coordinates spread over the tensor. Run in F64 so the comparison can be tight.
pub(crate) fn assert_gradients_match(var: &Var, analytic: &Tensor, f: impl Fn(&Tensor) -> f64) {
    let values: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let analytic: Vec<f64> = analytic.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(values.len(), analytic.len());
    let step = (values.len() / 24).max(1);
    let h = 1e-5;
    let mut checked = 0;
    for i in (0..values.len()).step_by(step) {
        let at = |delta: f64| {
            let mut moved = values.clone();
            moved[i] += delta;
            f(&Tensor::from_vec(moved, var.shape(), var.device()).unwrap())
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        let tolerance = 1e-5 * numeric.abs().max(analytic[i].abs()).max(1.0);
        assert!(
            (numeric - analytic[i]).abs() <= tolerance,
            "coordinate {i}: finite differences give {numeric}, backprop {}",
            analytic[i]
        );
        checked += 1;
    }
    assert!(checked > 0);
}
