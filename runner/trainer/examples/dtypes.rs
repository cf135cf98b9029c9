use mixsweep_mlx::Array;
use mixsweep_model::{ComputeDtype, ModelConfig};
fn main() {
    let cfg = ModelConfig::load(std::path::Path::new("scripts/bench/gpt_bench.json")).unwrap();
    let p = cfg.lower();
    let host = mixsweep_runner::init::initial_weights(&p.weights, 1);
    let w: Vec<Array> = p.weights.iter().zip(&host).map(|(s, v)| Array::from_f32(v, &s.shape).unwrap()).collect();
    let toks = Array::from_i32(&vec![1; 2 * 256], &[2, 256]).unwrap();
    let exec = mixsweep_runner::executor::Executor::new(&p, ComputeDtype::Bfloat16);
    let out = exec.forward(&w, &toks, Some(&toks), None).unwrap();
    println!("logits {:?}", out.logits.dtype());
}
