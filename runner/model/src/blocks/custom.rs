//! `custom`: a block written in the config as declared weights and a list of ops (mixlab §4).
//!
//! ```json
//! {"type": "custom", "name": "geglu", "heads": 1,
//!  "weights": [{"name": "w_gate", "shape": ["D", "FFN"]}, ...],
//!  "ops": [{"op": "matmul", "inputs": ["x", "w_gate"], "output": "gate"}, ...,
//!          {"op": "add", "inputs": ["x", "ff_out"], "output": "x"}]}
//! ```
//! As in mixlab, the stream `x` is `[B·T, D]` inside the block (`BT` in shapes) and must end there
//! too; names are `x`, the declared weights, or temporaries defined by earlier ops. Shape symbols:
//! `D`, `H` (`heads`, default 1), `HD` = D/H, `T`, `B`, `BT`, `V`, `FFN`, `2D`/`3D`/`4D`/`8D`, `<f>D`,
//! `T/2` and integers. Op names and params follow mixlab's config reference ([`ops_table`]).
//!
//! Fixes of mixlab's documented custom-block defects (spec §13.9): a 1-D weight whose name ends in
//! `scale` starts at 1 (mixlab: 0, which silences the branch), and any weight may say `"init"`:
//! `ones`, `zeros`, `xavier`, `normal` or a number; `FFN` is the model's FFN width
//! `max(D, round(D · mlp_mult))` (mixlab: `int(2.67·D)` whatever `mlp_mult` says); `dropout` uses the
//! run's per-step dropout keys (mixlab: MLX's global RNG, not reproducible); `rope` reads its params by
//! name (mixlab swaps `T` and `head_dim`).

use super::{Block, BlockCtx, BlockType, ModelDims};
use crate::error::ConfigError;
use crate::ir::{BuildError, Builder, Dim, Init, ParamGroup, Shape, ValueId};
use crate::json::Fields;
use serde_json::Value;
use std::collections::HashMap;

pub mod ops_table;

pub const TYPE: BlockType = BlockType {
    name: "custom",
    parse,
    fields: &["name", "heads", "weights", "ops"],
    summary: "user-defined: declared weights and a list of ops (mixlab's custom blocks)",
};

/// A declared weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightDecl {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    pub group: ParamGroup,
}

/// One op of the list, as written (params resolved against the model's symbols).
#[derive(Debug, Clone, PartialEq)]
pub struct OpDecl {
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub params: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Custom {
    pub name: String,
    pub heads: usize,
    pub weights: Vec<WeightDecl>,
    pub ops: Vec<OpDecl>,
    /// Symbol values for shapes in params.
    symbols: Symbols,
}

/// What shape symbols stand for in this block.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbols {
    pub d: usize,
    pub heads: usize,
    pub seq_len: usize,
    pub vocab: usize,
    pub ffn: usize,
}

impl Symbols {
    /// A dimension: an integer, or a symbol (`B`, `T`, `BT` stay symbolic).
    pub fn dim(&self, v: &Value) -> Result<Dim, String> {
        if let Some(n) = v.as_u64() {
            return Ok(Dim::Fixed(n as usize));
        }
        let Some(s) = v.as_str() else {
            return Err(format!("a dimension must be a number or a symbol, not {v}"));
        };
        let fixed = |n: usize| Ok(Dim::Fixed(n));
        match s.trim() {
            "B" => Ok(Dim::Batch),
            "T" => Ok(Dim::Seq),
            "BT" => Ok(Dim::Tokens),
            "D" => fixed(self.d),
            "H" => fixed(self.heads),
            "HD" => fixed(self.d / self.heads),
            "V" => fixed(self.vocab),
            "FFN" => fixed(self.ffn),
            "T/2" => fixed(self.seq_len / 2),
            t if t.parse::<usize>().is_ok() => fixed(t.parse().unwrap()),
            t if t.ends_with('D') => match t[..t.len() - 1].parse::<f64>() {
                Ok(m) if m > 0.0 => fixed((m * self.d as f64) as usize),
                _ => Err(unknown(t)),
            },
            t => Err(unknown(t)),
        }
    }

    /// A list of dimensions.
    pub fn shape(&self, v: &Value) -> Result<Shape, String> {
        let Some(items) = v.as_array().filter(|a| !a.is_empty()) else {
            return Err(format!("a shape must be a non-empty list, not {v}"));
        };
        items.iter().map(|d| self.dim(d)).collect()
    }
}

fn unknown(s: &str) -> String {
    format!(
        "unknown shape symbol {s:?} (supported: D, H, HD, T, B, BT, V, FFN, 2D, 3D, 4D, 8D, <number>D, T/2, integers)"
    )
}

fn parse(f: &mut Fields<'_>, dims: &ModelDims) -> Result<Box<dyn Block>, ConfigError> {
    let name = f.string("name")?.filter(|n| !n.is_empty()).ok_or_else(|| {
        f.error("name", "a custom block needs a `name`")
            .with_hint("add e.g. \"name\": \"my_ffn\"")
    })?;
    let heads = f.positive("heads", 1)?;
    if !dims.model_dim.is_multiple_of(heads) {
        return Err(f.error(
            "heads",
            format!("heads={heads} must divide model_dim={}", dims.model_dim),
        ));
    }
    let symbols = Symbols {
        d: dims.model_dim,
        heads,
        seq_len: dims.seq_len,
        vocab: dims.vocab_size,
        ffn: dims.ffn_dim,
    };
    let weights = parse_weights(f, &symbols)?;
    let ops = parse_ops(f, &weights)?;
    Ok(Box::new(Custom {
        name,
        heads,
        weights,
        ops,
        symbols,
    }))
}

fn parse_weights(f: &mut Fields<'_>, sym: &Symbols) -> Result<Vec<WeightDecl>, ConfigError> {
    let list = f.array("weights")?.ok_or_else(|| {
        f.error("weights", "a custom block needs `weights`")
            .with_hint("declare e.g. [{\"name\": \"w\", \"shape\": [\"D\", \"D\"]}]")
    })?;
    let mut out: Vec<WeightDecl> = vec![];
    for (i, w) in list.iter().enumerate() {
        let mut wf = Fields::new(f.path_of(&format!("weights[{i}]")), w)?;
        let name = wf
            .string("name")?
            .filter(|n| !n.is_empty() && n != "x")
            .ok_or_else(|| wf.error("name", "every weight needs a `name` (not `x`, the stream)"))?;
        if out.iter().any(|o| o.name == name) {
            return Err(wf.error("name", format!("weight `{name}` is declared twice")));
        }
        let shape_v = wf
            .raw("shape")
            .ok_or_else(|| wf.error("shape", "every weight needs a `shape`"))?;
        let shape = sym.shape(shape_v).map_err(|e| wf.error("shape", e))?;
        let shape: Vec<usize> = shape
            .iter()
            .map(|d| d.fixed().filter(|n| *n > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                wf.error(
                    "shape",
                    "weight shapes must be fixed and positive (B, T and BT vary per batch)",
                )
            })?;
        let scale_like = name.ends_with("scale");
        let init = match wf.raw("init") {
            None if shape.len() == 1 => Init::Constant(if scale_like { 1.0 } else { 0.0 }),
            None => Init::XavierUniform,
            Some(Value::Number(n)) => Init::Constant(n.as_f64().unwrap_or(0.0) as f32),
            Some(Value::String(s)) => match s.as_str() {
                "ones" => Init::Constant(1.0),
                "zeros" => Init::Constant(0.0),
                "xavier" | "xavier_uniform" => Init::XavierUniform,
                "normal" => Init::Normal { std: 0.02 },
                other => {
                    return Err(wf
                        .error("init", format!("unknown init {other:?}"))
                        .with_hint("use ones, zeros, xavier, normal or a number"));
                }
            },
            Some(other) => {
                return Err(wf.error(
                    "init",
                    format!("init must be a name or a number, not {other}"),
                ));
            }
        };
        let group = if shape.len() == 1 || scale_like {
            ParamGroup::Scalar
        } else {
            ParamGroup::Matrix
        };
        wf.finish(&["name", "shape", "init"])?;
        out.push(WeightDecl {
            name,
            shape,
            init,
            group,
        });
    }
    if out.is_empty() {
        return Err(f.error("weights", "a custom block needs at least one weight"));
    }
    Ok(out)
}

fn parse_ops(f: &mut Fields<'_>, weights: &[WeightDecl]) -> Result<Vec<OpDecl>, ConfigError> {
    let list = f
        .array("ops")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| f.error("ops", "a custom block needs a non-empty `ops` list"))?;
    let mut defined: Vec<String> = vec!["x".into()];
    defined.extend(weights.iter().map(|w| w.name.clone()));
    let mut out = vec![];
    for (i, o) in list.iter().enumerate() {
        let path = f.path_of(&format!("ops[{i}]"));
        let mut of = Fields::new(path.clone(), o)?;
        let op = of
            .string("op")?
            .ok_or_else(|| of.error("op", "every op needs an `op` name"))?;
        let spec = ops_table::find(&op).ok_or_else(|| {
            let names = ops_table::names();
            let e = of.error("op", format!("unknown op {op:?}"));
            match crate::error::suggest(&op, &names) {
                Some(n) => e.with_hint(format!("did you mean {n:?}?")),
                None => e.with_hint(format!("ops: {}", names.join(", "))),
            }
        })?;
        let strings = |of: &mut Fields<'_>, key: &str| -> Result<Vec<String>, ConfigError> {
            match of.array(key)? {
                None => Ok(vec![]),
                Some(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| of.error(key, format!("{key} must be names (strings)")))
                    })
                    .collect(),
            }
        };
        let inputs = strings(&mut of, "inputs")?;
        if !spec.arity.contains(&inputs.len()) {
            return Err(of.error(
                "inputs",
                format!(
                    "{op} takes {} inputs, got {}",
                    show_range(&spec.arity),
                    inputs.len()
                ),
            ));
        }
        for (k, name) in inputs.iter().enumerate() {
            if !defined.contains(name) {
                return Err(ConfigError::new(
                    format!("{path}.inputs[{k}]"),
                    format!(
                        "`{name}` is not defined before this op (defined: {})",
                        defined.join(", ")
                    ),
                ));
            }
        }
        let mut outputs = strings(&mut of, "outputs")?;
        if let Some(single) = of.string("output")? {
            outputs.push(single);
        }
        if outputs.len() != spec.outputs {
            return Err(of.error(
                "output",
                format!(
                    "{op} has {} output(s); name them with `output` (one) or `outputs`",
                    spec.outputs
                ),
            ));
        }
        if let Some(w) = outputs
            .iter()
            .find(|o| weights.iter().any(|w| &w.name == *o))
        {
            return Err(of.error(
                "output",
                format!("`{w}` is a weight; an op cannot overwrite it"),
            ));
        }
        let params = match of.raw("params") {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(of.error("params", format!("params must be an object, not {other}")));
            }
        };
        if let Some(k) = params.keys().find(|k| !spec.params.contains(&k.as_str())) {
            return Err(ConfigError::new(
                format!("{path}.params.{k}"),
                format!("{op} has no param `{k}`"),
            )
            .with_hint(if spec.params.is_empty() {
                "it takes no params".to_string()
            } else {
                format!("its params: {}", spec.params.join(", "))
            }));
        }
        of.finish(&["op", "inputs", "output", "outputs", "params"])?;
        defined.extend(outputs.iter().cloned());
        out.push(OpDecl {
            op,
            inputs,
            outputs,
            params,
        });
    }
    Ok(out)
}

fn show_range(r: &std::ops::RangeInclusive<usize>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{} to {}", r.start(), r.end())
    }
}

impl Block for Custom {
    fn kind(&self) -> &'static str {
        "custom"
    }

    fn lower(
        &self,
        b: &mut Builder,
        x: ValueId,
        ctx: &BlockCtx<'_>,
    ) -> Result<ValueId, BuildError> {
        let d = ctx.dims.model_dim;
        let mut env: HashMap<String, ValueId> = HashMap::new();
        for w in &self.weights {
            env.insert(
                w.name.clone(),
                b.weight(&w.name, &w.shape, w.init, w.group)?,
            );
        }
        // mixlab's stream layout inside custom blocks: [B·T, D]
        env.insert(
            "x".into(),
            b.reshape("stream_flat", x, vec![Dim::Tokens, Dim::Fixed(d)])?,
        );
        for (i, op) in self.ops.iter().enumerate() {
            let inputs: Vec<ValueId> = op.inputs.iter().map(|n| env[n]).collect();
            let outs = ops_table::emit(b, op, &inputs, &self.symbols, ctx).map_err(|message| {
                BuildError {
                    index: i,
                    op: ops_table::find(&op.op).map_or("op", |s| s.name),
                    message: format!("{}({}): {message}", op.op, op.inputs.join(", ")),
                    path: Some(format!("ops[{i}]")),
                }
            })?;
            for (name, v) in op.outputs.iter().zip(outs) {
                env.insert(name.clone(), v);
            }
        }
        let out = env["x"];
        let want = vec![Dim::Tokens, Dim::Fixed(d)];
        if b.shape(out) != &want {
            return Err(BuildError {
                index: self.ops.len(),
                op: "output",
                message: format!(
                    "the block must leave `x` as [BT, D] = {}, but its last value of x is {}",
                    crate::ir::show(&want),
                    crate::ir::show(b.shape(out))
                ),
                path: Some("ops".into()),
            });
        }
        b.reshape("stream", out, vec![Dim::Batch, Dim::Seq, Dim::Fixed(d)])
    }
}
