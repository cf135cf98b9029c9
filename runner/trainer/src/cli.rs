//! The command line of `mixsweep-runner` (clap).

use clap::{Args, Parser, Subcommand, ValueEnum};
use mixsweep_mlx::device::Device;
use mixsweep_model::ComputeDtype;
use mixsweep_runner::quantize::{Bits, Method};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mixsweep-runner",
    version,
    about = "Train one model config on MLX (CPU, CUDA or Metal)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DtypeArg {
    Float32,
    Bfloat16,
}

impl DeviceArg {
    pub fn device(self) -> Option<Device> {
        match self {
            DeviceArg::Auto => None,
            DeviceArg::Cpu => Some(Device::Cpu),
            DeviceArg::Gpu => Some(Device::Gpu),
        }
    }
}

impl DtypeArg {
    pub fn dtype(self) -> ComputeDtype {
        match self {
            DtypeArg::Float32 => ComputeDtype::Float32,
            DtypeArg::Bfloat16 => ComputeDtype::Bfloat16,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Train a config on token shards.
    Train(TrainArgs),
    /// Train trials one after another in this process, keeping MLX, its compiled kernels and the
    /// device warm: one JSON job per line on stdin (`{"args": ["train", ...], "stdout": PATH,
    /// "stderr": PATH}`), one `{"exit": CODE}` line on stdout when it ends (see `worker.rs`).
    Worker,
    /// Generate text from saved weights, streaming it as it is produced.
    Generate(GenerateArgs),
    /// Full validation loss and bits per byte of saved weights.
    Eval(EvalArgs),
    /// Parameters, sizes, blocks, IR ops and FLOPs of a config (no MLX needed).
    Count {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check the MLX install: version, device, and one tiny compiled train step.
    Smoke {
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
    },
    /// Text -> token shards, tokenizer.json, mixlab.dataset.json and the bits-per-byte lookup tables.
    Prepare(PrepareArgs),
    /// The hidden state the output head reads, for one training batch, as raw float32 (mixlab's
    /// hiddenstats mode).
    Hiddenstats(HiddenstatsArgs),
}

#[derive(Args)]
pub struct HiddenstatsArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub safetensors_load: PathBuf,
    /// Training shards: the batch is the first one a run with the config's seed draws.
    #[arg(long)]
    pub train: String,
    /// Where to write the raw little-endian float32 [B, T, D] values.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Model config: a JSON file, or an object-store URL (s3://, gs://, file://).
    #[arg(long)]
    pub config: String,
    /// Training shards: a glob like 'data/shakespeare_char/train_*.bin', or an object-store URL with a
    /// glob in the file name ('s3://bucket/data/train_*.bin'), downloaded once into $MIXSWEEP_CACHE.
    #[arg(long)]
    pub train: String,
    /// Validation shards, glob or URL (default: the train glob with `train` replaced by `val`).
    #[arg(long)]
    pub val: Option<String>,
    /// Output folder for metrics.jsonl, summary.json and weights (default runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override training.steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Start from these weights instead of a fresh init.
    #[arg(long)]
    pub safetensors_load: Option<PathBuf>,
    /// Where to write the final weights (default <out>/model.safetensors).
    #[arg(long)]
    pub safetensors_out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Override training.compute_dtype.
    #[arg(long, value_enum)]
    pub compute_dtype: Option<DtypeArg>,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
    /// Write a CPU profile of the whole run (pprof protobuf, for `go tool pprof` or speedscope).
    #[arg(long)]
    pub cpuprofile: Option<PathBuf>,
    /// Also upload config.json, metrics.jsonl, model.safetensors, cpu.pb and (last) summary.json
    /// to this storage URL (a folder, s3://bucket/prefix/trials/ID, gs://...). The local copies stay.
    #[arg(long)]
    pub artifacts: Option<String>,
    /// Print every metrics record as a JSON line on stdout (log-streaming backends read these).
    #[arg(long)]
    pub progress_json: bool,
    /// After training: loss over every validation token and bits per byte (into summary.json).
    #[arg(long)]
    pub eval: bool,
    /// BPB lookup tables (default: beside the validation shards).
    #[arg(long)]
    pub lut_dir: Option<PathBuf>,
    /// Continue from the resume point an interrupted run left (`resume.safetensors` in --out, or
    /// at the --artifacts URL): same weights, optimizer state and step; a fresh start when none.
    #[arg(long)]
    pub resume: bool,
    /// Also export the final weights quantized per row (`model.int8.safetensors`) and report the
    /// validation loss of the quantized weights (`quant_val_loss`).
    #[arg(long, value_enum)]
    pub quantize: Option<Bits>,
    /// How each row's clipping value is chosen for --quantize.
    #[arg(long, value_enum, default_value = "quantile")]
    pub quant_method: Method,
    /// Write the weights every --checkpoint-every steps into this folder (`step_000100.safetensors`).
    #[arg(long, requires = "checkpoint_every")]
    pub checkpoint_dir: Option<PathBuf>,
    #[arg(long, requires = "checkpoint_dir", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,
    /// Cap MLX's device memory (e.g. 20GiB); allocations beyond it wait or fail.
    #[arg(long)]
    pub memory_limit: Option<bytesize::ByteSize>,
    /// Cap the memory MLX keeps cached for reuse (e.g. 2GiB; 0 turns the cache off).
    #[arg(long)]
    pub cache_limit: Option<bytesize::ByteSize>,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub safetensors_load: PathBuf,
    /// Text (encoded with --tokenizer, or bytes for vocab 256), or `token_ids:1,2,3`.
    #[arg(long)]
    pub prompt: String,
    /// The dataset's tokenizer.json, or its folder (needed unless vocab_size is 256).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Recompute the whole sequence for every token instead of using the KV cache / scan state.
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Print the generated token ids as JSON after the text.
    #[arg(long)]
    pub ids: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub config: String,
    #[arg(long)]
    pub safetensors_load: PathBuf,
    /// Training shards (the validation glob is derived from it, as in train).
    #[arg(long)]
    pub train: String,
    #[arg(long)]
    pub val: Option<String>,
    /// BPB lookup tables (default: beside the validation shards).
    #[arg(long)]
    pub lut_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    #[arg(long, value_enum)]
    pub compute_dtype: Option<DtypeArg>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Evaluate the weights after quantizing them per row (as `train --quantize` exports them).
    #[arg(long, value_enum)]
    pub quantize: Option<Bits>,
    #[arg(long, value_enum, default_value = "quantile")]
    pub quant_method: Method,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("tokenizer").required(true).args(["byte_level", "vocab_size", "tokenizer_path"])))]
pub struct PrepareArgs {
    /// A .txt file, a .jsonl file, or a folder of them (recursive).
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// One token per byte (vocab 256, no tokenizer).
    #[arg(long)]
    pub byte_level: bool,
    /// Train a byte-level BPE with this many tokens (at most 65535).
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Reuse this tokenizer.json.
    #[arg(long)]
    pub tokenizer_path: Option<PathBuf>,
    /// The text field of .jsonl documents.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    #[arg(long, default_value_t = 0.1)]
    pub val_split: f64,
    #[arg(long, default_value_t = 1_000_000)]
    pub tokens_per_shard: usize,
    #[arg(long)]
    pub quiet: bool,
}
