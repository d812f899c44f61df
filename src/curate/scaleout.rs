//! `marunochi curate --for trl|axolotl`: next to each language's data, what another training engine
//! needs to train the same adapter on GPUs or a cluster — a TRL script or Axolotl configs, and an
//! `accelerate` launch configuration — with the hyper-parameters of our own trainer (README,
//! "Scale out"). The adapter comes back with `marunochi adapters import`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::TrainConfig;

/// The engine to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Trl,
    Axolotl,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleOut {
    pub engine: Engine,
    /// The Hugging Face id or directory of the model being served (TRL and Axolotl train on
    /// safetensors weights, not on a GGUF file).
    pub base_model: String,
    pub train: TrainConfig,
}

const TRL_SCRIPT: &str = include_str!("scaleout/train.py");
const AXOLOTL_SFT: &str = include_str!("scaleout/config.yml");
const AXOLOTL_DPO: &str = include_str!("scaleout/dpo.yml");
const ACCELERATE: &str = include_str!("scaleout/accelerate.yaml");

/// The files to write into `dir` (a language's dataset directory) for `language`, whose data has
/// `dpo_pairs` correction pairs: (path, contents).
pub fn files(dir: &Path, language: &str, dpo_pairs: usize, plan: &ScaleOut) -> Vec<(PathBuf, String)> {
    let t = &plan.train;
    let modules = crate::engine::lora::Projection::ALL.map(|p| p.module());
    let fill = |template: &str| {
        let adapter = if t.qlora { "adapter: qlora\nload_in_4bit: true" } else { "adapter: lora" };
        let list: Vec<String> = modules.iter().map(|m| format!("  - {m}")).collect();
        [
            ("{{LANGUAGE}}", language.to_owned()),
            ("{{BASE_MODEL}}", yaml_string(&plan.base_model)),
            ("{{SEQUENCE_LEN}}", (t.max_prompt_tokens + t.max_target_tokens).to_string()),
            ("{{ADAPTER}}", adapter.to_owned()),
            ("{{RANK}}", t.rank.to_string()),
            ("{{ALPHA}}", t.alpha.to_string()),
            ("{{DROPOUT}}", t.dropout.to_string()),
            ("{{TARGET_MODULES}}", list.join("\n")),
            ("{{BATCH}}", t.batch.to_string()),
            ("{{EPOCHS}}", t.epochs.to_string()),
            ("{{LR}}", t.lr.to_string()),
            ("{{PREFERENCE_LR}}", t.preference_lr.to_string()),
            ("{{BETA}}", t.beta.to_string()),
            ("{{WARMUP_RATIO}}", TrainConfig::WARMUP_RATIO.to_string()),
            ("{{WEIGHT_DECAY}}", TrainConfig::WEIGHT_DECAY.to_string()),
            ("{{MAX_GRAD_NORM}}", TrainConfig::MAX_GRAD_NORM.to_string()),
            ("{{GRADIENT_CHECKPOINTING}}", t.gradient_checkpointing.to_string()),
            ("{{SEED}}", "0".to_owned()),
        ]
        .iter()
        .fold(template.to_owned(), |text, (key, value)| text.replace(key, value))
    };
    match plan.engine {
        Engine::Trl => {
            let settings = json!({
                "language": language,
                "base_model": plan.base_model,
                "rank": t.rank,
                "alpha": t.alpha,
                "dropout": t.dropout,
                "target_modules": modules,
                "lr": t.lr,
                "epochs": t.epochs,
                "batch": t.batch,
                "warmup_ratio": TrainConfig::WARMUP_RATIO,
                "weight_decay": TrainConfig::WEIGHT_DECAY,
                "max_grad_norm": TrainConfig::MAX_GRAD_NORM,
                "gradient_checkpointing": t.gradient_checkpointing,
                "qlora": t.qlora,
                "max_prompt_tokens": t.max_prompt_tokens,
                "max_target_tokens": t.max_target_tokens,
                "preference": t.preference,
                "preference_lr": t.preference_lr,
                "beta": t.beta,
                "seed": 0,
            });
            // Inside a Python triple-quoted string: JSON never holds three quotes in a row, and
            // its backslashes are doubled so Python hands json.loads the text as written.
            let settings = serde_json::to_string_pretty(&settings).expect("json").replace('\\', "\\\\");
            vec![
                (dir.join("trl/train.py"), fill(TRL_SCRIPT).replace("{{SETTINGS}}", &settings)),
                (dir.join("trl/accelerate.yaml"), ACCELERATE.to_owned()),
            ]
        }
        Engine::Axolotl => {
            let mut files = vec![
                (dir.join("axolotl/config.yml"), fill(AXOLOTL_SFT)),
                (dir.join("axolotl/accelerate.yaml"), ACCELERATE.to_owned()),
            ];
            if t.preference && dpo_pairs >= 2 {
                files.push((dir.join("axolotl/dpo.yml"), fill(AXOLOTL_DPO)));
            }
            files
        }
    }
}

/// `text` as a YAML scalar: quoted, so that an id such as `Qwen/Qwen2.5-Coder-1.5B` or a path
/// with `: ` stays one string.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_carry_the_trainers_settings_and_the_base_model() {
        let train = TrainConfig { rank: 8, lr: 1e-4, qlora: true, ..TrainConfig::default() };
        let plan = |engine| ScaleOut { engine, base_model: "Qwen/Qwen2.5-Coder-1.5B".into(), train: train.clone() };
        let dir = Path::new("/d/python");
        let trl = files(dir, "python", 0, &plan(Engine::Trl));
        assert_eq!(
            trl.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            [dir.join("trl/train.py"), dir.join("trl/accelerate.yaml")]
        );
        let script = &trl[0].1;
        assert!(!script.contains("{{"), "every placeholder filled");
        let opening = "SETTINGS = json.loads(\"\"\"";
        let start = script.find(opening).unwrap() + opening.len();
        let end = start + script[start..].find("\"\"\"").unwrap();
        let settings: serde_json::Value = serde_json::from_str(&script[start..end]).unwrap();
        assert_eq!((settings["rank"].as_u64(), settings["lr"].as_f64()), (Some(8), Some(1e-4)));
        assert_eq!(settings["base_model"], "Qwen/Qwen2.5-Coder-1.5B");
        assert_eq!(settings["target_modules"].as_array().unwrap().len(), 7);

        let axolotl = files(dir, "python", 3, &plan(Engine::Axolotl));
        assert_eq!(axolotl.len(), 3, "config, accelerate and the DPO stage");
        let config = &axolotl[0].1;
        assert!(!config.contains("{{"), "every placeholder filled");
        for line in [
            "base_model: \"Qwen/Qwen2.5-Coder-1.5B\"",
            "adapter: qlora",
            "load_in_4bit: true",
            "lora_r: 8",
            "learning_rate: 0.0001",
            "  - down_proj",
        ] {
            assert!(config.lines().any(|l| l == line), "{line:?} in\n{config}");
        }
        assert_eq!(files(dir, "python", 1, &plan(Engine::Axolotl)).len(), 2, "no DPO stage for one pair");
    }
}
