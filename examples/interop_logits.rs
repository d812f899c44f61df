//! Our side of the adapter interop check (`scripts/interop.sh`): the next-token logits after
//! TOKENS under MODEL, without and with the PEFT adapter in ADAPTER_DIR, as one JSON object
//! `{"base": [...], "adapted": [...]}` for the script to hold against PEFT's.

use marunochi::engine::{Engine, KvCache, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: interop_logits MODEL ADAPTER_DIR TOKEN,TOKEN,...";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, adapter, tokens] = args.as_slice() else { return Err(usage.into()) };
    let tokens: Vec<u32> = tokens.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let engine = Engine::load(model.as_ref(), &LoadOptions::default())?;
    engine.load_adapter("theirs", adapter.as_ref())?;
    let base = engine.logits(&tokens, &mut KvCache::default(), None)?;
    let adapted = engine.logits(&tokens, &mut KvCache::default(), Some("theirs"))?;
    println!("{}", serde_json::json!({ "base": base, "adapted": adapted }));
    Ok(())
}
