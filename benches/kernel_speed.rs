//! Our CPU kernels against candle's on the same weights, per GGUF format: one row (decode) and a
//! 256-row prefill chunk, on Qwen2.5-Coder-1.5B's MLP shapes (where candle repacks some formats
//! into integer tiles) and SmolLM2's (where it does not). The ratios decide which kernel a weight
//! gets (`engine::kernels::candle_repacks`).
//!
//! `cargo bench --bench kernel_speed`

fn main() {
    println!("marunochi kernels vs candle's (CPU, {} threads)", candle_core::utils::get_num_threads());
    marunochi::engine::kernel_speed_against_candle().unwrap();
}
