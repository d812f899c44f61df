//! The adapter being trained: the parameters the optimiser updates, and the updates they make
//! for a forward pass (`model::Lora`). Plain LoRA's parameters are A and B themselves (and DoRA's
//! magnitudes); TT-LoRA's are tensor-train cores (`tt.rs`), contracted to A and B for every
//! update, their gradients sent back through the contraction. Either way the adapter is saved as
//! plain PEFT LoRA (`adapter_model.safetensors`), which the engine and other tools load
//! unchanged; TT-LoRA keeps its cores beside it (`tt_cores.safetensors`), which is what a
//! checkpoint resumes from.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::model::{Base, Grads, Lora, Pair};
use super::{Settings, TrainError, data, files, tt};
use crate::engine::lora::Projection;

pub(crate) const PEFT_FILE: &str = "adapter_model.safetensors";
pub(crate) const CORES_FILE: &str = "tt_cores.safetensors";
const CONFIG_FILE: &str = "adapter_config.json";

pub(crate) struct Adapter {
    /// Every parameter, in the order of `parts`.
    pub(crate) vars: Vec<Var>,
    /// One per layer and projection, in [`Lora::pairs`] order.
    parts: Vec<Part>,
    scale: f64,
    /// The rank of the update as saved (LoRA's rank, or the tensor train's), and PEFT's
    /// `lora_alpha` for it.
    rank: usize,
    alpha: f64,
}

struct Part {
    layer: usize,
    projection: Projection,
    vars: Range<usize>,
    /// TT-LoRA: the cores' layout (`vars` are its cores).
    tt: Option<tt::Layout>,
}

impl Adapter {
    /// Fresh parameters as PEFT initialises LoRA: A uniform in ±1/√in (Kaiming with a = √5), B
    /// zero, so training starts from exactly the base model; DoRA's magnitudes at the base's own
    /// row norms; TT-LoRA's cores contracting to such an A and a zero B.
    pub(crate) fn new(base: &Base, settings: &Settings) -> candle_core::Result<Adapter> {
        let mut rng = ChaCha8Rng::seed_from_u64(data::mix(settings.seed, &[0]));
        Adapter::build(base, settings, |layer, projection, (input, output), layout| {
            let bound = 1.0 / (input as f64).sqrt();
            if let Some(layout) = layout {
                return tt::init(layout, bound, &mut rng);
            }
            let a: Vec<f32> = (0..settings.rank * input).map(|_| rng.random_range(-bound..bound) as f32).collect();
            let mut vars = vec![
                Var::from_vec(a, (settings.rank, input), &Device::Cpu)?,
                Var::zeros((output, settings.rank), base.dtype(), &Device::Cpu)?,
            ];
            if settings.dora {
                // DoRA starts at the base weight's own row norms: W' = W.
                vars.push(Var::from_tensor(&base.row_norms(layer, projection)?)?);
            }
            Ok(vars)
        })
    }

    /// The parameters [`Adapter::save`] wrote to `dir`, checked against the model's shapes.
    pub(crate) fn load(dir: &Path, base: &Base, settings: &Settings) -> Result<Adapter, TrainError> {
        let file = if settings.tt_rank.is_some() { CORES_FILE } else { PEFT_FILE };
        let mut tensors = files::read_tensors(&dir.join(file))?;
        Adapter::build(base, settings, |layer, projection, (input, output), layout| {
            let wanted: Vec<(String, Vec<usize>)> = match layout {
                Some(layout) => layout.shapes().iter().enumerate().map(|(i, s)| (core_name(i), s.to_vec())).collect(),
                None => {
                    let mut names = vec![
                        ("lora_A.weight".to_owned(), vec![settings.rank, input]),
                        ("lora_B.weight".to_owned(), vec![output, settings.rank]),
                    ];
                    if settings.dora {
                        names.push(("lora_magnitude_vector".to_owned(), vec![output]));
                    }
                    names
                }
            };
            let mut vars = Vec::new();
            for (name, shape) in wanted {
                let key = files::peft_key(layer, projection, &name);
                let tensor =
                    tensors.remove(&key).filter(|t| t.dims() == shape).ok_or_else(|| TrainError::Mismatch {
                        dir: dir.to_owned(),
                        what: format!("for another model shape or rank ({key} is missing or not {shape:?})"),
                    })?;
                vars.push(Var::from_tensor(&tensor)?);
            }
            Ok(vars)
        })
    }

    /// An adapter whose parameters `make` gives, projection by projection in [`Lora::pairs`]
    /// order (with the projection's `(in, out)` and, for TT-LoRA, its cores' layout).
    fn build<E>(
        base: &Base,
        settings: &Settings,
        mut make: impl FnMut(usize, Projection, (usize, usize), Option<&tt::Layout>) -> Result<Vec<Var>, E>,
    ) -> Result<Adapter, E> {
        let mut vars = Vec::new();
        let mut parts = Vec::new();
        for layer in 0..base.config.num_layers {
            for projection in Projection::ALL {
                let (input, output) = projection.shape(&base.config);
                let layout = settings.tt_rank.map(|rank| tt::Layout::new(input, output, rank));
                let first = vars.len();
                vars.extend(make(layer, projection, (input, output), layout.as_ref())?);
                parts.push(Part { layer, projection, vars: first..vars.len(), tt: layout });
            }
        }
        // TT-LoRA keeps plain LoRA's scale (α / the `[train]` rank), saved as the `lora_alpha`
        // that gives it at the tensor train's rank.
        let scale = settings.alpha / settings.rank as f64;
        let (rank, alpha) = match settings.tt_rank {
            Some(rank) => (rank, scale * rank as f64),
            None => (settings.rank, settings.alpha),
        };
        Ok(Adapter { vars, parts, scale, rank, alpha })
    }

    /// The update of each projection as a forward pass adds it. LoRA's are the parameters' own
    /// tensors (backprop finds them, and they follow the optimiser's in-place updates); TT-LoRA's
    /// are contracted now into fresh leaves, so a view is only good until the next update.
    pub(crate) fn view(&self) -> candle_core::Result<Lora> {
        let pairs = self
            .parts
            .iter()
            .map(|part| {
                let vars = &self.vars[part.vars.clone()];
                Ok(Some(match &part.tt {
                    Some(layout) => {
                        // Detached: `grads` builds the graph back to the cores when it is needed.
                        let (a, b) = tt::contract(layout, &detached(vars))?;
                        Pair {
                            a: Var::from_tensor(&a)?.as_tensor().clone(),
                            b: Var::from_tensor(&b)?.as_tensor().clone(),
                            magnitude: None,
                        }
                    }
                    None => Pair {
                        a: vars[0].as_tensor().clone(),
                        b: vars[1].as_tensor().clone(),
                        magnitude: vars.get(2).map(|m| m.as_tensor().clone()),
                    },
                }))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Lora { scale: self.scale, pairs })
    }

    /// One gradient per parameter from the gradients of the updates (a projection without any:
    /// zeros).
    pub(crate) fn grads(&self, grads: Grads) -> candle_core::Result<Vec<Tensor>> {
        let mut flat = Vec::with_capacity(self.vars.len());
        for (part, grads) in self.parts.iter().zip(grads) {
            let vars = &self.vars[part.vars.clone()];
            match (grads, &part.tt) {
                (Some(grads), Some(layout)) => flat.extend(tt::core_grads(layout, vars, &grads[0], &grads[1])?),
                (Some(grads), None) => flat.extend(grads),
                (None, _) => {
                    for var in vars {
                        flat.push(var.as_tensor().zeros_like()?);
                    }
                }
            }
        }
        Ok(flat)
    }

    /// Numbers trained (what the optimiser updates).
    pub(crate) fn parameters(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// Writes the update as a PEFT LoRA directory (TT-LoRA contracted), with TT-LoRA's cores beside
    /// it: a checkpoint's adapter loads in `eval` and PEFT as the finished one does.
    pub(crate) fn save(&self, dir: &Path, settings: &Settings, base_model: &str) -> Result<(), TrainError> {
        let mut peft = HashMap::new();
        let mut cores = HashMap::new();
        for part in &self.parts {
            let vars = &self.vars[part.vars.clone()];
            let key = |name: &str| files::peft_key(part.layer, part.projection, name);
            let (a, b) = match &part.tt {
                Some(layout) => {
                    for (i, core) in vars.iter().enumerate() {
                        cores.insert(key(&core_name(i)), core.as_tensor().clone());
                    }
                    tt::contract(layout, &detached(vars))?
                }
                None => (vars[0].as_tensor().clone(), vars[1].as_tensor().clone()),
            };
            peft.insert(key("lora_A.weight"), a);
            peft.insert(key("lora_B.weight"), b);
            if let (None, Some(magnitude)) = (&part.tt, vars.get(2)) {
                peft.insert(key("lora_magnitude_vector"), magnitude.as_tensor().clone());
            }
        }
        files::write_tensors(&dir.join(PEFT_FILE), &peft)?;
        if !cores.is_empty() {
            files::write_tensors(&dir.join(CORES_FILE), &cores)?;
        }
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": settings.dropout,
            "target_modules": Projection::ALL.iter().map(|p| p.module()).collect::<Vec<_>>(),
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": settings.dora,
            "modules_to_save": null,
            "layers_to_transform": null,
        });
        files::write_private(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&config).expect("json").as_bytes())
    }
}

fn core_name(index: usize) -> String {
    format!("tt_core.{index}")
}

fn detached(vars: &[Var]) -> Vec<Tensor> {
    vars.iter().map(|v| v.as_tensor().detach()).collect()
}
